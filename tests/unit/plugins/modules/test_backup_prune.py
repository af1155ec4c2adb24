# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Retention decisions of backup_prune (pure functions), its file-system helpers, and backup_lock's staleness rules."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import socket
import subprocess
import sys

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _proc, _sets
from ansible_collections.authentik_ops.backup.plugins.modules import backup_lock, backup_prune

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def name(days_ago, hours=0, prefix="authentik", suffix=""):
    moment = NOW - datetime.timedelta(days=days_ago, hours=hours)
    return f"{prefix}-{moment.strftime('%Y%m%dT%H%M%SZ')}{suffix}"


@pytest.mark.parametrize("text,expected", [
    ("authentik-20261130T120000Z", datetime.datetime(2026, 11, 30, 12, tzinfo=UTC)),
    ("authentik-20261130T120000Z-2", datetime.datetime(2026, 11, 30, 12, tzinfo=UTC)),
    ("authentik-manual", None),
    ("other-20261130T120000Z", None),
    ("authentik-20261130T120000Z.partial", None),
    ("authentik-20261399T120000Z", None),  # not a date
    ("authentik-x-20261130T120000Z", None),
])
def test_set_time(text, expected):
    assert backup_prune.set_time(text, "authentik") == expected


def test_set_order_puts_collision_counters_after_the_plain_name():
    names = ["a-20261130T120000Z-10", "a-20261130T120000Z-2", "a-20261130T120000Z", "a-20261129T120000Z"]
    assert sorted(names, key=lambda n: _sets.set_order(n, "a")) == [
        "a-20261129T120000Z", "a-20261130T120000Z", "a-20261130T120000Z-2", "a-20261130T120000Z-10"]


SETS = [name(d) for d in (40, 20, 10, 3, 2, 1, 0)]


@pytest.mark.parametrize("keep_last,keep_days,removed", [
    (0, 0, []),                               # no policy: everything stays
    (3, 0, SETS[:4]),                         # the newest 3
    (1, 0, SETS[:6]),                         # only the newest
    (0, 5, SETS[:3]),                         # younger than 5 days
    (0, 0.5, SETS[:6]),                       # nothing but today's set, which is also the newest
    (2, 15, SETS[:2]),                        # either rule keeps: 15 days keeps 5, more than keep_last's 2
    (6, 5, SETS[:1]),                         # keep_last keeps more than keep_days
    (100, 100, []),
])
def test_plan_retention(keep_last, keep_days, removed):
    kept, gone = backup_prune.plan_retention(SETS, "authentik", keep_last, keep_days, now=NOW)
    assert gone == removed
    assert sorted(kept) == sorted(n for n in SETS if n not in removed)
    assert "newest" in kept[SETS[-1]]


def test_newest_is_kept_even_when_every_rule_would_drop_it():
    old = [name(400), name(300)]
    kept, gone = backup_prune.plan_retention(old, "authentik", 0, 1, now=NOW)
    assert gone == [old[0]] and kept == {old[1]: ["newest"]}


def test_foreign_names_are_neither_kept_nor_removed():
    names = SETS + ["authentik-manual", "other-20200101T000000Z"]
    kept, gone = backup_prune.plan_retention(names, "authentik", 1, 0, now=NOW)
    assert "authentik-manual" not in kept and "authentik-manual" not in gone
    assert "other-20200101T000000Z" not in kept and "other-20200101T000000Z" not in gone


def test_unsorted_input_and_counters():
    names = [name(0, suffix="-2"), name(5), name(0)]
    kept, gone = backup_prune.plan_retention(names, "authentik", 2, 0, now=NOW)
    assert gone == [name(5)] and list(kept) == [name(0), name(0, suffix="-2")]
    assert kept[name(0, suffix="-2")] == ["newest", "keep_last"]


def test_protected_set_is_kept():
    kept, gone = backup_prune.plan_retention(SETS, "authentik", 1, 0, now=NOW, protected=[SETS[2]])
    assert SETS[2] not in gone and kept[SETS[2]] == ["protected"]


def test_empty():
    assert backup_prune.plan_retention([], "authentik", 3, 3, now=NOW) == ({}, [])


