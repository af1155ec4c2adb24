# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Kubernetes transport: pod exec over the WebSocket protocol, read frame by frame; Deployments scaled.

Credentials come from kubernetes.core (``AUTH_ARG_SPEC`` options, ``get_api_client``); the connection is the
kubernetes client's ``stream``. Its frames are read by ``_FrameReader`` from the WebSocket's socket into one 1 MiB
buffer: channel 1 (stdout) goes to the sink as it arrives, channel 2 (stderr) is kept bounded, channel 3 (status) is
parsed for the exit code. The client's own ``update()/read_stdout()`` loop is not used: it
decodes text and keeps everything in memory.

Protocol: the kubernetes client offers ``v4.channel.k8s.io``. Every frame is ``<channel byte><payload>``; the
command's end is the status object on channel 3 (``{"status": "Success"}``, or ``reason: NonZeroExitCode`` with
``details.causes[{reason: ExitCode, message: "<code>"}]``) followed by a Close frame. A stream without a status
frame was cut short, whatever its Close says. v4 cannot close the command's stdin: backups feed it only the secret
lines read by the wrapper, and a command fed with more input must stop reading on its own.

``K8sWorkloads`` stops and starts Deployments through their ``scale`` subresource (apps/v1) and waits until their
pods are gone or their replicas are ready.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import threading
import time

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RestoreError
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import (
    BoundedBuffer,
    ExecResult,
    Feed,
    Transport,
    TransportError,
    WorkloadState,
    Workloads,
    count_bytes,
    run_concurrently,
    secret_stdin,
)

try:
    from kubernetes.client.api import apps_v1_api, core_v1_api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream
    from websocket import ABNF, WebSocketException

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as exc:  # reported by from_module
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = exc

STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
STDIN_CHUNK = 1 << 20
STATUS_LIMIT = 64 * 1024
READ_BUFFER = 1 << 20
MAX_MESSAGE = 64 << 20  # a frame or fragmented message larger than this is a protocol error here
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class _FrameReader:
    """Reads server frames from the WebSocket's own socket into one preallocated buffer.

    websocket-client reads a frame's payload in pieces of at most 16 KiB, each through several Python layers. The
    connection, the handshake and everything written (stdin, pong, close) stay with websocket-client; only the read
    side is parsed here (RFC 6455: unmasked server frames, 7/16/64-bit lengths, control frames between fragments).
    """

    def __init__(self, ws):
        self.ws = ws
        self.sock = ws.sock
        self.buf = bytearray(READ_BUFFER)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def _fill(self, need):
        """Make at least ``need`` bytes available from ``start``; False at end of stream."""
        while self.end - self.start < need:
            if len(self.buf) - self.start < need:  # move the rest to the front, grow for a large frame
                rest = self.end - self.start
                if need > len(self.buf):
                    data = bytes(self.view[self.start:self.end])
                    self.view.release()
                    self.buf = bytearray(need)
                    self.view = memoryview(self.buf)
                    self.buf[:rest] = data
                else:
                    self.buf[:rest] = self.view[self.start:self.end]
                self.start, self.end = 0, rest
            count = self.sock.recv_into(self.view[self.end:])
            if not count:
                return False
            self.end += count
        return True

    def frame(self):
        """The next frame as (fin, opcode, payload bytes), or None at the end of the stream."""
        if not self._fill(2):
            return None
        first, second = self.buf[self.start], self.buf[self.start + 1]
        if second & 0x80:
            raise TransportError("the server sent a masked WebSocket frame")
        length = second & 0x7F
        head = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if not self._fill(head):
            return None
        if length == 126:
            length = int.from_bytes(self.buf[self.start + 2:self.start + 4], "big")
        elif length == 127:
            length = int.from_bytes(self.buf[self.start + 2:self.start + 10], "big")
        if length > MAX_MESSAGE:
            raise TransportError(f"the server sent a WebSocket frame of {length} bytes")
        if not self._fill(head + length):
            return None
        payload = bytes(self.view[self.start + head:self.start + head + length])
        self.start += head + length
        if self.start == self.end:
            self.start = self.end = 0
        return bool(first & 0x80), first & 0x0F, payload

    def messages(self):
        """Data messages as (opcode, payload); answers pings; ends at a Close frame or the end of the stream."""
        parts = None
        opcode = None
        size = 0
        while True:
            item = self.frame()
            if item is None:
                return
            fin, op, payload = item
            if op == OP_CLOSE:
                return
            if op == OP_PING:
                self.ws.pong(payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CONT:
                if parts is None:
                    raise TransportError("the server sent a continuation frame without a first frame")
                parts.append(payload)
                size += len(payload)
            elif parts is not None:
                raise TransportError("the server started a new message inside a fragmented one")
            elif fin:
                yield op, payload
                continue
            else:
                parts, opcode, size = [payload], op, len(payload)
            if size > MAX_MESSAGE:
                raise TransportError(f"the server sent a WebSocket message of more than {MAX_MESSAGE} bytes")
            if fin:
                yield opcode, b"".join(parts)
                parts = None


def parse_status(raw):
    """Exit code from a v4 status frame, or (None, problem)."""
    if not raw:
        return None, "the exec ended without a status on channel 3 (stream cut short)"
    try:
        status = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None, f"unreadable exec status: {raw[:200]!r}"
    if not isinstance(status, dict):
        return None, f"unexpected exec status: {raw[:200]!r}"
    if status.get("status") == "Success":
        return 0, None
    if status.get("reason") == "NonZeroExitCode":
        for cause in ((status.get("details") or {}).get("causes") or []):
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message")), None
                except (TypeError, ValueError):
                    break
        return None, f"non-zero exit without a readable code: {status.get('message')}"
    return None, f"exec failed: {status.get('message') or status.get('reason') or repr(raw[:200])}"


def api_error_message(exc):
    """A short message from an ApiException, including the one ``stream()`` makes of a refused WebSocket
    handshake (status 0, the server's Status object inside the reason text)."""
    text = f"{exc.reason or ''} {exc.body or ''}"
    match = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    if match:
        try:
            return json.loads(f'"{match.group(1)}"')
        except ValueError:
            return match.group(1)
    status = re.search(r"Handshake status (\d+ [A-Za-z ]+)", text)
    if status:
        return status.group(1).strip()
    return (f"{exc.status} {exc.reason}" if exc.status else str(exc.reason or exc))[:500]


class _StdinFeeder(threading.Thread):
    """Sends the command's input on channel 0 while the main thread reads its output (no deadlock when the
    command writes a lot before it has read everything)."""

    def __init__(self, resp, chunks):
        super().__init__(daemon=True)
        self.resp = resp
        self.chunks = chunks
        self.error = None

    def run(self):
        try:
            for chunk in self.chunks:
                view = memoryview(chunk)
                for start in range(0, len(view), STDIN_CHUNK):
                    self.resp.sock.send(bytes([STDIN]) + bytes(view[start:start + STDIN_CHUNK]),
                                        opcode=ABNF.OPCODE_BINARY)
        except Exception as exc:  # reported through the result
            self.error = str(exc) or exc.__class__.__name__
            # The command would wait for the rest of its input forever (v4 cannot close stdin): end the exec.
            try:
                self.resp.sock.close()
            except Exception:
                pass


def api_call(kind, where, what, call, *args, **kwargs):
    """``call(*args, **kwargs)`` of the kubernetes client; any failure is a TransportError naming ``kind`` (Pod,
    Deployment) and ``where`` (namespace/name); a missing object says "not found"."""
    try:
        return call(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise TransportError(f"{kind} {where} not found") from exc
        raise TransportError(f"{what} {kind} {where}: {api_error_message(exc)}") from exc
    except Exception as exc:
        raise TransportError(f"{what} {kind} {where}: {exc}") from exc


def build_api_client(params):
    """The kubernetes client's ApiClient, built by kubernetes.core's ``get_api_client`` from the auth options."""
    if not HAS_KUBERNETES:
        raise TransportError(f"platform=kubernetes needs the Python 'kubernetes' client on this host: "
                             f"{KUBERNETES_IMPORT_ERROR}")
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    except ImportError as exc:
        raise TransportError(f"platform=kubernetes needs the kubernetes.core collection: {exc}") from exc
    auth = {name: params.get(name) for name in AUTH_ARG_SPEC if params.get(name) is not None}
    try:
        client = get_api_client(None, **auth)
    except Exception as exc:  # kubernetes.core raises its own CoreException; all mean the same here
        raise TransportError(f"cannot build a Kubernetes client from the auth options: {exc}") from exc
    return client.client.client


EXTRACT_SH = 'head -c "$1" | tar -C "$2" -xf -'


class K8sTransport(Transport):
    """The modules' view of one container of one pod."""

    def __init__(self, api_client, namespace, pod, container=None):
        self.api = core_v1_api.CoreV1Api(api_client)
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self._pod = None

    @classmethod
    def from_params(cls, params):
        return cls(build_api_client(params), params["namespace"], params["pod"], params.get("pod_container"))

    def describe(self):
        where = f"pod {self.namespace}/{self.pod}"
        return f"{where} (container {self.container})" if self.container else where

    def inspect(self):
        if self._pod is None:
            pod = api_call("pod", f"{self.namespace}/{self.pod}", "reading", self.api.read_namespaced_pod, self.pod,
                           self.namespace)
            names = [c.name for c in pod.spec.containers]
            if self.container is None:
                self.container = names[0]
            elif self.container not in names:
                raise TransportError(f"pod {self.namespace}/{self.pod} has no container {self.container!r} "
                                     f"(it has {', '.join(names)})")
            if (pod.status.phase or "") != "Running":
                raise TransportError(f"pod {self.namespace}/{self.pod} is not running (phase: {pod.status.phase})")
            for status in pod.status.container_statuses or []:
                if status.name == self.container and status.state is not None and status.state.running is None:
                    raise TransportError(f"container {self.container} of pod {self.namespace}/{self.pod} is not "
                                         "running")
            self._pod = pod
        return self._pod

    def check_running(self):
        self.inspect()

    def refresh(self):
        """Forget the cached pod (after its container restarted)."""
        self._pod = None

    def _container_spec(self):
        pod = self.inspect()
        return next(c for c in pod.spec.containers if c.name == self.container)

    def target_facts(self):
        pod = self.inspect()
        image_id = next((s.image_id for s in pod.status.container_statuses or [] if s.name == self.container), None)
        return dict(platform="kubernetes", namespace=self.namespace, pod=self.pod, container=self.container,
                    image=self._container_spec().image, image_id=image_id, node=pod.spec.node_name)

    def mounts(self):
        """Mount paths of the container's volumes, from the pod spec (the analogue of Docker's Mounts)."""
        return [m.mount_path for m in (self._container_spec().volume_mounts or []) if m.mount_path]

    def _open(self, argv, stdin):
        try:
            return stream(self.api.connect_get_namespaced_pod_exec, self.pod, self.namespace, command=list(argv),
                          container=self.container, stdin=stdin, stdout=True, stderr=True, tty=False,
                          binary=True, _preload_content=False)
        except ApiException as exc:
            raise TransportError(f"exec in {self.describe()} refused: {api_error_message(exc)}") from exc
        except Exception as exc:
            raise TransportError(f"exec in {self.describe()} failed to start: {exc}") from exc

    def exec_stream(self, argv, on_stdout, secret_env=None, stdin=None):
        """Run ``argv`` in the pod; stdout to ``on_stdout(bytes)``.

        Secrets travel on stdin (one line each, read by a shell wrapper) because a pod exec cannot set the
        environment; only their names are in the command. ``stdin`` (an iterable of bytes) follows them; v4 cannot
        close stdin, so a command fed with input must stop reading on its own (for example ``head -c <size>``).
        """
        self.inspect()
        argv, prefix = secret_stdin(secret_env, argv, self.describe())
        resp = self._open(argv, stdin=bool(prefix) or stdin is not None)
        reading = _ExecReading(on_stdout)
        feeder = None
        try:
            sock = resp.sock
            if prefix:
                sock.send(bytes([STDIN]) + prefix, opcode=ABNF.OPCODE_BINARY)
            if stdin is not None:
                feeder = _StdinFeeder(resp, stdin)
                feeder.start()
            reading.read(sock)
        except (OSError, WebSocketException, TransportError) as exc:
            reading.problem = f"reading the exec stream of {self.describe()} failed: {exc or exc.__class__.__name__}"
        finally:
            try:
                resp.close()
            except Exception:
                pass
        return reading.result(feeder)

    def path_exists(self, path):
        result = self.exec_capture(["sh", "-c", 'test -e "$1" && echo yes || echo no', "sh", path])
        if not result.ok:
            raise TransportError(f"checking {path} in {self.describe()}: {result.problem or result.exit_code}: "
                                 f"{result.stderr[-300:].decode('utf-8', 'replace')}")
        return result.stdout.strip() == b"yes"

    def read_archive(self, path, on_data):
        """``tar -C <parent> -cf - <name>`` in the pod; None when the path does not exist.

        Members are named from the path's last component, as Docker's archive endpoint names them.
        """
        if not self.path_exists(path):
            return None
        parent, relative = posixpath.split(path.rstrip("/") or "/")
        argv = ["tar", "-C", parent or "/", "-cf", "-", "--", relative or "."]
        result = self.exec_stream(argv, on_data)
        if not result.complete:
            raise TransportError(f"the archive stream of {path} from {self.describe()} broke off: {result.problem}")
        if result.exit_code != 0:
            raise TransportError(f"tar of {path} exited with status {result.exit_code} in {self.describe()}: "
                                 f"{result.stderr[-1000:].decode('utf-8', 'replace').strip()} "
                                 f"(command: {shlex.join(argv)})")
        return {"name": relative}

    def write_archive(self, path, source):
        """``head -c <size> | tar -C <path> -xf -`` in the pod: the stream is counted first (the exec cannot close
        stdin), then sent exactly; a source that fails is padded with newlines (not a tar header)."""
        size = count_bytes(source())
        feed = Feed(source(), size)
        result = self.exec_stream(["sh", "-c", EXTRACT_SH, "sh", str(size), path], _discard, stdin=feed)
        if feed.error is not None:
            raise RestoreError(f"reading the archive failed while it was sent: {feed.error}")
        if not result.complete or result.exit_code != 0:
            raise TransportError(f"tar in {self.describe()} failed extracting into {path} "
                                 f"({result.problem or f'exit status {result.exit_code}'}): "
                                 f"{result.stderr[-2000:].decode('utf-8', 'replace').strip()}")
        return dict(size=size)


def _discard(data):
    del data  # tar -x prints nothing on stdout; nothing to keep


class _ExecReading:
    """The output side of one exec: stdout to the consumer, stderr bounded, the status frame collected."""

    def __init__(self, on_stdout):
        self.on_stdout = on_stdout
        self.stderr = BoundedBuffer()
        self.status = bytearray()
        self.stdout_bytes = 0
        self.problem = None

    def read(self, sock):
        on_stdout, stderr, status = self.on_stdout, self.stderr, self.status
        stdout_bytes = 0
        try:
            for opcode, data in _FrameReader(sock).messages():
                if opcode not in (OP_BINARY, OP_TEXT):
                    continue
                if len(data) < 2:
                    continue  # the kubelet's initial empty frame
                channel = data[0]
                if channel == STDOUT:
                    payload = data[1:]
                    stdout_bytes += len(payload)
                    on_stdout(payload)
                elif channel == STDERR:
                    stderr.write(data[1:])
                elif channel == STATUS:
                    if len(status) < STATUS_LIMIT:
                        status += data[1:]
        finally:
            self.stdout_bytes += stdout_bytes

    def result(self, feeder):
        exit_code, status_problem = parse_status(bytes(self.status))
        problem = self.problem
        if problem and exit_code is not None:
            problem = None  # the status arrived; only the closing handshake was lost
        problem = problem or status_problem
        if feeder is not None:
            feeder.join(5)
            if feeder.error:
                problem = f"sending input to the command failed: {feeder.error}"
        complete = exit_code is not None and problem is None
        return ExecResult(exit_code if complete else None, stderr=self.stderr.getvalue(),
                          stdout_bytes=self.stdout_bytes, complete=complete, problem=problem)


# --- Deployments --------------------------------------------------------------------------------------------------

POLL = 1.0


def deployment_ready(deployment):
    """kubernetes.core's test for a Deployment that has reached its desired replicas (``k8s_scale`` ``wait``)."""
    status = deployment.status
    return bool(status
                and deployment.spec.replicas == (status.replicas or 0)
                and status.available_replicas == status.replicas
                and status.observed_generation == deployment.metadata.generation
                and not status.unavailable_replicas)


class K8sWorkloads(Workloads):
    """Deployments of one namespace, scaled through their ``scale`` subresource, all at once."""

    scales = True
    kind = "Deployment"

    def __init__(self, client, namespace):
        self.apps = apps_v1_api.AppsV1Api(client)
        self.core = core_v1_api.CoreV1Api(client)
        self.namespace = namespace

    @classmethod
    def from_params(cls, params):
        return cls(build_api_client(params), params["namespace"])

    def _call(self, what, name, call, *args, **kwargs):
        return api_call("Deployment", f"{self.namespace}/{name}", what, call, *args, **kwargs)

    def survey(self, names):
        states = []
        for name in names:
            scale = self._call("reading the scale of", name, self.apps.read_namespaced_deployment_scale, name,
                               self.namespace)
            wanted = int(scale.spec.replicas or 0)
            current = int((scale.status.replicas if scale.status else 0) or 0)
            states.append(WorkloadState(name, wanted > 0, replicas=wanted, detail=f"{current} of {wanted} replicas"))
        return states

    def _scale(self, name, replicas):
        self._call("scaling", name, self.apps.patch_namespaced_deployment_scale, name, self.namespace,
                   {"spec": {"replicas": int(replicas)}})

    def stop(self, states, timeout=None, wait=True, wait_timeout=300):
        """Scale to 0, then (``wait``) until the Deployment reports no replica and no pod of it is left."""
        del timeout  # the pods' own termination grace period applies
        deadline = time.monotonic() + wait_timeout
        run_concurrently({s.name: (lambda n=s.name: self._stop_one(n, wait, deadline)) for s in states})

    def _stop_one(self, name, wait, deadline):
        self._scale(name, 0)
        while wait:
            deployment = self._call("reading", name, self.apps.read_namespaced_deployment, name, self.namespace)
            labels = (deployment.spec.selector.match_labels or {}) if deployment.spec.selector else {}
            selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
            pods = self._call("listing the pods of", name, self.core.list_namespaced_pod, self.namespace,
                              label_selector=selector).items if selector else []
            if deployment_ready(deployment) and not pods:
                return
            if time.monotonic() > deadline:
                raise TransportError(f"Deployment {self.namespace}/{name} still has {len(pods)} pod(s) after "
                                     "being scaled to 0")
            time.sleep(POLL)

    def start(self, wanted, wait=True, wait_timeout=300):
        """Scale to the replicas of ``wanted``, then (``wait``) until they are ready."""
        deadline = time.monotonic() + wait_timeout
        run_concurrently({name: (lambda n=name, r=replicas: self._start_one(n, r, wait, deadline))
                          for name, replicas in wanted.items()})

    def _start_one(self, name, replicas, wait, deadline):
        self._scale(name, replicas)
        while wait:
            deployment = self._call("reading", name, self.apps.read_namespaced_deployment, name, self.namespace)
            if deployment_ready(deployment):
                return
            if time.monotonic() > deadline:
                status = deployment.status
                raise TransportError(f"Deployment {self.namespace}/{name} has {(status and status.ready_replicas) or 0}"
                                     f" of {replicas} replicas ready")
            time.sleep(POLL)
