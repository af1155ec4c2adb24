from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _pg_helper as helper

DB_INFO = {
    "Id": "f" * 64,
    "Name": "/authentik-postgresql-1",
    "Image": "sha256:" + "a" * 64,
    "Config": {"Env": ["POSTGRES_PASSWORD=s3cr3t-in-env", "POSTGRES_USER=authentik",
                       "PATH=/usr/lib/postgresql/16/bin:/usr/bin:/bin", "PGDATA=/var/lib/postgresql/data"],
               "Volumes": {"/var/lib/postgresql/data": {}}},
}


def test_body_holds_no_secret_and_locks_the_helper_down():
    plan = helper.HelperPlan("authentik", "127.0.0.1", 5432, "p4ss-w0rd-only-on-stdin")
    body = helper.container_body(DB_INFO, plan, ["--exclude-database=postgres"], "/backups/s/.pgdump-x", 0, 0,
                                 owner=helper.owner_id())
    text = json.dumps(body)
    assert "p4ss-w0rd-only-on-stdin" not in text
    assert "s3cr3t-in-env" not in text
    assert "POSTGRES_USER" not in text  # nothing of the database container's environment but PATH
    assert body["Env"] == ["HOME=/tmp", "PATH=/usr/lib/postgresql/16/bin:/usr/bin:/bin"]
    assert "p4ss" not in repr(plan)
    host = body["HostConfig"]
    assert host["NetworkMode"] == "container:" + "f" * 64
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Mounts"] == [
        # the image's volume is a small tmpfs, not an anonymous volume
        {"Type": "tmpfs", "Target": "/var/lib/postgresql/data", "TmpfsOptions": {"SizeBytes": 1 << 20}},
        # read-only: the FIFO opens for writing, nothing can be created
        {"Type": "bind", "Source": "/backups/s/.pgdump-x", "Target": helper.MOUNT, "ReadOnly": True}]
    assert "UsernsMode" not in host and "Binds" not in host
    assert body["Healthcheck"] == {"Test": ["NONE"]}
    assert helper.owner_alive(body["Labels"][helper.HELPER_OWNER_LABEL]) is True
    assert body["Image"] == DB_INFO["Image"]  # the database's own image: same pg_dumpall major version
    assert body["User"] == "0:0"
    assert body["Labels"][helper.HELPER_FOR_LABEL] == "f" * 64
    assert not any(k.startswith("com.docker.compose") for k in body["Labels"])  # never seen as a service
    assert body["OpenStdin"] and body["StdinOnce"]
    assert body["Cmd"][-4:] == ["authentik", "127.0.0.1", "5432", "--exclude-database=postgres"]


def test_body_follows_the_daemon():
    plan = helper.HelperPlan("ak", "127.0.0.1", 5432, "pw")
    rootless = helper.container_body(DB_INFO, plan, [], "/b/.pgdump-x", 1000, 1000, daemon={"rootless": True})
    assert rootless["User"] == "0:0"  # uid 0 of a rootless daemon's namespace is the module's user
    assert helper.container_body(DB_INFO, plan, [], "/b/.pgdump-x", 1000, 1000)["User"] == "1000:1000"
    remapped = helper.container_body(DB_INFO, plan, [], "/b/.pgdump-x", 0, 0, daemon={"userns": True})
    assert remapped["HostConfig"]["UsernsMode"] == "host"
    selinux = helper.container_body(DB_INFO, plan, [], "/b/.pgdump-x", 0, 0, daemon={"selinux": True})
    assert selinux["HostConfig"]["Binds"] == ["/b/.pgdump-x:" + helper.MOUNT + ":ro,Z"]
    assert [m["Type"] for m in selinux["HostConfig"]["Mounts"]] == ["tmpfs"]


def test_owner_liveness():
    assert helper.owner_alive(helper.owner_id()) is True
    mine = helper.owner_id().split("/")
    assert helper.owner_alive("/".join(mine[:3] + ["1"])) is False  # same pid, another start time: gone
    proc = subprocess.Popen(["sleep", "0"])  # pylint: disable=consider-using-with
    owner = helper.owner_id(proc.pid)
    assert helper.owner_alive(owner) is True
    proc.wait()
    assert helper.owner_alive(owner) is False
    assert helper.owner_alive("another-boot/" + "/".join(mine[1:])) is None  # cannot be judged from here
    assert helper.owner_alive("") is None


@pytest.mark.parametrize("host, expected", [
    (None, "127.0.0.1"), ("", "127.0.0.1"), ("/var/run/postgresql", "127.0.0.1"), ("db.internal", "db.internal"),
])
def test_tcp_host(host, expected):
    assert helper.tcp_host({"host": host}) == expected


