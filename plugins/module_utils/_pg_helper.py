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
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import select
import shutil
import socket
import tempfile
import threading
import time

from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import shell
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import BoundedBuffer, TransportError

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
PROBE_MARK_OK = "authentik-backup-tcp-ok"
PROBE_MARK_FAIL = "authentik-backup-tcp-fail"

# Runs in the database container after the credential preamble of _postgres.shell ($1 = host to try). Prints whether the server accepts the
# dump's role over TCP on the loopback of the container's network namespace, with the credentials the exec path
# would use; on success the resolved role, port and password follow (the password last, it is read to the end).
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
# the password (empty: none). The dump goes to the FIFO through one descriptor (pg_dumpall -f would reopen it for
# each database); stdin is closed for pg_dumpall.
HELPER_SH = r"""
IFS= read -r PGPASSWORD || true
if [ -n "$PGPASSWORD" ]; then export PGPASSWORD; else unset PGPASSWORD; fi
out=""" + MOUNT + "/" + FIFO_NAME + r"""
if [ ! -p "$out" ]; then
  echo "authentik-backup helper: $out is not the FIFO of the module (is the bind mount seen by the daemon?)" >&2
  exit 97
fi
u=$1; h=$2; p=$3; shift 3
exec pg_dumpall --clean --if-exists --no-password -h "$h" -p "$p" -U "$u" "$@" < /dev/null > "$out"
"""


class HelperUnavailable(Exception):
    """The helper cannot be used here; the message says why (the dump can go through exec instead)."""


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
    def __init__(self, exit_code, stderr, raw_bytes, problem=None):
        self.exit_code = exit_code
        self.stderr = stderr
        self.raw_bytes = raw_bytes
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


def container_body(db_info, plan, extra_args, mount_source, uid, gid):
    """The Engine API create body of the helper. Holds no secret (tested)."""
    config = db_info.get("Config") or {}
    env = ["HOME=/tmp"]
    for item in config.get("Env") or []:
        if item.startswith("PATH="):  # where the image keeps pg_dumpall; nothing else is copied
            env.append(item)
    return {
        "Image": db_info["Image"],
        "Entrypoint": ["sh"],
        "Cmd": ["-c", HELPER_SH, "sh", plan.user, plan.host, str(plan.port)] + list(extra_args),
        "Env": env,
        "User": f"{uid}:{gid}",
        "WorkingDir": "/",
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": True,
        "StdinOnce": True,
        "Tty": False,
        "Labels": {HELPER_LABEL: HELPER_KIND, HELPER_FOR_LABEL: db_info["Id"]},
        "HostConfig": {
            "NetworkMode": f"container:{db_info['Id']}",
            "Mounts": [{"Type": "bind", "Source": mount_source, "Target": MOUNT, "ReadOnly": False}],
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": 64,
            "AutoRemove": False,
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "none", "Config": {}},
        },
    }


STALE_CREATED = 600  # seconds after which a helper that was created but never started counts as left behind


def remove_stale(client, db_id, now=None):
    """Remove helpers of this database container that are no longer running (left by a killed run).

    A helper that was only created is left alone for STALE_CREATED seconds: it may belong to a dump starting now.
    """
    removed = []
    now = time.time() if now is None else now
    stale = client.list_containers({"label": [f"{HELPER_LABEL}={HELPER_KIND}", f"{HELPER_FOR_LABEL}={db_id}"],
                                    "status": ["created", "exited", "dead"]})
    for entry in stale:
        if entry.get("State") == "created" and now - (entry.get("Created") or 0) < STALE_CREATED:
            continue
        client.remove_container(entry["Id"])
        removed.append(((entry.get("Names") or [entry["Id"][:12]])[0]).lstrip("/"))
    return removed


