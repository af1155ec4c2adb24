from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import (
    RdbChecker,
    TarWalker,
    crc64,
    pg_dumpall_complete,
)

TRAILER = b"--\n-- PostgreSQL database cluster dump complete\n--\n\n"


def test_crc64_check_value():
    # CRC-64/Jones check value used by Redis' own tests
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA


@pytest.mark.parametrize("tail, ok", [
    (b"CREATE TABLE x;\n" + TRAILER, True),
    (b"x\n" + TRAILER + b"\\unrestrict abc123\n\n", True),
    (b"COPY t FROM stdin;\n1\t2\n", False),
    (b"-- PostgreSQL database cluster dump\n", False),
    (b"", False),
])
def test_pg_dumpall_trailer(tail, ok):
    assert pg_dumpall_complete(tail) is ok


def _rdb(body=b"\xfa\x09redis-ver\x057.0.0\xfe\x00\xfb\x01\x00\x00\x03key\x05value", version=b"0011"):
    data = b"REDIS" + version + body + b"\xff"
    return data + crc64(data).to_bytes(8, "little")


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_rdb_valid(chunk):
    data = _rdb()
    checker = RdbChecker()
    for i in range(0, len(data), chunk):
        checker.feed(data[i:i + chunk])
    ok, message, version = checker.finish()
    assert ok, message
    assert version == 11


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d[:-5], "EOF"),
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "CRC64 mismatch"),
    (lambda d: b"XEDIS" + d[5:], "not an RDB"),
    (lambda d: d[:9], "EOF"),
])
def test_rdb_damaged(mutate, words):
    checker = RdbChecker()
    checker.feed(mutate(_rdb()))
    ok, message, _version = checker.finish()
    assert not ok
    assert words in message


def test_rdb_checksum_disabled():
    data = b"REDIS0011\xff" + bytes(8)
    checker = RdbChecker()
    checker.feed(data)
    ok, message, _version = checker.finish()
    assert ok and "disabled" in message


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)
    return buf.getvalue()


MEMBERS = [
    ("data", "dir", None),
    ("data/ünïcødé 表.bin", "file", os.urandom(70_000)),
    ("data/" + "long" * 40, "file", b"x" * 513),
    ("data/link", "link", "ünïcødé 表.bin"),
    ("data/empty", "dir", None),
    ("data/zero", "file", b""),
]


@pytest.mark.parametrize("chunk", [1, 511, 512, 100_000])
def test_tar_walker_strips_end_and_counts(chunk):
    raw = _tar(MEMBERS)
    walker = TarWalker()
    out = b"".join(walker.feed(raw[i:i + chunk]) for i in range(0, len(raw), chunk))
    assert walker.complete
    assert walker.members == len(MEMBERS)
    with tarfile.open(fileobj=io.BytesIO(out + TarWalker.END)) as tar:
        assert tar.getnames() == [m[0] for m in MEMBERS]


def test_tar_walker_concatenates_archives():
    first, second = _tar(MEMBERS[:2]), _tar([("certs", "dir", None), ("certs/a.pem", "file", b"PEM")])
    out = b""
    for raw in (first, second):
        walker = TarWalker()
        out += walker.feed(raw)
        assert walker.complete
    with tarfile.open(fileobj=io.BytesIO(out + TarWalker.END)) as tar:
        assert tar.getnames() == ["data", "data/ünïcødé 表.bin", "certs", "certs/a.pem"]
        assert tar.extractfile("certs/a.pem").read() == b"PEM"


def test_tar_walker_detects_truncation():
    raw = _tar(MEMBERS)
    walker = TarWalker()
    walker.feed(raw[:len(raw) // 2])
    assert not walker.complete


def test_tar_walker_rejects_garbage():
    with pytest.raises(ValueError):
        TarWalker().feed(b"not a tar" * 100)
