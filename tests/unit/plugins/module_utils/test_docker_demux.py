from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import _demux, socket_path
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import TransportError


def frame(kind, payload):
    return struct.pack(">BxxxL", kind, len(payload)) + payload


def run_demux(wire, pending=b"", piece=4093):
    left, right = socket.socketpair()
    out, err = [], []

    def send():
        for i in range(0, len(wire), piece):
            left.sendall(wire[i:i + piece])
        left.close()

    thread = threading.Thread(target=send)
    thread.start()
    leftover = _demux(right, pending, out.append, err.append)
    thread.join()
    right.close()
    return b"".join(out), b"".join(err), leftover


def test_interleaved_frames_binary_safe():
    payloads = [os.urandom(n) for n in (1, 8, 32768, 100_000, 7)]
    wire = b"".join(frame(1, p) + frame(2, b"warn %d\n" % i) for i, p in enumerate(payloads))
    stdout, stderr, leftover = run_demux(wire[5:], pending=wire[:5])
    assert stdout == b"".join(payloads)
    assert stderr == b"".join(b"warn %d\n" % i for i in range(len(payloads)))
    assert leftover == 0


def test_cut_inside_a_frame_is_reported():
    wire = frame(1, b"a" * 1000) + frame(1, b"b" * 1000)
    stdout, _stderr, leftover = run_demux(wire[:-10])
    assert stdout == b"a" * 1000
    assert leftover == 1008 - 10


def test_empty_frames_are_fine():
    wire = frame(1, b"") + frame(1, b"x") + frame(2, b"")
    stdout, stderr, leftover = run_demux(wire)
    assert (stdout, stderr, leftover) == (b"x", b"", 0)


@pytest.mark.parametrize("host, path", [
    ("unix:///var/run/docker.sock", "/var/run/docker.sock"),
    ("unix:///run/user/1000/docker.sock", "/run/user/1000/docker.sock"),
])
def test_socket_path(host, path):
    assert socket_path(host) == path


def test_remote_daemon_is_refused():
    with pytest.raises(TransportError, match="only a local daemon socket"):
        socket_path("tcp://10.0.0.1:2376")
