# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""main() of the modules that work on the backup destination (backup_set, backup_prune, backup_lock,
backup_verify, backup_upload), on real directories: each refusal fails the task and leaves the destination as it
was."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from fake_transport import run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils import _proc
from ansible_collections.authentik_ops.backup.plugins.modules import (
    backup_lock,
    backup_prune,
    backup_set,
    backup_upload,
    backup_verify,
)

SET = "authentik-20261130T020000Z"


def new_set(dest, name=SET, files=(("postgres.sql", b"dump"),), complete=False):
    path = dest / name
    path.mkdir(parents=True)
    for file_name, data in files:
        (path / file_name).write_bytes(data)
    if complete:
        (path / "manifest.json").write_text(json.dumps({"format": 1, "files": []}))
    return path


def part(path, name="postgres.sql", **more):
    data = (path / name).read_bytes()
    return dict(dict(part="postgres", dest=str(path / name), size=len(data), sha256=hashlib.sha256(data).hexdigest()),
                **more)


def complete(monkeypatch, dest, parts, **more):
    return run_main(monkeypatch, backup_set, dict(dict(state="complete", dest=str(dest), name=SET, parts=parts),
                                                  **more))


# --- backup_set ---------------------------------------------------------------------------------------------------

def test_complete_writes_the_manifest_and_moves_latest(monkeypatch, tmp_path):
    path = new_set(tmp_path)
    result, failed = complete(monkeypatch, tmp_path, [part(path, changed=True, invocation={}, databases=["a"])])
    assert not failed, result
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["files"][0]["details"] == {"databases": ["a"]}  # result noise left out
    assert os.readlink(tmp_path / "latest") == SET and result["latest"] == SET


def test_sha_mismatch_is_refused(monkeypatch, tmp_path):
    path = new_set(tmp_path)
    result, failed = complete(monkeypatch, tmp_path, [part(path, sha256="0" * 64)])
    assert failed and "the file changed after it was written" in result["msg"]
    assert not (path / "manifest.json").exists() and not (tmp_path / "latest").exists()


def test_size_mismatch_is_refused(monkeypatch, tmp_path):
    path = new_set(tmp_path)
    result, failed = complete(monkeypatch, tmp_path, [part(path, size=1)])
    assert failed and "the dump reported 1" in result["msg"] and not (path / "manifest.json").exists()


def test_leftover_partial_file_is_refused(monkeypatch, tmp_path):
    path = new_set(tmp_path, files=(("postgres.sql", b"dump"), (".redis.rdb.x1.partial", b"half")))
    result, failed = complete(monkeypatch, tmp_path, [part(path)])
    assert failed and "unfinished files" in result["msg"] and not (path / "manifest.json").exists()


def test_already_complete_is_refused(monkeypatch, tmp_path):
    path = new_set(tmp_path, complete=True)
    before = (path / "manifest.json").read_text()
    result, failed = complete(monkeypatch, tmp_path, [part(path)])
    assert failed and "already complete" in result["msg"] and (path / "manifest.json").read_text() == before


def test_part_outside_the_set_is_refused(monkeypatch, tmp_path):
    path = new_set(tmp_path)
    (tmp_path / "elsewhere.sql").write_bytes(b"dump")
    result, failed = complete(monkeypatch, tmp_path, [dict(part(path), dest=str(tmp_path / "elsewhere.sql"))])
    assert failed and "is not inside the set" in result["msg"] and not (path / "manifest.json").exists()


def test_missing_part_file_is_refused(monkeypatch, tmp_path):
    path = new_set(tmp_path)
    entry = part(path)
    (path / "postgres.sql").unlink()
    result, failed = complete(monkeypatch, tmp_path, [entry])
    assert failed and "is missing; the set is incomplete" in result["msg"]


def test_latest_that_is_not_a_symlink_is_never_replaced(monkeypatch, tmp_path):
    path = new_set(tmp_path)
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "keep").write_text("mine")
    result, failed = complete(monkeypatch, tmp_path, [part(path)])
    assert failed and "is not a symlink" in result["msg"]
    assert (tmp_path / "latest" / "keep").read_text() == "mine"


