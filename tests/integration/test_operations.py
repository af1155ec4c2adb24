# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Operations of the backup role against the test bed: retention, locking, report.json, notifications, many hosts.

Every run is a real `ansible-playbook` subprocess of playbooks/backup.yml against localhost (or two localhost
aliases), backing up the real PostgreSQL of the test bed stacks. To stay quick, most runs back up the database
only (authentik_backup_components=[postgres]).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed import ansible_run, paths

REPO = paths.REPO_ROOT
PLAYBOOK = REPO / "playbooks" / "backup.yml"
VENV_PYTHON = Path(sys.executable)
PG_ONLY = '{"authentik_backup_components": ["postgres"]}'


# --- running playbooks ---------------------------------------------------------------------------------------------

REPORT = "authentik_backup_report"


def _extra(dest, project, extra):
    """The extra vars of a backup run: dest and project (when given), then the test's own, in order."""
    head = [f"authentik_backup_dest={dest}"] if dest is not None else []
    if project:
        head.append(f"authentik_backup_compose_project={project}")
    return [*head, *extra]


@pytest.fixture(scope="module")
def run_backup(inventory):
    def run(dest, project, *extra, check=False, timeout=300, inv=None):
        return ansible_run.run_playbook(inv or inventory, PLAYBOOK, *_extra(dest, project, extra), check=check,
                                        timeout=timeout)

    return run


@pytest.fixture(scope="module")
def start_backup(inventory):
    """Start a run in the background; returns a function that waits for it and returns its Run."""
    def start(dest, project, *extra):
        return ansible_run.start_playbook(inventory, PLAYBOOK, *_extra(dest, project, extra))

    return start


# --- helpers ---------------------------------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sets_of(dest, prefix="authentik"):
    dest = Path(dest)
    if not dest.exists():
        return []
    return sorted(p.name for p in dest.iterdir() if p.is_dir() and not p.is_symlink()
                  and re.fullmatch(re.escape(prefix) + r"-\d{8}T\d{6}Z(-\d+)?", p.name))


def complete_sets(dest):
    return [n for n in sets_of(dest) if (Path(dest) / n / "manifest.json").is_file()]


def latest_of(dest):
    link = Path(dest) / "latest"
    return os.readlink(link) if link.is_symlink() else None


def fake_set(dest, name, complete=True, age=None):
    """A set directory made by hand (an old backup): a manifest makes it complete."""
    path = Path(dest) / name
    path.mkdir(parents=True, mode=0o700)
    (path / "postgres.sql").write_text("-- fake\n")
    if complete:
        (path / "manifest.json").write_text(json.dumps({"format": 1, "set": name, "files": []}))
    if age is not None:
        moment = time.time() - age
        for item in list(path.iterdir()) + [path]:
            os.utime(item, (moment, moment))
    return path


def assert_sound(dest):
    """Every set of dest is complete (manifest + the files it lists), no partial file, latest on the newest."""
    for name in sets_of(dest):
        set_dir = Path(dest) / name
        manifest = json.loads((set_dir / "manifest.json").read_text())
        for entry in manifest["files"]:
            assert (set_dir / entry["name"]).stat().st_size == entry["size"], (name, entry["name"])
            assert sha256(set_dir / entry["name"]) == entry["sha256"], (name, entry["name"])
    assert not list(Path(dest).glob("*/.*partial*")), "partial files left behind"
    assert not list(Path(dest).glob(".lock*")), "lock files left behind"
    if complete_sets(dest):
        assert latest_of(dest) == complete_sets(dest)[-1]


def dead_pid():
    proc = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    pid = int(proc.stdout)
    assert not Path(f"/proc/{pid}").exists()
    return pid


BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
PID_NS = os.readlink("/proc/self/ns/pid")
RESTORE_PLAYBOOK = REPO / "playbooks" / "restore.yml"


def pid_start(pid):
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2:].split()[19])


# --- retention ---------------------------------------------------------------------------------------------------

