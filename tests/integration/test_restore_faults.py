# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A restore killed or starved half-way never makes things worse (Docker Compose test bed, real ansible-playbook).

One backup set of the current stack's database (the sample data plus a table big enough that staging takes seconds)
serves every case; the data is changed after the backup, so the previous data and the set's can be told apart.

- killed while staging: ``ansible-playbook playbooks/restore.yml``, its workers and their modules are SIGKILLed
  once a temporary database ``akr_*`` exists;
- killed while server and worker are stopped (after the task that stops them);
- a database disk that holds the live data but not the staged copy (a stack of its own whose PostgreSQL volume is
  a small tmpfs).

Each case checks the live data (per-table checksums), the containers, the journal in <dest>/.restore, the
temporary databases and the messages; the next run after a kill is a plain restore run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from test_restore_roundtrip import docker_vars, started_at  # noqa: E402  pylint: disable=wrong-import-position
from testbed import ansible_run, paths, proof, stacks  # noqa: E402  pylint: disable=wrong-import-position
from testbed._docker import docker  # noqa: E402  pylint: disable=wrong-import-position

REPO = paths.REPO_ROOT
BACKUP = REPO / "playbooks" / "backup.yml"
RESTORE = REPO / "playbooks" / "restore.yml"
KEPT = re.compile(r"^ak[rpn]_[a-z0-9]+_\d+$")
# rows of the table added before the backup: about 45 MB, so that loading and proving it take seconds
BIG_ROWS = 120000


def all_databases(stack):
    out = stacks.psql(stack, "SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database "
                             "WHERE NOT datistemplate;")
    return json.loads(out.strip())


def live_state(stack):
    """Per-table checksums of the live databases (the temporary and kept ones of restores left out)."""
    state = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
    return {db: tables for db, tables in state.items() if not KEPT.match(db)}


def running(container):
    return started_at(container)[0]


