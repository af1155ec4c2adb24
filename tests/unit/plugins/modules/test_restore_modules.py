# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""postgres_restore's and redis_restore's main() against scripted targets: nothing is touched before the file is
checked, every failure fails the task once, and a stoppable target is always started again."""

from __future__ import annotations

import gzip
import json

import pytest

from fake_transport import FakeTransport, Reply, run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import crc64
from ansible_collections.authentik_ops.backup.plugins.modules import postgres_restore, redis_restore

DUMP = (b"--\n-- PostgreSQL database cluster dump\n--\n\nDROP ROLE IF EXISTS authentik;\nCREATE ROLE authentik;\n"
        b"ALTER ROLE authentik WITH SUPERUSER;\n\\connect authentik\nSELECT 1;\n"
        b"--\n-- PostgreSQL database cluster dump complete\n--\n\n")
INFO = dict(version="16.4", user="authentik", superuser=True, databases=["authentik", "postgres"])


def psql(restore=None):
    def handler(call):
        if "json_build_object" in call.text:
            return Reply(json.dumps(INFO) + "\n")
        if "head -c" in call.text:
            return restore or Reply()
        raise AssertionError(call.text)
    return handler


def test_postgres_restore_sends_the_filtered_dump_with_the_password_in_the_environment(monkeypatch, tmp_path):
    src = tmp_path / "postgres.sql.gz"
    src.write_bytes(gzip.compress(DUMP))
    fake = FakeTransport(psql())
    result, failed = run_main(monkeypatch, postgres_restore, dict(container="db", src=str(src), password="pw"),
                              transport=fake)
    assert not failed, result
    sent = [c for c in fake.calls if "head -c" in c.text][0]
    expected = DUMP.replace(b"DROP ROLE IF EXISTS authentik;\n", b"").replace(b"CREATE ROLE authentik;\n", b"")
    assert sent.stdin == expected and str(len(expected)) in sent.argv
    assert sent.secret_env == {"PGPASSWORD": "pw"} and "pw" not in sent.argv
    assert result["filtered_statements"] == ["DROP ROLE IF EXISTS authentik;", "CREATE ROLE authentik;"]


@pytest.mark.parametrize("content, message", [
    (DUMP[:-30], "completion trailer"),
    (b"SELECT 1;\n", "does not start with pg_dumpall's header"),
    (b"", "the file is empty"),
])
def test_postgres_restore_refuses_a_bad_dump_before_touching_the_database(monkeypatch, tmp_path, content, message):
    src = tmp_path / "postgres.sql"
    src.write_bytes(content)
    fake = FakeTransport(psql())
    result, failed = run_main(monkeypatch, postgres_restore, dict(container="db", src=str(src)), transport=fake)
    assert failed and message in result["msg"] and result["src"] == str(src)
    assert not any("head -c" in c.text for c in fake.calls)


@pytest.mark.parametrize("reply, message", [
    (Reply(stderr=b"ERROR: relation exists", exit_code=3), "an SQL statement failed"),
    (Reply(cut_at=0), "broke off"),
])
def test_postgres_restore_failures_carry_rc_and_stderr(monkeypatch, tmp_path, reply, message):
    src = tmp_path / "postgres.sql"
    src.write_bytes(DUMP)
    result, failed = run_main(monkeypatch, postgres_restore, dict(container="db", src=str(src)),
                              transport=FakeTransport(psql(reply)))
    assert failed and message in result["msg"]
    assert "stderr_excerpt" in result


def test_postgres_restore_missing_src(monkeypatch, tmp_path):
    fake = FakeTransport(psql())
    result, failed = run_main(monkeypatch, postgres_restore, dict(container="db", src=str(tmp_path / "nope.sql")),
                              transport=fake)
    assert failed and "is not a readable file" in result["msg"] and fake.calls == []


# --- redis_restore ------------------------------------------------------------------------------------------------

def rdb():
    data = b"REDIS0011\xfe\x00\xfb\x01\x00\x00\x01k\x01v\xff"
    return data + crc64(data).to_bytes(8, "little")


class Redis:
    """A scripted Redis target: its files, its save setting, its run_id; ``fake`` (optional) stops on SHUTDOWN."""

    def __init__(self, appendonly="no", write=None, place=None, save="3600 1", fake=None):
        self.appendonly = appendonly
        self.run_id = "a" * 40
        self.write = write
        self.place = place
        self.save = save
        self.saves = []
        self.files = {"/data/dump.rdb": b"old"}
        self.fake = fake

    def __call__(self, call):
        if call.argv[:2] == ["sh", "-c"] and "CONFIG SET save" in call.argv[2]:
            self.saves.append(call.argv[-1])
            self.save = call.argv[-1]
            return Reply("OK\n")
        if call.argv[:2] == ["sh", "-c"] and "redis-cli" in call.argv[2]:
            answers = {"CONFIG GET dir": "dir\n/data", "CONFIG GET dbfilename": "dbfilename\ndump.rdb",
                       "CONFIG GET appendonly": f"appendonly\n{self.appendonly}", "DBSIZE": "1",
                       "CONFIG GET save": f"save\n{self.save}",
                       "INFO server": f"run_id:{self.run_id}", "PING": "PONG", "INFO persistence": "loading:0",
                       "FLUSHALL": "OK", "SHUTDOWN NOSAVE": ""}
            if "SHUTDOWN NOSAVE" in call.argv:
                self.run_id = "b" * 40
                if self.fake is not None:
                    self.fake.running = False
            return Reply("".join(f"@@{c}\n{answers[c]}\n" for c in call.argv[4:]))
        if "stat -c" in call.text:
            return Reply("999 999 600\n")
        if "head -c" in call.text:
            if self.write:
                self.files[call.argv[-1]] = call.stdin[:3]
                return self.write
            self.files[call.argv[-1]] = call.stdin
            return Reply(f"{len(call.stdin)}\n")
        if call.argv[:2] == ["cat", "--"]:
            return Reply(self.files[call.argv[2]])
        if call.argv[:3] == ["rm", "-f", "--"]:
            self.files.pop(call.argv[3], None)
            return Reply()
        if "mv -f" in call.text:
            if self.place:
                self.files.pop(call.argv[4], None)
                return self.place
            self.files[call.argv[5]] = self.files.pop(call.argv[4])
            return Reply()
        raise AssertionError(call.text)


def redis_args(tmp_path, **more):
    src = tmp_path / "redis.rdb"
    src.write_bytes(rdb())
    return dict(dict(container="redis", src=str(src), wait_timeout=5), **more)


@pytest.mark.parametrize("can_stop", [True, False])
def test_redis_replace_stages_beside_swaps_and_restarts(monkeypatch, tmp_path, can_stop):
    fake = FakeTransport(can_stop=can_stop)
    redis = Redis(fake=fake)
    fake.handler = redis
    fake.start = lambda: (fake.events.append(("start",)), setattr(fake, "running", True))
    result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), transport=fake)
    assert not failed, result
    assert redis.files == {"/data/dump.rdb": rdb()}  # staged, read back, moved over; nothing left beside
    write = [c for c in fake.calls if "head -c" in c.text][0]
    assert write.stdin == rdb() and write.argv[-1] == "/data/dump.rdb.restore-tmp"
    steps = {"CONFIG SET save": "save", "mv -f": "mv", "SHUTDOWN NOSAVE": "shutdown"}
    order = [step for c in fake.calls for text, step in steps.items() if text in c.text]
    assert order == ["save", "mv", "shutdown"] and redis.saves == [""]
    # a container its restart policy leaves stopped is started by the module; a pod's kubelet restarts it
    assert [e for e in fake.events if e[0] == "start"] == ([("start",)] if can_stop else [])


def test_redis_stream_cut_mid_copy_leaves_the_rdb(monkeypatch, tmp_path):
    redis = Redis(write=Reply("3\n"))
    fake = FakeTransport(redis, can_stop=True)
    result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), transport=fake)
    assert failed and "3 of" in result["msg"] and "nothing was changed" in result["msg"], result
    assert redis.files == {"/data/dump.rdb": b"old"} and redis.saves == [] and fake.events == []
    assert not any("SHUTDOWN NOSAVE" in c.argv for c in fake.calls)


def test_redis_staged_file_that_differs_is_removed(monkeypatch, tmp_path):
    redis = Redis()
    original = redis.__call__

    def corrupt(call):
        reply = original(call)
        if call.argv[:2] == ["cat", "--"]:
            return Reply(reply.stdout[:-1] + b"\x00")
        return reply

    fake = FakeTransport(corrupt)
    result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), transport=fake)
    assert failed and "is not the snapshot that was sent" in result["msg"] and "nothing was changed" in result["msg"]
    assert redis.files == {"/data/dump.rdb": b"old"} and redis.saves == []


def test_redis_that_refuses_config_set_keeps_its_rdb_and_no_staged_file(monkeypatch, tmp_path):
    redis = Redis()
    original = redis.__call__
    fake = FakeTransport(lambda call: Reply("ERR unknown command\n") if "CONFIG SET save" in call.text
                         else original(call))
    result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), transport=fake)
    assert failed and "CONFIG SET save" in result["msg"] and "nothing was changed" in result["msg"], result
    assert redis.files == {"/data/dump.rdb": b"old"}
    assert not any("SHUTDOWN NOSAVE" in c.argv or "mv -f" in c.text for c in fake.calls)


def test_redis_move_that_fails_gives_the_save_setting_back(monkeypatch, tmp_path):
    redis = Redis(place=Reply(stderr=b"mv: Read-only file system", exit_code=1))
    fake = FakeTransport(redis)
    result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), transport=fake)
    assert failed and "Read-only" in result["msg"] and "nothing was changed" in result["msg"], result
    assert redis.saves == ["", "3600 1"] and redis.files == {"/data/dump.rdb": b"old"}
    assert not any("SHUTDOWN NOSAVE" in c.argv for c in fake.calls)


def test_redis_appendonly_is_refused_before_anything(monkeypatch, tmp_path):
    fake = FakeTransport(Redis(appendonly="yes"), can_stop=True)
    result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), transport=fake)
    assert failed and "appendonly yes" in result["msg"] and fake.events == []


def test_redis_bad_rdb_is_refused_before_anything(monkeypatch, tmp_path):
    args = redis_args(tmp_path)
    (tmp_path / "redis.rdb").write_bytes(rdb()[:-1] + b"\x00")
    fake = FakeTransport(Redis(), can_stop=True)
    result, failed = run_main(monkeypatch, redis_restore, args, transport=fake)
    assert failed and "nothing was restored" in result["msg"] and fake.calls == [] and fake.events == []


def test_redis_check_mode_plans_the_same_on_every_platform(monkeypatch, tmp_path):
    for can_stop in (True, False):
        redis = Redis()
        fake = FakeTransport(redis, can_stop=can_stop)
        result, failed = run_main(monkeypatch, redis_restore, redis_args(tmp_path), check_mode=True, transport=fake)
        assert not failed and "SHUTDOWN NOSAVE" in result["plan"]["action"] and fake.events == []
        assert redis.files == {"/data/dump.rdb": b"old"} and redis.saves == []


def test_redis_flush(monkeypatch, tmp_path):
    fake = FakeTransport(Redis())
    result, failed = run_main(monkeypatch, redis_restore, dict(container="redis", mode="flush"), transport=fake)
    assert not failed and result["keys"] == 1 and any("FLUSHALL" in c.argv for c in fake.calls)
