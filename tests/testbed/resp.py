"""A tiny, binary-safe Redis (RESP2) client that talks through ``docker exec -i <container> nc 127.0.0.1 <port>``.

Commands are pipelined on stdin, followed by QUIT, so the server closes the connection when it has answered.
Passwords travel on stdin (AUTH), never in argv.
"""

from __future__ import annotations

from ._docker import docker


class RespError(RuntimeError):
    """The server answered with an error."""


def encode(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            part = part.encode("utf-8")
        elif isinstance(part, (int, float)):
            part = repr(part).encode() if isinstance(part, float) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def parse_all(data):
    """Parse every RESP value in ``data``; errors are returned as RespError instances."""
    values = []
    pos = 0

    def parse(pos):
        kind = data[pos : pos + 1]
        end = data.index(b"\r\n", pos)
        line = data[pos + 1 : end]
        pos = end + 2
        if kind == b"+":
            return line.decode("utf-8", "replace"), pos
        if kind == b"-":
            return RespError(line.decode("utf-8", "replace")), pos
        if kind == b":":
            return int(line), pos
        if kind == b"$":
            length = int(line)
            if length < 0:
                return None, pos
            return data[pos : pos + length], pos + length + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _i in range(count):
                item, pos = parse(pos)
                items.append(item)
            return items, pos
        raise ValueError(f"bad RESP type byte {kind!r} at {pos}")

    while pos < len(data):
        value, pos = parse(pos)
        values.append(value)
    return values


def pipeline(container, commands, password=None, port=6379, check=True):
    """Send ``commands`` (tuples of str/bytes/int) and return their replies, in order."""
    payload = []
    if password is not None:
        payload.append(encode("AUTH", password))
    payload.extend(encode(*cmd) for cmd in commands)
    payload.append(encode("QUIT"))
    # netcat-openbsd by its own name: a busybox nc first in PATH (the Alpine-like images) stops reading early
    proc = docker("exec", "-i", container, "nc.openbsd", "127.0.0.1", str(port), input=b"".join(payload))
    replies = parse_all(proc.stdout)
    if password is not None:
        auth = replies.pop(0)
        if isinstance(auth, RespError):
            raise auth
    if len(replies) != len(commands) + 1:
        raise RespError(f"expected {len(commands) + 1} replies, got {len(replies)}: {proc.stderr!r}")
    replies = replies[:-1]  # QUIT's +OK
    if check:
        for cmd, reply in zip(commands, replies):
            if isinstance(reply, RespError):
                raise RespError(f"{cmd[0]}: {reply}")
    return replies
