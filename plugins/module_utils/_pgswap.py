# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The restore beside the live data: the run's journal, SQL run in the target, the proof and the swap.

A staged restore loads every database of the dump under ``akr_<run_id>_<n>`` while the live databases keep
serving. The swap, in one transaction run from the ``postgres`` database, renames each live database to
``akp_<run_id>_<n>`` (kept, with ALLOW_CONNECTIONS false so later backups skip it) and the temporary one to the
real name. The journal (``<journal_dir>/<run_id>.json``, 0600 in a 0700 directory, replaced atomically) records the
name mapping and the phase (staging, staged, swapped, discarded, rolled_back, cleaned).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import excerpt
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RestoreError, TransportError
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgproof import Fingerprint, copy_out_sql
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgscan import quote_identifier

RUN_ID = re.compile(r"^[a-z0-9]{1,24}$")
SQL_SH = 'head -c "$1" | psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$2"'
PROOF_SETTINGS = ("SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; "
                  "SET bytea_output = hex;\n")


def new_run_id():
    return time.strftime("%y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(2)


def check_run_id(run_id):
    if not run_id or not RUN_ID.match(run_id):
        raise RestoreError(f"run_id must be 1-24 lower-case letters or digits (is {run_id!r})")
    return run_id


# --- journal ------------------------------------------------------------------------------------------------------

def journal_path(journal_dir, run_id):
    return os.path.join(journal_dir, f"{check_run_id(run_id)}.json")


def write_journal(journal_dir, record):
    """Write ``record`` atomically (temp file, fsync, rename) as 0600 in a 0700 directory."""
    os.makedirs(journal_dir, mode=0o700, exist_ok=True)
    os.chmod(journal_dir, 0o700)
    record = dict(record, updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path = journal_path(journal_dir, record["run_id"])
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return record


def read_journal(journal_dir, run_id):
    path = journal_path(journal_dir, run_id)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise RestoreError(f"no journal of the restore {run_id} in {journal_dir}") from None
    except (OSError, ValueError) as exc:
        raise RestoreError(f"the journal {path} cannot be read: {exc}") from exc


def list_journals(journal_dir):
    """Every journal in ``journal_dir``, oldest first (by the time of its last phase, then its run_id)."""
    found = []
    if os.path.isdir(journal_dir):
        for name in os.listdir(journal_dir):
            if name.endswith(".json") and RUN_ID.match(name[:-5]):
                record = read_journal(journal_dir, name[:-5])
                found.append((record.get("updated", ""), name, record))
    return [record for _updated, _name, record in sorted(found, key=lambda item: item[:2])]


def latest_journal(journal_dir, phases):
    """The newest journal whose phase is one of ``phases``, or None."""
    found = [record for record in list_journals(journal_dir) if record.get("phase") in phases]
    return found[-1] if found else None


# --- SQL in the target --------------------------------------------------------------------------------------------

def run_sql(transport, params, sql, database="postgres", on_stdout=None):
    """Run the psql script ``sql`` in ``database``; returns its (short) output unless ``on_stdout`` takes it."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import secret_env, shell
    from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import CappedBuffer

    data = sql.encode("utf-8")
    out = CappedBuffer()
    argv = shell(params, SQL_SH) + [str(len(data)), database]
    result = transport.exec_stream(argv, on_stdout or out.write, secret_env=secret_env(params), stdin=[data])
    if not result.ok:
        raise TransportError(f"psql in {transport.describe()} (database {database}) failed: "
                             f"{result.problem or f'exit status {result.exit_code}'}: {excerpt(result.stderr)}",
                             rc=result.exit_code, stderr_excerpt=excerpt(result.stderr))
    return out.getvalue().decode("utf-8", "replace")


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def existing_databases(transport, params, names):
    """{name: datallowconn} of those of ``names`` that exist."""
    if not names:
        return {}
    wanted = ", ".join(literal(name) for name in names)
    sql = (f"SELECT json_object_agg(datname, datallowconn) FROM pg_database WHERE datname IN ({wanted});\n")
    answer = run_sql(transport, params, sql).strip()
    return json.loads(answer) if answer else {}


def disk_space(transport, params, names):
    """The data directory, its free bytes (None when ``df`` cannot tell, with the reason), ``max_wal_size`` and the
    size of the live databases among ``names``."""
    wanted = ", ".join(literal(name) for name in names) or "NULL"
    sql = ("SELECT json_build_object('dir', current_setting('data_directory'), "
           "'max_wal', pg_size_bytes(current_setting('max_wal_size')), "
           f"'live', (SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database WHERE datname IN ({wanted})));\n")
    space = json.loads(run_sql(transport, params, sql).strip())
    space.update(free=None, problem=None)
    result = transport.exec_capture(["df", "-P", "-k", space["dir"]])
    lines = result.stdout.decode("utf-8", "replace").strip().splitlines() if result.ok else []
    fields = lines[-1].split() if len(lines) >= 2 else []
    if len(fields) >= 6 and fields[-3].isdigit():
        space["free"] = int(fields[-3]) * 1024
    else:
        space["problem"] = (f"df -P -k {space['dir']} in {transport.describe()} gave no answer: "
                            f"{result.problem or excerpt(result.stderr) or excerpt(result.stdout)}")
    return space


def space_needed(raw_size, space):
    """Bytes a staged load is expected to take: a copy of the data (the dump's size, or the live databases' if they
    are larger) and the write-ahead log written before checkpoints recycle it (at most ``max_wal_size``)."""
    copy = max(int(raw_size), int(space["live"]))
    return copy + min(copy, int(space["max_wal"]))


def drop_databases(transport, params, names):
    """Drop the temporary/previous databases ``names`` (only akr_/akp_/akn_ names are accepted)."""
    for name in names:
        if not re.match(r"^ak[rpn]_[a-z0-9]{1,24}_\d+$", name):
            raise RestoreError(f"refusing to drop {name!r}: not a database a restore created")
    if names:
        run_sql(transport, params, "".join(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n" for name in names))


def swap_sql(pairs, close, reopen):
    """The swap script: ``close`` loses connections, then one transaction of renames ``pairs`` [(from, to)]."""
    parts = [f"ALTER DATABASE {quote_identifier(name)} ALLOW_CONNECTIONS false;\n" for name in close]
    if close:
        names = ", ".join(literal(name) for name in close)
        parts.append("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                     f"WHERE datname IN ({names}) AND pid <> pg_backend_pid();\n")
    parts.append("BEGIN;\n")
    parts += [f"ALTER DATABASE {quote_identifier(old)} RENAME TO {quote_identifier(new)};\n" for old, new in pairs]
    parts.append("COMMIT;\n")
    parts += [f"ALTER DATABASE {quote_identifier(name)} ALLOW_CONNECTIONS true;\n" for name in reopen]
    return "".join(parts)


def swap(transport, params, pairs, close, reopen):
    """Run the swap; if it fails, the databases of ``close`` accept connections again (nothing was renamed)."""
    try:
        run_sql(transport, params, swap_sql(pairs, close, reopen))
    except TransportError as exc:
        try:
            run_sql(transport, params, "".join(f"ALTER DATABASE {quote_identifier(name)} ALLOW_CONNECTIONS true;\n"
                                               for name in close))
        except TransportError:
            pass
        raise RestoreError(f"the swap failed and was rolled back (the names are as before): {exc.msg}") from exc


# --- the proof ----------------------------------------------------------------------------------------------------

class CopyRouter:
    """Splits the output of a proof script into tables (marker lines) and fingerprints each table's lines."""

    def __init__(self, database, headers, fingerprint):
        self.nonce = secrets.token_hex(16).encode("ascii")
        self.database = database
        self.headers = headers
        self.fingerprint = fingerprint
        self.partial = b""
        self.markers = {self.nonce + f" {index}".encode("ascii"): index for index in range(len(headers))}

    def script(self):
        parts = [PROOF_SETTINGS]
        for index, header in enumerate(self.headers):
            parts.append(f"\\echo {self.nonce.decode()} {index}\n{copy_out_sql(header)}\n")
        return "".join(parts)

    def write(self, data):
        data = self.partial + bytes(data)
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        block = []
        for line in data[:cut].split(b"\n")[:-1]:
            index = self.markers.get(line)
            if index is not None:
                self.fingerprint.add_lines(b"".join(block))
                block = []
                self.fingerprint.start_table(self.database, self.headers[index])
            else:
                block.append(line + b"\n")
        self.fingerprint.add_lines(b"".join(block))


DIGEST_LINE = re.compile(r"^([0-9a-f]{32})\b")


def digest_script(headers):
    """psql script: each table's COPY output into its own ``md5sum`` (psql's ``\\o |command``), which prints the
    digest on the script's standard output; seqscans start at the first page, so rows come in the order loaded."""
    parts = [PROOF_SETTINGS, "SET synchronize_seqscans = off;\n"]
    for header in headers:
        parts.append(f"\\o |md5sum\n{copy_out_sql(header)}\n")
    parts.append("\\o\n")
    return "".join(parts)


def by_database(order):
    """{database: [table keys]} of the keys ``order`` ((database, header) pairs), each database's in order."""
    grouped = {}
    for key in order:
        grouped.setdefault(key[0], []).append(key)
    return grouped


def prove_digests(transport, params, expected, mapping):
    """{table key: MD5 of its COPY output, read in the database's container} for the tables of ``expected``
    (a ``Digests``); a database whose script fails or gives another number of digests has no entries (its tables
    are then compared by ``prove``)."""
    found = {}
    for database, keys in by_database(expected.order).items():
        try:
            out = run_sql(transport, params, digest_script([header for _db, header in keys]),
                          database=mapping[database])
        except TransportError:
            continue
        digests = [DIGEST_LINE.match(line) for line in out.splitlines() if line.strip()]
        if len(digests) == len(keys) and all(digests):
            found.update((key, match.group(1)) for key, match in zip(keys, digests))
    return found


def prove(transport, params, expected, mapping):
    """Fingerprint the restored tables of every temporary database; returns the restored Fingerprint."""
    restored = Fingerprint()
    for database, keys in by_database(expected.order).items():
        router = CopyRouter(database, [header for _db, header in keys], restored)
        run_sql(transport, params, router.script(), database=mapping[database], on_stdout=router.write)
        restored.end_table()
    return restored
