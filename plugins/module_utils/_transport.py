# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The seam between the operation modules and the platforms: what a module may ask of the place its data lives.

``Transport`` is one target: a Docker container (``_docker_api.DockerTransport``), a container of a Kubernetes pod
(``_k8s_exec.K8sTransport``) or the host the module runs on (``_local.LocalTransport``). ``Workloads`` stops and
starts the application's long-running parts (authentik's server and worker). Modules get both from
``_transport_factory``, the only place that knows the platforms; they never test which platform they talk to, only
what the transport can do (``can_stop``, ``has_mounts``, ``dump_helper()``).

Also here: the result of a command (ExecResult), the bounded buffers for its output, and the exact-length input
feed that a command reading stdin needs where the transport cannot close stdin (a Kubernetes exec).
"""

from __future__ import annotations

import abc
import collections
import threading

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    NotSupported,
    RestoreError,
    TransportError,
)

CHUNK = 1 << 20
CAPTURE_LIMIT = 4 * 1024 * 1024


class ExecResult:
    """Outcome of one command run in the target."""

    def __init__(self, exit_code, stderr=b"", stdout=b"", stdout_bytes=0, complete=True, problem=None):
        self.exit_code = exit_code
        self.stderr = stderr
        self.stdout = stdout
        self.stdout_bytes = stdout_bytes
        self.complete = complete
        self.problem = problem

    @property
    def ok(self):
        return self.complete and self.exit_code == 0


class BoundedBuffer:
    """Keeps the last ``limit`` bytes written to it (stderr of long commands)."""

    def __init__(self, limit=64 * 1024):
        self.limit = limit
        self.chunks = collections.deque()
        self.length = 0

    def write(self, data):
        if not data:
            return
        self.chunks.append(bytes(data))
        self.length += len(data)
        while self.chunks and self.length - len(self.chunks[0]) >= self.limit:
            self.length -= len(self.chunks.popleft())

    def getvalue(self):
        return b"".join(self.chunks)[-self.limit:]


class CappedBuffer:
    """Collects small command output; fails past ``limit`` so a probe can never eat memory."""

    def __init__(self, limit=CAPTURE_LIMIT):
        self.limit = limit
        self.parts = []
        self.length = 0

    def write(self, data):
        self.length += len(data)
        if self.length > self.limit:
            raise TransportError(f"command output exceeded {self.limit} bytes where a short answer was expected")
        self.parts.append(bytes(data))

    def getvalue(self):
        return b"".join(self.parts)


# Shell snippet that reads secrets, one per line, from stdin into exported variables. Every transport hands secrets
# over this way: a pod exec cannot set the environment, and a Docker exec's Env is kept in the daemon's exec config
# (and its debug log); on stdin the secret travels in the stream, never as an argument or in an exec's config.
def secret_env_wrapper(names, argv):
    reads = "; ".join(f'IFS= read -r {name}; export {name}' for name in names)
    return ["sh", "-c", f'{reads}; exec "$@"', "sh"] + list(argv)


def secret_stdin(secret_env, argv, where):
    """``(argv, prefix)``: ``argv`` wrapped to read the secrets of ``secret_env`` from stdin, and the bytes to send
    first on stdin (one line per secret). Without secrets, ``argv`` unchanged and ``b""``.

    Raises TransportError for a secret that cannot be one line (a line break or NUL), naming ``where``.
    """
    if not secret_env:
        return list(argv), b""
    for name, value in secret_env.items():
        if "\n" in value or "\r" in value or "\0" in value:
            raise TransportError(f"{name}: a secret with a line break or NUL cannot be passed to {where}")
    return (secret_env_wrapper(list(secret_env), argv),
            b"".join(value.encode("utf-8") + b"\n" for value in secret_env.values()))


# --- input of known length ----------------------------------------------------------------------------------------

def count_bytes(chunks):
    """Consume a generator; returns the number of bytes it yields."""
    total = 0
    for block in chunks:
        total += len(block)
    return total


def exact_length(chunks, expected):
    """Pass ``chunks`` through, checking that they add up to exactly ``expected`` bytes.

    Raises RestoreError as soon as more bytes come, or at the end if fewer came, so a source that changed between
    the counting pass and the sending pass never feeds the remote ``head -c`` a wrong amount silently.
    """
    sent = 0
    for block in chunks:
        sent += len(block)
        if sent > expected:
            raise RestoreError(f"the source grew while it was sent (more than the {expected} bytes counted before); "
                               "it must not change during a restore")
        yield block
    if sent != expected:
        raise RestoreError(f"the source shrank while it was sent ({sent} of the {expected} bytes counted before); "
                           "it must not change during a restore")


class Feed:
    """The input of a ``head -c <expected> | command`` pipeline: always exactly ``expected`` bytes.

    The source passes through :func:`exact_length`. A source that fails, grows or shrinks while it is sent is
    recorded in ``error`` instead of raised: the bytes still owed are then sent as ``poison`` followed by newlines,
    so the remote ``head`` ends on its own and the exec finishes (a Kubernetes exec cannot close stdin; an exception
    would leave ``head`` waiting for ever). The caller must check ``error`` after the command and treat the run as
    failed.
    """

    def __init__(self, chunks, expected, poison=b""):
        self.chunks = chunks
        self.expected = expected
        self.poison = poison
        self.sent = 0
        self.error = None

    def __iter__(self):
        try:
            for block in exact_length(self.chunks, self.expected):
                self.sent += len(block)
                yield block
        except Exception as exc:  # any failure of the source: record it, then fill up to the promised size
            self.error = exc
            yield from self._fill()

    def _fill(self):
        owed = self.expected - self.sent
        if owed <= 0:
            return
        filler = self.poison[:owed]
        self.sent += len(filler)
        if filler:
            yield filler
        while self.sent < self.expected:
            take = min(CHUNK, self.expected - self.sent)
            self.sent += take
            yield b"\n" * take


class Counted:
    """An iterable of bytes that counts what passed (the size of a stream sent without a length)."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.size = 0

    def __iter__(self):
        for block in self.chunks:
            self.size += len(block)
            yield block