def test_classify_incomplete():
    info = backup_prune.classify_incomplete(["a", "b"], {"a": 10.0, "b": 90000.0}, 86400)
    assert info == [dict(name="a", age=10, stale=False), dict(name="b", age=90000, stale=True)]
    assert not any(i["stale"] for i in backup_prune.classify_incomplete(["b"], {"b": 1e9}, 0))


def test_latest_after():
    assert backup_prune.latest_after(["x", "y"]) == "y"
    assert backup_prune.latest_after([]) is None


# --- file system helpers ------------------------------------------------------------------------------------------

def _set(dest, set_name, complete=True):
    path = dest / set_name
    path.mkdir()
    (path / "postgres.sql").write_text("x")
    if complete:
        (path / "manifest.json").write_text("{}")
    return path


def test_scan_and_remove(tmp_path):
    complete = [_set(tmp_path, name(2)).name, _set(tmp_path, name(1)).name]
    partial = _set(tmp_path, name(0), complete=False).name
    _set(tmp_path, "authentik-manual")
    (tmp_path / name(5)).write_text("a file, not a set")
    (tmp_path / f".{name(9)}.deleting-abcd").mkdir()
    assert backup_prune.scan(str(tmp_path), "authentik") == (complete, [partial], [f".{name(9)}.deleting-abcd"])
    backup_prune.remove_set(str(tmp_path), complete[0])
    assert not (tmp_path / complete[0]).exists() and not list(tmp_path.glob(f".{complete[0]}*"))


def test_point_and_read_latest(tmp_path):
    assert backup_prune.read_latest(str(tmp_path)) is None
    backup_prune.point_latest(str(tmp_path), "authentik-20261130T120000Z")
    assert backup_prune.read_latest(str(tmp_path)) == "authentik-20261130T120000Z"
    backup_prune.point_latest(str(tmp_path), "authentik-20261201T120000Z")
    assert os.readlink(tmp_path / "latest") == "authentik-20261201T120000Z"
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").mkdir()
    with pytest.raises(OSError, match="not a symlink"):
        backup_prune.read_latest(str(tmp_path))


def test_read_lock_and_the_sets_it_protects(tmp_path):
    assert _sets.read_lock(str(tmp_path)) is None
    assert backup_prune.protected_by_lock(None) == []
    (tmp_path / ".lock").write_text(json.dumps({"run_id": "abc", "pid": 1, "protect": ["authentik-x", 3]}))
    assert _sets.read_lock(str(tmp_path))["run_id"] == "abc"
    assert backup_prune.protected_by_lock(_sets.read_lock(str(tmp_path))) == ["authentik-x"]
    (tmp_path / ".lock").write_text("")
    assert _sets.read_lock(str(tmp_path)) == {}
    assert backup_prune.protected_by_lock({"protect": "authentik-x"}) == []


# --- backup_lock: when is a lock left by a dead run ---------------------------------------------------------------

def _dead_pid():
    return int(subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout)


def _record(pid, **more):
    return dict(dict(run_id="r", pid=pid, via="ansible-playbook", confirmed=True, host=socket.gethostname(),
                     started_at=_sets.iso(NOW)), **dict(_proc.identity(pid), **more))


def test_stale_reason():
    host, now = socket.gethostname(), NOW.timestamp()
    alive = _record(os.getpid())
    assert backup_lock.stale_reason(alive, host, now, 86400) is None
    dead = dict(alive, pid=_dead_pid(), pid_start=None)
    assert "is gone" in backup_lock.stale_reason(dead, host, now, 86400)
    # a reused pid: same number, another start time
    assert "is gone" in backup_lock.stale_reason(dict(alive, pid_start=alive["pid_start"] + 1), host, now, 86400)
    # another host's process cannot be checked: only the age counts
    assert backup_lock.stale_reason(dict(dead, host="elsewhere"), host, now, 86400) is None
    old = dict(alive, host="elsewhere", started_at=_sets.iso(NOW - datetime.timedelta(days=2)))
    assert "more than stale_age" in backup_lock.stale_reason(old, host, now, 86400)
    assert backup_lock.stale_reason(old, host, now, 0) is None
    # no pid recorded (remote run): only the age
    assert backup_lock.stale_reason(dict(alive, pid=None), host, now, 86400) is None


