# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Streams a restore sends into a container or pod, in constant memory.

A Kubernetes ``v4.channel.k8s.io`` exec cannot close the command's stdin, so the remote side must stop reading on
its own: every restore runs ``head -c <N> | <command>`` where N is the exact byte count of what will be sent. The
count comes from a first pass over the same (decompressed, filtered) generator; the second pass sends it and is
cut to exactly N bytes by ``_transport.exact_length`` (inside ``_transport.Feed``), which fails if the source
changed in between.
"""

from __future__ import annotations

import os
import re
import tarfile

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError, RestoreError
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import (
    PG_DUMPALL_HEADER,
    pg_dumpall_complete,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import compression_problem, open_decompressed
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import CHUNK, count_bytes, exact_length
HEAD_BYTES = 4096
TAIL_BYTES = 64 * 1024


def compression_of(path, compression="auto"):
    """The codec of a file written by the sink: from the option, else from the suffix."""
    if compression and compression != "auto":
        return compression
    if path.endswith(".age"):  # age-encrypted: the codec is that of the name inside
        path = path[:-len(".age")]
    if path.endswith(".zst"):
        return "zstd"
    if path.endswith(".gz"):
        return "gzip"
    return "none"


def iter_file(path, compression="auto", chunk=CHUNK):
    """Yield the raw (decompressed) bytes of ``path`` in chunks."""
    handle = open_decompressed(path, compression_of(path, compression))
    try:
        while True:
            block = handle.read(chunk)
            if not block:
                return
            yield block
    finally:
        handle.close()


# Ends whatever psql is doing with an error: leaves a COPY block, then calls a function that does not exist.
PSQL_POISON = b"\n\\.\n;\nSELECT akbt_restore_input_aborted();\n"


def file_identity(path):
    """Size and mtime of a file, to notice that it changed between two passes."""
    stat = os.stat(path)
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


class Source:
    """The file a restore reads (``src``), checked before anything is touched: readable, decryptable with the
    identities given, and of a codec this host can decode. ``changed()`` tells whether it changed since."""

    def __init__(self, params, **fields):
        from ansible_collections.authentik_ops.backup.plugins.module_utils._common import prepare_decryption

        self.path = params["src"]
        if not os.path.isfile(self.path) or not os.access(self.path, os.R_OK):
            raise ConfigError(f"src: {self.path} is not a readable file on this host", **fields)
        self.encryption = prepare_decryption(params, self.path, **fields)
        self.compression = compression_of(self.path, params["compression"])
        problem = compression_problem(self.compression)
        if problem:
            raise ConfigError(f"src: {problem}", **fields)
        self.identity = file_identity(self.path)

    def changed(self):
        return file_identity(self.path) != self.identity


# --- pg_dumpall scripts -------------------------------------------------------------------------------------------

_BARE_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def role_identifiers(role):
    """The ways pg_dumpall may write ``role`` as an SQL identifier (quoted always; bare when that is the same)."""
    names = {'"' + role.replace('"', '""') + '"'}
    if _BARE_IDENTIFIER.match(role):
        names.add(role)
    return names


def current_role_statements(role):
    """The exact global-section lines that fail for the connected role under ON_ERROR_STOP."""
    lines = set()
    for ident in role_identifiers(role):
        lines.add(f"DROP ROLE IF EXISTS {ident};".encode("utf-8"))
        lines.add(f"DROP ROLE {ident};".encode("utf-8"))
        lines.add(f"CREATE ROLE {ident};".encode("utf-8"))
    return frozenset(lines)


class RoleFilter:
    """Drop ``DROP ROLE [IF EXISTS] <role>;`` and ``CREATE ROLE <role>;`` of the connected role.

    Only lines of the global section are looked at (before the first ``\\connect`` line); from there on every byte
    passes through untouched. The role's ``ALTER ROLE`` stays, so its attributes and password are restored.
    ``removed`` lists what was dropped.
    """

    def __init__(self, role):
        self.drop = current_role_statements(role) if role else frozenset()
        self.removed = []
        self.in_globals = bool(self.drop)
        self._partial = b""

    def filter(self, chunks):
        for block in chunks:
            if not self.in_globals:
                yield block
                continue
            data = self._partial + bytes(block)
            lines = data.split(b"\n")
            self._partial = lines.pop()
            kept = []
            for index, line in enumerate(lines):
                if line.startswith(b"\\connect"):
                    self.in_globals = False
                    kept.append(b"\n".join(lines[index:]) + b"\n" + self._partial)
                    self._partial = b""
                    break
                if line.rstrip(b"\r") in self.drop:
                    self.removed.append(line.decode("utf-8", "replace"))
                    continue
                kept.append(line + b"\n")
            out = b"".join(kept)
            if out:
                yield out
        if self._partial:
            rest, self._partial = self._partial, b""
            if self.in_globals and rest.rstrip(b"\r") in self.drop:
                self.removed.append(rest.decode("utf-8", "replace"))
            else:
                yield rest


class DumpCheck:
    """Watches a pg_dumpall script pass: header at the start, completion trailer at the end, byte count."""

    def __init__(self):
        self.head = b""
        self.tail = b""
        self.size = 0
        self.scanner = None

    def watch(self, chunks):
        for block in chunks:
            if len(self.head) < HEAD_BYTES:
                self.head += bytes(block[:HEAD_BYTES - len(self.head)])
            self.tail = (self.tail + bytes(block[-TAIL_BYTES:]))[-TAIL_BYTES:]
            self.size += len(block)
            yield block

    @property
    def has_header(self):
        lines = self.head.split(b"\n")[:12]
        return any(line.strip() == PG_DUMPALL_HEADER for line in lines)

    @property
    def complete(self):
        return pg_dumpall_complete(self.tail)

    def problem(self):
        if self.size == 0:
            return "the file is empty"
        if not self.has_header:
            return (f"the file does not start with pg_dumpall's header ({PG_DUMPALL_HEADER.decode()}); it is not a "
                    "dump written by postgres_dump / pg_dumpall")
        if not self.complete:
            return ("the dump lacks pg_dumpall's completion trailer (-- PostgreSQL database cluster dump complete): "
                    "it is truncated")
        return None


def dump_stream(path, compression, role, scan=False, run_id=None, fingerprint=None):
    """(generator of the filtered dump, RoleFilter, DumpCheck) for one pass over ``path``.

    With ``scan`` the stream also goes through ``_pgscan.DumpScanner`` (``check.scanner``): the dump is refused
    (DumpRefused while it is read) for meta-commands, template1/postgres sections, tablespaces and the like, and
    with ``run_id`` it is rewritten to temporary database names (the scanner then also handles the roles).
    """
    from ansible_collections.authentik_ops.backup.plugins.module_utils._pgscan import DumpScanner

    check = DumpCheck()
    stream = check.watch(iter_file(path, compression))
    if scan:
        check.scanner = DumpScanner(role=role, run_id=run_id, fingerprint=fingerprint)
        stream = check.scanner.process(stream)
    role_filter = RoleFilter(None if run_id else role)
    return role_filter.filter(stream), role_filter, check


def count_dump(path, compression, role, **scan):
    """First pass: decompress, check and filter the whole dump. Returns (bytes to send, removed, DumpCheck)."""
    stream, role_filter, check = dump_stream(path, compression, role, **scan)
    try:
        size = count_bytes(stream)
    except RestoreError:
        raise
    except (OSError, EOFError, ValueError) as exc:  # gzip/zstd errors are OSError/ValueError subclasses
        raise RestoreError(f"{path} cannot be read or decompressed: {exc}") from exc
    except Exception as exc:  # zstandard.ZstdError is not an OSError
        raise RestoreError(f"{path} cannot be decompressed: {exc}") from exc
    return size, role_filter.removed, check


# --- a tar of one file (Docker's archive endpoint takes only tar) ------------------------------------------------

def single_file_tar(name, chunks, size, uid=0, gid=0, mode=0o600, mtime=None):
    """Yield a ustar/pax archive holding one regular file ``name`` of exactly ``size`` bytes from ``chunks``."""
    import time

    info = tarfile.TarInfo(name)
    info.size = size
    info.uid = uid
    info.gid = gid
    info.mode = mode
    info.mtime = int(time.time() if mtime is None else mtime)
    info.type = tarfile.REGTYPE
    yield info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    sent = 0
    for block in exact_length(chunks, size):
        sent += len(block)
        yield block
    padding = (-sent) % tarfile.BLOCKSIZE
    if padding:
        yield bytes(padding)
    yield bytes(2 * tarfile.BLOCKSIZE)


def tar_size(size):
    """Bytes :func:`single_file_tar` yields besides the header: data, padding and end blocks."""
    return size + ((-size) % tarfile.BLOCKSIZE) + 2 * tarfile.BLOCKSIZE


# --- strict decoding (backup_verify) -----------------------------------------------------------------------------

def decode_strict(raw_chunks, compression):
    """Decompress ``raw_chunks`` and insist on complete compressed frames (gzip members, zstd frames).

    Raises RestoreError for a stream that ends inside a frame (truncated) or carries data that is not a frame.
    """
    if compression == "none":
        yield from raw_chunks
        return
    if compression == "gzip":
        import zlib

        def new():
            return zlib.decompressobj(47)
    elif compression == "zstd":
        from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import zstandard

        if zstandard is None:
            raise RestoreError("checking a zstd file needs the Python package 'zstandard' on this host")

        def new():
            return zstandard.ZstdDecompressor().decompressobj()
    else:
        raise RestoreError(f"unknown compression {compression!r}")
    decoder = new()
    started = False
    try:
        for block in raw_chunks:
            while block:
                if decoder.eof:
                    decoder = new()
                out = decoder.decompress(block)
                started = True
                if out:
                    yield out
                block = decoder.unused_data if decoder.eof else b""
    except RestoreError:
        raise
    except Exception as exc:  # zlib.error, zstandard.ZstdError
        raise RestoreError(f"{compression} data is corrupt: {exc}") from exc
    if not started:
        raise RestoreError(f"the {compression} file is empty")
    if not decoder.eof:
        raise RestoreError(f"the {compression} stream ends inside a frame: the file is truncated")
