# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""postgres_dump's main() against a scripted database container: exec and the transport's dump helper."""

from __future__ import annotations

import json

import pytest

from fake_transport import FakeTransport, Reply, run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import HelperUnavailable, TransportError
from ansible_collections.authentik_ops.backup.plugins.module_utils._pg_helper import HelperOutcome, HelperPlan
from ansible_collections.authentik_ops.backup.plugins.modules import postgres_dump

DUMP = (b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE authentik;\n\\connect authentik\n"
        b"--\n-- PostgreSQL database cluster dump complete\n--\n\n")
INFO = dict(version="16.4", user="authentik", superuser=True, databases=["authentik", "postgres", "template1"])


def database(dump=None, probe=None):
    """The database container: psql answers the probe, pg_dumpall streams the dump."""
    def handler(call):
        if "PROBE" in call.text or "json_build_object" in call.text:
            return probe or Reply(json.dumps(INFO) + "\n")
        if "pg_dumpall" in call.text:
            return dump or Reply(DUMP)
        raise AssertionError(f"unexpected command {call.text}")
    return handler


class FakeHelper:
    """The dump helper capability as a transport offers it; scripted probe and dump."""

    def __init__(self, probe_error=None, data=DUMP, outcome=None, dump_error=None):
        self.probe_error = probe_error
        self.data = data
        self.outcome = outcome or HelperOutcome(0, b"")
        self.dump_error = dump_error
        self.dumps = 0

    def probe(self, params, secret_env):
        del params, secret_env
        if self.probe_error:
            raise self.probe_error
        return HelperPlan("authentik", "127.0.0.1", 5432, "pw")

    def dump(self, plan, extra_args, workdir, on_data, run_owner=None):
        del plan, extra_args, workdir
        self.dumps += 1
        self.run_owner = run_owner
        if self.dump_error:
            raise self.dump_error
        on_data(self.data)
        return self.outcome


def args(tmp_path, **more):
    return dict(dict(container="db", dest=str(tmp_path / "postgres.sql"), compression="none"), **more)


def test_exec_dump(monkeypatch, tmp_path):
    fake = FakeTransport(database())
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path, password="pw"), transport=fake)
    assert not failed, result
    assert (tmp_path / "postgres.sql").read_bytes() == DUMP
    assert result["method"] == "exec" and result["databases"] == ["authentik"] and result["size"] == len(DUMP)
    dump_call = [c for c in fake.calls if "pg_dumpall" in c.text][0]
    assert dump_call.secret_env == {"PGPASSWORD": "pw"} and "pw" not in dump_call.argv
    assert "--exclude-database=postgres" in dump_call.argv and "--exclude-database=template0" not in dump_call.argv


def test_helper_is_used_when_the_transport_offers_it(monkeypatch, tmp_path):
    helper = FakeHelper()
    fake = FakeTransport(database(dump=Reply(b"not reached")), helper=helper)
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), transport=fake)
    assert not failed, result
    assert result["method"] == "helper" and result["method_note"] == "" and helper.dumps == 1
    assert not any("pg_dumpall" in c.text for c in fake.calls)
    assert (tmp_path / "postgres.sql").read_bytes() == DUMP


@pytest.mark.parametrize("helper, note", [
    (FakeHelper(probe_error=HelperUnavailable("no TCP")), "no TCP; dumped through exec"),
    (FakeHelper(dump_error=HelperUnavailable("did not open its FIFO within 30 s")), "did not open its FIFO"),
    (FakeHelper(data=b"", outcome=HelperOutcome(1, b"FATAL: no pg_hba entry")), "before writing anything"),
])
def test_auto_falls_back_to_exec_before_the_first_byte(monkeypatch, tmp_path, helper, note):
    fake = FakeTransport(database(), helper=helper)
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), transport=fake)
    assert not failed, result
    assert result["method"] == "exec" and note in result["method_note"]
    assert (tmp_path / "postgres.sql").read_bytes() == DUMP


def test_helper_failing_after_its_first_byte_fails_the_dump(monkeypatch, tmp_path):
    helper = FakeHelper(data=DUMP[:20], outcome=HelperOutcome(None, b"", problem="the helper was killed"))
    fake = FakeTransport(database(), helper=helper)
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), transport=fake)
    assert failed and "broke off: the helper was killed" in result["msg"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("helper, message", [
    (None, "method=helper needs platform=docker"),
    (FakeHelper(probe_error=HelperUnavailable("no TCP")), "method=helper cannot be used"),
    (FakeHelper(dump_error=HelperUnavailable("no FIFO")), "method=helper failed"),
])
def test_method_helper_never_falls_back(monkeypatch, tmp_path, helper, message):
    fake = FakeTransport(database(), helper=helper)
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path, method="helper"), transport=fake)
    assert failed and message in result["msg"]
    assert not any("pg_dumpall" in c.text for c in fake.calls)
    assert list(tmp_path.iterdir()) == []


def test_check_mode_reports_the_method_and_writes_nothing(monkeypatch, tmp_path):
    helper = FakeHelper()
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), check_mode=True,
                              transport=FakeTransport(database(), helper=helper))
    assert not failed and result["plan"]["method"] == "helper" and helper.dumps == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reply, message, rc", [
    (Reply(DUMP[:-30]), "lacks pg_dumpall's completion trailer", None),
    (Reply(DUMP, cut_at=40), "broke off", None),
    (Reply(DUMP, still_running=True), "still running", None),
    (Reply(b"", stderr=b'pg_dumpall: error: permission denied', exit_code=1), "exited with status 1", 1),
])
def test_failed_dumps_leave_no_file(monkeypatch, tmp_path, reply, message, rc):
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path, method="exec"),
                              transport=FakeTransport(database(dump=reply)))
    assert failed and message in result["msg"], result["msg"]
    assert result.get("rc") == rc and result["dest"] == str(tmp_path / "postgres.sql")
    assert list(tmp_path.iterdir()) == []


def test_probe_failure_names_rc_and_stderr(monkeypatch, tmp_path):
    probe = Reply(b"", stderr=b"psql: error: FATAL: password authentication failed", exit_code=2)
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), transport=FakeTransport(database(probe=probe)))
    assert failed and "cannot query PostgreSQL" in result["msg"] and result["rc"] == 2
    assert "password authentication failed" in result["stderr_excerpt"]


def test_unreachable_target_fails_before_anything(monkeypatch, tmp_path):
    fake = FakeTransport(database(), running=False)
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), transport=fake)
    assert failed and "not running" in result["msg"] and fake.calls == []


def test_existing_dest_is_refused(monkeypatch, tmp_path):
    (tmp_path / "postgres.sql").write_text("keep")
    fake = FakeTransport(database())
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path), transport=fake)
    assert failed and "already exists" in result["msg"] and fake.calls == []
    assert (tmp_path / "postgres.sql").read_text() == "keep"


def test_transport_error_during_the_helper_dump_after_bytes(monkeypatch, tmp_path):
    helper = FakeHelper(dump_error=TransportError("reading the helper's FIFO: EIO"))
    result, failed = run_main(monkeypatch, postgres_dump, args(tmp_path),
                              transport=FakeTransport(database(), helper=helper))
    assert failed and "EIO" in result["msg"]
    assert list(tmp_path.iterdir()) == []