def test_present_and_absent(monkeypatch, tmp_path):
    result, failed = run_main(monkeypatch, backup_set, dict(dest=str(tmp_path / "d")))
    assert not failed and os.path.isdir(result["path"]) and oct(os.stat(result["path"]).st_mode & 0o777) == "0o700"
    name = result["name"]
    result, failed = run_main(monkeypatch, backup_set, dict(state="absent", dest=str(tmp_path / "d"), name=name))
    assert not failed and result["changed"] and not (tmp_path / "d" / name).exists()
    complete_set = new_set(tmp_path / "d", complete=True)
    result, failed = run_main(monkeypatch, backup_set, dict(state="absent", dest=str(tmp_path / "d"), name=SET))
    assert failed and "never removes a complete set" in result["msg"] and complete_set.exists()


@pytest.mark.parametrize("more, message", [
    (dict(prefix="../x"), "prefix '../x'"),
    (dict(name="a/b"), "name 'a/b'"),
])
def test_bad_names(monkeypatch, tmp_path, more, message):
    result, failed = run_main(monkeypatch, backup_set, dict(dest=str(tmp_path), **more))
    assert failed and message in result["msg"] and list(tmp_path.iterdir()) == []


# --- backup_prune -------------------------------------------------------------------------------------------------

def old(path, seconds):
    stamp = time.time() - seconds
    for entry in [path] + list(path.iterdir()):
        os.utime(entry, (stamp, stamp))


def prune(monkeypatch, dest, check_mode=False, **more):
    return run_main(monkeypatch, backup_prune, dict(dict(dest=str(dest), keep_last=1), **more), check_mode=check_mode)


def test_stale_incomplete_set_is_removed_only_on_request(monkeypatch, tmp_path):
    new_set(tmp_path, "authentik-20261201T020000Z", complete=True)
    stale = new_set(tmp_path, "authentik-20261101T020000Z")
    fresh = new_set(tmp_path, "authentik-20261202T020000Z")
    old(stale, 2 * 86400)
    result, failed = prune(monkeypatch, tmp_path)
    assert not failed and stale.exists() and any(stale.name in w for w in result["warnings"])
    result, failed = prune(monkeypatch, tmp_path, check_mode=True, remove_stale_incomplete=True)
    assert not failed and result["changed"] and stale.exists()
    result, failed = prune(monkeypatch, tmp_path, remove_stale_incomplete=True)
    assert not failed and result["changed"]
    assert not stale.exists() and fresh.exists()  # only the stale one
    assert not [p for p in tmp_path.iterdir() if ".deleting-" in p.name]
    assert [i["removed"] for i in result["incomplete"]] == [True, False]


def test_stale_incomplete_set_is_kept_under_another_runs_lock(monkeypatch, tmp_path):
    new_set(tmp_path, "authentik-20261201T020000Z", complete=True)
    stale = new_set(tmp_path, "authentik-20261101T020000Z")
    old(stale, 2 * 86400)
    (tmp_path / ".lock").write_text(json.dumps({"run_id": "other"}))
    result, failed = prune(monkeypatch, tmp_path, remove_stale_incomplete=True, run_id="mine")
    assert not failed and stale.exists() and "locked by run other" in result["warnings"][0]
    (tmp_path / ".lock").write_text(json.dumps({"run_id": "mine"}))
    result, failed = prune(monkeypatch, tmp_path, remove_stale_incomplete=True, run_id="mine")
    assert not failed and not stale.exists()


def test_prune_removes_old_sets_and_keeps_latest_on_a_complete_one(monkeypatch, tmp_path):
    first = new_set(tmp_path, "authentik-20261101T020000Z", complete=True)
    new_set(tmp_path, "authentik-20261201T020000Z", complete=True)
    os.symlink(first.name, tmp_path / "latest")
    result, failed = prune(monkeypatch, tmp_path)
    assert not failed and result["removed"] == [first.name] and not first.exists()
    assert os.readlink(tmp_path / "latest") == "authentik-20261201T020000Z" and result["latest_changed"]


