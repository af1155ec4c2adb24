# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""postgres_dump's helper (method=helper/auto) against real containers of the test bed image.

A database container (akbt-proof-<pid>-pg-*, no network, password-only TCP logins like the official image's
non-local rule) is dumped through the helper and through exec; the helper's lifecycle is checked while a dump is
held open by a table lock (the helper has written the dump's first part and waits for the lock): what its
container shows, a killed helper, a module stopped by SIGTERM, a helper left behind by a killed run, and a server
without TCP (exec fallback).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from testbed import ansible_run, proof
from testbed._docker import docker, inspect, wait_for

sys.path.insert(0, str(ansible_run.REPO / ".collections"))

from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import (  # noqa: E402
    DockerClient,
    DockerTransport,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import TransportError  # noqa: E402

HELPER_LABEL = "io.authentik-ops.backup.helper"
FOR_LABEL = "io.authentik-ops.backup.helper-for"
PASSWORD = "helper-it-" + uuid.uuid4().hex
DB = "authentik"
SUPERUSER = "authentik"  # not the proof restore's superuser (akbt_proof), which a restored dump may not drop


def psql(container, sql, db="postgres"):
    return docker("exec", "-e", "PGPASSWORD", container, "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                  "-U", SUPERUSER, "-d", db, "-c", sql, env={"PGPASSWORD": PASSWORD}
                  ).stdout.decode().strip()


@pytest.fixture(scope="module")
def pg(images):  # pylint: disable=unused-argument
    name = proof.start_postgres(superuser=SUPERUSER, password=PASSWORD)
    try:
        psql(name, f"CREATE DATABASE {DB}")
        psql(name, "CREATE TABLE events (id bigint primary key, payload jsonb, note text);"
                   "INSERT INTO events SELECT g, jsonb_build_object('n', g, 'h', md5(g::text)), repeat('x', g % 300)"
                   "  FROM generate_series(1, 60000) g;"
                   "CREATE TABLE held (id int); INSERT INTO held VALUES (1);", db=DB)
        # dumped before "authentik" (pg_dumpall goes by name): a few MiB that reach the file before a held dump waits
        psql(name, "CREATE DATABASE akbt_aaa")
        psql(name, "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 12000) g",
             db="akbt_aaa")
        psql(name, "CREATE DATABASE \"données ünï-表\"")
        psql(name, "CREATE TABLE t (v text); INSERT INTO t VALUES ('é'), (E'tab\\there');", db="données ünï-表")
        yield name
    finally:
        proof.cleanup(name)


def helpers_of(container_id):
    out = docker("ps", "-a", "-q", "--no-trunc", "--filter", f"label={FOR_LABEL}={container_id}").stdout.decode()
    return out.split()


def normalized(path):
    """The dump without pg_dumpall's per-run random \\restrict key lines."""
    with proof._open_decompressed(path)[0] as handle:  # pylint: disable=protected-access
        data = handle.read()
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not line.startswith((b"\\restrict ", b"\\unrestrict ")))


def dump(container, dest, **args):
    result, _proc = ansible_run.run_module("postgres_dump", container=container, dest=str(dest), **args)
    return result


def test_helper_dump_equals_the_exec_dump_and_leaves_nothing(pg, tmp_path):
    db_id = inspect("container", pg)["Id"]
    helper = dump(pg, tmp_path / "helper.sql.zst", method="helper")
    assert not helper.get("failed"), helper.get("msg")
    assert helper["method"] == "helper" and helper["method_note"] == ""
    execd = dump(pg, tmp_path / "exec.sql", method="exec", compression="none")
    assert execd["method"] == "exec", execd
    auto = dump(pg, tmp_path / "auto.sql.zst")
    assert auto["method"] == "helper", auto
    assert normalized(tmp_path / "helper.sql.zst") == normalized(tmp_path / "exec.sql") == normalized(
        tmp_path / "auto.sql.zst")
    assert helper["raw_size"] == execd["raw_size"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.sql.zst", "exec.sql", "helper.sql.zst"]  # no FIFO dir
    assert helpers_of(db_id) == []
    assert PASSWORD not in json.dumps(helper)
    # the helper's dump restores into a fresh server with the same tables
    fresh = proof.restore_dump_into_fresh(tmp_path / "helper.sql.zst")
    try:
        assert proof.table_checksums(fresh, proof.PROOF_SUPERUSER) == proof.table_checksums(
            pg, SUPERUSER, PASSWORD)
    finally:
        proof.cleanup(fresh)


def test_check_mode_plans_the_helper_and_creates_nothing(pg, tmp_path):
    db_id = inspect("container", pg)["Id"]
    result, _proc = ansible_run.run_module("postgres_dump", check_mode=True, container=pg,
                                           dest=str(tmp_path / "p.sql.zst"))
    assert result["plan"]["method"] == "helper" and result["method"] == "helper", result
    assert list(tmp_path.iterdir()) == []
    assert helpers_of(db_id) == []


def test_explicit_role_and_password_reach_the_helper(pg, tmp_path):
    role, secret = "akbt_helper_su", "explicit-" + uuid.uuid4().hex
    psql(pg, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} SUPERUSER LOGIN PASSWORD '{secret}'")
    try:
        result = dump(pg, tmp_path / "x.sql", user=role, password=secret, method="helper", compression="none")
    finally:
        psql(pg, f"DROP ROLE IF EXISTS {role}")
    assert not result.get("failed"), result.get("msg")
    assert result["user"] == role and result["method"] == "helper"
    assert secret not in json.dumps(result)
    # a wrong password fails in the TCP probe: auto falls back to exec (local socket trust), helper refuses
    psql(pg, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} SUPERUSER LOGIN PASSWORD '{secret}'")
    try:
        auto = dump(pg, tmp_path / "y.sql", user=role, password="wrong", compression="none")
        forced = dump(pg, tmp_path / "z.sql", user=role, password="wrong", method="helper")
    finally:
        psql(pg, f"DROP ROLE IF EXISTS {role}")
    assert auto["method"] == "exec" and "over TCP" in auto["method_note"], auto
    assert forced.get("failed") and "method=helper cannot be used" in forced["msg"], forced
    assert "password authentication failed" in forced["msg"]
    assert not (tmp_path / "z.sql").exists()


class HeldDump:
    """A dump that the helper has started (the globals are written) but that waits for a table lock."""

    def __init__(self, pg, dest):
        self.pg = pg
        self.dest = Path(dest)
        self.db_id = inspect("container", pg)["Id"]
        self.locker = f"{pg}-lock"

    def __enter__(self):
        # an ACCESS EXCLUSIVE lock held by another session: pg_dump waits for it after pg_dumpall wrote the roles
        self.lock_proc = subprocess.Popen(  # pylint: disable=consider-using-with
            ["docker", "exec", "-e", "PGPASSWORD", self.pg, "psql", "-X", "-q", "-U", SUPERUSER, "-d",
             DB, "-c", "BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600); COMMIT;"],
            env=dict(os.environ, PGPASSWORD=PASSWORD), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: psql(self.pg, "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' "
                                       "AND relation = 'held'::regclass", db=DB) == "1", 30, "the table lock")
        return self

    def start_module(self, **args):
        """Run the module as Ansible would, in a child process we can signal."""
        args_file = self.dest.parent / f".args-{uuid.uuid4().hex}.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(container=self.pg, dest=str(self.dest),
                                                                     **args)}))
        # faulthandler: a module that does not end in time is sent SIGABRT and prints where each thread was
        env = dict(os.environ, PYTHONPATH=str(ansible_run.REPO / ".collections"), PYTHONFAULTHANDLER="1")
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-m", "ansible_collections.authentik_ops.backup.plugins.modules.postgres_dump",
             str(args_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.args_file = args_file
        return proc

    def wait_started(self):
        """Wait until a helper runs and the module's partial file holds the first bytes; returns the helper id."""
        def started():
            ids = helpers_of(self.db_id)
            partial = [p for p in self.dest.parent.glob(f".{self.dest.name}*") if p.is_file()]
            return ids and partial and partial[0].stat().st_size > 0 and ids[0]
        return wait_for(started, 60, "the helper to write the first part of the dump", interval=0.1)

    def release(self):
        psql(self.pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' "
                      "AND pid <> pg_backend_pid()")
        self.lock_proc.wait(30)

    def __exit__(self, *exc):
        if self.lock_proc.poll() is None:
            self.release()
        getattr(self, "args_file", Path("/nonexistent")).unlink(missing_ok=True)
        return False


def ended(proc, timeout):
    """Wait for the module to end; one that does not is aborted and the test fails with its threads' stacks."""
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"the module did not end within {timeout} s of the signal; where it was:\n"
                    f"{err.decode('utf-8', 'replace')[-6000:]}")


