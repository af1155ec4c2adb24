# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""state=recovered: the journals of runs that died half-way are finished (temporary databases dropped, or a swap
that committed recorded), on a server of names; the free-space check before a staged load, on a scripted target."""

from __future__ import annotations

import json
import os
import sys

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _pgstage
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RestoreError
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgswap import (
    disk_space,
    read_journal,
    space_needed,
    write_journal,
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "modules"))
from fake_transport import FakeTransport, Reply  # noqa: E402  pylint: disable=wrong-import-position

TARGET = {"platform": "docker", "container": "authentik-postgresql-1", "id": "new", "image": "postgres:16"}


class Server:
    """The databases of a server, by name; drop_databases and existing_databases act on it."""

    def __init__(self, names):
        self.names = set(names)
        self.dropped = []

    def existing(self, _transport, _params, names):
        return {name: True for name in names if name in self.names}

    def drop(self, _transport, _params, names):
        self.dropped += names
        self.names -= set(names)


class Module:
    def __init__(self, check_mode=False):
        self.check_mode = check_mode
        self.warnings = []

    def warn(self, text):
        self.warnings.append(text)


@pytest.fixture
def server(monkeypatch):
    def make(*names):
        fake = Server(names)
        monkeypatch.setattr(_pgstage, "existing_databases", fake.existing)
        monkeypatch.setattr(_pgstage, "drop_databases", fake.drop)
        return fake
    return make


def journal(path, run_id, phase, target=None, updated=None):
    record = dict(run_id=run_id, phase=phase, target=dict(TARGET, id="old") if target is None else target,
                  mapping={"authentik": f"akr_{run_id}_1", "other": f"akr_{run_id}_2"})
    record = write_journal(path, record)
    if updated:  # write_journal stamps the time; the order of the runs is by it
        with open(f"{path}/{run_id}.json", "w", encoding="utf-8") as handle:
            json.dump(dict(record, updated=updated), handle)


def recover(path, check_mode=False):
    return _pgstage.recovered(Module(check_mode), {"journal_dir": path}, None, TARGET, {})


def test_a_run_killed_while_staging_is_discarded(tmp_path, server):
    path = str(tmp_path)
    fake = server("authentik", "other", "akr_k1_1")
    journal(path, "k1", "staging")
    result = recover(path)
    assert result["changed"] and result["recovered"] == [
        {"run_id": "k1", "was": "staging", "phase": "discarded", "dropped": ["akr_k1_1"]}]
    # every temporary name of the run is dropped (IF EXISTS), also one a load still running might create
    assert fake.dropped == ["akr_k1_1", "akr_k1_2"] and fake.names == {"authentik", "other"}
    record = read_journal(path, "k1")
    assert record["phase"] == "discarded" and record["recovered"] is True


def test_a_staged_run_killed_before_the_swap_is_discarded(tmp_path, server):
    path = str(tmp_path)
    fake = server("authentik", "other", "akr_s1_1", "akr_s1_2")
    journal(path, "s1", "staged")
    assert recover(path)["recovered"][0]["phase"] == "discarded"
    assert fake.names == {"authentik", "other"} and read_journal(path, "s1")["phase"] == "discarded"


def test_a_swap_that_committed_before_its_journal_is_recorded_as_swapped(tmp_path, server):
    path = str(tmp_path)
    fake = server("authentik", "other", "akp_w1_1", "akp_w1_2")
    journal(path, "w1", "staged")
    result = recover(path)
    assert result["recovered"] == [{"run_id": "w1", "was": "staged", "phase": "swapped",
                                    "previous": {"authentik": "akp_w1_1", "other": "akp_w1_2"}}]
    assert not fake.dropped
    record = read_journal(path, "w1")
    assert record["phase"] == "swapped" and record["previous"] == {"authentik": "akp_w1_1", "other": "akp_w1_2"}


def test_a_staging_run_without_temporaries_and_kept_names_is_not_taken_for_a_swap(tmp_path, server):
    """Kept names of the run's id prove a swap only after staging ended (phase staged)."""
    path = str(tmp_path)
    fake = server("authentik", "akp_x1_1")
    journal(path, "x1", "staging")
    assert recover(path)["recovered"][0]["phase"] == "discarded"
    assert "akp_x1_1" in fake.names


def test_check_mode_changes_nothing(tmp_path, server):
    path = str(tmp_path)
    fake = server("authentik", "akr_c1_1")
    journal(path, "c1", "staging")
    result = recover(path, check_mode=True)
    assert result["changed"] and result["plan"]["runs"][0]["dropped"] == ["akr_c1_1"]
    assert not fake.dropped and read_journal(path, "c1")["phase"] == "staging"