def test_a_partial_set_never_becomes_latest(monkeypatch, tmp_path):
    full = new_set(tmp_path, "authentik-20261101T020000Z", complete=True)
    os.symlink(full.name, tmp_path / "latest")
    path = new_set(tmp_path)
    result, failed = complete(monkeypatch, tmp_path, [part(path)],
                              metadata=dict(partial=True, missing_parts=["data", "config"]))
    assert not failed and result["partial"] is True, result
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["partial"] is True and manifest["missing_parts"] == ["data", "config"]
    assert os.readlink(tmp_path / "latest") == full.name and result["latest"] == full.name


def test_partial_sets_are_neither_counted_nor_removed_by_retention(monkeypatch, tmp_path):
    full = new_set(tmp_path, "authentik-20261101T020000Z", complete=True)
    partial = []
    for day in ("20261102", "20261103"):
        path = new_set(tmp_path, f"authentik-{day}T020000Z")
        (path / "manifest.json").write_text(json.dumps({"format": 1, "files": [], "partial": True}))
        partial.append(path.name)
    os.symlink(partial[-1], tmp_path / "latest")  # left by an earlier release: moved to the full set
    result, failed = prune(monkeypatch, tmp_path)
    assert not failed and result["removed"] == [] and full.exists(), result
    assert result["partial"] == partial and all((tmp_path / name).exists() for name in partial)
    assert [k["name"] for k in result["kept"]] == [full.name]
    assert os.readlink(tmp_path / "latest") == full.name


def test_prune_refuses_a_latest_that_is_not_a_symlink(monkeypatch, tmp_path):
    first = new_set(tmp_path, "authentik-20261101T020000Z", complete=True)
    new_set(tmp_path, "authentik-20261201T020000Z", complete=True)
    (tmp_path / "latest").mkdir()
    result, failed = prune(monkeypatch, tmp_path)
    assert failed and "is not a symlink" in result["msg"] and first.exists()


# --- backup_lock --------------------------------------------------------------------------------------------------

def _dead_pid():
    return int(subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout)


def lock_args(dest, **more):
    return dict(dict(dest=str(dest), pid=0, timeout=0, poll_interval=0.1), **more)


def dead_lock(dest, run_id="dead"):
    pid = _dead_pid()
    record = dict(_proc.identity(pid), run_id=run_id, pid=pid, pid_start=None, via="ansible-playbook",
                  confirmed=True, host=socket.gethostname(), started_at="2026-11-30T02:00:00Z")
    dest.mkdir(exist_ok=True)
    (dest / ".lock").write_text(json.dumps(record))
    return record


def test_lock_of_a_dead_run_is_taken_over(monkeypatch, tmp_path):
    dead_lock(tmp_path)
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, stale_age=0))
    assert not failed and result["acquired"] and result["took_over"]["run_id"] == "dead"
    assert json.loads((tmp_path / ".lock").read_text())["run_id"] == result["run_id"]


def test_takeover_race_lost_to_a_run_that_replaced_the_lock(monkeypatch, tmp_path):
    """Between reading the dead run's lock and taking it over, another run replaced it: the takeover must not
    overwrite the new holder, and the run waits for it (here: fails at once, naming it)."""
    dead_lock(tmp_path)
    real = backup_lock.read_record
    calls = []

    def racing(path):
        calls.append(path)
        if len(calls) == 2:  # the look inside the guard: another run took the lock over in between
            (tmp_path / ".lock.new").write_text(json.dumps(dict(run_id="winner", pid=os.getpid(), pid_start=None,
                                                                host=socket.gethostname(),
                                                                started_at="2099-01-01T00:00:00Z")))
            os.replace(tmp_path / ".lock.new", tmp_path / ".lock")
        return real(path)

    monkeypatch.setattr(backup_lock, "read_record", racing)
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, stale_age=0))
    assert failed and "locked by run winner" in result["msg"]
    assert json.loads((tmp_path / ".lock").read_text())["run_id"] == "winner"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".takeover"))]


