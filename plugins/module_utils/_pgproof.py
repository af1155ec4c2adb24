# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Per-table fingerprints of PostgreSQL data in COPY text form: the proof that a restore holds what the dump held.

Two kinds. :class:`Digests` is the fast one a staged restore tries first: per table the number of lines and the MD5
of the COPY data as it comes, in its order. A table loaded by COPY into a new database is read back by ``COPY ...
TO STDOUT`` in the order it was loaded (with ``synchronize_seqscans`` off), so the restored side's MD5 can be taken
inside the database container (``md5sum``) and only 32 characters per table travel back. A table whose digest
differs (rows in another order, or no ``md5sum`` in the container) is then compared by :class:`Fingerprint`.

A table's fingerprint is ``(rows, sum)``: the number of COPY text lines and the sum of the first 8 bytes (signed,
big-endian) of each line's MD5, as an unbounded integer. It does not depend on the order of the rows and counts
duplicates. The dump side feeds the COPY data lines of the dump (``_pgscan.DumpScanner`` calls ``start_table``,
``add_lines``, ``end_table``); the restore side feeds the output of ``COPY <table> (<columns>) TO STDOUT`` from the
restored database, with the same column list, so both sides hash the very bytes COPY writes.
"""

from __future__ import annotations

import hashlib
import re


def line_value(line):
    return int.from_bytes(hashlib.md5(line).digest()[:8], "big", signed=True)


def table_key(tables, order, database, header):
    """The key of a table in ``tables``: (database, header with its white space folded), made unique."""
    key = (database or "", " ".join(header.split()))
    if key in tables:
        key = (key[0], f"{key[1]} #{len(order)}")
    return key


class Fingerprint:
    """{(database, table header): [rows, sum]} of COPY data, fed in blocks of whole lines."""

    def __init__(self):
        self.tables = {}
        self.order = []
        self.current = None

    def start_table(self, database, header):
        key = table_key(self.tables, self.order, database, header)
        self.tables[key] = [0, 0]
        self.order.append(key)
        self.current = self.tables[key]

    def only(self, keys):
        """A Fingerprint of the tables ``keys`` of this one (in this one's order)."""
        part = Fingerprint()
        part.order = [key for key in self.order if key in set(keys)]
        part.tables = {key: self.tables[key] for key in part.order}
        return part

    def add_lines(self, data):
        """Hash the lines of ``data`` (whole lines, each ending in a newline) into the current table."""
        if self.current is None or not data:
            return
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        total = 0
        for line in lines:
            total += int.from_bytes(hashlib.md5(line).digest()[:8], "big", signed=True)
        self.current[0] += len(lines)
        self.current[1] += total

    def end_table(self):
        self.current = None

    def as_list(self):
        return [dict(database=db, table=table, rows=rows, sum=str(total))
                for (db, table), (rows, total) in ((key, self.tables[key]) for key in self.order)]


class Digests:
    """{(database, table header): [rows, MD5 hex digest]} of COPY data in the order it comes (see above)."""

    def __init__(self, hashing=True):
        self.hashing = hashing  # False: only the tables (their keys, in order) are listed
        self.tables = {}
        self.order = []
        self.current = None
        self._md5 = None

    def start_table(self, database, header):
        key = table_key(self.tables, self.order, database, header)
        self._md5 = hashlib.md5()
        self.tables[key] = [0, self._md5.hexdigest()]
        self.order.append(key)
        self.current = self.tables[key]

    def add_lines(self, data):
        """Count the lines of ``data`` (whole lines, each ending in a newline) and add its bytes to the digest."""
        if self.current is None or not data or not self.hashing:
            return
        self.current[0] += data.count(b"\n")
        self._md5.update(data)

    def end_table(self):
        if self.current is not None:
            self.current[1] = self._md5.hexdigest()
        self.current = None
        self._md5 = None


_HEADER = re.compile(r"(.+?)\s*(\(.*\))?\s*$", re.S)


def copy_out_sql(header):
    """``COPY <table> (<columns>) TO STDOUT;`` for the header a dump's COPY statement had (table and columns)."""
    match = _HEADER.match(header)
    table, columns = match.group(1), match.group(2) or ""
    return f"COPY {table} {columns} TO STDOUT;".replace("  ", " ")


def differences(expected, actual, limit=10):
    """Tables whose fingerprints differ, as short texts (at most ``limit``); an empty list when all are equal."""
    found = []
    for key, value in expected.items():
        got = actual.get(key)
        if got is None:
            found.append(f"{key[0]}: {key[1]}: missing in the restored database")
        elif list(got) != list(value):
            found.append(f"{key[0]}: {key[1]}: {value[0]} rows in the dump, {got[0]} restored"
                         + ("" if value[0] != got[0] else " (same count, different content)"))
    for key in actual:
        if key not in expected:
            found.append(f"{key[0]}: {key[1]}: not in the dump")
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])