def result_of(proc, timeout=120):
    out, _err = proc.communicate(timeout=timeout)
    return json.loads(out[out.index(b"{"):])


def test_running_helper_shows_no_secret_and_is_locked_down(pg, tmp_path):
    with HeldDump(pg, tmp_path / "held.sql") as held:
        proc = held.start_module(method="helper", compression="none")  # zstd would hold the first bytes back
        helper_id = held.wait_started()
        info = inspect("container", helper_id)
        top = docker("top", helper_id, "-eo", "pid,args").stdout.decode()
        held.release()
        result = result_of(proc)
    assert not result.get("failed"), result.get("msg")
    assert result["method"] == "helper"
    text = json.dumps(info)
    assert PASSWORD not in text and PASSWORD not in top
    assert "pg_dumpall" in top
    assert info["HostConfig"]["NetworkMode"] == "container:" + held.db_id
    assert info["HostConfig"]["ReadonlyRootfs"] is True and info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["Config"]["User"] == f"{os.geteuid()}:{os.getegid()}"
    assert [m["Destination"] for m in info["Mounts"]] == ["/run/authentik-backup"]
    assert helpers_of(held.db_id) == []
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".args-")] == ["held.sql"]


def test_killed_helper_fails_the_dump_and_leaves_no_file(pg, tmp_path):
    with HeldDump(pg, tmp_path / "killed.sql") as held:
        proc = held.start_module(compression="none")  # auto: bytes were written, so no fallback may hide the failure
        helper_id = held.wait_started()
        docker("kill", helper_id)
        result = result_of(proc)
    assert result.get("failed"), result
    assert "in the helper of" in result["msg"] and "status 137" in result["msg"], result["msg"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".args-")] == []
    assert helpers_of(held.db_id) == []


