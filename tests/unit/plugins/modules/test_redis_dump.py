# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""redis_dump's main() against a scripted Redis: every failure ends the task, and no file is left behind."""

from __future__ import annotations

import pytest

from fake_transport import FakeTransport, Reply, run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import crc64
from ansible_collections.authentik_ops.backup.plugins.modules import redis_dump


def rdb(crc_ok=True):
    data = b"REDIS0011\xfe\x00\xfb\x01\x00\x00\x01k\x01v\xff"
    crc = crc64(data) if crc_ok else crc64(data) ^ 1
    return data + crc.to_bytes(8, "little")


class FakeRedis:
    """Answers redis-cli as PROBE_SH prints it (``@@<command>`` then the raw answer); ``cat`` sends the RDB."""

    def __init__(self, answers=None, rdb_reply=None, saves_after=1):
        self.lastsave = 1000
        self.bgsave_polls = 0
        self.saves_after = saves_after
        self.answers = dict(answers or {})
        self.rdb_reply = rdb_reply or Reply(rdb())

    def answer(self, command):
        if command in self.answers:
            return self.answers[command]
        if command == "INFO persistence":
            self.bgsave_polls += 1
            if self.saves_after is not None and self.bgsave_polls >= self.saves_after:
                self.lastsave = 2000
                return "rdb_bgsave_in_progress:0\nrdb_last_bgsave_status:ok"
            return "rdb_bgsave_in_progress:1\nrdb_last_bgsave_status:ok"
        return {"CONFIG GET dir": "dir\n/data", "CONFIG GET dbfilename": "dbfilename\ndump.rdb",
                "LASTSAVE": str(self.lastsave), "DBSIZE": "7", "TIME": "500\n0",
                "BGSAVE": "Background saving started", "SAVE": "OK"}[command]

    def __call__(self, call):
        if call.argv[0] == "cat":
            return self.rdb_reply
        commands = call.argv[4:]
        return Reply("".join(f"@@{c}\n{self.answer(c)}\n" for c in commands))


def args(tmp_path, **more):
    return dict(dict(container="redis", dest=str(tmp_path / "redis.rdb"), save_timeout=20), **more)


def test_dump_writes_a_checked_rdb(monkeypatch, tmp_path):
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path), transport=FakeTransport(FakeRedis()))
    assert not failed, result
    assert (tmp_path / "redis.rdb").read_bytes() == rdb()
    assert result["rdb_version"] == 11 and result["keys"] == 7 and result["rdb_path"] == "/data/dump.rdb"


def test_check_mode_plans_and_writes_nothing(monkeypatch, tmp_path):
    fake = FakeTransport(FakeRedis())
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path), check_mode=True, transport=fake)
    assert not failed and result["plan"]["action"] == "bgsave and copy"
    assert not any("BGSAVE" in call.text or call.argv[0] == "cat" for call in fake.calls)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("answers, message", [
    ({"CONFIG GET dir": "NOAUTH Authentication required."}, "refused authentication"),
    ({"BGSAVE": "MISCONF Redis is configured to save RDB snapshots, but it cannot persist to disk"}, "BGSAVE failed"),
    ({"INFO persistence": "rdb_bgsave_in_progress:0\nrdb_last_bgsave_status:err"}, "rdb_last_bgsave_status:err"),
])
def test_redis_answers_that_fail_the_task(monkeypatch, tmp_path, answers, message):
    password = {"password": "s3cret"} if "NOAUTH" in str(answers) else {}
    fake = FakeTransport(FakeRedis(answers))
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path, **password), transport=fake)
    assert failed and message in result["msg"], result
    assert "exception" in result and "s3cret" not in result["msg"]
    assert list(tmp_path.iterdir()) == []
    if password:  # the password went to the environment of redis-cli, never its command line
        assert fake.calls[0].secret_env == {"REDISCLI_AUTH": "s3cret"}
        assert "s3cret" not in fake.calls[0].text


def test_save_timeout(monkeypatch, tmp_path):
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path, save_timeout=1),
                              transport=FakeTransport(FakeRedis(saves_after=None)))
    assert failed and "did not finish within 1 s" in result["msg"]
    assert list(tmp_path.iterdir()) == []


def test_save_mode_save_failing(monkeypatch, tmp_path):
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path, save_mode="save"),
                              transport=FakeTransport(FakeRedis({"SAVE": "ERR read-only"})))
    assert failed and "SAVE failed" in result["msg"]


def test_cat_failing_carries_rc_and_stderr(monkeypatch, tmp_path):
    redis = FakeRedis(rdb_reply=Reply(b"", stderr=b"cat: /data/dump.rdb: Permission denied", exit_code=1))
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path), transport=FakeTransport(redis))
    assert failed and "failed with status 1" in result["msg"]
    assert result["rc"] == 1 and "Permission denied" in result["stderr_excerpt"]
    assert result["dest"] == str(tmp_path / "redis.rdb")
    assert list(tmp_path.iterdir()) == []


def test_crc_mismatch_keeps_no_file(monkeypatch, tmp_path):
    redis = FakeRedis(rdb_reply=Reply(rdb(crc_ok=False)))
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path), transport=FakeTransport(redis))
    assert failed and "CRC64" in result["msg"], result["msg"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reply, message", [
    (Reply(rdb(), cut_at=10), "broke off"),
    (Reply(rdb(), still_running=True), "still running"),
    (Reply(refuse="403 Forbidden"), "refused"),
])
def test_broken_streams_keep_no_file(monkeypatch, tmp_path, reply, message):
    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path), transport=FakeTransport(FakeRedis(rdb_reply=reply)))
    assert failed and message in result["msg"], result["msg"]
    assert list(tmp_path.iterdir()) == []


def test_slow_answers_count_against_save_timeout(monkeypatch, tmp_path):
    """Redis that answers each poll only after a while (a loaded server): the wait still ends at save_timeout."""
    redis = FakeRedis(saves_after=None)

    def slow(call):
        reply = redis(call)
        if "INFO persistence" in call.argv:
            reply.hang = 0.4
        return reply

    result, failed = run_main(monkeypatch, redis_dump, args(tmp_path, save_timeout=1), transport=FakeTransport(slow))
    assert failed and "did not finish within 1 s" in result["msg"]
    assert list(tmp_path.iterdir()) == []
