# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""A small Docker Engine API client over the daemon's unix socket, made for streaming.

Only what the collection needs: container inspect, exec (create, start with a hijacked connection, 8-byte frame
demultiplexing, inspect for the exit code), the archive endpoint and the container lifecycle. No Docker SDK, no
docker CLI. On top of the client: ``DockerTransport`` (one container, the modules' ``Transport``),
``DockerWorkloads`` (stop and start containers, all at once) and ``ScratchContainers`` (throw-away containers of
backup_verify's restore test).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import socket
import threading
import time
import urllib.parse

from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import (
    BoundedBuffer,
    Counted,
    ExecResult,
    Transport,
    TransportError,
    WorkloadState,
    Workloads,
    run_concurrently,
    secret_stdin,
)

READ_SIZE = 1 << 20
DEMUX_BUFFER = 1 << 20  # bytes asked of the exec stream per read (more only costs memory)
RCVBUF = 4 << 20  # asked of the kernel for the exec socket (it caps it at net.core.rmem_max)
STDOUT, STDERR = 1, 2
EXEC_SETTLE = 10.0  # seconds an exec may still report Running after its stream ended


def socket_path(docker_host):
    parsed = urllib.parse.urlparse(docker_host)
    if parsed.scheme not in ("unix", ""):
        raise TransportError(
            f"docker_host {docker_host!r}: only a local daemon socket (unix:///path) is supported; run the "
            "task on the Docker host itself (the backup lands where the module runs)")
    return parsed.path or docker_host


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot reach the Docker daemon at unix://{self.unix_path}: {exc}") from exc
        self.sock = sock


class DockerClient:
    def __init__(self, docker_host, timeout=60):
        self.path = socket_path(docker_host)
        self.timeout = timeout

    # plain requests ------------------------------------------------------------------------------------------
    def request(self, method, url, body=None, query=None, timeout=None):
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        conn = _UnixConnection(self.path, self.timeout if timeout is None else timeout)
        headers = {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, url, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"Docker API {method} {url} failed: {exc}") from exc
        finally:
            conn.close()
        parsed = None
        if data and resp.getheader("Content-Type", "").startswith("application/json"):
            parsed = json.loads(data)
        return resp.status, parsed, data

    @staticmethod
    def api_message(parsed, data):
        if isinstance(parsed, dict) and parsed.get("message"):
            return parsed["message"]
        return data.decode("utf-8", "replace").strip()

    def _get_or_none(self, url, what):
        """The JSON of ``GET url``, or None when the daemon answers 404."""
        status, parsed, data = self.request("GET", url)
        if status == 404:
            return None
        if status != 200:
            raise TransportError(f"inspecting {what}: {self.api_message(parsed, data)}")
        return parsed

    def inspect_container(self, container):
        return self._get_or_none(f"/containers/{urllib.parse.quote(container, safe='')}/json",
                                 f"container {container!r}")

    # container lifecycle (restore and restore tests) --------------------------------------------------------
    def _container_url(self, container, action=""):
        return f"/containers/{urllib.parse.quote(container, safe='')}{action}"

    def stop_container(self, container, timeout=30):
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` seconds). Already stopped is fine."""
        status, parsed, data = self.request("POST", self._container_url(container, "/stop"),
                                            query={"t": str(int(timeout))}, timeout=max(self.timeout, timeout + 30))
        if status not in (204, 304):
            raise TransportError(f"stopping container {container!r}: {self.api_message(parsed, data)}")

    def start_container(self, container):
        """Start a container. Already running is fine."""
        status, parsed, data = self.request("POST", self._container_url(container, "/start"))
        if status not in (204, 304):
            raise TransportError(f"starting container {container!r}: {self.api_message(parsed, data)}")

    def create_container(self, name, body):
        """Create a container from an Engine API create body; returns its id."""
        status, parsed, data = self.request("POST", "/containers/create", body=body, query={"name": name})
        if status != 201:
            raise TransportError(f"creating container {name!r} from image {body.get('Image')!r}: "
                                 f"{self.api_message(parsed, data)}")
        return parsed["Id"]

    def remove_container(self, container, force=True, volumes=True, timeout=None):
        """Remove a container (and its anonymous volumes). A missing container is fine. A ``timeout`` shorter
        than the client's only stops waiting for the answer: the daemon goes on with the removal."""
        status, parsed, data = self.request("DELETE", self._container_url(container),
                                            query={"force": "true" if force else "false",
                                                   "v": "true" if volumes else "false"}, timeout=timeout)
        if status not in (204, 404):
            raise TransportError(f"removing container {container!r}: {self.api_message(parsed, data)}")

    def list_containers(self, filters, all_states=True):
        """Containers matching Engine API ``filters`` (a dict of lists), as the list endpoint returns them."""
        status, parsed, data = self.request("GET", "/containers/json",
                                            query={"all": "1" if all_states else "0", "filters": json.dumps(filters)})
        if status != 200:
            raise TransportError(f"listing containers: {self.api_message(parsed, data)}")
        return parsed or []

    def attach(self, container):
        """Attach to stdin, stdout and stderr of a created container (before it starts): a raw socket and the
        bytes already read past the answer (the output is multiplexed as in an exec, the container has no TTY)."""
        return self._hijack(self._container_url(container, "/attach") + "?" + urllib.parse.urlencode(
            {"stream": "1", "stdin": "1", "stdout": "1", "stderr": "1"}))

    def open_wait(self, container, condition="next-exit"):
        """Register a wait for the container (before starting it); returns the open response, whose body (read
        with :meth:`finish_wait`) arrives when the container stops. The daemon answers the headers at once."""
        conn = _UnixConnection(self.path, None)
        try:
            conn.request("POST", self._container_url(container, "/wait") + "?" + urllib.parse.urlencode(
                {"condition": condition}))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"waiting for container {container!r}: {exc}") from exc
        if resp.status != 200:
            data = resp.read()
            conn.close()
            raise TransportError(f"waiting for container {container!r}: HTTP {resp.status}: "
                                 f"{data[:500].decode('utf-8', 'replace').strip()}")
        return conn, resp

    @staticmethod
    def finish_wait(waiting):
        """Block until the container registered with :meth:`open_wait` stops; returns its exit code."""
        conn, resp = waiting
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"waiting for a container: {exc}") from exc
        finally:
            conn.close()
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise TransportError(f"waiting for a container: unexpected answer {data[:200]!r}") from exc
        if (parsed.get("Error") or {}).get("Message"):
            raise TransportError(f"waiting for a container: {parsed['Error']['Message']}")
        return parsed.get("StatusCode")

    def daemon_info(self):
        """``GET /info`` (security options: rootless, userns, selinux)."""
        status, parsed, data = self.request("GET", "/info")
        if status != 200:
            raise TransportError(f"reading the Docker daemon's info: {self.api_message(parsed, data)}")
        return parsed or {}

    def inspect_image(self, image):
        return self._get_or_none(f"/images/{urllib.parse.quote(image, safe=':/@')}/json", f"image {image!r}")

    # exec --------------------------------------------------------------------------------------------------
    def exec_create(self, container, argv, env=None, stdin=False, user=None):
        body = dict(AttachStdout=True, AttachStderr=True, AttachStdin=bool(stdin), Tty=False, Cmd=list(argv))
        if env:
            body["Env"] = [f"{key}={value}" for key, value in env.items()]
        if user:
            body["User"] = user
        status, parsed, data = self.request("POST", f"/containers/{urllib.parse.quote(container, safe='')}/exec",
                                            body=body)
        if status != 201:
            raise TransportError(f"creating an exec in container {container!r}: {self.api_message(parsed, data)}")
        return parsed["Id"]

    def exec_inspect(self, exec_id):
        status, parsed, data = self.request("GET", f"/exec/{exec_id}/json")
        if status != 200:
            raise TransportError(f"inspecting exec {exec_id[:12]}: {self.api_message(parsed, data)}")
        return parsed

    def _hijack(self, url, body=b""):
        """POST ``url`` with an upgrade to a raw stream (exec start, attach); returns (socket, bytes read ahead)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            head = (f"POST {url} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                    f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            sock.sendall(head + body)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise TransportError("the Docker daemon closed the connection before answering")
                buf += chunk
                if len(buf) > 65536:
                    raise TransportError("the Docker daemon sent an oversized answer")
        except OSError as exc:
            sock.close()
            raise TransportError(f"connecting a stream ({url.split('?')[0]}): {exc}") from exc
        header, rest = buf.split(b"\r\n\r\n", 1)
        status_line = header.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] not in ("101", "200"):
            sock.close()
            raise TransportError(f"connecting a stream ({url.split('?')[0]}): the Docker daemon answered "
                                 f"{status_line!r}: {rest[:500].decode('utf-8', 'replace')}")
        return sock, rest

    def exec_run(self, container, argv, on_stdout, env=None, stdin=None, user=None, stream_timeout=None):
        """Run ``argv`` in the container; stdout goes to ``on_stdout(bytes)`` chunk by chunk.

        ``stdin`` is an optional iterable of bytes sent to the command, then closed. Returns an ExecResult; the
        stream is complete only if it ended on a frame boundary and the exec is no longer running.
        """
        exec_id = self.exec_create(container, argv, env=env, stdin=stdin is not None, user=user)
        sock, pending = self._hijack(f"/exec/{exec_id}/start", b'{"Detach":false,"Tty":false}')
        sock.settimeout(stream_timeout)
        stderr = BoundedBuffer()
        writer = None
        writer_error = []
        if stdin is not None:
            writer = threading.Thread(target=_feed_stdin, args=(sock, stdin, writer_error), daemon=True)
            writer.start()
        try:
            leftover = _demux(sock, pending, on_stdout, stderr.write)
        except OSError as exc:
            raise TransportError(f"reading the exec stream from container {container!r}: {exc}") from exc
        finally:
            sock.close()
        if writer is not None:
            writer.join(5)
        info = self._wait_exec(exec_id)
        problem = None
        if leftover:
            problem = f"the stream ended inside a frame ({leftover} bytes of an incomplete frame)"
        elif info.get("Running"):
            problem = "the stream ended while the command was still running"
        elif writer_error:
            problem = f"sending input to the command failed: {writer_error[0]}"
        return ExecResult(info.get("ExitCode"), stderr=stderr.getvalue(), complete=problem is None,
                          problem=problem)

    def _wait_exec(self, exec_id, wait=None):
        deadline = time.monotonic() + (EXEC_SETTLE if wait is None else wait)
        while True:
            info = self.exec_inspect(exec_id)
            if not info.get("Running") or time.monotonic() > deadline:
                return info
            time.sleep(0.05)

    # archive -----------------------------------------------------------------------------------------------
    def get_archive(self, container, path, on_data):
        """Stream ``GET /containers/{id}/archive`` (an uncompressed tar) into ``on_data``.

        Returns the path stat (dict) or None when the path does not exist in the container.
        """
        url = f"/containers/{urllib.parse.quote(container, safe='')}/archive?" + urllib.parse.urlencode(
            {"path": path})
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request("GET", url)
            resp = conn.getresponse()
            if resp.status == 404:
                resp.read()
                return None
            if resp.status != 200:
                data = resp.read()
                raise TransportError(f"archiving {path} from container {container!r}: HTTP {resp.status}: "
                                     f"{data[:500].decode('utf-8', 'replace').strip()}")
            stat_header = resp.getheader("X-Docker-Container-Path-Stat")
            while True:
                block = resp.read(READ_SIZE)
                if not block:
                    break
                on_data(block)
        except http.client.IncompleteRead as exc:
            raise TransportError(f"archiving {path} from container {container!r}: the stream ended early "
                                 f"({exc.partial and len(exc.partial) or 0} bytes of a chunk missing)") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"archiving {path} from container {container!r}: {exc}") from exc
        finally:
            conn.close()
        stat = {}
        if stat_header:
            try:
                stat = json.loads(base64.b64decode(stat_header))
            except ValueError:
                stat = {}
        return stat

    def path_exists(self, container, path):
        url = f"/containers/{urllib.parse.quote(container, safe='')}/archive?" + urllib.parse.urlencode({"path": path})
        status, parsed, data = self.request("HEAD", url)
        if status == 404:
            return False
        if status != 200:
            raise TransportError(f"checking {path} in container {container!r}: HTTP {status}")
        return True

    def put_archive(self, container, path, chunks):
        """Upload a tar (an iterable of bytes) and extract it at ``path`` in the container."""
        url = f"/containers/{urllib.parse.quote(container, safe='')}/archive?" + urllib.parse.urlencode(
            {"path": path, "noOverwriteDirNonDir": "true"})
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request("PUT", url, body=chunks, headers={"Content-Type": "application/x-tar"},
                         encode_chunked=True)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"extracting into {path} of container {container!r}: {exc}") from exc
        finally:
            conn.close()
        if resp.status != 200:
            raise TransportError(f"extracting into {path} of container {container!r}: HTTP {resp.status}: "
                                 f"{data[:500].decode('utf-8', 'replace').strip()}")


def _feed_stdin(sock, chunks, errors):
    try:
        for chunk in chunks:
            if chunk:
                sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except Exception as exc:  # reported by the reader; the command then fails on its own
        errors.append(str(exc))


def _demux(sock, pending, on_stdout, on_stderr, wait_all=True):
    """Demultiplex Docker's 8-byte-header frames; returns the number of bytes of an incomplete last frame.

    Made for throughput (the daemon's stream is the limit, see docs/performance.md): the socket is read with
    ``recv_into`` into one preallocated buffer, with ``MSG_WAITALL`` on a blocking socket so that one system call
    and one wake-up bring up to DEMUX_BUFFER bytes instead of one small frame; all the stdout frames of a read go
    to ``on_stdout`` as one bytes object (a copy the consumer may keep). ``wait_all=False`` hands over what each
    read brings at once (for a stream whose small messages matter as they come).
    """
    buf = bytearray(max(DEMUX_BUFFER, len(pending)))
    view = memoryview(buf)
    end = len(pending)
    buf[:end] = pending
    flags = socket.MSG_WAITALL if wait_all and sock.gettimeout() is None else 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    except OSError:
        pass  # the default buffer works, only with more wake-ups
    try:
        while True:
            pos = 0
            spans = []
            while end - pos >= 8:
                size = int.from_bytes(buf[pos + 4:pos + 8], "big")
                start = pos + 8
                if end - start < size:
                    if size + 8 > len(buf):  # a frame larger than the whole buffer: grow it
                        view.release()
                        buf.extend(bytes(size + 8 - len(buf)))
                        view = memoryview(buf)
                    break
                kind = buf[pos]
                if kind == STDOUT:
                    spans.append((start, start + size))
                elif kind == STDERR:
                    on_stderr(bytes(view[start:start + size]))
                pos = start + size
            if spans:
                if len(spans) == 1:
                    on_stdout(bytes(view[spans[0][0]:spans[0][1]]))
                else:
                    on_stdout(b"".join([view[a:b] for a, b in spans]))
            if pos:
                rest = end - pos
                if rest:
                    buf[:rest] = view[pos:end]
                end = rest
            count = sock.recv_into(view[end:], len(buf) - end, flags)
            if not count:
                return end
            end += count
    finally:
        view.release()


class DockerTransport(Transport):
    """The modules' view of one container."""

    can_stop = True
    extracts_top_dirs = True  # the daemon extracts as root: the top directories keep their owner and mode

    def __init__(self, container, docker_host, timeout=60, client=None):
        self.container = container
        self.client = client or DockerClient(docker_host, timeout=timeout)
        self._info = None
        self._stopped_ok = False

    def describe(self):
        return f"container {self.container!r}"

    def inspect(self):
        """Inspect the container; fails if it does not exist, or is not running (unless :meth:`allow_stopped`)."""
        if self._info is None:
            info = self.client.inspect_container(self.container)
            if info is None:
                raise TransportError(f"container {self.container!r} not found on the Docker host; check the name "
                                     "(Compose v1 names it <project>_<service>_1, v2 <project>-<service>-1)")
            state = info.get("State") or {}
            stopped = not state.get("Running") or state.get("Paused") or state.get("Restarting")
            if stopped and not self._stopped_ok:
                raise TransportError(f"container {self.container!r} is not running (status: "
                                     f"{state.get('Status', 'unknown')}); start it before backing up")
            self._info = info
        return self._info

    def check_running(self):
        self.inspect()

    def target_facts(self):
        info = self.inspect()
        return dict(platform="docker", container=info.get("Name", "").lstrip("/"), id=info.get("Id"),
                    image=(info.get("Config") or {}).get("Image"))

    def mounts(self):
        return [m.get("Destination") for m in (self.inspect().get("Mounts") or []) if m.get("Destination")]

    def exec_stream(self, argv, on_stdout, secret_env=None, stdin=None):
        """Run ``argv`` in the container. Secrets go on stdin ahead of ``stdin`` (``_transport.secret_stdin``),
        never in the exec's Env: the daemon keeps that in the exec's configuration and logs it in debug mode."""
        self.inspect()
        argv, prefix = secret_stdin(secret_env, argv, self.describe())
        if prefix:
            stdin = itertools.chain([prefix], stdin or ())
        return self.client.exec_run(self.container, argv, on_stdout, stdin=stdin)

    def read_archive(self, path, on_data):
        self.inspect()
        return self.client.get_archive(self.container, path, on_data)

    def path_exists(self, path):
        self.inspect()
        return self.client.path_exists(self.container, path)

    def refresh(self):
        self._info = None

    def allow_stopped(self):
        """The Engine API's archive endpoint reads stopped containers too (an exec still needs a running one)."""
        self._stopped_ok = True
        self._info = None

    def stop(self, timeout=30):
        self.client.stop_container(self.container, timeout=timeout)
        self._info = None

    def start(self):
        self.client.start_container(self.container)
        self._info = None

    def write_archive(self, path, source):
        """Extract a tar stream at ``path`` in the container; works on a stopped one too."""
        counted = Counted(source())
        self.client.put_archive(self.container, path, counted)
        return dict(size=counted.size)

    def dump_helper(self):
        from ansible_collections.authentik_ops.backup.plugins.module_utils._pg_helper import DumpHelper

        return DumpHelper(self)


class DockerWorkloads(Workloads):
    """Containers stopped and started through the Engine API, all at once."""

    def __init__(self, docker_host, timeout=60):
        self.client = DockerClient(docker_host, timeout=timeout)
        self._stop_timeouts = {}

    def survey(self, names):
        states = []
        for name in names:
            info = self.client.inspect_container(name)
            if info is None:
                raise TransportError(f"container {name!r} not found on the Docker host")
            state = info.get("State") or {}
            health = (state.get("Health") or {}).get("Status")
            running = bool(state.get("Running")) and not state.get("Paused")
            detail = state.get("Status") or "unknown"
            states.append(WorkloadState(name, running, detail=f"{detail} ({health})" if health else detail))
            self._stop_timeouts[name] = (info.get("Config") or {}).get("StopTimeout")
        return states

    def stop(self, states, timeout=None, wait=True, wait_timeout=300):
        """``POST /stop`` returns once the container has stopped; ``timeout`` defaults to the container's own."""
        del wait, wait_timeout
        grace = {s.name: timeout if timeout is not None else (self._stop_timeouts.get(s.name) or 10) for s in states}
        run_concurrently({name: (lambda n=name: self.client.stop_container(n, timeout=grace[n])) for name in grace})

    def start(self, wanted, wait=True, wait_timeout=300):
        deadline = time.monotonic() + wait_timeout
        run_concurrently({name: (lambda n=name: self._start_one(n, wait, deadline)) for name in wanted})

    def _start_one(self, name, wait, deadline):
        self.client.start_container(name)
        while wait:
            state = (self.client.inspect_container(name) or {}).get("State") or {}
            health = (state.get("Health") or {}).get("Status")
            if state.get("Running") and health in (None, "healthy"):
                return
            if time.monotonic() > deadline:
                raise TransportError(f"container {name!r} did not come up in time (status "
                                     f"{state.get('Status', 'unknown')}{', health ' + health if health else ''})")
            time.sleep(1)


class ScratchContainers:
    """Throw-away containers on the Docker host (backup_verify's restore test): no network, removed with their
    anonymous volumes."""

    def __init__(self, docker_host, timeout=60):
        self.client = DockerClient(docker_host, timeout=timeout)

    def describe(self):
        return f"the Docker host (unix://{self.client.path})"

    def has_image(self, image):
        return self.client.inspect_image(image) is not None

    def run(self, name, image, env, labels):
        """Create and start a container of ``image`` without network; returns its Transport."""
        body = dict(Image=image, Env=[f"{key}={value}" for key, value in env.items()], Labels=dict(labels),
                    HostConfig=dict(NetworkMode="none"))
        self.client.create_container(name, body)
        self.client.start_container(name)
        return DockerTransport(name, None, client=self.client)

    def remove(self, name):
        self.client.remove_container(name, force=True, volumes=True)
