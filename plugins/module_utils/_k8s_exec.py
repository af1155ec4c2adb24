# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Kubernetes transport: pod exec over the WebSocket protocol, read frame by frame.

Credentials come from kubernetes.core (``AUTH_ARG_SPEC`` options, ``get_api_client``). The exec stream is read with
``recv_data_frame`` directly: channel 1 (stdout) goes to the sink as it arrives, channel 2 (stderr) is kept bounded,
channel 3 (status) is parsed for the exit code. The client's own ``update()/read_stdout()`` loop is not used: it
decodes text and keeps everything in memory.
"""

from __future__ import annotations

import json
import posixpath
import shlex

from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import (
    BoundedBuffer,
    CappedBuffer,
    ExecResult,
    TransportError,
    secret_env_wrapper,
)

try:
    from kubernetes.client.api import core_v1_api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream
    from websocket import ABNF, WebSocketConnectionClosedException

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as exc:  # reported by from_module
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = exc

STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
STDIN_CHUNK = 1 << 20


def parse_status(raw):
    """Exit code from a v4 status frame, or (None, problem)."""
    if not raw:
        return None, "the exec ended without a status (stream cut short)"
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
    return None, f"exec failed: {status.get('message') or status.get('reason') or raw[:200]!r}"


class K8sTransport:
    """The modules' view of one container of one pod."""

    platform = "kubernetes"

    def __init__(self, api_client, namespace, pod, container=None):
        self.api = core_v1_api.CoreV1Api(api_client)
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self._pod = None

    @classmethod
    def from_module(cls, module):
        if not HAS_KUBERNETES:
            raise TransportError(f"platform=kubernetes needs the Python 'kubernetes' client on this host: "
                                 f"{KUBERNETES_IMPORT_ERROR}")
        try:
            from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
            from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
        except ImportError as exc:
            raise TransportError(f"platform=kubernetes needs the kubernetes.core collection: {exc}") from exc
        auth = {name: module.params.get(name) for name in AUTH_ARG_SPEC if module.params.get(name) is not None}
        try:
            client = get_api_client(None, **auth)
        except Exception as exc:  # kubernetes.core raises its own CoreException; all mean the same here
            raise TransportError(f"cannot build a Kubernetes client from the auth options: {exc}") from exc
        return cls(client.client.client, module.params["namespace"], module.params["pod"],
                   module.params.get("pod_container"))

    def describe(self):
        where = f"pod {self.namespace}/{self.pod}"
        return f"{where} (container {self.container})" if self.container else where

    def inspect(self):
        if self._pod is None:
            try:
                pod = self.api.read_namespaced_pod(self.pod, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise TransportError(f"pod {self.namespace}/{self.pod} not found") from exc
                raise TransportError(f"reading pod {self.namespace}/{self.pod}: {exc.status} {exc.reason}") from exc
            except Exception as exc:
                raise TransportError(f"reading pod {self.namespace}/{self.pod}: {exc}") from exc
            names = [c.name for c in pod.spec.containers]
            if self.container is None:
                self.container = names[0]
            elif self.container not in names:
                raise TransportError(f"pod {self.namespace}/{self.pod} has no container {self.container!r} "
                                     f"(it has {', '.join(names)})")
            if (pod.status.phase or "") != "Running":
                raise TransportError(f"pod {self.namespace}/{self.pod} is not running (phase: {pod.status.phase})")
            self._pod = pod
        return self._pod

    def target_facts(self):
        pod = self.inspect()
        image = next((c.image for c in pod.spec.containers if c.name == self.container), None)
        return dict(platform="kubernetes", namespace=self.namespace, pod=self.pod, container=self.container,
                    image=image)

    def _open(self, argv, stdin):
        try:
            return stream(self.api.connect_get_namespaced_pod_exec, self.pod, self.namespace, command=list(argv),
                          container=self.container, stdin=stdin, stdout=True, stderr=True, tty=False,
                          _preload_content=False)
        except ApiException as exc:
            raise TransportError(f"exec in {self.describe()} refused: {exc.status} {exc.reason}") from exc
        except Exception as exc:
            raise TransportError(f"exec in {self.describe()} failed to start: {exc}") from exc

    def exec_stream(self, argv, on_stdout, secret_env=None, stdin=None):
        """Run ``argv`` in the pod; stdout to ``on_stdout(bytes)``.

        Secrets travel on stdin (one line each, read by a shell wrapper) because a pod exec cannot set the
        environment. ``stdin`` (an iterable of bytes) follows them; v4 cannot close stdin, so a command fed with
        input must stop reading on its own (for example ``head -c <size>``).
        """
        self.inspect()
        prefix = b""
        if secret_env:
            argv = secret_env_wrapper(list(secret_env), argv)
            prefix = b"".join(value.encode("utf-8") + b"\n" for value in secret_env.values())
        resp = self._open(argv, stdin=bool(prefix) or stdin is not None)
        stderr = BoundedBuffer()
        status = b""
        closed_cleanly = False
        try:
            if prefix:
                resp.write_channel(STDIN, prefix)
            if stdin is not None:
                for chunk in stdin:
                    for start in range(0, len(chunk), STDIN_CHUNK):
                        resp.write_channel(STDIN, bytes(chunk[start:start + STDIN_CHUNK]))
            sock = resp.sock
            while True:
                try:
                    opcode, frame = sock.recv_data_frame(True)
                except WebSocketConnectionClosedException:
                    break
                if opcode == ABNF.OPCODE_CLOSE:
                    closed_cleanly = True
                    break
                if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT):
                    continue
                data = frame.data
                if len(data) < 2:
                    continue
                channel = data[0]
                if channel == STDOUT:
                    on_stdout(data[1:])
                elif channel == STDERR:
                    stderr.write(data[1:])
                elif channel == STATUS:
                    status += data[1:]
        except OSError as exc:
            raise TransportError(f"reading the exec stream of {self.describe()}: {exc}") from exc
        finally:
            try:
                resp.close()
            except Exception:
                pass
        exit_code, problem = parse_status(status)
        if problem is None and not closed_cleanly and not status:
            problem = "the connection closed without a status"
        complete = exit_code is not None
        return ExecResult(exit_code, stderr=stderr.getvalue(), complete=complete,
                          problem=None if complete else problem)

    def exec_capture(self, argv, secret_env=None, limit=4 * 1024 * 1024):
        out = CappedBuffer(limit)
        result = self.exec_stream(argv, out.write, secret_env=secret_env)
        result.stdout = out.getvalue()
        return result

    def path_exists(self, path):
        result = self.exec_capture(["sh", "-c", 'test -e "$1" && echo yes || echo no', "sh", path])
        if not result.ok:
            raise TransportError(f"checking {path} in {self.describe()}: {result.problem or result.exit_code}: "
                                 f"{result.stderr[-300:].decode('utf-8', 'replace')}")
        return result.stdout.strip() == b"yes"

    def is_mounted(self, path):
        return self.path_exists(path)

    def archive(self, path, on_data):
        """``tar -C <parent> -cf - <name>`` in the pod; None when the path does not exist.

        Members are named from the path's last component, as Docker's archive endpoint names them.
        """
        if not self.path_exists(path):
            return None
        parent, relative = posixpath.split(path.rstrip("/") or "/")
        argv = ["tar", "-C", parent or "/", "-cf", "-", relative or "."]
        result = self.exec_stream(argv, on_data)
        if not result.complete:
            raise TransportError(f"the archive stream of {path} from {self.describe()} broke off: {result.problem}")
        if result.exit_code != 0:
            raise TransportError(f"tar of {path} exited with status {result.exit_code} in {self.describe()}: "
                                 f"{result.stderr[-1000:].decode('utf-8', 'replace').strip()} "
                                 f"(command: {shlex.join(argv)})")
        return {"name": relative}
