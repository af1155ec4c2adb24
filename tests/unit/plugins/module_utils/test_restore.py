# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The restore stream helpers: current-role filter, byte counting, exact length, strict decoding, one-file tar."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

import pytest
import zstandard

from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import (
    DumpCheck,
    RestoreError,
    RoleFilter,
    count_bytes,
    count_dump,
    decode_strict,
    dump_stream,
    exact_length,
    role_identifiers,
    single_file_tar,
    tar_size,
)

GLOBALS = (
    b"--\n-- PostgreSQL database cluster dump\n--\n\n\\restrict abc\n\n"
    b"SET default_transaction_read_only = off;\n\n"
    b"DROP DATABASE IF EXISTS authentik;\n\n"
    b"DROP ROLE IF EXISTS \"Weird Role\";\n"
    b"DROP ROLE IF EXISTS authentik;\n\n"
    b"CREATE ROLE \"Weird Role\";\n"
    b"ALTER ROLE \"Weird Role\" WITH NOLOGIN;\n"
    b"CREATE ROLE authentik;\n"
    b"ALTER ROLE authentik WITH SUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$x';\n"
    b"\\unrestrict abc\n\n"
)
DATABASES = (
    b"--\n-- PostgreSQL database dump\n--\n\nCREATE DATABASE authentik;\n"
    b"\\connect authentik\n\n"
    b"COPY public.t (a) FROM stdin;\n"
    b"CREATE ROLE authentik;\n"            # data lines that look like statements are never touched
    b"DROP ROLE IF EXISTS authentik;\n"
    b"\\.\n\n"
    b"--\n-- PostgreSQL database cluster dump complete\n--\n\n"
)
DUMP = GLOBALS + DATABASES


def chunked(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1 << 20])
def test_filter_drops_only_the_connected_role_in_globals(size):
    role_filter = RoleFilter("authentik")
    out = b"".join(role_filter.filter(chunked(DUMP, size)))
    assert b"DROP ROLE IF EXISTS authentik;\n\nCREATE" not in out
    assert out == DUMP.replace(b"DROP ROLE IF EXISTS authentik;\n", b"", 1).replace(b"CREATE ROLE authentik;\n", b"", 1)
    assert role_filter.removed == ["DROP ROLE IF EXISTS authentik;", "CREATE ROLE authentik;"]
    # ALTER ROLE of the connected role and everything after \connect stay
    assert b"ALTER ROLE authentik WITH SUPERUSER" in out
    assert out.endswith(DATABASES)


@pytest.mark.parametrize("size", [1, 5, 4096])
def test_filter_quoted_role(size):
    role_filter = RoleFilter("Weird Role")
    out = b"".join(role_filter.filter(chunked(DUMP, size)))
    assert b'DROP ROLE IF EXISTS "Weird Role";' not in out
    assert b'CREATE ROLE "Weird Role";' not in out
    assert b'ALTER ROLE "Weird Role" WITH NOLOGIN;' in out
    assert b"CREATE ROLE authentik;\nALTER" in out
    assert len(role_filter.removed) == 2


def test_filter_other_role_and_no_role_change_nothing():
    assert b"".join(RoleFilter("someone").filter(chunked(DUMP, 10))) == DUMP
    assert b"".join(RoleFilter(None).filter(chunked(DUMP, 10))) == DUMP


def test_filter_keeps_similar_statements():
    data = (b"DROP ROLE IF EXISTS authentik2;\nCREATE ROLE authentik_x;\n  CREATE ROLE authentik;\n"
            b"CREATE ROLE authentik; -- comment\n\\connect x\n")
    assert b"".join(RoleFilter("authentik").filter([data])) == data


def test_filter_without_trailing_newline():
    role_filter = RoleFilter("authentik")
    assert b"".join(role_filter.filter([b"SET x;\nCREATE ROLE authentik;"])) == b"SET x;\n"
    assert role_filter.removed == ["CREATE ROLE authentik;"]


@pytest.mark.parametrize("role, expected", [
    ("authentik", {"authentik", '"authentik"'}),
    ("Weird Role", {'"Weird Role"'}),
    ('a"b', {'"a""b"'}),
    ("Upper", {'"Upper"'}),
])
def test_role_identifiers(role, expected):
    assert role_identifiers(role) == expected


