# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DockerTransport against a scripted Engine API on a unix socket: a stream cut inside a frame, an exec still
running when its stream ends, output past the capture limit, exit codes, a stopped container.

The real daemon is used by the integration tests; these failures it does not produce on demand.
"""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _docker_api
from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import DockerTransport
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import TransportError


def frame(kind, payload):
    return struct.pack(">BxxxL", kind, len(payload)) + payload


class EngineAPI(threading.Thread):
    """Answers the few Engine API calls an exec makes; ``stream`` is what exec start sends before closing."""

    def __init__(self, path, stream=b"", running_after=False, exit_code=0, state_running=True):
        super().__init__(daemon=True)
        self.stream = stream
        self.running_after = running_after
        self.exit_code = exit_code
        self.state_running = state_running
        self.requests = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(8)

    def run(self):
        while True:
            try:
                conn = self.server.accept()[0]
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None, None
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return lines[0], body

    @staticmethod
    def _json(conn, status, obj):
        body = json.dumps(obj).encode()
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)

    def handle(self, conn):
        with conn:
            line, _body = self._read_request(conn)
            if line is None:
                return
            method, url = line.split(" ")[:2]
            self.requests.append((method, url))
            if method == "GET" and url.startswith("/containers/"):
                self._json(conn, 200, {"Id": "c" * 64, "Name": "/db", "Config": {"Image": "postgres:16"},
                                       "State": {"Running": self.state_running, "Status": "running"
                                                 if self.state_running else "exited"}, "Mounts": []})
            elif method == "POST" and url.endswith("/exec"):
                self._json(conn, 201, {"Id": "e" * 64})
            elif method == "POST" and url.startswith("/exec/"):
                conn.sendall(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                             b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + self.stream)
            elif method == "GET" and url.startswith("/exec/"):
                self._json(conn, 200, {"Running": self.running_after, "ExitCode": None if self.running_after
                                       else self.exit_code})

    def close(self):
        self.server.close()


@pytest.fixture
def engine(tmp_path):
    servers = []

    def start(**script):
        server = EngineAPI(str(tmp_path / f"docker{len(servers)}.sock"), **script)
        server.start()
        servers.append(server)
        return DockerTransport("db", f"unix://{tmp_path / f'docker{len(servers) - 1}.sock'}", timeout=5), server

    yield start
    for server in servers:
        server.close()


def test_complete_exec_with_stdout_stderr_and_exit_code(engine):
    transport, _server = engine(stream=frame(1, b"hello ") + frame(2, b"warning\n") + frame(1, b"world"), exit_code=3)
    result = transport.exec_capture(["true"])
    assert result.complete and result.exit_code == 3 and not result.ok
    assert result.stdout == b"hello world" and result.stderr == b"warning\n"


def test_stream_cut_inside_a_frame_is_incomplete(engine):
    wire = frame(1, b"a" * 100) + frame(1, b"b" * 100)
    transport, _server = engine(stream=wire[:-30])
    got = []
    result = transport.exec_stream(["pg_dumpall"], got.append)
    assert not result.complete and not result.ok
    assert "ended inside a frame" in result.problem and b"".join(got) == b"a" * 100


def test_exec_still_running_after_its_stream_is_incomplete(engine, monkeypatch):
    monkeypatch.setattr(_docker_api, "EXEC_SETTLE", 0.3)
    transport, server = engine(stream=frame(1, b"partial"), running_after=True)
    result = transport.exec_stream(["pg_dumpall"], lambda data: None)
    assert not result.complete and "still running" in result.problem
    assert sum(1 for method, url in server.requests if method == "GET" and url.startswith("/exec/")) >= 2


def test_capture_past_its_limit_fails(engine):
    transport, _server = engine(stream=frame(1, b"x" * 5000))
    with pytest.raises(TransportError, match="exceeded 1000 bytes"):
        transport.exec_capture(["cat", "/dev/zero"], limit=1000)


def test_stopped_container_is_refused_before_any_exec(engine):
    transport, server = engine(state_running=False)
    with pytest.raises(TransportError, match="is not running"):
        transport.exec_stream(["true"], lambda data: None)
    assert [m for m, _u in server.requests] == ["GET"]


def test_stopped_container_is_read_only_when_allowed(engine):
    transport, _server = engine(state_running=False)
    with pytest.raises(TransportError, match="is not running"):
        transport.mounts()
    transport.allow_stopped()
    assert transport.target_facts()["platform"] == "docker"
    transport.mounts()  # no error: inspect no longer insists on a running container


def test_unreachable_daemon(tmp_path):
    transport = DockerTransport("db", f"unix://{tmp_path / 'nothing.sock'}", timeout=2)
    with pytest.raises(TransportError, match="cannot reach the Docker daemon"):
        transport.target_facts()