def process_tree(root):
    """``root`` and every process below it (ansible's workers leave the group with setsid, so the tree is walked)."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


class Killable:
    """``ansible-playbook`` in a process group of its own, its output in a file; ``kill()`` SIGKILLs it and every
    process below it (its workers and their modules) at once, as a host losing power or an OOM kill of the
    service would."""

    def __init__(self, play_dir, inventory, playbook, extra):
        self.killed = []
        self.out = Path(play_dir) / f"killed-{time.monotonic_ns()}.out"
        argv = ansible_run.playbook_argv(inventory, playbook, extra)
        env = ansible_run.ansible_env(ansible_run.TEXT, home=Path(play_dir) / "ansible-home")
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_until(self, predicate, what, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the restore ended (rc={self.proc.returncode}) before {what}:\n{self.output()}")
            if predicate():
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"no {what} within {timeout} s:\n{self.output()}")

    def kill(self):
        stopped = set()
        while True:  # stop the whole tree first, so that nothing forks or is reparented while it is killed
            tree = [pid for pid in process_tree(self.proc.pid) if pid not in stopped]
            if not tree:
                break
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                stopped.add(pid)
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        self.killed = sorted(stopped)

    def output(self):
        return self.out.read_text(errors="replace")[-6000:]


# --- the shared set ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def play_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def play(play_dir, inventory):
    return ansible_run.player(play_dir, inventory=inventory, timeout=600)


@pytest.fixture(scope="module")
def backed_up(stack_current, play, tmp_path_factory):
    """A set of the current stack with a big table; after the backup a row is added, so the live data differs
    from the set. Afterwards the stack is left as the other tests expect it (no big table, no kept databases)."""
    stack = stack_current
    before = set(all_databases(stack))
    dest = tmp_path_factory.mktemp("faults-dest") / "backups"
    stacks.psql(stack, "DROP TABLE IF EXISTS akbt_faults_big, akbt_faults_after; CREATE TABLE akbt_faults_big AS "
                       f"SELECT g, repeat(md5(g::text), 12) AS v FROM generate_series(1, {BIG_ROWS}) g;",
                db=stack.pg_db)
    try:
        run = play(BACKUP, docker_vars(stack, dest, authentik_backup_components=["postgres"]))
        assert run.rc == 0, run.explain()
        in_set = live_state(stack)
        stacks.psql(stack, "CREATE TABLE akbt_faults_after (v text); INSERT INTO akbt_faults_after VALUES ('newer');",
                    db=stack.pg_db)
        yield stack, dest, in_set, before
    finally:
        stacks.psql(stack, "DROP TABLE IF EXISTS akbt_faults_big, akbt_faults_after;", db=stack.pg_db)
        for name in set(all_databases(stack)) - before:
            if KEPT.match(name):
                stacks.psql(stack, f"DROP DATABASE {name} WITH (FORCE);")


def restore_vars(stack, dest):
    """The confirmed restore of the set's database (the faults are PostgreSQL's; the directories add only time)."""
    return docker_vars(stack, dest, authentik_restore_confirm=True, authentik_restore_components=["postgres"])


def changed_live(stack):
    """Make the live data differ from the set again (a restore earlier in this file may have put the set's in)."""
    stacks.psql(stack, "CREATE TABLE IF NOT EXISTS akbt_faults_after (v text); "
                       "INSERT INTO akbt_faults_after VALUES ('newer');", db=stack.pg_db)
    return live_state(stack)


def new_temporaries(stack, before):
    return sorted(name for name in set(all_databases(stack)) - before if name.startswith("akr_"))


def journals(dest):
    """{run_id: journal} of the PostgreSQL restores (the record of stopped server and worker left out)."""
    return {path.stem: json.loads(path.read_text()) for path in (dest / ".restore").glob("*.json")
            if re.match(r"^[a-z0-9]+$", path.stem)}


# --- 1. killed while staging ------------------------------------------------------------------------------------

def test_killed_while_staging(backed_up, play, play_dir):
    """SIGKILL of the restore (ansible-playbook, its workers and their modules) once a temporary database exists:
    the live data is as it was and server and worker keep running (they are stopped only after staging); the next
    restore takes over the dead run's lock at once, drops the killed run's temporary databases (its journal ends
    discarded) and restores the set; no akr_ database is left."""
    stack, dest, in_set, before = backed_up
    previous = changed_live(stack)
    assert previous != in_set
    server, worker = stack.containers["server"], stack.containers["worker"]
    since = {c: started_at(c) for c in (server, worker)}
    extra = restore_vars(stack, dest)
    killed = Killable(play_dir, play.inventory, RESTORE, extra)
    killed.wait_until(lambda: new_temporaries(stack, before), "temporary database")
    killed.kill()
    assert len(killed.killed) >= 3, killed.killed  # ansible-playbook, its worker, the module (and its shell)
    assert "Stop authentik's server and worker" not in killed.output()

    assert live_state(stack) == previous
    assert {c: started_at(c) for c in (server, worker)} == since
    assert json.loads((dest / ".lock").read_text())["pid"] in killed.killed, "the killed run's lock is left"
    staging = [run_id for run_id, j in journals(dest).items() if j["phase"] == "staging"]
    assert len(staging) == 1, journals(dest)

    killed_id, = staging
    temporaries = new_temporaries(stack, before)
    assert temporaries and all(name.startswith(f"akr_{killed_id}_") for name in temporaries)

    # no waiting for the lock: a lock whose process is gone is taken over, a live one would fail the run at once
    run = play(RESTORE, dict(extra, authentik_restore_lock_timeout=0))
    assert run.rc == 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert "An earlier restore ended half-way (killed, or its host restarted); this run finished it first" in out
    assert f"PostgreSQL restore {killed_id} died while staging (nothing was swapped): its temporary databases" \
        in out, out[out.find("An earlier restore"):][:1500]
    assert all(name in out for name in temporaries), out
    assert live_state(stack) == in_set
    assert running(server) and running(worker)
    assert not new_temporaries(stack, before), all_databases(stack)
    assert journals(dest)[killed_id]["phase"] == "discarded"
    assert not (dest / ".lock").exists() and not (dest / ".restore" / "stopped-workloads.json").exists()


# --- 2. killed while server and worker are stopped ----------------------------------------------------------------

def test_killed_while_server_and_worker_are_stopped(backed_up, play, play_dir):
    """SIGKILL of the restore right after it stopped server and worker (the swap has not run, or has just
    committed): they stay stopped, the live names hold complete data (the previous data, or the set's if the swap
    committed). The next restore run finishes the killed one first: its temporary databases are dropped and its
    journal ends discarded (or, if its swap had committed, the journal is set to swapped, with the kept databases),
    server and worker are started again from the record the killed run left, and the run then restores the set.
    authentik ends running on the set's data, fully; no akr_ database and no record is left."""
    stack, dest, in_set, before = backed_up
    previous = changed_live(stack)
    server, worker = stack.containers["server"], stack.containers["worker"]
    known = set(journals(dest))
    extra = restore_vars(stack, dest)
    killed = Killable(play_dir, play.inventory, RESTORE, extra)
    killed.wait_until(lambda: not running(server), "server stopped")
    killed.kill()
    assert "Stop authentik's server and worker" in killed.output()
    assert "PLAY RECAP" not in killed.output()

    # the engine ends the stops it was asked for (both at once) also when the client is gone
    deadline = time.monotonic() + 20
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(server) and not running(worker)
    record = json.loads((dest / ".restore" / "stopped-workloads.json").read_text())
    assert {t["name"] for t in record["targets"]} == {server, worker}
    killed_id, = set(journals(dest)) - known
    was = journals(dest)[killed_id]["phase"]
    assert was in ("staged", "swapped"), was
    assert live_state(stack) in (previous, in_set)

    run = play(RESTORE, extra)
    assert run.rc == 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert "An earlier restore ended half-way" in out
    assert f"server and worker it had stopped ({server}, {worker}) started again" in out
    finished = journals(dest)[killed_id]
    if was == "staged" and finished["phase"] == "discarded":
        assert f"PostgreSQL restore {killed_id} died while staged (nothing was swapped)" in out
    else:
        assert finished["phase"] == "swapped" and finished["previous"], finished
    assert live_state(stack) == in_set
    assert running(server) and running(worker)
    assert not new_temporaries(stack, before), all_databases(stack)
    assert not (dest / ".restore" / "stopped-workloads.json").exists() and not (dest / ".lock").exists()


# --- 3. the database server's disk too small for the staged copy ------------------------------------------------

PGDATA = "/var/lib/postgresql/data"
TMPFS_MB = 160
FREE_MB = 40  # left free: the live data fits, a second copy of the set's databases (~70 MB) does not


def free_bytes(stack):
    out = docker("exec", stack.pg_container, "df", "-B1", "--output=avail", PGDATA).stdout.decode()
    return int(out.split()[-1])


@pytest.fixture(scope="module")
def full_stack(images):  # pylint: disable=unused-argument
    """A current-layout stack of its own whose PostgreSQL data directory (its volume) is a tmpfs of TMPFS_MB,
    filled up to FREE_MB free after the sample data is in."""
    project = "akbt-full" + paths.PROJECT_SUFFIX
    plain = stacks.override

    def with_tmpfs(*args, **kwargs):
        spec = plain(*args, **kwargs)
        # the compose file's volume of the database, made a tmpfs by the local driver
        spec["volumes"] = {"database": {"driver": "local", "driver_opts": {
            "type": "tmpfs", "device": "tmpfs", "o": f"size={TMPFS_MB}m"}}}
        return spec

    with stacks.lock(project, wait=float(os.environ.get("AKBT_LOCK_WAIT", "1800"))):
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(stacks, "override", with_tmpfs)
                stack = stacks.up(project, layout="current", naming="v2")
            kind = docker("exec", stack.pg_container, "stat", "-f", "-c", "%T", PGDATA).stdout.decode().strip()
            assert kind == "tmpfs", kind
            filler = free_bytes(stack) - (FREE_MB << 20)
            assert filler > 0, free_bytes(stack)
            docker("exec", stack.pg_container, "fallocate", "-l", str(filler), f"{PGDATA}/akbt-filler")
            yield stack
        finally:
            stacks.down(project)


def set_state(dest):
    latest = os.readlink(dest / "latest")
    return latest, proof.tree_state(dest / latest)


def test_disk_too_small_for_the_staged_copy(backed_up, full_stack, play):
    """The set restored into a deployment whose database disk holds its live data but not a second copy of the
    set's databases: loading it would fill the disk mid-staging, and PostgreSQL does not survive that (the
    checkpoint of the DROP DATABASE that frees the space cannot write its files, the server stops and cannot start
    again). The restore measures first and fails naming the cause, with the free and the needed space, before
    anything is written: the live data is intact, no temporary database exists, the free space is what it was,
    server and worker were never stopped, and the set and latest are unchanged."""
    _stack, dest, _in_set, _before = backed_up
    stack = full_stack
    server, worker = stack.containers["server"], stack.containers["worker"]
    previous = live_state(stack)
    databases = set(all_databases(stack))
    free = free_bytes(stack)
    since = {c: started_at(c) for c in (server, worker)}
    the_set = set_state(dest)

    run = play(RESTORE, restore_vars(stack, dest))
    assert run.rc != 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    expected = (f"failed in part postgres: not enough free disk space on the database server: its data directory "
                f"{PGDATA} has {FREE_MB} MB free, and staging this dump beside the live databases needs about")
    assert expected in out, run.explain()
    needed = int(re.search(r"needs about (\d+) MB", out).group(1))
    assert needed > FREE_MB + 20, needed
    assert "nothing was restored or changed" in out
    assert live_state(stack) == previous
    assert set(all_databases(stack)) == databases
    assert abs(free_bytes(stack) - free) < (2 << 20), (free, free_bytes(stack))
    assert {c: started_at(c) for c in (server, worker)} == since
    assert running(server) and running(worker)
    assert set_state(dest) == the_set