def test_finished_runs_and_other_targets_are_left_alone(tmp_path, server):
    path = str(tmp_path)
    fake = server("authentik", "akr_o1_1", "akr_a1_1", "akr_b1_1")
    for run_id, phase in (("d1", "discarded"), ("s2", "swapped"), ("r1", "rolled_back"), ("c2", "cleaned")):
        journal(path, run_id, phase)
    journal(path, "o1", "staging", target={"platform": "docker", "container": "another-postgresql-1"})
    journal(path, "b1", "staging", updated="2026-01-02T00:00:00Z")
    journal(path, "a1", "staging", updated="2026-01-01T00:00:00Z")
    result = recover(path)
    assert [step["run_id"] for step in result["recovered"]] == ["a1", "b1"]  # oldest first
    assert result["other_targets"] == ["o1"] and "akr_o1_1" in fake.names
    assert read_journal(path, "o1")["phase"] == "staging"
    assert {run_id: read_journal(path, run_id)["phase"] for run_id in ("d1", "s2", "r1", "c2")} == {
        "d1": "discarded", "s2": "swapped", "r1": "rolled_back", "c2": "cleaned"}


def test_nothing_unfinished_is_no_change(tmp_path, server):
    server("authentik")
    result = recover(str(tmp_path / "missing"))
    assert result == {"changed": False, "state": "recovered", "recovered": [], "other_targets": [],
                      "target": TARGET}


# --- the free space before a staged load --------------------------------------------------------------------------

MB = 1 << 20
DF = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sdb1 {size} {used} {free} 80% /var/lib/postgresql/data\n"


def target(free_kb=None, live=0, max_wal=1024 * MB, df=None):
    """A database server whose data directory has ``free_kb`` KiB free (df's answer, or ``df`` as it is)."""
    def handler(call):
        if call.argv[0] == "df":
            if df is not None:
                return df
            return Reply(DF.format(size=free_kb * 2, used=free_kb, free=free_kb))
        return Reply(json.dumps({"dir": "/var/lib/postgresql/data", "max_wal": max_wal, "live": live}) + "\n")
    return FakeTransport(handler)


@pytest.mark.parametrize("raw, live, max_wal, needed", [
    (100 * MB, 0, 1024 * MB, 200 * MB),  # a copy of the dump and as much write-ahead log
    (100 * MB, 300 * MB, 1024 * MB, 600 * MB),  # the live databases are larger than the dump: their size counts
    (4096 * MB, 0, 1024 * MB, 5120 * MB),  # the write-ahead log is recycled at max_wal_size
])
def test_space_needed(raw, live, max_wal, needed):
    assert space_needed(raw, {"live": live, "max_wal": max_wal}) == needed


def test_disk_space_reads_the_data_directory_and_df():
    transport = target(free_kb=40 * 1024, live=5 * MB)
    space = disk_space(transport, {}, ["authentik", "x'y"])
    assert space == {"dir": "/var/lib/postgresql/data", "max_wal": 1024 * MB, "live": 5 * MB, "free": 40 * MB,
                     "problem": None}
    sql, df = transport.calls
    assert "current_setting('data_directory')" in sql.stdin.decode() and "'x''y'" in sql.stdin.decode()
    assert df.argv == ["df", "-P", "-k", "/var/lib/postgresql/data"]


def test_a_load_that_does_not_fit_is_refused_before_anything_is_written():
    module = Module()
    with pytest.raises(RestoreError) as refused:
        _pgstage.room_for(module, {}, target(free_kb=40 * 1024), 60 * MB, ["authentik"])
    assert "not enough free disk space on the database server" in refused.value.msg
    assert "/var/lib/postgresql/data has 40 MB free" in refused.value.msg and "needs about 120 MB" in refused.value.msg
    assert "nothing was restored or changed" in refused.value.msg
    assert refused.value.fields["space"] == {"dir": "/var/lib/postgresql/data", "free": 40 * MB,
                                             "needed": 120 * MB, "checked": True}


def test_a_load_that_fits_and_the_switch_off():
    assert _pgstage.room_for(Module(), {}, target(free_kb=200 * 1024), 60 * MB, ["authentik"])["checked"]
    skipped = _pgstage.room_for(Module(), {"space_check": False}, target(free_kb=1), 60 * MB, ["authentik"])
    assert skipped["checked"] is False and skipped["free"] == 1024


@pytest.mark.parametrize("df", [Reply(b"", b"sh: df: not found", exit_code=127), Reply(b"garbage\n")])
def test_without_an_answer_from_df_the_check_is_skipped_with_a_warning(df):
    module = Module()
    space = _pgstage.room_for(module, {}, target(df=df), 60 * MB, ["authentik"])
    assert space["free"] is None and space["checked"] is False
    assert module.warnings and "the free space of the database server was not checked" in module.warnings[0]