class _TermGuard:
    """Turn SIGTERM into SystemExit while the helper runs, so that its container and FIFO are cleaned up."""

    def __enter__(self):
        import signal

        self.signal = signal
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    @staticmethod
    def _handler(signum, frame):
        del frame
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        if self.previous is not None:
            self.signal.signal(self.signal.SIGTERM, self.previous)
        return False


def run(client, db_info, plan, extra_args, workdir, on_data, label_prefix=None):
    """Run the helper and feed its dump to ``on_data``; returns a HelperOutcome.

    Raises HelperUnavailable when the helper could not be set up or started (nothing was fed), TransportError for
    errors of the daemon after the helper started.
    """
    db_id = db_info["Id"]
    try:
        remove_stale(client, db_id)
    except TransportError:
        pass  # a leftover is only clutter; never a reason to fail or to skip the dump
    name = f"{label_prefix or db_info.get('Name', '').lstrip('/') or db_id[:12]}-pgdump-{secrets.token_hex(4)}"
    try:
        private = tempfile.mkdtemp(prefix=".pgdump-helper-", dir=workdir)
    except OSError as exc:
        raise HelperUnavailable(f"cannot create the helper's private directory in {workdir}: {exc}") from exc
    container_id = None
    fd = None
    sock = None
    with _TermGuard():
        try:
            os.chmod(private, 0o700)
            fifo = os.path.join(private, FIFO_NAME)
            os.mkfifo(fifo, 0o600)
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
            except OSError:
                pass  # the default pipe works, with more wake-ups
            body = container_body(db_info, plan, extra_args, private, os.geteuid(), os.getegid())
            try:
                container_id = client.create_container(name, body)
                sock, pending = client.attach(container_id)
            except TransportError as exc:
                raise HelperUnavailable(f"the helper container could not be created: {exc}") from exc
            reader = _AttachReader(sock, pending)
            reader.start()
            try:
                client.start_container(container_id)
            except TransportError as exc:
                raise HelperUnavailable(f"the helper container could not be started: {exc}") from exc
            try:
                sock.sendall((plan.password + "\n").encode("utf-8"))
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise HelperUnavailable(f"the password could not be handed to the helper: {exc}") from exc
            raw = _pump(fd, reader.done, on_data)
            reader.done.wait(60)
            exit_code = client.wait_container(container_id, timeout=120)
            problem = None
            if reader.error:
                problem = f"reading the helper's output: {reader.error}"
            return HelperOutcome(exit_code, reader.stderr.getvalue(), raw, problem)
        except OSError as exc:
            if fd is None or container_id is None:
                raise HelperUnavailable(f"the helper's FIFO could not be set up: {exc}") from exc
            raise TransportError(f"reading the helper's FIFO: {exc}") from exc
        finally:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
            if fd is not None:
                os.close(fd)
            if container_id is not None:
                try:
                    client.remove_container(container_id)
                except TransportError:
                    pass  # removed by the next dump of this database (remove_stale)
            shutil.rmtree(private, ignore_errors=True)


def _pump(fd, writer_gone, on_data):
    """Read the FIFO until its writer closed it (or the helper ended without opening it); returns the bytes read.

    The descriptor is non-blocking: a FIFO that no writer has opened yet reads as end-of-file, so it is only read
    when poll reports data or a hang-up, or once the helper has ended (``writer_gone``).
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


class _AttachReader(threading.Thread):
    """Reads the helper's attached stdout and stderr (multiplexed frames) until the container ends."""

    def __init__(self, sock, pending):
        super().__init__(daemon=True)
        self.sock = sock
        self.pending = pending
        self.stderr = BoundedBuffer()
        self.stdout = BoundedBuffer(4096)
        self.error = None
        self.done = threading.Event()

    def run(self):
        from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import _demux

        try:
            self.sock.settimeout(None)
            leftover = _demux(self.sock, self.pending, self.stdout.write, self.stderr.write)
            if leftover:
                self.error = f"the attach stream ended inside a frame ({leftover} bytes)"
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOTCONN):
                self.error = str(exc)
        finally:
            self.done.set()
