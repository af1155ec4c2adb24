# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The dump helper: ``pg_dumpall`` in a throw-away container beside the database container (Docker only).

The Docker daemon's exec stream is the slowest link of a dump through ``docker exec`` (docs/performance.md). The
helper skips it: a container of the database's own image joins the database container's network namespace,
connects to the server over loopback TCP and writes the dump into a FIFO on this host (a bind-mounted private
directory), which the module reads straight into its sink. Nothing is written inside the database container, and
no secret is put in the helper's command or environment: the password reaches it over its attached stdin.

The helper runs as the module's own uid and gid, with a read-only root filesystem, every capability dropped,
``no-new-privileges`` and a small PID limit, and is removed when the dump ends (a helper left behind by a killed
run is removed by the next dump of the same database). Anything that keeps the helper from starting or from
writing its first byte is reported as ``HelperUnavailable`` so that the caller can dump through exec instead.

The Docker transport offers it as a capability: ``DockerTransport.dump_helper()`` returns a :class:`DumpHelper`,
which postgres_dump asks to ``probe`` and then to ``dump``, knowing nothing of Docker.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import select
import shutil
import socket
import tempfile
import threading
import time

from ansible_collections.authentik_ops.backup.plugins.module_utils import _proc
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    HelperUnavailable,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import shell
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import BoundedBuffer

HELPER_LABEL = "io.authentik-ops.backup.helper"
HELPER_FOR_LABEL = "io.authentik-ops.backup.helper-for"
HELPER_KIND = "postgres_dump"
MOUNT = "/run/authentik-backup"
FIFO_NAME = "dump"
PIPE_SIZE = 1 << 20  # asked of the kernel for the FIFO (the default maximum for an unprivileged process)
READ_SIZE = 1 << 20
SMALL_READ = 256 * 1024  # after a read shorter than this, let the writer fill the pipe a little (fewer wake-ups)
NAP = 0.001
POLL_MS = 200
PRIVATE_PREFIX = ".pgdump-helper-"
PROBE_MARK_OK = "authentik-backup-tcp-ok"
PROBE_MARK_FAIL = "authentik-backup-tcp-fail"

# Runs in the database container after the credential preamble of _postgres.shell ($1 = host to try). Prints whether
# the server accepts the dump's role over TCP on the loopback of the container's network namespace, with the
# credentials the exec path would use; on success the resolved role, port and password follow (the password last,
# it is read to the end). printf is a shell builtin in dash, bash and busybox sh: the password is in no argv.
TCP_PROBE_SH = r"""
th=$1
tp=${PGPORT:-5432}
if err=$(PGCONNECT_TIMEOUT=5 psql -X -q -A -t -w -h "$th" -p "$tp" -d template1 -c 'select 1' 2>&1 >/dev/null); then
  printf '%s\n%s\n%s\n%s' '""" + PROBE_MARK_OK + r"""' "$PGUSER" "$tp" "${PGPASSWORD:-}"
else
  printf '%s\n%s' '""" + PROBE_MARK_FAIL + r"""' "$err"
fi
"""

# Runs in the helper. $1 = role, $2 = host, $3 = port, then extra pg_dumpall arguments. The first line of stdin is
# the password (empty: none). The FIFO is opened once (pg_dumpall -f would reopen it for each database); the module
# waits for READY on stdout to know that it was the module's FIFO that opened (a FIFO on a filesystem the daemon sees
# through a VM would block here for ever). stdin is closed for pg_dumpall.
READY = "authentik-backup-helper-ready"
HELPER_SH = r"""
IFS= read -r PGPASSWORD || true
if [ -n "$PGPASSWORD" ]; then export PGPASSWORD; else unset PGPASSWORD; fi
out=""" + MOUNT + "/" + FIFO_NAME + r"""
if [ ! -p "$out" ]; then
  echo "authentik-backup helper: $out is missing, not a FIFO, or not reachable by uid $(id -u)" >&2
  exit 97
fi
exec 3>"$out" || exit 96
echo """ + READY + r"""
u=$1; h=$2; p=$3; shift 3
exec pg_dumpall --clean --if-exists --no-password -h "$h" -p "$p" -U "$u" "$@" < /dev/null >&3 3>&-
"""