def test_sigterm_of_the_module_removes_helper_fifo_and_partial(pg, tmp_path):
    with HeldDump(pg, tmp_path / "term.sql") as held:
        proc = held.start_module(compression="none")
        held.wait_started()
        proc.send_signal(signal.SIGTERM)
        ended(proc, 90)
        assert proc.returncode != 0
        # the module asked for the removal; a daemon slower than the module's wait for its answer finishes it
        wait_for(lambda: helpers_of(held.db_id) == [], 30, "the helper's removal")
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".args-")] == []


def test_a_helper_left_by_a_killed_run_is_removed_others_are_not(pg, tmp_path):
    db_id = inspect("container", pg)["Id"]
    image = inspect("container", pg)["Image"]
    stale = f"{pg}-pgdump-stale"
    other = f"{pg}-pgdump-other"
    fresh = f"{pg}-pgdump-fresh"
    orphan = f"{pg}-pgdump-orphan"
    # still running, for another database, but its owner (a SIGKILLed module on this host) is gone: removed with
    # its FIFO directory
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    dead_owner = f"{boot}/{os.readlink('/proc/self/ns/pid')}/{os.getpid()}/1"
    orphan_dir = tmp_path / "sets" / ".pgdump-helper-orphan"
    orphan_dir.mkdir(parents=True)
    os.mkfifo(orphan_dir / "dump")
    docker("run", "-d", "--name", orphan, "--network", "none", "--label", f"{HELPER_LABEL}=postgres_dump",
           "--label", f"{FOR_LABEL}={'1' * 64}", "--label", f"{HELPER_LABEL}-owner={dead_owner}",
           "-v", f"{orphan_dir}:/run/authentik-backup:ro", "--entrypoint", "sleep", image, "300")
    # exited helpers, as a killed run leaves them; one of another database; one only created just now
    docker("run", "--name", stale, "--network", "none", "--label", f"{HELPER_LABEL}=postgres_dump",
           "--label", f"{FOR_LABEL}={db_id}", "--entrypoint", "true", image)
    docker("run", "--name", other, "--network", "none", "--label", f"{HELPER_LABEL}=postgres_dump",
           "--label", f"{FOR_LABEL}={'0' * 64}", "--entrypoint", "true", image)
    docker("create", "--name", fresh, "--network", "none", "--label", f"{HELPER_LABEL}=postgres_dump",
           "--label", f"{FOR_LABEL}={db_id}", "--entrypoint", "true", image)
    try:
        result = dump(pg, tmp_path / "s.sql.zst")
        assert result["method"] == "helper", result
        assert inspect("container", stale) is None
        assert inspect("container", orphan) is None and not orphan_dir.exists()
        assert inspect("container", other) is not None  # a helper of another database is not ours to remove
        assert inspect("container", fresh) is not None  # may belong to a dump that is starting right now
    finally:
        docker("rm", "-f", stale, other, fresh, orphan, check=False)


def test_server_without_tcp_falls_back_to_exec(images, tmp_path):  # pylint: disable=unused-argument
    name = f"{proof.SESSION_PREFIX}notcp-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--network", "none", "--label", "akbt.proof=1", "-e", "POSTGRES_USER",
           "-e", "POSTGRES_PASSWORD", "akbt.local/postgres:15", "postgres", "-c", "listen_addresses=",
           env={"POSTGRES_USER": "authentik", "POSTGRES_PASSWORD": PASSWORD})
    try:
        wait_for(lambda: docker("exec", name, "psql", "-X", "-U", "authentik", "-d", "postgres", "-c", "select 1",
                                check=False).returncode == 0, 90, "PostgreSQL without TCP")
        auto = dump(name, tmp_path / "auto.sql.zst")
        forced = dump(name, tmp_path / "forced.sql.zst", method="helper")
    finally:
        proof.cleanup(name)
    assert not auto.get("failed"), auto.get("msg")
    assert auto["method"] == "exec" and "does not accept the dump's role over TCP" in auto["method_note"], auto
    assert forced.get("failed") and "method=helper cannot be used" in forced["msg"], forced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.sql.zst"]
    assert b"PostgreSQL database cluster dump complete" in normalized(tmp_path / "auto.sql.zst")