def test_takeover_waits_for_the_guard_of_another_run(monkeypatch, tmp_path):
    record = dead_lock(tmp_path)
    (tmp_path / ".lock.takeover").write_text("")  # another run is taking over right now
    locker = backup_lock.Locker(type("M", (), {"params": lock_args(tmp_path, run_id=None, stale_age=0,
                                                                   purpose="backup")})())
    stale = backup_lock.read_record(str(tmp_path / ".lock"))
    assert locker.take_over(str(tmp_path / "x.tmp"), b"{}", stale, time.time() + 0.3) is None
    assert json.loads((tmp_path / ".lock").read_text()) == record


def test_live_lock_is_left_alone(monkeypatch, tmp_path):
    (tmp_path / ".lock").write_text(json.dumps(dict(run_id="live", pid=os.getpid(), host=socket.gethostname(),
                                                    started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))))
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path))
    assert failed and "locked by run live" in result["msg"] and result["holder"]["run_id"] == "live"
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, state="absent", run_id="mine"))
    assert not failed and not result["released"] and (tmp_path / ".lock").exists()


def test_acquire_and_release(monkeypatch, tmp_path):
    dest = tmp_path / "new"
    result, failed = run_main(monkeypatch, backup_lock, lock_args(dest, run_id="r1"))
    assert not failed and result["acquired"] and result["created_dest"]
    result, failed = run_main(monkeypatch, backup_lock, lock_args(dest, run_id="r1"))
    assert not failed and not result["changed"] and not result["acquired"]
    result, failed = run_main(monkeypatch, backup_lock, lock_args(dest, state="absent", run_id="r1",
                                                                  remove_empty_dest=True))
    assert not failed and result["released"] and not dest.exists()


# --- backup_verify and backup_upload ------------------------------------------------------------------------------

def verified_set(dest):
    dump = (b"--\n-- PostgreSQL database cluster dump\n--\n\n"
            b"--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    path = new_set(dest, files=(("postgres.sql", dump),))
    entry = part(path)
    entry.update(name="postgres.sql", compression="none")
    entry.pop("dest")
    (path / "manifest.json").write_text(json.dumps({"format": 1, "files": [entry]}))
    os.symlink(path.name, dest / "latest")
    return path


def test_verify_passes_and_fails(monkeypatch, tmp_path):
    path = verified_set(tmp_path)
    result, failed = run_main(monkeypatch, backup_verify, dict(dest=str(tmp_path)))
    assert not failed and result["ok"] and result["set"] == SET
    (path / "postgres.sql").write_bytes(b"changed")
    result, failed = run_main(monkeypatch, backup_verify, dict(dest=str(tmp_path)))
    assert failed and "failed verification" in result["msg"] and result["ok"] is False
    result, failed = run_main(monkeypatch, backup_verify, dict(dest=str(tmp_path), fail_on_error=False))
    assert not failed and not result["ok"] and result["problems"]


def test_verify_without_a_set(monkeypatch, tmp_path):
    result, failed = run_main(monkeypatch, backup_verify, dict(dest=str(tmp_path)))
    assert failed and "there is no complete set" in result["msg"] and result["ok"] is False


def test_verify_restore_test_needs_an_image_and_never_takes_the_manifests(monkeypatch, tmp_path):
    path = verified_set(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["source"] = {"containers": {"postgresql": {"image": "registry.example/attacker:latest"}}}
    (path / "manifest.json").write_text(json.dumps(manifest))

    class NoScratch:
        def __getattr__(self, name):
            raise AssertionError("no container may be made without an image")

    result, failed = run_main(monkeypatch, backup_verify, dict(dest=str(tmp_path), restore_test=True,
                                                               fail_on_error=False), scratch=NoScratch())
    assert failed and "restore_test: give image" in result["msg"]
    assert "never run" in result["msg"] and "attacker" not in result["msg"]


@pytest.mark.parametrize("more, message", [
    (dict(part_size=1), "part_size: 1 MiB"),
    (dict(prefix="/abs"), "must not start with /"),
])
def test_upload_options_are_checked_first(monkeypatch, tmp_path, more, message):
    pytest.importorskip("boto3")
    result, failed = run_main(monkeypatch, backup_upload, dict(dict(dest=str(tmp_path), bucket="b"), **more))
    assert failed and message in result["msg"]


def test_upload_refuses_an_incomplete_set(monkeypatch, tmp_path):
    pytest.importorskip("boto3")
    path = new_set(tmp_path)
    result, failed = run_main(monkeypatch, backup_upload, dict(path=str(path), bucket="b"))
    assert failed and "the set is incomplete and is not copied" in result["msg"]


def test_lock_is_shared_by_its_run_id_and_protects_sets_from_retention(monkeypatch, tmp_path):
    """A restore holds the lock (run r1) and names the set it reads; a backup inside it calls with r1: it shares
    the lock instead of waiting for it, and its retention keeps the protected set although the rules would not."""
    read = new_set(tmp_path, "authentik-20261101T020000Z", complete=True)
    newer = new_set(tmp_path, "authentik-20261201T020000Z", complete=True)
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, run_id="r1", purpose="restore"))
    assert not failed and result["acquired"]
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, run_id="r1", protect=[read.name]))
    assert not failed and not result["acquired"] and result["record"]["protect"] == [read.name]
    assert json.loads((tmp_path / ".lock").read_text())["protect"] == [read.name]
    # the inner backup: same run_id, waits for nothing (timeout 0), and does not release what it did not take
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, run_id="r1"))
    assert not failed and not result["acquired"] and result["record"]["protect"] == [read.name]
    result, failed = prune(monkeypatch, tmp_path, keep_last=1, run_id="r1")
    assert not failed and result["removed"] == [] and read.exists() and newer.exists()
    assert "protected" in next(k["reasons"] for k in result["kept"] if k["name"] == read.name)
    # another run waits for (here: fails at once on) the restore's lock, naming it
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, run_id="other"))
    assert failed and "locked by run r1" in result["msg"] and "restore" in result["msg"]
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, state="absent", run_id="r1"))
    assert not failed and result["released"]
    result, failed = prune(monkeypatch, tmp_path, keep_last=1)
    assert not failed and result["removed"] == [read.name]


