# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Format checks done while a stream passes: pg_dumpall trailer, RDB header and CRC64, tar structure."""

from __future__ import annotations

PG_DUMPALL_TRAILER = b"-- PostgreSQL database cluster dump complete"
PG_DUMPALL_HEADER = b"-- PostgreSQL database cluster dump"


def pg_dumpall_complete(tail):
    """True when the last lines of a pg_dumpall script carry its completion trailer.

    Newer pg_dumpall versions write ``\\unrestrict <key>`` lines around the end, so the trailer is searched
    within the last lines rather than required to be the very last one.
    """
    lines = tail.rstrip(b"\n").split(b"\n")[-12:]
    return any(line.strip() == PG_DUMPALL_TRAILER for line in lines)


# --- Redis RDB ------------------------------------------------------------------------------------------------
# Redis uses CRC-64/Jones (reflected, polynomial 0xad93d23594c935a9, init 0, no final xor).
_CRC64_POLY_REFLECTED = 0x95AC9329AC4BC9B5


def _crc64_table():
    table = []
    for byte in range(256):
        crc = byte
        for _bit in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def crc64(data, crc=0):
    table = _CRC64_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class RdbChecker:
    """Feed an RDB file's bytes in order; ``finish()`` says whether header, EOF opcode and CRC64 are right."""

    def __init__(self, verify_crc=True):
        self.verify_crc = verify_crc
        self.head = b""
        self.crc = 0
        self.size = 0
        self._hold = b""  # the last 8 bytes are the checksum, not checksummed data

    def feed(self, data):
        if len(self.head) < 9:
            self.head += bytes(data[:9 - len(self.head)])
        self.size += len(data)
        joined = self._hold + bytes(data)
        body, self._hold = joined[:-8], joined[-8:]
        if self.verify_crc and body:
            self.crc = crc64(body, self.crc)
            self._last_body_byte = body[-1]
        elif body:
            self._last_body_byte = body[-1]

    @property
    def version(self):
        if len(self.head) == 9 and self.head[:5] == b"REDIS" and self.head[5:].isdigit():
            return int(self.head[5:])
        return None

    def finish(self):
        """Returns (ok, message, rdb_version)."""
        version = self.version
        if version is None:
            return False, f"not an RDB file: it starts with {self.head[:9]!r}, not REDIS + 4 version digits", None
        if version < 5:
            return True, f"RDB version {version} has no checksum; header checked", version
        if self.size < 18 or getattr(self, "_last_body_byte", None) != 0xFF:
            return False, "the RDB file does not end with the EOF opcode (0xFF) and its checksum: truncated", version
        expected = int.from_bytes(self._hold, "little")
        if expected == 0:
            return True, "RDB checksum disabled on the server (rdbchecksum no); header and EOF checked", version
        if self.verify_crc and expected != self.crc:
            return False, (f"RDB CRC64 mismatch: the file says {expected:016x}, its content gives "
                           f"{self.crc:016x}"), version
        return True, "RDB header, EOF opcode and CRC64 checked", version


# --- tar ------------------------------------------------------------------------------------------------------
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
# Types whose size field is followed by data, as Python's tarfile reads them: regular files, contiguous files,
# pax and GNU long-name headers, and anything unknown. Links, devices, dirs and fifos carry none.
_NO_DATA_TYPES = frozenset(b"123456")
_META_TYPES = frozenset(b"xgLK")


def _tar_size(field):
    if field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


class TarWalker:
    """Walks a tar stream header by header without holding member data.

    ``feed(data)`` returns the bytes that belong to the archive's members (everything before the end-of-archive
    marker), so several walked archives can be concatenated and closed with one ``END`` marker. ``complete``
    tells whether the end-of-archive marker was seen: a stream cut short never has it.
    """

    END = bytes(2 * _BLOCK)

    def __init__(self):
        self.members = 0
        self.complete = False
        self._skip = 0  # data bytes (padded) still to pass through
        self._header = b""

    def feed(self, data):
        out = []
        view = memoryview(data)
        while view and not self.complete:
            if self._skip:
                take = min(self._skip, len(view))
                out.append(view[:take])
                view = view[take:]
                self._skip -= take
                continue
            need = _BLOCK - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) < _BLOCK:
                break
            block, self._header = self._header, b""
            if block == _ZERO_BLOCK:
                self.complete = True
                break
            if not _valid_checksum(block):
                raise ValueError(f"not a tar stream: bad header checksum at member {self.members + 1}")
            size = _tar_size(block[124:136])
            kind = block[156]
            if kind not in _META_TYPES:
                self.members += 1
            if kind in _NO_DATA_TYPES:
                size = 0
            self._skip = -(-size // _BLOCK) * _BLOCK
            out.append(block)
        return b"".join(out)


def _valid_checksum(block):
    stored = block[148:156].split(b"\0", 1)[0].strip()
    if not stored:
        return False
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return expected == unsigned