class HelperPlan:
    """What the TCP probe found: the role, host, port and password the helper will use."""

    def __init__(self, user, host, port, password):
        self.user = user
        self.host = host
        self.port = port
        self.password = password

    def __repr__(self):  # never show the password
        return f"HelperPlan(user={self.user!r}, host={self.host!r}, port={self.port!r})"


class HelperOutcome:
    def __init__(self, exit_code, stderr, problem=None):
        self.exit_code = exit_code
        self.stderr = stderr
        self.problem = problem

    @property
    def ok(self):
        return self.problem is None and self.exit_code == 0


def tcp_host(params):
    """Host the helper connects to: ``host`` when it names a TCP host, else the loopback address."""
    host = params.get("host") or ""
    if host and not host.startswith("/"):
        return host
    return "127.0.0.1"


def probe(transport, params, secret_env):
    """Ask the database container whether the dump's role can connect over loopback TCP.

    Returns a HelperPlan; raises HelperUnavailable with the reason otherwise.
    """
    host = tcp_host(params)
    argv = shell(params, TCP_PROBE_SH) + [host]
    result = transport.exec_capture(argv, secret_env=secret_env, limit=64 * 1024)
    text = result.stdout.decode("utf-8", "replace")
    if not result.ok:
        raise HelperUnavailable(f"the TCP probe could not run (exit status {result.exit_code}"
                                f"{', ' + result.problem if result.problem else ''})")
    if text.startswith(PROBE_MARK_FAIL):
        detail = text[len(PROBE_MARK_FAIL):].strip().splitlines()
        raise HelperUnavailable(f"the server does not accept the dump's role over TCP on {host} in the database "
                                f"container's network namespace ({detail[-1] if detail else 'no detail'})")
    if not text.startswith(PROBE_MARK_OK + "\n"):
        raise HelperUnavailable("unexpected answer from the TCP probe")
    fields = text[len(PROBE_MARK_OK) + 1:].split("\n", 2)
    if len(fields) != 3 or not fields[0] or not fields[1].isdigit():
        raise HelperUnavailable("unexpected answer from the TCP probe")
    user, port, password = fields
    if "\n" in password or "\r" in password:
        raise HelperUnavailable("the password contains a line break, which the helper's stdin hand-over cannot carry")
    return HelperPlan(user, host, int(port), password)


def container_body(db_info, plan, extra_args, mount_source, uid, gid, daemon=None, owner="", run_owner=""):
    """The Engine API create body of the helper. Holds no secret (tested).

    ``daemon`` is what :func:`daemon_traits` found: on a rootless daemon the helper runs as uid 0 of its user
    namespace (which is the module's user), on a user-namespace-remapped daemon it keeps the host's user namespace,
    and with SELinux the private directory is bind-mounted with a private label (``:Z``).
    """
    daemon = daemon or {}
    config = db_info.get("Config") or {}
    env = ["HOME=/tmp"]
    for item in config.get("Env") or []:
        if item.startswith("PATH="):  # where the image keeps pg_dumpall; nothing else is copied
            env.append(item)
    host_config = {
        "NetworkMode": f"container:{db_info['Id']}",
        "ReadonlyRootfs": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "PidsLimit": 64,
        "AutoRemove": False,
        "RestartPolicy": {"Name": "no"},
        "LogConfig": {"Type": "none", "Config": {}},
        # the image's own volumes (e.g. PGDATA) become small tmpfs instead of anonymous volumes
        "Mounts": [{"Type": "tmpfs", "Target": target, "TmpfsOptions": {"SizeBytes": 1 << 20}}
                   for target in sorted(config.get("Volumes") or {}) if target != MOUNT],
    }
    # read-only: a FIFO opens for writing through a read-only mount, and nothing else can be created there
    if daemon.get("selinux"):
        host_config["Binds"] = [f"{mount_source}:{MOUNT}:ro,Z"]
    else:
        host_config["Mounts"].append({"Type": "bind", "Source": mount_source, "Target": MOUNT, "ReadOnly": True})
    if daemon.get("userns"):
        host_config["UsernsMode"] = "host"
    user = "0:0" if daemon.get("rootless") else f"{uid}:{gid}"
    return {
        "Image": db_info["Image"],
        "Entrypoint": ["sh"],
        "Cmd": ["-c", HELPER_SH, "sh", plan.user, plan.host, str(plan.port)] + list(extra_args),
        "Env": env,
        "User": user,
        "WorkingDir": "/",
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": True,
        "StdinOnce": True,
        "Tty": False,
        "Healthcheck": {"Test": ["NONE"]},
        "Labels": {HELPER_LABEL: HELPER_KIND, HELPER_FOR_LABEL: db_info["Id"], HELPER_OWNER_LABEL: owner,
                   HELPER_RUN_LABEL: run_owner or ""},
        "HostConfig": host_config,
    }