def test_retention_across_a_series_of_runs(stack_current, run_backup, tmp_path):
    dest = tmp_path / "backups"
    project = stack_current.project
    old1 = fake_set(dest, "authentik-20200101T000000Z").name
    old2 = fake_set(dest, "authentik-20200102T000000Z").name
    stale = fake_set(dest, "authentik-20200103T000000Z", complete=False, age=3 * 86400).name
    # not sets of this prefix: never counted nor touched (authentik-manual has no manifest: backup_set's own
    # complete_sets() would take a complete one for the newest set and stop moving latest)
    foreign = [fake_set(dest, "other-20200101T000000Z").name,
               fake_set(dest, "authentik-manual", complete=False, age=3 * 86400).name]
    keep2 = "authentik_backup_keep_last=2"

    # 1: old1, old2, A -> keep 2: old1 goes; the stale incomplete set is reported, not touched
    run_a = run_backup(dest, project, PG_ONLY, keep2)
    assert run_a.rc == 0, run_a.explain()
    set_a = run_a.fact(REPORT)["set"]
    assert run_a.fact(REPORT)["retention"]["removed"] == [old1]
    assert complete_sets(dest) == [old2, set_a] and latest_of(dest) == set_a
    assert any(stale in w for w in run_a.fact(REPORT)["warnings"]), run_a.fact(REPORT)["warnings"]
    assert (dest / stale).is_dir()

    # 2: old2, A, B -> old2 goes
    run_b = run_backup(dest, project, PG_ONLY, keep2)
    assert run_b.rc == 0, run_b.explain()
    set_b = run_b.fact(REPORT)["set"]
    assert complete_sets(dest) == [set_a, set_b] and latest_of(dest) == set_b

    # 3: a failed run (after its set was created): no pruning, the set is removed, latest stays, failure reported
    run_f = run_backup(dest, project, PG_ONLY, "authentik_backup_keep_last=1",
                       "authentik_backup_postgres_user=akbt_no_such_role")
    assert run_f.rc != 0, run_f.explain()
    assert "failed in part postgres" in run_f.failure(), run_f.failure()
    assert complete_sets(dest) == [set_a, set_b] and latest_of(dest) == set_b
    failure = json.loads((dest / "last-failure.json").read_text())
    assert failure["status"] == "failed" and "failed in part postgres" in failure["error"]["msg"]
    assert stat.S_IMODE((dest / "last-failure.json").stat().st_mode) == 0o600

    # 4: check mode with keep_last=1 counts the set it would make: A and B would go, nothing goes
    run_c = run_backup(dest, project, PG_ONLY, "authentik_backup_keep_last=1", check=True)
    assert run_c.rc == 0, run_c.explain()
    prune = run_c.result("Apply the retention policy to the complete sets")
    assert prune["removed"] == [set_a, set_b], prune
    assert complete_sets(dest) == [set_a, set_b] and latest_of(dest) == set_b

    # 5: keep_last=1 or keep_days=1: every real set is younger than a day, nothing goes
    run_d = run_backup(dest, project, PG_ONLY, "authentik_backup_keep_last=1", "authentik_backup_keep_days=1")
    assert run_d.rc == 0, run_d.explain()
    set_d = run_d.fact(REPORT)["set"]
    assert run_d.fact(REPORT)["retention"]["removed"] == []
    assert complete_sets(dest) == [set_a, set_b, set_d]

    # 6: keep_last=1 alone: only the newest stays; latest follows it; foreign and incomplete sets untouched
    run_e = run_backup(dest, project, PG_ONLY, "authentik_backup_keep_last=1")
    assert run_e.rc == 0, run_e.explain()
    set_e = run_e.fact(REPORT)["set"]
    assert run_e.fact(REPORT)["retention"]["removed"] == [set_a, set_b, set_d]
    assert complete_sets(dest) == [set_e] and latest_of(dest) == set_e
    assert sets_of(dest) == [stale, set_e]
    for name in foreign:
        assert (dest / name).is_dir()
    assert not list(dest.glob(".*deleting*"))


# --- locking -----------------------------------------------------------------------------------------------------