def test_helper_script_runs_pg_dumpall_on_the_fifo_with_the_password_from_stdin(tmp_path):
    """The helper's shell script with a stand-in pg_dumpall: the password arrives from stdin only, the dump goes to
    the FIFO path, and a missing FIFO is refused before anything runs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pg_dumpall"
    fake.write_text('#!/bin/sh\nprintf "args=%s\\n" "$*"\nprintf "pw=%s\\n" "${PGPASSWORD-unset}"\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    script = helper.HELPER_SH.replace(helper.MOUNT + "/" + helper.FIFO_NAME, str(out))
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    refused = subprocess.run(["sh", "-c", script, "sh", "ak", "127.0.0.1", "5432"], input=b"pw\n", env=env,
                             capture_output=True, check=False)
    assert refused.returncode == 97 and b"is missing, not a FIFO" in refused.stderr
    os.mkfifo(out)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("data", out.read_bytes()))
    reader.start()
    ran = subprocess.run(["sh", "-c", script, "sh", "ak", "127.0.0.1", "5433", "--exclude-database=x"],
                         input=b"with space\n", env=env, capture_output=True, check=False)
    reader.join(10)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == helper.READY.encode() + b"\n"  # only after the FIFO was opened; the dump is not on stdout
    assert got["data"] == (b"args=--clean --if-exists --no-password -h 127.0.0.1 -p 5433 -U ak --exclude-database=x\n"
                           b"pw=with space\n")
    reader = threading.Thread(target=lambda: got.__setitem__("data", out.read_bytes()))
    reader.start()
    subprocess.run(["sh", "-c", script, "sh", "ak", "h", "1"], input=b"\n", env=env, check=True)
    reader.join(10)
    assert got["data"].endswith(b"pw=unset\n")  # an empty password line: no PGPASSWORD at all


def _pump_fifo(tmp_path, writer_code):
    """Run _pump on a real FIFO against a real writer process; returns (bytes read, chunks)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    proc = subprocess.Popen([sys.executable, "-c", writer_code, str(fifo)])
    gone = threading.Event()
    threading.Thread(target=lambda: (proc.wait(), gone.set()), daemon=True).start()
    chunks = []
    try:
        total = helper._pump(fd, gone, chunks.append)
    finally:
        os.close(fd)
        proc.wait()
    return total, b"".join(chunks)


def test_pump_reads_everything_until_the_writer_closes(tmp_path):
    code = ("import sys, time\n"
            "with open(sys.argv[1], 'wb', buffering=0) as f:\n"
            "    for i in range(300):\n"
            "        f.write(bytes([i % 251]) * 70001)\n"
            "        if i % 50 == 0: time.sleep(0.05)\n")
    total, data = _pump_fifo(tmp_path, code)
    expected = b"".join(bytes([i % 251]) * 70001 for i in range(300))
    assert total == len(expected)
    assert data == expected


def test_pump_returns_nothing_when_the_writer_never_opens(tmp_path):
    start = time.monotonic()
    total, data = _pump_fifo(tmp_path, "import sys, time; time.sleep(0.3); sys.exit(3)")
    assert (total, data) == (0, b"")
    assert time.monotonic() - start < 10


def test_pump_ends_on_a_writer_that_opens_and_closes_without_data(tmp_path):
    total, data = _pump_fifo(tmp_path, "import sys, time\nopen(sys.argv[1], 'wb').close()\ntime.sleep(1)")
    assert (total, data) == (0, b"")


# --- the helper's timeouts, against a scripted Engine API client --------------------------------------------------

class ScriptedDaemon:
    """The Engine API calls run() makes, scripted: the helper says READY (or not), writes ``data`` into the FIFO
    and exits (or not). Removing the container ends its wait, as the daemon does."""

    def __init__(self, ready=True, exits=True, data=b"-- dump\n"):
        self.ready = ready
        self.exits = exits
        self.data = data
        self.body = None
        self.removed = []
        self.gone = threading.Event()
        self.peer = None

    def list_containers(self, filters):
        del filters
        return []

    def daemon_info(self):
        return {}

    def create_container(self, name, body):
        del name
        self.body = body
        return "h" * 64

    def open_wait(self, container_id):
        return container_id

    def finish_wait(self, waiting):
        del waiting
        self.gone.wait(30)
        return 0

    def attach(self, container_id):
        del container_id
        mine, self.peer = socket.socketpair()
        return mine, b""

    def start_container(self, container_id):
        del container_id
        threading.Thread(target=self._helper, daemon=True).start()

    def _helper(self):
        password = b""
        while not password.endswith(b"\n"):
            password += self.peer.recv(1)
        if self.ready:
            fifo = [m["Source"] for m in self.body["HostConfig"]["Mounts"] if m["Type"] == "bind"][0] + "/dump"
            with open(fifo, "wb") as out:
                self.peer.sendall(struct.pack(">BxxxL", 1, len(helper.READY) + 1) + helper.READY.encode() + b"\n")
                out.write(self.data)
        if self.exits:
            time.sleep(0.3)  # pg_dumpall ends a while after the READY line
            self.gone.set()

    def remove_container(self, container_id, force=True, volumes=True, timeout=None):
        del force, volumes
        assert timeout is not None and timeout <= 30, "the helper's removal must not hold a stopping module long"
        self.removed.append(container_id)
        self.gone.set()
        self.peer.close()


def _run_helper(tmp_path, daemon):
    plan = helper.HelperPlan("authentik", "127.0.0.1", 5432, "pw")
    got = []
    try:
        return helper.run(daemon, DB_INFO, plan, [], str(tmp_path), got.append), b"".join(got)
    finally:
        assert daemon.removed == ["h" * 64]  # the helper container is removed whatever happened
        assert not [p for p in os.listdir(tmp_path) if p.startswith(helper.PRIVATE_PREFIX)]


def test_helper_run_delivers_the_dump(tmp_path):
    outcome, data = _run_helper(tmp_path, ScriptedDaemon())
    assert outcome.ok and data == b"-- dump\n"


def test_helper_that_never_opens_its_fifo_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(helper, "READY_TIMEOUT", 0.5)
    with pytest.raises(helper.HelperUnavailable, match="did not open its FIFO within"):
        _run_helper(tmp_path, ScriptedDaemon(ready=False, exits=False))


def test_helper_that_does_not_exit_after_its_dump_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(helper, "EXIT_TIMEOUT", 0.5)
    with pytest.raises(helper.TransportError, match="did not exit within") as failed:
        _run_helper(tmp_path, ScriptedDaemon(exits=False))
    assert not isinstance(failed.value, helper.HelperUnavailable)  # bytes were written: no fallback to exec