def daemon_traits(client):
    """Security options of the daemon that change how the helper is set up."""
    try:
        options = client.daemon_info().get("SecurityOptions") or []
    except TransportError:
        return {}
    names = {part.split("=", 1)[1] for option in options for part in str(option).split(",")
             if part.startswith("name=")}
    return {"rootless": "rootless" in names, "userns": "userns" in names, "selinux": "selinux" in names}


STALE_CREATED = 600  # seconds after which a helper that was created but never started counts as left behind
HELPER_OWNER_LABEL = "io.authentik-ops.backup.helper-owner"
# The run the dump belongs to (the module's ``owner`` option: the playbook or SSH session of the run), when known.
HELPER_RUN_LABEL = "io.authentik-ops.backup.helper-run"


def owner_id(pid=None):
    """Who created a helper: boot id, pid namespace, pid and the process's start time."""
    return _proc.owner_id(pid)


def owner_alive(owner):
    """True or False when the owner can be judged from here (same boot and pid namespace), else None."""
    return _proc.owner_alive(owner)


def remove_stale(client, db_id, now=None):
    """Remove helpers left behind by runs that are gone, and their FIFO directories.

    A helper whose owner process or whose run (same host boot and pid namespace) has ended is removed in any state,
    whichever database it was for. A helper of this database whose owner cannot be judged from here is removed once
    it has exited, or STALE_CREATED seconds after it was created without being started. Returns the removed names.
    """
    removed = []
    now = time.time() if now is None else now
    for entry in client.list_containers({"label": [f"{HELPER_LABEL}={HELPER_KIND}"]}):
        labels = entry.get("Labels") or {}
        alive = owner_alive(labels.get(HELPER_OWNER_LABEL))
        if alive is not False and owner_alive(labels.get(HELPER_RUN_LABEL)) is False:
            alive = False  # the module may still run, but the run it belongs to is gone
        state = entry.get("State")
        if alive is True:
            continue
        if alive is None:
            if labels.get(HELPER_FOR_LABEL) != db_id:
                continue
            if state not in ("exited", "dead", "created"):
                continue
            if state == "created" and now - (entry.get("Created") or 0) < STALE_CREATED:
                continue
        client.remove_container(entry["Id"])
        removed.append(((entry.get("Names") or [entry["Id"][:12]])[0]).lstrip("/"))
        for mount in entry.get("Mounts") or []:
            source = mount.get("Source") or ""
            if mount.get("Destination") == MOUNT and os.path.basename(source).startswith(PRIVATE_PREFIX):
                shutil.rmtree(source, ignore_errors=True)
    return removed