def test_two_concurrent_runs_make_two_complete_sets(stack_current, start_backup, tmp_path):
    dest = tmp_path / "backups"
    waits = [start_backup(dest, stack_current.project, PG_ONLY, "authentik_backup_lock_timeout=240")
             for _run in range(2)]
    runs = [wait() for wait in waits]
    for run in runs:
        assert run.rc == 0, run.explain()
    names = sorted(run.fact(REPORT)["set"] for run in runs)
    assert complete_sets(dest) == names and len(set(names)) == 2
    assert_sound(dest)
    # one of them waited for the other's lock
    assert max(run.fact(REPORT)["lock"]["waited"] for run in runs) > 0


def test_concurrent_run_without_waiting_fails_clearly_or_both_complete(stack_current, start_backup, tmp_path):
    dest = tmp_path / "backups"
    waits = [start_backup(dest, stack_current.project, PG_ONLY, "authentik_backup_lock_timeout=0")
             for _run in range(2)]
    runs = [wait() for wait in waits]
    ok = [run for run in runs if run.rc == 0]
    failed = [run for run in runs if run.rc != 0]
    assert ok, [run.explain() for run in runs]
    for run in failed:
        assert f"The backup destination {dest} is locked by run" in run.failure(), run.explain()
    assert len(complete_sets(dest)) == len(ok)
    assert sets_of(dest) == complete_sets(dest)
    assert_sound(dest)


