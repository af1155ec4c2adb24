from __future__ import annotations

import socket
import struct
import threading

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._k8s_exec import _FrameReader
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import TransportError


def frame(opcode, payload, fin=True, masked=False):
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    return head + (b"\0\0\0\0" if masked else b"") + payload


class Ws:
    """websocket-client's WebSocket as _FrameReader uses it: its socket, and pong() for the answers."""

    def __init__(self, sock):
        self.sock = sock
        self.pongs = []

    def pong(self, payload):
        self.pongs.append(payload)


def read_all(wire, piece=7001):
    left, right = socket.socketpair()

    def send():
        for i in range(0, len(wire), piece):
            left.sendall(wire[i:i + piece])
        left.close()

    thread = threading.Thread(target=send)
    thread.start()
    ws = Ws(right)
    try:
        return list(_FrameReader(ws).messages()), ws.pongs
    finally:
        thread.join()
        right.close()


def test_frames_of_every_length_encoding_fragments_and_pings():
    big = bytes(range(256)) * 8000  # 2 MB: a 64-bit length, larger than the reader's buffer
    wire = (frame(0x2, b"\x01hello") + frame(0x2, b"\x01" + b"m" * 70000) + frame(0x9, b"are-you-there")
            + frame(0x2, b"\x01" + big[:1000], fin=False) + frame(0xA, b"") + frame(0x0, big[1000:5000], fin=False)
            + frame(0x0, big[5000:], fin=True) + frame(0x1, b"\x03{}") + frame(0x8, b"\x03\xe8")
            + frame(0x2, b"\x01after-close"))
    messages, pongs = read_all(wire)
    assert messages == [(0x2, b"\x01hello"), (0x2, b"\x01" + b"m" * 70000), (0x2, b"\x01" + big),
                        (0x1, b"\x03{}")]
    assert pongs == [b"are-you-there"]


def test_a_cut_stream_ends_without_the_cut_frame():
    wire = frame(0x2, b"\x01complete") + frame(0x2, b"\x01" + b"x" * 5000)[:3000]
    messages, _pongs = read_all(wire, piece=1000)
    assert messages == [(0x2, b"\x01complete")]


@pytest.mark.parametrize("wire, message", [
    (frame(0x2, b"\x01x", masked=True), "masked"),
    (frame(0x0, b"x"), "continuation frame without a first frame"),
    (frame(0x2, b"\x01a", fin=False) + frame(0x2, b"\x01b"), "new message inside a fragmented one"),
])
def test_protocol_errors_are_named(wire, message):
    with pytest.raises(TransportError, match=message):
        read_all(wire)