def test_count_matches_what_is_sent(tmp_path):
    path = tmp_path / "postgres.sql.gz"
    path.write_bytes(gzip.compress(DUMP))
    size, removed, check = count_dump(str(path), "auto", "authentik")
    assert check.problem() is None
    stream, role_filter, check2 = dump_stream(str(path), "auto", "authentik")
    sent = b"".join(exact_length(stream, size))
    assert len(sent) == size == len(DUMP) - len(b"DROP ROLE IF EXISTS authentik;\nCREATE ROLE authentik;\n")
    assert removed == role_filter.removed


def test_count_bytes():
    assert count_bytes(iter([b"ab", b"", b"cde"])) == 5
    assert count_bytes(iter([])) == 0


def test_exact_length_detects_growth_and_shrink():
    assert b"".join(exact_length([b"abc", b"de"], 5)) == b"abcde"
    with pytest.raises(RestoreError, match="grew"):
        b"".join(exact_length([b"abc", b"def"], 5))
    with pytest.raises(RestoreError, match="shrank"):
        b"".join(exact_length([b"abc"], 5))


@pytest.mark.parametrize("data, problem", [
    (DUMP, None),
    (b"", "empty"),
    (b"SELECT 1;\n", "header"),
    (DUMP[:-60], "truncated"),
])
def test_dump_check(data, problem):
    check = DumpCheck()
    count_bytes(check.watch(chunked(data, 9) or [b""]))
    if problem is None:
        assert check.problem() is None
    else:
        assert problem in check.problem()


def test_decode_strict_gzip_and_zstd():
    data = DUMP * 50
    assert b"".join(decode_strict(chunked(gzip.compress(data), 100), "gzip")) == data
    assert b"".join(decode_strict(chunked(gzip.compress(data) + gzip.compress(b"x"), 100), "gzip")) == data + b"x"
    compressed = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    assert b"".join(decode_strict(chunked(compressed, 100), "zstd")) == data
    with pytest.raises(RestoreError, match="truncated"):
        b"".join(decode_strict(chunked(compressed[:-10], 100), "zstd"))
    with pytest.raises(RestoreError, match="corrupt"):
        b"".join(decode_strict([compressed + b"garbage!"], "zstd"))


def test_decode_strict_gzip_truncated_and_corrupt():
    compressed = gzip.compress(DUMP * 20)
    with pytest.raises(RestoreError, match="truncated"):
        b"".join(decode_strict([compressed[:-9]], "gzip"))
    broken = bytearray(compressed)
    broken[30] ^= 0xFF
    with pytest.raises(RestoreError):
        b"".join(decode_strict([bytes(broken)], "gzip"))
    with pytest.raises(RestoreError, match="empty"):
        b"".join(decode_strict([], "gzip"))
    assert zlib  # imported for the codec family the gzip path uses


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 100000])
def test_single_file_tar(size):
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    stream = list(single_file_tar("dump.rdb", chunked(data, 1000) or [], size, uid=999, gid=998, mode=0o640))
    raw = b"".join(stream)
    assert len(raw) - len(stream[0]) == tar_size(size)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        member = tar.getmember("dump.rdb")
        assert (member.size, member.uid, member.gid, member.mode) == (size, 999, 998, 0o640)
        assert tar.extractfile(member).read() == data


def _failing(blocks, exc):
    yield from blocks
    raise exc


@pytest.mark.parametrize("chunks, expected, error", [
    ([b"abc", b"de"], 5, None),
    ([b"abc", b"def"], 5, "grew"),
    ([b"abc"], 5, "shrank"),
    (_failing([b"ab"], OSError("disk gone")), 6, "disk gone"),
    ([], 3, "shrank"),
])
def test_feed_always_sends_exactly_the_promised_bytes(chunks, expected, error):
    from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import PSQL_POISON
    from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import Feed

    feed = Feed(chunks, expected, poison=PSQL_POISON)
    sent = b"".join(feed)
    assert len(sent) == expected == feed.sent
    if error is None:
        assert feed.error is None and sent == b"abcde"
    else:
        assert error in str(feed.error)


def test_feed_poison_fits_when_room():
    from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import PSQL_POISON
    from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import Feed

    feed = Feed(iter([b"COPY t FROM stdin;\n1\t"]), 200, poison=PSQL_POISON)
    sent = b"".join(feed)
    assert PSQL_POISON in sent and sent.endswith(b"\n") and len(sent) == 200