def test_held_lock_fails_naming_the_holder_and_is_left_alone(stack_current, run_backup, tmp_path):
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    record = {"run_id": "akbtopheld", "pid": os.getpid(), "pid_start": pid_start(os.getpid()),
              "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "purpose": "backup of a test"}
    (dest / ".lock").write_text(json.dumps(record))
    begin = time.monotonic()
    run = run_backup(dest, stack_current.project, PG_ONLY, "authentik_backup_lock_timeout=3")
    assert run.rc != 0, run.explain()
    assert time.monotonic() - begin >= 3
    message = run.failure()
    assert f"is locked by run akbtopheld (pid {os.getpid()} on host {socket.gethostname()}" in message, message
    assert json.loads((dest / ".lock").read_text()) == record
    assert sets_of(dest) == []
    failure = json.loads((dest / "last-failure.json").read_text())
    assert failure["status"] == "failed" and "akbtopheld" in failure["error"]["msg"]


def test_stale_lock_of_a_dead_process_is_taken_over(stack_current, run_backup, tmp_path):
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    pid = dead_pid()
    (dest / ".lock").write_text(json.dumps({
        "run_id": "akbtopdead", "pid": pid, "host": socket.gethostname(), "boot_id": BOOT_ID, "pid_ns": PID_NS,
        "via": "ansible-playbook", "confirmed": True,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "purpose": "backup"}))
    run = run_backup(dest, stack_current.project, PG_ONLY, "authentik_backup_lock_timeout=0")
    assert run.rc == 0, run.explain()
    took_over = run.fact(REPORT)["lock"]["took_over"]
    assert took_over["run_id"] == "akbtopdead" and took_over["pid"] == pid
    assert f"process {pid} on {socket.gethostname()} is gone" in took_over["reason"]
    assert any("took over the lock" in w for w in run.fact(REPORT)["warnings"])
    assert_sound(dest)
    assert len(complete_sets(dest)) == 1


def held_lock(dest, run_id, **more):
    """A lock of this (live) test process, as a run holding the destination would leave it."""
    record = dict({"run_id": run_id, "pid": os.getpid(), "pid_start": pid_start(os.getpid()), "boot_id": BOOT_ID,
                   "pid_ns": PID_NS, "via": "pid", "confirmed": True, "host": socket.gethostname(),
                   "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, **more)
    (Path(dest) / ".lock").write_text(json.dumps(record))
    return record


def test_a_backup_inside_a_restore_shares_its_lock_and_keeps_the_set_it_reads(stack_current, run_backup, tmp_path):
    """A restore holds the lock and protects the set it reads; a backup run with the restore's run id does not
    wait for that lock (timeout 0), its retention (keep_last=1) removes other old sets but not the protected one,
    and the lock is still the restore's afterwards."""
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    read = fake_set(dest, "authentik-20200101T000000Z")
    other = fake_set(dest, "authentik-20200102T000000Z")
    record = held_lock(dest, "akbtoprestore", purpose="restore", protect=[read.name])
    run = run_backup(dest, stack_current.project, PG_ONLY, "authentik_backup_lock_timeout=0",
                     "authentik_backup_keep_last=1", "authentik_backup_lock_run_id=akbtoprestore")
    assert run.rc == 0, run.explain()
    assert read.exists() and not other.exists()
    assert json.loads((dest / ".lock").read_text()) == record
    assert len(complete_sets(dest)) == 2 and latest_of(dest) == complete_sets(dest)[-1]
    # without the run id the same backup waits for the restore's lock, and fails naming it
    run = run_backup(dest, stack_current.project, PG_ONLY, "authentik_backup_lock_timeout=0")
    assert run.rc != 0 and "is locked by run akbtoprestore" in run.failure(), run.explain()


def test_restore_takes_the_lock_and_releases_it_after_a_failure(stack_current, inventory, tmp_path):
    """The restore role waits for a lock another run holds (and fails naming it, nothing touched); with the lock
    free it takes it for the run and releases it also when the restore fails (here: no such set)."""
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    project = f"authentik_backup_compose_project={stack_current.project}"
    held_lock(dest, "akbtopbackup", purpose="backup of a test")
    run = ansible_run.run_playbook(inventory, RESTORE_PLAYBOOK, f"authentik_backup_dest={dest}", project,
                                   "authentik_restore_lock_timeout=1", "authentik_restore_confirm=true")
    assert run.rc != 0 and f"The backup destination {dest} is locked by run akbtopbackup" in run.failure(), \
        run.explain()
    (dest / ".lock").unlink()
    run = ansible_run.run_playbook(inventory, RESTORE_PLAYBOOK, f"authentik_backup_dest={dest}", project,
                                   "authentik_restore_from=authentik-20200101T000000Z",
                                   "authentik_restore_confirm=true")
    assert run.rc != 0 and "authentik-20200101T000000Z" in run.failure(), run.explain()
    assert run.result("Lock the backup destination for the restore")["acquired"] is True
    assert not (dest / ".lock").exists() and list(dest.iterdir()) == []


# --- report.json -------------------------------------------------------------------------------------------------

def test_report_matches_the_manifest(stack_current, run_backup, tmp_path):
    """A full backup; its notification URL has nobody listening: a warning, not a failed backup."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "backups"
    run = run_backup(dest, stack_current.project, f"authentik_backup_notify_url=http://127.0.0.1:{port}/x",
                     "authentik_backup_notify_timeout=5")
    assert run.rc == 0, run.explain()
    warning = run.result("Warn that the notification failed")
    assert warning and "WARNING: the notification of this success run failed" in warning["msg"], run.explain()
    set_dir = dest / latest_of(dest)
    report_path = set_dir / "report.json"
    assert stat.S_IMODE(report_path.stat().st_mode) == 0o600
    report = json.loads(report_path.read_text())
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert report == run.fact(REPORT)
    assert report["status"] == "success" and report["host"] == "localhost"
    assert report["set"] == manifest["set"] == set_dir.name and report["path"] == str(set_dir)
    assert report["manifest"]["sha256"] == sha256(set_dir / "manifest.json")
    assert [(f["part"], f["name"], f["size"], f["sha256"]) for f in report["files"]] == \
        [(f["part"], f["name"], f["size"], f["sha256"]) for f in manifest["files"]]
    for entry in report["files"]:
        assert (set_dir / entry["name"]).stat().st_size == entry["size"]
        assert entry["throughput"] and entry["duration"] is not None
    assert report["totals"]["files"] == len(manifest["files"])
    assert report["totals"]["size"] == sum(f["size"] for f in manifest["files"])
    assert report["skipped"] == manifest["skipped"]
    assert report["authentik"] == manifest["authentik"] and report["source"] == manifest["source"]
    assert report["started_at"] <= manifest["started_at"] <= manifest["completed_at"] <= report["ended_at"]
    assert report["duration"] >= 0 and report["error"] is None
    assert report["lock"]["run_id"] and report["lock"]["waited"] == 0
    assert not (dest / ".lock").exists()
    # the verify module accepts the set with its report
    verify, verify_run = ansible_run.run_module("backup_verify", path=str(set_dir))
    assert verify_run.rc == 0 and not verify.get("failed"), verify_run.explain()
    assert "report.json" not in verify_run.stdout
    summary = run.result("Report of the run")["msg"]
    assert any(line.startswith(f"Report {report_path}: ") for line in summary), summary


# --- notifications -----------------------------------------------------------------------------------------------

class _Hook(http.server.BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append({"path": self.path, "body": json.loads(body), "auth": self.headers.get("X-Token")})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Hook.calls
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_is_called_on_success_and_on_failure(stack_current, run_backup, webhook, tmp_path):
    base, calls = webhook
    dest = tmp_path / "backups"
    token = "akbtop-secret-token-4711"
    hook = [f"authentik_backup_notify_url={base}/ping/{token}",
            f"authentik_backup_notify_failure_url={base}/ping/{token}/fail",
            '{"authentik_backup_notify_headers": {"X-Token": "' + token + '"}}']
    ok = run_backup(dest, stack_current.project, PG_ONLY, *hook)
    assert ok.rc == 0, ok.explain()
    assert len(calls) == 1 and calls[0]["path"] == f"/ping/{token}" and calls[0]["auth"] == token
    body = calls[0]["body"]
    assert body["status"] == "success" and body["set"] == latest_of(dest) and body["host"] == "localhost"
    assert body["size"] == ok.fact(REPORT)["totals"]["size"] and "OK" in body["text"]

    bad = run_backup(dest, stack_current.project, PG_ONLY, *hook, "authentik_backup_postgres_user=akbt_no_such_role")
    assert bad.rc != 0, bad.explain()
    assert len(calls) == 2 and calls[1]["path"] == f"/ping/{token}/fail"
    body = calls[1]["body"]
    assert body["status"] == "failed" and "failed in part postgres" in body["error"]["msg"]
    assert "FAILED" in body["text"]
    for run in (ok, bad):
        assert token not in run.proc.stdout and token not in run.proc.stderr


# --- many hosts --------------------------------------------------------------------------------------------------

def test_one_failed_host_does_not_hide_the_other(stack_current, stack_legacy, run_backup, tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    bad.mkdir(mode=0o700)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "authentik:\n"
        "  vars:\n"
        "    ansible_connection: local\n"
        f"    ansible_python_interpreter: {VENV_PYTHON}\n"
        "    authentik_backup_components: [postgres, files]\n"
        "  hosts:\n"
        "    akbt-op-good:\n"
        f"      authentik_backup_dest: {good}\n"
        f"      authentik_backup_compose_project: {stack_current.project}\n"
        "    akbt-op-bad:\n"
        f"      authentik_backup_dest: {bad}\n"
        f"      authentik_backup_compose_project: {stack_legacy.project}\n"
        "      authentik_backup_postgres_user: akbt_no_such_role\n")
    env_forks = os.environ.get("ANSIBLE_FORKS")
    os.environ["ANSIBLE_FORKS"] = "5"
    try:
        run = run_backup(None, None, inv=inventory)
    finally:
        if env_forks is None:
            os.environ.pop("ANSIBLE_FORKS")
        else:
            os.environ["ANSIBLE_FORKS"] = env_forks
    assert run.rc != 0, run.explain()
    stats = run.data["stats"]
    assert stats["akbt-op-good"]["failures"] == 0 and stats["akbt-op-bad"]["failures"] == 1, stats
    # the good host completed its set, with its own report
    assert len(complete_sets(good)) == 1 and latest_of(good) == complete_sets(good)[0]
    assert run.fact(REPORT, "akbt-op-good")["status"] == "success"
    assert run.fact(REPORT, "akbt-op-good")["source"]["compose_project"] == stack_current.project
    assert_sound(good)
    # the bad host failed on its own, in its own destination
    assert sets_of(bad) == []
    assert "failed in part postgres" in run.failure("akbt-op-bad")
    failure = json.loads((bad / "last-failure.json").read_text())
    assert failure["host"] == "akbt-op-bad" and failure["status"] == "failed"
    assert not (good / "last-failure.json").exists()
    # the closing play reports both hosts
    results = run.result("Results of the backup on every host")
    assert results, run.explain()
    text = "\n".join(results["msg"])
    assert "akbt-op-good: OK" in text and "akbt-op-bad: FAILED" in text and "failed in part postgres" in text