def _collections_path():
    return next(p for p in sys.path if p.endswith(".collections") or p.endswith("ansible_collections/.."))


def test_a_live_lock_of_another_pid_namespace_is_not_taken_over(monkeypatch, tmp_path):
    """A runner in its own pid namespace (a container sharing the host name) holds the lock as pid 1 of that
    namespace: from here its pid names another process (this host's init, with another start time), so a check by
    pid and start time alone would call the live run dead and take its lock over. It must be left alone."""
    inner = ("import json, os, sys, time\n"
             "sys.path.insert(0, sys.argv[1])\n"
             "from ansible_collections.authentik_ops.backup.plugins.modules import backup_lock\n"
             "params = dict(dest=sys.argv[2], run_id='in-namespace', pid=os.getpid(), timeout=0, poll_interval=0.1,\n"
             "              stale_age=0, purpose='backup', protect=[], state='present', remove_empty_dest=False)\n"
             "module = type('M', (), {'params': params, 'check_mode': False})()\n"
             "print(json.dumps(backup_lock.Locker(module).acquire()), flush=True)\n"
             "sys.stdin.read()\n")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", inner,
                             _collections_path(), str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        taken = json.loads(proc.stdout.readline())
        assert taken["acquired"] and taken["record"]["pid"] == 1
        result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, stale_age=0))
        assert failed and "locked by run in-namespace" in result["msg"], result
        assert json.loads((tmp_path / ".lock").read_text())["run_id"] == "in-namespace"
        assert taken["record"]["pid_ns"] != _proc.pid_namespace()
    finally:
        proc.stdin.close()
        proc.wait(10)
    # once it ended, its process still cannot be judged from here: only the age ends the lock
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, stale_age=0))
    assert failed and "locked by run in-namespace" in result["msg"]
    result, failed = run_main(monkeypatch, backup_lock, lock_args(tmp_path, stale_age=1, timeout=3))
    assert not failed and result["took_over"]["run_id"] == "in-namespace" and "stale_age" in result["took_over"][
        "reason"]