class _SignalGuard:
    """While the helper runs, SIGTERM and SIGHUP end the module through SystemExit so that the helper container and
    the FIFO are removed; during that cleanup (:meth:`hold`) further signals are only remembered."""

    SIGNALS = ("SIGTERM", "SIGHUP")

    def __enter__(self):
        import signal

        self.signal = signal
        self.previous = {}
        self.held = False
        self.pending = None
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self.previous[number] = signal.signal(number, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.held:
            self.pending = signum
            return
        previous = self.previous.get(signum)
        if callable(previous):  # e.g. _proc.OwnerWatch's: raises RunGone, which says why
            previous(signum, frame)
        raise SystemExit(128 + signum)

    def hold(self):
        self.held = True

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            self.signal.signal(number, handler)
        if self.pending is not None and exc[0] is None:
            raise SystemExit(128 + self.pending)
        return False


READY_TIMEOUT = 30.0  # seconds for the helper to open the FIFO once started
EXIT_TIMEOUT = 120.0  # seconds for the helper to exit after the end of its dump
REMOVE_TIMEOUT = 20.0  # seconds to wait for the daemon's answer to the helper's removal (it goes on without us)


class DumpHelper:
    """The dump helper of one database container, as the Docker transport offers it to postgres_dump."""

    def __init__(self, transport):
        self.transport = transport

    def describe(self):
        return f"the helper of {self.transport.describe()}"

    def probe(self, params, secret_env):
        """A HelperPlan when the server accepts the dump's role over loopback TCP, else HelperUnavailable."""
        return probe(self.transport, params, secret_env)

    def dump(self, plan, extra_args, workdir, on_data, run_owner=None):
        """Run the helper (see :func:`run`); returns a HelperOutcome."""
        return run(self.transport.client, self.transport.inspect(), plan, extra_args, workdir, on_data, run_owner)


def run(client, db_info, plan, extra_args, workdir, on_data, run_owner=None):
    """Run the helper and feed its dump to ``on_data``; returns a HelperOutcome.

    Raises HelperUnavailable when the helper could not be set up, started, or ended or failed before its first
    byte reached ``on_data`` (the dump can then go through exec), TransportError for errors after that.
    """
    try:
        remove_stale(client, db_info["Id"])
    except TransportError:
        pass  # a leftover is only clutter; never a reason to fail or to skip the dump
    helper = _HelperRun(client, db_info, workdir, on_data, run_owner)
    with _SignalGuard() as guard:
        try:
            helper.make_fifo()
            helper.launch(plan, extra_args)
            helper.hand_over(plan.password)
            helper.wait_ready()
            _pump(helper.fd, helper.waiter.done, helper.feed)
            if not helper.waiter.done.wait(EXIT_TIMEOUT):
                raise TransportError(f"the helper did not exit within {EXIT_TIMEOUT:.0f} s after its dump ended")
            return HelperOutcome(helper.waiter.exit_code, helper.reader.stderr.getvalue(), helper.waiter.error)
        except (TransportError, OSError) as exc:
            if helper.fed == 0:
                raise HelperUnavailable(f"the helper failed before its first byte: {exc}") from exc
            if isinstance(exc, OSError):
                raise TransportError(f"reading the helper's FIFO: {exc}") from exc
            raise
        finally:
            guard.hold()
            helper.clean_up()


class _HelperRun:
    """The parts of one helper run (private directory and FIFO, container, attach stream, wait) and their
    removal."""

    def __init__(self, client, db_info, workdir, on_data, run_owner=None):
        self.client = client
        self.run_owner = run_owner
        self.db_info = db_info
        self.workdir = workdir
        self.on_data = on_data
        self.fed = 0
        self.container_id = self.fd = self.sock = self.reader = self.waiter = None
        name = db_info.get("Name", "").lstrip("/") or db_info["Id"][:12]
        self.name = f"{name}-pgdump-{secrets.token_hex(4)}"
        try:
            self.private = tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=workdir)
        except OSError as exc:
            raise HelperUnavailable(f"cannot create the helper's private directory in {workdir}: {exc}") from exc

    def feed(self, data):
        self.fed += len(data)
        self.on_data(data)

    def make_fifo(self):
        try:
            os.chmod(self.private, 0o700)
            fifo = os.path.join(self.private, FIFO_NAME)
            os.mkfifo(fifo, 0o600)
            self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise HelperUnavailable(f"the helper's FIFO could not be set up in {self.workdir}: {exc}") from exc
        try:
            fcntl.fcntl(self.fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            pass  # the default pipe works, with more wake-ups

    def launch(self, plan, extra_args):
        body = container_body(self.db_info, plan, extra_args, self.private, os.geteuid(), os.getegid(),
                              daemon=daemon_traits(self.client), owner=owner_id(), run_owner=self.run_owner)
        try:
            self.container_id = self.client.create_container(self.name, body)
            self.waiter = _Waiter(self.client, self.container_id)
            self.waiter.start()
            self.sock, pending = self.client.attach(self.container_id)
            self.reader = _AttachReader(self.sock, pending)
            self.reader.start()
            self.client.start_container(self.container_id)
        except TransportError as exc:
            raise HelperUnavailable(f"the helper container could not be started: {exc}") from exc

    def hand_over(self, password):
        try:
            self.sock.sendall((password + "\n").encode("utf-8"))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise HelperUnavailable(f"the password could not be handed to the helper: {exc}") from exc

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.reader.ready.wait(0.05):
            if self.waiter.done.is_set():
                self.reader.join(2)  # the last of its stderr
                raise HelperUnavailable(f"the helper ended with status {self.waiter.exit_code} before opening its "
                                        f"FIFO: {self.reader.stderr.getvalue().decode('utf-8', 'replace').strip()}")
            if time.monotonic() > deadline:
                raise HelperUnavailable(
                    f"the helper did not open its FIFO within {READY_TIMEOUT:.0f} s (is {self.workdir} shared with "
                    "the Docker daemon through a VM or network file system?)")

    def clean_up(self):
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.reader is not None:
            self.reader.join(5)
        if self.sock is not None:
            self.sock.close()
        if self.fd is not None:
            os.close(self.fd)
        if self.container_id is not None:
            try:
                self.client.remove_container(self.container_id, timeout=REMOVE_TIMEOUT)
            except TransportError:
                pass  # the daemon finishes it, else the next dump does (remove_stale: its owner is gone)
        if self.waiter is not None:
            self.waiter.join(5)
        shutil.rmtree(self.private, ignore_errors=True)


def _pump(fd, writer_gone, on_data):
    """Read the FIFO until its writer closed it (or the helper ended without opening it); returns the bytes read.

    The descriptor is non-blocking: a FIFO that no writer has opened yet reads as end-of-file, so it is only read
    when poll reports data or a hang-up, or once the helper has exited (``writer_gone``).
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    total = 0
    while True:
        events = poller.poll(POLL_MS)
        gone = writer_gone.is_set()
        if not events and not gone:
            continue
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                if total or gone or any(ev & select.POLLHUP for _fd, ev in events):
                    return total
                break
            total += len(data)
            on_data(data)
            if len(data) < SMALL_READ:
                time.sleep(NAP)
                break


class _Waiter(threading.Thread):
    """Waits for the helper to exit, registered before it starts (so its exit code is never missed, even if another
    run removes the exited container); ``done`` is the sign that every writer of the FIFO is gone."""

    def __init__(self, client, container_id):
        super().__init__(daemon=True)
        self.client = client
        self.waiting = client.open_wait(container_id)
        self.exit_code = None
        self.error = None
        self.done = threading.Event()

    def run(self):
        try:
            self.exit_code = self.client.finish_wait(self.waiting)
        except TransportError as exc:
            self.error = str(exc)
        finally:
            self.done.set()


class _AttachReader(threading.Thread):
    """Reads the helper's attached stdout (the READY line) and stderr (kept bounded) until the stream ends."""

    def __init__(self, sock, pending):
        super().__init__(daemon=True)
        self.sock = sock
        self.pending = pending
        self.stderr = BoundedBuffer()
        self.stdout = b""
        self.ready = threading.Event()

    def _stdout(self, data):
        if not self.ready.is_set():
            self.stdout = (self.stdout + data)[-4096:]
            if READY.encode() in self.stdout:
                self.ready.set()

    def run(self):
        from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import _demux

        try:
            self.sock.settimeout(None)
            _demux(self.sock, self.pending, self._stdout, self.stderr.write, wait_all=False)
        except OSError:
            pass  # the stream only carries READY and stderr; the exit status comes from the registered wait