def test_a_process_of_another_pid_namespace_or_boot_is_not_judged():
    """Two runners in containers that share a host name see each other's pids as absent (or as someone else):
    a lock of another pid namespace, or of a record that does not say its namespace, is ended by age only."""
    host, now = socket.gethostname(), NOW.timestamp()
    dead = _record(_dead_pid(), pid_start=None)
    assert "is gone" in backup_lock.stale_reason(dead, host, now, 86400)
    assert backup_lock.stale_reason(dict(dead, pid_ns="pid:[1]"), host, now, 86400) is None
    assert backup_lock.stale_reason(dict(dead, pid_ns=None, boot_id=None), host, now, 86400) is None
    # an unconfirmed SSH session (the connection was not shared between the run's tasks) is not followed
    assert backup_lock.stale_reason(dict(dead, via="ssh", confirmed=False), host, now, 86400) is None
    assert "SSH session" in backup_lock.stale_reason(dict(dead, via="ssh", confirmed=True), host, now, 86400)
    # another boot of this host: dead when the lock is older than the boot, else maybe another machine's
    booted = _proc.boot_time()
    before = _sets.iso(datetime.datetime.fromtimestamp(booted - 60, datetime.timezone.utc))
    other_boot = dict(dead, boot_id="00000000-0000-0000-0000-000000000000", started_at=before)
    assert "restarted" in backup_lock.stale_reason(other_boot, host, booted + 10, 0)
    after = _sets.iso(datetime.datetime.fromtimestamp(booted + 5, datetime.timezone.utc))
    assert backup_lock.stale_reason(dict(other_boot, started_at=after), host, booted + 10, 0) is None


def test_unreadable_lock_is_stale_only_when_old():
    now = NOW.timestamp()
    assert backup_lock.stale_reason({"_mtime": now - 5}, "h", now, 0) is None
    assert "unreadable" in backup_lock.stale_reason({"_mtime": now - 600}, "h", now, 0)


def _ancestry(outer_name):
    """Runs a chain ``<outer_name> -> a forked copy of it (same command line) -> python: run_process()`` and returns
    (pid of the outer process, pid of its copy, the pid and via that run_process() found in the innermost one)."""
    collections = next(p for p in sys.path if p.endswith(".collections") or p.endswith("ansible_collections/.."))
    check = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from ansible_collections.authentik_ops.backup.plugins.module_utils import _proc; "
             "print(*_proc.run_process())")
    # bash shows outer_name as its command line (as sshd's session process and ansible-playbook do); "; true"
    # keeps each bash from exec'ing its last command, so the chain stays three processes deep
    inner = f'echo $$; {sys.executable} -c "$1" "$2"; true'
    outer = f'echo $$; (exec -a "$0" bash -c {shlex.quote(inner)} "$0" "$1" "$2"); true'
    out = subprocess.run(["bash", "-c", f'exec -a "$0" bash -c {shlex.quote(outer)} "$0" "$1" "$2"',
                          outer_name, check, collections], capture_output=True, text=True, check=True)
    first, second, pid, via = out.stdout.split()
    return int(first), int(second), int(pid), via


def test_run_process_finds_the_topmost_ansible_playbook():
    """ansible-playbook -> its forked worker (same command line) -> the module: the lock follows the topmost one."""
    outer, _copy, pid, via = _ancestry("ansible-playbook")
    assert (pid, via) == (outer, "ansible-playbook")
    # without an ansible-playbook ancestor or an SSH session there is no run process to follow
    assert _ancestry("python3")[2:] == (0, "None")


def test_run_process_finds_the_ssh_session():
    """A module started over SSH: the nearest sshd session process (sshd: user@notty) is the run's; sshd's listener
    and privileged monitor ("sshd: user [priv]") are not."""
    _outer, nearest, pid, via = _ancestry("sshd: tester@notty")
    assert (pid, via) == (nearest, "ssh")
    assert _ancestry("sshd: tester [priv]")[2:] == (0, "None")
    assert _proc.SSH_SESSION.match("sshd: root@notty ")
    assert _proc.SSH_SESSION.match("sshd-session: ansible@notty")
    assert not _proc.SSH_SESSION.match("sshd: root [priv]")
    assert not _proc.SSH_SESSION.match("sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups")