def processes_showing(container, text):
    """The process list (pid and argv) of ``container`` once one of its processes shows ``text``, else None."""
    top = docker("top", container, "-eo", "pid,args").stdout.decode()
    return top if text in top else None


class RecordingClient(DockerClient):
    """The real client, keeping every request it sends to the daemon (URL and JSON body)."""

    def __init__(self):
        super().__init__(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
        self.sent = []

    def request(self, method, url, body=None, query=None, timeout=None):
        self.sent.append(f"{method} {url} {json.dumps(body)} {json.dumps(query)}")
        return super().request(method, url, body=body, query=query, timeout=timeout)


def test_a_secret_reaches_the_exec_on_stdin_never_in_its_config_or_argv(pg):
    """The daemon never receives the secret in an exec's Env (kept in its exec config, printed by its debug log)
    nor in an argument; the command still gets it, and no process of the container shows it in its argv."""
    client = RecordingClient()
    transport = DockerTransport(pg, None, client=client)
    secret = "akbt-docker-Secret-" + uuid.uuid4().hex
    results = []
    worker = threading.Thread(target=lambda: results.append(transport.exec_capture(
        ["sh", "-c", 'printf %s "$AKBT_SECRET" | sha256sum; sleep 3'], secret_env={"AKBT_SECRET": secret})))
    worker.start()
    try:
        # while the command runs (sleep 3): every process of the container, its argv
        procs = wait_for(lambda: processes_showing(pg, "sleep 3"), 10, "the exec to run", interval=0.1)
    finally:
        worker.join(30)
    assert results and results[0].ok, results and results[0].problem
    assert results[0].stdout.split()[0].decode() == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in procs
    assert any("/exec" in line for line in client.sent), client.sent
    assert not [line for line in client.sent if secret in line]
    with pytest.raises(TransportError):
        transport.exec_capture(["true"], secret_env={"AKBT_SECRET": "two\nlines"})


def test_explicit_password_of_an_exec_dump_is_in_no_argv(pg, tmp_path):
    """postgres_dump through exec with an explicit password: while the dump runs, no process of the database
    container carries the password in its command line; the dump works with it."""
    role, secret = "akbt_exec_su", "exec-" + uuid.uuid4().hex
    psql(pg, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} SUPERUSER LOGIN PASSWORD '{secret}'")
    try:
        with HeldDump(pg, tmp_path / "held.sql") as held:
            proc = held.start_module(method="exec", compression="none", user=role, password=secret,
                                     host="127.0.0.1")
            top = wait_for(lambda: processes_showing(pg, "pg_dump"), 60, "pg_dump to run", interval=0.1)
            held.release()
            result = result_of(proc)
    finally:
        psql(pg, f"DROP ROLE IF EXISTS {role}")
    assert not result.get("failed"), result.get("msg")
    assert result["method"] == "exec" and result["user"] == role
    assert secret not in top and secret not in json.dumps(result)


def owner_of_pid(pid):
    """The owner string of a process of this host (boot id / pid namespace / pid / start time)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    start = text[text.rfind(")") + 2:].split()[19]
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}/{os.readlink('/proc/self/ns/pid')}/{pid}/{start}"


def test_a_dump_whose_run_was_killed_stops_and_cleans_up(pg, tmp_path):
    """An async dump goes on after the ansible-playbook that started it was SIGKILLed. Given the run's owner (the
    lock's process), the module notices within seconds that it is gone, stops, removes its partial file and its
    helper container, and fails saying why; a module whose owner lives is not disturbed (the other tests)."""
    run = subprocess.Popen(["sleep", "600"])  # pylint: disable=consider-using-with
    try:
        with HeldDump(pg, tmp_path / "orphan.sql") as held:
            proc = held.start_module(compression="none", owner=owner_of_pid(run.pid))
            held.wait_started()
            run.kill()
            run.wait(10)
            result = result_of(proc, timeout=60)
            assert helpers_of(held.db_id) == []
    finally:
        if run.poll() is None:
            run.kill()
    assert result.get("failed"), result
    assert "is gone" in result["msg"] and "partial file was removed" in result["msg"], result["msg"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".args-")] == []