class WriteTo:
    """A file object that hands every write to ``on_data`` (tarfile's stream mode writing into a sink)."""

    def __init__(self, on_data):
        self.on_data = on_data

    def write(self, data):
        self.on_data(bytes(data))
        return len(data)


class ChunkReader:
    """A read()-able file object over an iterable of bytes (for tarfile's stream mode)."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buffer = b""
        self.pos = 0

    def read(self, size=-1):
        parts = []
        wanted = size
        while wanted != 0:
            if self.pos >= len(self.buffer):
                self.buffer, self.pos = next(self.chunks, b""), 0
                if not self.buffer:
                    break
            take = len(self.buffer) - self.pos if wanted < 0 else min(wanted, len(self.buffer) - self.pos)
            parts.append(self.buffer[self.pos:self.pos + take])
            self.pos += take
            if wanted > 0:
                wanted -= take
        return b"".join(parts)

    def drain(self):
        for block in self.chunks:
            del block
        self.buffer, self.pos = b"", 0


# --- the interface ------------------------------------------------------------------------------------------------

class Transport(abc.ABC):
    """One target: what an operation module may ask of it.

    Capabilities a module may test (never the platform):

    - ``can_stop``: :meth:`stop` and :meth:`start` work (a Docker container); elsewhere they raise NotSupported.
    - ``has_mounts``: the target has volume mounts (:meth:`mounts`); a host directory has none.
    - ``extracts_top_dirs``: :meth:`write_archive` may set owner and mode of the top-level directories themselves
      (the Docker daemon extracts as root); where it may not (``tar -x`` as the container's user), leave them out.
    - :meth:`dump_helper`: a faster way to take a PostgreSQL dump than exec, or None.
    """

    can_stop = False
    has_mounts = True
    extracts_top_dirs = False
    missing_reason = "does not exist in the target"

    @abc.abstractmethod
    def describe(self):
        """Where the target is, for messages (``container 'x'``, ``pod ns/name``)."""

    @abc.abstractmethod
    def target_facts(self):
        """A dict naming the target for the result (platform, names, image); checks that it runs."""

    @abc.abstractmethod
    def check_running(self):
        """Raise TransportError unless the target exists and runs."""

    def image(self):
        """The image the target runs (the version of the application is in its tag)."""
        return self.target_facts().get("image")

    @abc.abstractmethod
    def exec_stream(self, argv, on_stdout, secret_env=None, stdin=None):
        """Run ``argv`` in the target; stdout goes to ``on_stdout(bytes)`` as it arrives.

        ``secret_env`` (a dict) reaches the command's environment on its stdin (:func:`secret_stdin`), never its
        argv nor the exec's configuration; ``stdin`` is an optional
        iterable of bytes sent to the command. Returns an ExecResult: the run is complete only if the transport saw
        the command's end and its exit status.
        """

    def exec_capture(self, argv, secret_env=None, limit=CAPTURE_LIMIT):
        """Run ``argv`` and keep its (short) stdout in ``result.stdout``; more than ``limit`` bytes fail."""
        out = CappedBuffer(limit)
        result = self.exec_stream(argv, out.write, secret_env=secret_env)
        result.stdout = out.getvalue()
        return result

    @abc.abstractmethod
    def read_archive(self, path, on_data):
        """Stream an uncompressed tar of ``path`` into ``on_data``; a dict about the path, or None if absent."""

    @abc.abstractmethod
    def write_archive(self, path, source):
        """Extract a tar stream at ``path`` in the target; returns the bytes sent.

        ``source`` is a callable returning a new iterable of the tar's bytes each time; a transport that must
        announce the length of its input calls it twice (count, then send exactly that).
        """

    @abc.abstractmethod
    def path_exists(self, path):
        """Whether ``path`` exists in the target."""

    def mounts(self):
        """Mount points of the target's volumes."""
        return []

    def is_mounted(self, path):
        """Whether ``path`` is a mount point of the target or lies inside one."""
        path = path.rstrip("/") or "/"
        for dest in self.mounts():
            dest = dest.rstrip("/") or "/"
            if path == dest or path.startswith(dest.rstrip("/") + "/"):
                return True
        return False

    def stop(self, timeout=30):
        raise NotSupported(f"{self.describe()} cannot be stopped on its own")

    def start(self):
        raise NotSupported(f"{self.describe()} cannot be started on its own")

    def refresh(self):
        """Forget what is cached about the target (after it was stopped, started or restarted)."""

    def allow_stopped(self):
        """Let :meth:`read_archive`, :meth:`path_exists` and :meth:`mounts` read the target while it is stopped;
        NotSupported where a stopped target cannot be read."""
        raise NotSupported(f"{self.describe()} cannot be read while it is stopped")

    def dump_helper(self):
        """An object that dumps PostgreSQL faster than exec (see ``_pg_helper``), or None where there is none."""
        return None


def run_concurrently(calls):
    """Run every callable of ``calls`` ({name: callable}) in its own thread and wait for all of them.

    Raises TransportError naming each one that failed (after all have ended), so a failure of one never leaves
    another half-done and unreported.
    """
    errors = {}

    def one(name, call):
        try:
            call()
        except Exception as exc:  # reported below with the name of the part
            errors[name] = exc

    threads = [threading.Thread(target=one, args=item, daemon=True) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise TransportError("; ".join(f"{name}: {exc}" for name, exc in sorted(errors.items())),
                             failed=sorted(errors))


class WorkloadState:
    """What one long-running part (a container, a Deployment) looks like now."""

    def __init__(self, name, running, replicas=None, detail=""):
        self.name = name
        self.running = running
        self.replicas = replicas  # desired replicas where the platform scales (Kubernetes), else None
        self.detail = detail
        self.action = "none"  # what a module decided to do with it

    def as_dict(self):
        return dict(name=self.name, running=self.running, replicas=self.replicas, state=self.detail)


class Workloads(abc.ABC):
    """Stops and starts the application's long-running parts, all of them at once.

    ``survey`` reads their state; ``stop`` and ``start`` act on the ones given and, with ``wait``, return once they
    are down (no process left) or up (running, healthy or ready) or ``wait_timeout`` has passed (TransportError).
    ``scales`` tells whether a part has replicas to give back (a Deployment) or just runs or not (a container).
    """

    scales = False
    kind = "container"

    @abc.abstractmethod
    def survey(self, names):
        """[WorkloadState] of ``names``; TransportError when one does not exist."""

    @abc.abstractmethod
    def stop(self, states, timeout=None, wait=True, wait_timeout=300):
        """Stop the parts of ``states`` (their replicas go to 0)."""

    @abc.abstractmethod
    def start(self, wanted, wait=True, wait_timeout=300):
        """Start the parts of ``wanted`` ({name: replicas}; replicas only where the platform scales)."""
