#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: postgres_fingerprint
short_description: Fingerprint the data and schema of every database of authentik's PostgreSQL, and compare
version_added: 0.1.0
description:
  - Proves that two PostgreSQL servers hold the same data, for example before and after a major upgrade where the
    data was dumped from the old server (M(authentik_ops.backup.postgres_dump)) and restored into a new one
    (M(authentik_ops.backup.postgres_restore)). Run it against the old server, register the result, run it against
    the new one with O(compare_to) set to the first result's RV(databases).
  - Fingerprints every database of the server in the container (Docker) or pod (Kubernetes) except those in
    O(exclude_databases) and those that do not accept connections (C(datallowconn) false, such as the databases a
    staged restore keeps).
  - Per table (ordinary tables and the leaf partitions of partitioned tables, in every schema but C(pg_catalog),
    C(information_schema) and C(pg_toast*); temporary tables are left out) the number of rows and an
    order-independent sum of the MD5 of each line that C(COPY ... TO STDOUT) writes for the table and its column
    list, exactly as the proof of a staged restore (M(authentik_ops.backup.postgres_restore)) computes it. The
    columns are the table's columns that are neither dropped nor generated, in their order, and the table is named
    as C(pg_dump) names it in its C(COPY) statement. All tables of a database are read in one C(REPEATABLE READ READ ONLY) transaction, with
    C(DateStyle=ISO), C(IntervalStyle=postgres), C(extra_float_digits=3), C(bytea_output=hex), C(TimeZone=UTC) and
    C(search_path=pg_catalog), so the text does not depend on the servers' settings.
  - Per sequence its C(last_value) and C(is_called), read from the sequence itself (not from C(pg_sequences), whose
    C(last_value) is null until the sequence is first used); a sequence never used reports its start value with
    C(is_called) false, as C(pg_dump) restores it.
  - Per database a SHA-256 over a sorted, canonical listing of its schema, version-independent so that the same
    schema gives the same digest on PostgreSQL 15 and 17 (no OIDs, no column numbers, every name and definition
    rendered by the server with C(search_path=pg_catalog), sorted by code point on the host, not by a collation).
    It lists schemas, extensions (name and schema, not the version), tables with their kind, persistence, partition
    key and bound and parent tables, columns (name, C(format_type), not null, default or generation expression,
    identity, collation), constraints (C(pg_get_constraintdef)), indexes (C(pg_get_indexdef)), views and
    materialized views (C(pg_get_viewdef)), sequences (data type, start, increment, minimum, maximum, cache, cycle,
    owning column), functions and procedures (identity arguments, result, kind and an MD5 of
    C(pg_get_functiondef)), triggers (C(pg_get_triggerdef)) and the owner (role name) of schemas, relations and
    functions. Objects that belong to an extension are represented by the extension.
  - The connection uses the same credentials as M(authentik_ops.backup.postgres_dump), that is the superuser found
    in the container's own environment, or O(user) and O(password). The role must be able to read every table and
    sequence.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - The fingerprint only reads, and is taken in check mode too (and compared with O(compare_to)). With
        O(analyze=true) the C(ANALYZE) is left out and the module reports C(changed=true), as the run would.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Without O(analyze) nothing is changed and C(changed) is always false. With O(analyze=true) every run runs
        C(ANALYZE) and reports a change.
options:
  user:
    description:
      - Database role to connect as. It must be able to read every table and sequence (a superuser can).
      - Defaults to the role found in the container's environment (see M(authentik_ops.backup.postgres_dump)).
    type: str
  password:
    description:
      - Password of O(user), when the server requires one and the container's environment does not provide it.
      - Handed to C(psql) on the exec's standard input (a shell wrapper reads it into E(PGPASSWORD)); never on a
        command line, nor in the result.
    type: str
  host:
    description:
      - Host name or socket directory C(psql) connects to inside the container (E(PGHOST)).
      - Defaults to the client's compiled-in local socket.
    type: str
  port:
    description:
      - Port C(psql) connects to inside the container (E(PGPORT)).
    type: int
  exclude_databases:
    description:
      - Databases left out of the fingerprint, as in M(authentik_ops.backup.postgres_dump).
    type: list
    elements: str
    default: [postgres, template0, template1]
  analyze:
    description:
      - Run C(ANALYZE) in each database before it is fingerprinted, to refresh the planner statistics (after a
        restore into a new server, for example). The fingerprint does not depend on it.
      - This changes the server's statistics, so the module then reports C(changed=true). In check mode the
        C(ANALYZE) is not run.
    type: bool
    default: false
  compare_to:
    description:
      - The RV(databases) value of an earlier run of this module (for example against the server before an
        upgrade).
      - When given, the module fails if the fingerprint taken now differs from it (a database missing or extra, a
        table missing or extra or with other rows, a sequence missing, extra or in another state, or another schema
        digest). The message names at most ten differences; RV(differences) lists them all (up to 1000).
        Otherwise it returns RV(equal=true).
      - Names are compared without the quotes that only one server's keyword list asks for, so a column whose
        name became a keyword in the newer server (C(json_object) in PostgreSQL 16) still matches.
    type: raw
notes:
  - Needs C(sh) and C(psql) in the container.
  - The tables of a database are read in one snapshot, but the databases one after the other and the sequences
    outside that snapshot; stop authentik's server and worker when the data must not change between the two runs.
  - Every row of every table is read and hashed on the host the module runs on; this takes about as long as a dump.
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.postgres_restore
"""

EXAMPLES = r"""
- name: Fingerprint the old server before the upgrade
  authentik_ops.backup.postgres_fingerprint:
    container: authentik-postgresql-1
  register: before

- name: Prove that the new server holds the same data (fails with the differences otherwise)
  authentik_ops.backup.postgres_fingerprint:
    container: authentik-postgresql17-1
    analyze: true
    compare_to: "{{ before.databases }}"

- name: Fingerprint the database pod of the Helm chart
  authentik_ops.backup.postgres_fingerprint:
    platform: kubernetes
    namespace: authentik
    pod: authentik-postgresql-0
    user: postgres
    password: "{{ vault_pg_superuser_password }}"
  register: fingerprint
"""

RETURN = r"""
databases:
  description:
    - The fingerprint of each database, by name. Give it to O(compare_to) of a later run.
    - C(tables) lists each table as C(pg_dump) names it with its columns, the number of rows and the sum (a
      decimal string) of its rows' hashes, sorted by name.
    - C(sequences) lists each sequence with its C(last_value) and C(is_called), sorted by name.
    - C(schema_sha256) is the digest of the schema listing, C(schema_objects) the number of its entries.
  returned: success
  type: dict
  sample:
    authentik:
      tables:
        - {table: "public.authentik_core_user (id, password, last_login, username)", rows: 3, sum: "-6053431290853012815"}
      sequences:
        - {name: public.authentik_core_user_id_seq, last_value: 3, is_called: true}
      schema_sha256: 0cc175b9c0f1b6a831c399e269772661ebf8b3b4e83e5cd2b94a1d6e6a3a7d05
      schema_objects: 1480
tables:
  description: Number of tables fingerprinted, over all databases.
  returned: success
  type: int
  sample: 212
rows:
  description: Number of rows fingerprinted, over all databases.
  returned: success
  type: int
  sample: 48211
server_version:
  description: Version of the PostgreSQL server.
  returned: success
  type: str
  sample: "17.2"
equal:
  description: Whether the fingerprint equals O(compare_to) (the module fails when it does not).
  returned: when O(compare_to) is given
  type: bool
  sample: true
differences:
  description: The differences from O(compare_to), at most 1000 (empty when equal).
  returned: when O(compare_to) is given
  type: list
  elements: str
  sample: ["authentik: table public.authentik_events_event (event_uuid, action): 120 rows before, 119 now"]
"""

import hashlib
import json
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    TRANSPORT_REQUIRED_IF,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    ConfigError,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgproof import Fingerprint
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgswap import CopyRouter, run_sql
from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import (
    DEFAULT_EXCLUDED_DATABASES,
    connection_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import CappedBuffer

MESSAGE_DIFFERENCES = 10
RESULT_DIFFERENCES = 1000
CATALOG_LIMIT = 256 * 1024 * 1024

SERVER_SQL = ("SELECT json_build_object('version', current_setting('server_version'), "
              "'version_num', current_setting('server_version_num')::int, "
              "'databases', (SELECT json_agg(datname) FROM pg_catalog.pg_database WHERE datallowconn));\n")
# Functions with a SQL-standard body (BEGIN ATOMIC, pg_proc.prosqlbody) exist from PostgreSQL 14 on.
SQLBODY = "p.prosqlbody IS NOT NULL"
SQLBODY_SINCE = 140000

# Every session of the module reads in a read-only transaction; names are rendered fully qualified.
READ_ONLY = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSET LOCAL search_path = pg_catalog;\n"
# On top of _pgswap.PROOF_SETTINGS: timestamptz text must not depend on the servers' time zones.
COPY_SETTINGS = "SET LOCAL TimeZone = 'UTC';\n"

# The user's schemas, relations and functions; "member" marks the objects an extension created.
_CATALOG_CTE = r"""
WITH ns AS (
  SELECT n.oid, n.nspname, quote_ident(n.nspname) AS q, pg_get_userbyid(n.nspowner) AS owner
  FROM pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
    AND n.nspname !~ '^pg_temp_'
), members AS (
  SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
), rel AS (
  SELECT c.oid, c.relname, c.relkind, c.relpersistence, ns.nspname, ns.q AS nsq,
         ns.q || '.' || quote_ident(c.relname) AS name, pg_get_userbyid(c.relowner) AS owner,
         EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid) AS member
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  WHERE c.relpersistence <> 't'
)
"""

CATALOG_SQL = _CATALOG_CTE + r"""
SELECT json_build_object(
 'tables', (SELECT coalesce(json_agg(json_build_object(
     'schema', r.nsq, 'table', quote_ident(r.relname),
     'columns', (SELECT coalesce(json_agg(quote_ident(a.attname) ORDER BY a.attnum), '[]')
                 FROM pg_attribute a
                 WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''))),
     '[]') FROM rel r WHERE r.relkind = 'r'),
 'schema', (SELECT coalesce(json_agg(o.item), '[]') FROM (
   SELECT json_build_array('schema', ns.nspname, ns.owner) AS item FROM ns
   WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_namespace'::regclass AND m.objid = ns.oid)
   UNION ALL
   SELECT json_build_array('extension', e.extname, e.extnamespace::regnamespace::text) FROM pg_extension e
   WHERE e.extname <> 'plpgsql'
   UNION ALL
   SELECT json_build_array('relation', r.name, r.relkind, r.relpersistence, r.owner,
            pg_get_partkeydef(r.oid), pg_get_expr(c.relpartbound, r.oid),
            (SELECT json_agg(i.inhparent::regclass::text ORDER BY i.inhparent::regclass::text COLLATE "C")
             FROM pg_inherits i WHERE i.inhrelid = r.oid))
   FROM rel r JOIN pg_class c ON c.oid = r.oid
   WHERE r.relkind IN ('r', 'p', 'f') AND NOT r.member
   UNION ALL
   SELECT json_build_array('column', r.name, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
            pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
            CASE WHEN a.attcollation <> t.typcollation THEN
              (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
               FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
               WHERE co.oid = a.attcollation) END)
   FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid JOIN pg_type t ON t.oid = a.atttypid
   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm') AND NOT r.member AND a.attnum > 0 AND NOT a.attisdropped
   UNION ALL
   SELECT json_build_array('constraint', r.name, co.conname, co.contype, pg_get_constraintdef(co.oid))
   FROM rel r JOIN pg_constraint co ON co.conrelid = r.oid
   WHERE NOT r.member AND co.contype <> 'n'
   UNION ALL
   SELECT json_build_array('index', r.name, pg_get_indexdef(r.oid)) FROM rel r
   WHERE r.relkind IN ('i', 'I') AND NOT r.member
   UNION ALL
   SELECT json_build_array('view', r.name, r.relkind, r.owner, pg_get_viewdef(r.oid)) FROM rel r
   WHERE r.relkind IN ('v', 'm') AND NOT r.member
   UNION ALL
   SELECT json_build_array('sequence', r.name, r.owner, format_type(s.seqtypid, NULL), s.seqstart::text,
            s.seqincrement::text, s.seqmin::text, s.seqmax::text, s.seqcache::text, s.seqcycle,
            (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
             FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
               AND d.deptype IN ('a', 'i') LIMIT 1))
   FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid WHERE NOT r.member
   UNION ALL
   SELECT json_build_array('function', ns.q || '.' || quote_ident(p.proname) || '('
              || pg_get_function_identity_arguments(p.oid) || ')',
            p.prokind, pg_get_userbyid(p.proowner), pg_get_function_result(p.oid),
            SQLBODY,
            CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END)
   FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
   WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_proc'::regclass AND m.objid = p.oid)
   UNION ALL
   SELECT json_build_array('trigger', r.name, tg.tgname, pg_get_triggerdef(tg.oid))
   FROM rel r JOIN pg_trigger tg ON tg.tgrelid = r.oid WHERE NOT tg.tgisinternal AND NOT r.member
 ) o));
"""

# One JSON line [name, last_value, is_called] per sequence, read from the sequence itself (psql's \gexec).
SEQUENCES_SQL = _CATALOG_CTE + r"""
SELECT format('SELECT json_build_array(%L::text, last_value, is_called) FROM %s', r.name, r.name)
FROM rel r WHERE r.relkind = 'S' \gexec
"""

_QUOTED = re.compile(r'"((?:[^"]|"")*)"')
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")
# A qualifier (``alias.`` or ``schema.``) in front of a name; digits cannot start one, so 0.5 stays.
_QUALIFIER = re.compile(r'(?<![\w$"])(?:"(?:[^"]|"")*"|[^\W\d][\w$]*)\.(?=[\w"*])')


def database_argument(name):
    """The psql -d argument that names ``name``: psql reads a name with ``=`` or a URI prefix as a conninfo."""
    if "=" in name or name.startswith(("postgresql://", "postgres://")):
        return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return name


def table_header(row):
    """``<schema>.<table> (<col>, ...)`` (pg_dump's COPY form) from a catalog row of quoted names."""
    columns = row.get("columns") or []
    header = f"{row['schema']}.{row['table']}"
    return f"{header} ({', '.join(columns)})" if columns else header


def canonical_name(text):
    """``text`` (a name, a header, a definition) with single spaces and without the quotes that only a keyword
    list asks for: PostgreSQL 17 quotes ``json_object``, 15 does not."""
    def unquote(match):
        inner = match.group(1).replace('""', '"')
        return inner if _PLAIN.fullmatch(inner) else match.group(0)
    return _QUOTED.sub(unquote, " ".join(str(text).split()))


def deparsed_query(text):
    """A query the server deparsed (a view, a function's SQL-standard body) without qualifiers: PostgreSQL 16
    stopped qualifying the columns of a query over one relation (``t.id`` became ``id``)."""
    return _QUALIFIER.sub("", text or "")


def _canonical_value(value):
    if isinstance(value, str):
        return canonical_name(value)
    if isinstance(value, list):
        return [_canonical_value(element) for element in value]
    return value


def canonical_object(item):
    """A schema object of the catalog query as it enters the digest: every text through ``canonical_name``, a
    view's definition through ``deparsed_query`` first, a function's definition as the MD5 of the result
    (through ``deparsed_query`` too when it has a SQL-standard body)."""
    item = list(item)
    if item[0] == "view":
        item[-1] = deparsed_query(item[-1])
    elif item[0] == "function" and item[-1] is not None:
        text = canonical_name(deparsed_query(item[-1]) if item[-2] else item[-1])
        item[-1] = hashlib.md5(text.encode("utf-8")).hexdigest()
    return _canonical_value(item)


def canonical_lines(objects):
    """The sorted, canonical listing of schema objects (each a JSON array), one line per object."""
    return sorted(json.dumps(canonical_object(item), ensure_ascii=False, separators=(",", ":"))
                  for item in objects)


def schema_digest(objects):
    """(sha256, count) of the canonical listing of ``objects``."""
    lines = canonical_lines(objects)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest(), len(lines)


def sequence_entry(item):
    """{name, last_value, is_called} of a [name, last_value, is_called] line; values the server did not give
    (null) stay null, so that they compare equal only to null."""
    name, last_value, is_called = item
    return dict(name=name, last_value=None if last_value is None else int(last_value),
                is_called=None if is_called is None else bool(is_called))


def parse_json_line(text, what, transport):
    try:
        return json.loads(text)
    except ValueError:
        raise TransportError(f"unexpected answer from psql in {transport.describe()} ({what}): "
                             f"{text[:200]!r}") from None


def server_info(transport, params):
    answer = run_sql(transport, params, SERVER_SQL, database="template1").strip()
    info = parse_json_line(answer.splitlines()[-1] if answer else "", "server version and databases", transport)
    excluded = set(params["exclude_databases"])
    info["databases"] = sorted(db for db in (info.get("databases") or []) if db not in excluded)
    return info


def catalog_script(version_num):
    """The psql script of the catalog query and the sequences' states, for a server of ``version_num``."""
    catalog = CATALOG_SQL.replace("SQLBODY", SQLBODY if version_num >= SQLBODY_SINCE else "false")
    return READ_ONLY + catalog + SEQUENCES_SQL + "COMMIT;\n"


def read_catalog(transport, params, database, version_num):
    """(tables [{schema, table, columns}], schema objects, sequences) of ``database``, in one psql run."""
    out = CappedBuffer(CATALOG_LIMIT)
    script = catalog_script(version_num)
    run_sql(transport, params, script, database=database_argument(database), on_stdout=out.write)
    lines = [line for line in out.getvalue().decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        raise TransportError(f"psql in {transport.describe()} (database {database}) gave no catalog")
    catalog = parse_json_line(lines[0], f"catalog of {database}", transport)
    sequences = [sequence_entry(parse_json_line(line, f"sequences of {database}", transport)) for line in lines[1:]]
    return catalog["tables"], catalog["schema"], sorted(sequences, key=lambda s: s["name"])


def fingerprint_tables(transport, params, database, headers):
    """[{table, rows, sum}] of ``headers``, from one psql run of COPYs in one snapshot."""
    fingerprint = Fingerprint()
    if headers:
        router = CopyRouter(database, headers, fingerprint)
        script = READ_ONLY + COPY_SETTINGS + router.script() + "COMMIT;\n"
        run_sql(transport, params, script, database=database_argument(database), on_stdout=router.write)
        fingerprint.end_table()
    tables = [dict(table=item["table"], rows=item["rows"], sum=item["sum"]) for item in fingerprint.as_list()]
    return sorted(tables, key=lambda t: t["table"])


def fingerprint_database(transport, params, database, version_num, analyze):
    """The fingerprint of ``database`` (after an ANALYZE if ``analyze``)."""
    if analyze:
        run_sql(transport, params, "ANALYZE;\n", database=database_argument(database))
    rows, objects, sequences = read_catalog(transport, params, database, version_num)
    tables = fingerprint_tables(transport, params, database, [table_header(row) for row in rows])
    digest, count = schema_digest(objects)
    return dict(tables=tables, sequences=sequences, schema_sha256=digest, schema_objects=count)


# --- comparison ---------------------------------------------------------------------------------------------------

def check_compare_to(value):
    """compare_to as {database: fingerprint}; raises ConfigError naming the fix."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    hint = ("compare_to must be the databases value of an earlier result of this module "
            "(for example compare_to: \"{{ before.databases }}\")")
    if not isinstance(value, dict):
        raise ConfigError(f"{hint}; it is not a dictionary")
    for name, entry in value.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("tables"), list)
                and isinstance(entry.get("sequences"), list) and isinstance(entry.get("schema_sha256"), str)):
            raise ConfigError(f"{hint}; its entry {name!r} has no tables, sequences and schema_sha256")
        if not all(isinstance(table, dict) and {"table", "rows", "sum"} <= set(table) for table in entry["tables"]):
            raise ConfigError(f"{hint}; a table of its entry {name!r} lacks table, rows or sum")
        if not all(isinstance(sequence, dict) and "name" in sequence for sequence in entry["sequences"]):
            raise ConfigError(f"{hint}; a sequence of its entry {name!r} has no name")
    return value


def _by_name(items, field):
    return {canonical_name(item[field]): item for item in items}


def _sequence_state(item):
    last_value = item.get("last_value")
    return (None if last_value is None else int(last_value), item.get("is_called"))


def _state_text(item):
    last_value, is_called = _sequence_state(item)
    return f"last_value {json.dumps(last_value)} is_called {json.dumps(is_called)}"


def database_differences(database, before, now):
    found = []
    old_tables, new_tables = _by_name(before["tables"], "table"), _by_name(now["tables"], "table")
    for key, old in old_tables.items():
        new = new_tables.get(key)
        if new is None:
            found.append(f"{database}: table {old['table']}: missing ({old['rows']} rows before)")
        elif int(old["rows"]) != int(new["rows"]):
            found.append(f"{database}: table {old['table']}: {old['rows']} rows before, {new['rows']} now")
        elif str(old["sum"]) != str(new["sum"]):
            found.append(f"{database}: table {old['table']}: same row count ({new['rows']}), different content")
    for key, new in new_tables.items():
        if key not in old_tables:
            found.append(f"{database}: table {new['table']}: extra ({new['rows']} rows), not in compare_to")
    old_seqs, new_seqs = _by_name(before["sequences"], "name"), _by_name(now["sequences"], "name")
    for key, old in old_seqs.items():
        new = new_seqs.get(key)
        if new is None:
            found.append(f"{database}: sequence {old['name']}: missing")
        elif _sequence_state(old) != _sequence_state(new):
            found.append(f"{database}: sequence {old['name']}: {_state_text(old)} before, {_state_text(new)} now")
    for key, new in new_seqs.items():
        if key not in old_seqs:
            found.append(f"{database}: sequence {new['name']}: extra, not in compare_to")
    if before["schema_sha256"] != now["schema_sha256"]:
        found.append(f"{database}: schema differs (sha256 {before['schema_sha256'][:12]}... of "
                     f"{before.get('schema_objects')} objects before, {now['schema_sha256'][:12]}... of "
                     f"{now['schema_objects']} now)")
    return found


def differences(before, now):
    """Every difference between the fingerprints ``before`` (compare_to) and ``now``, as short texts."""
    found = []
    for database in sorted(set(before) | set(now)):
        if database not in now:
            found.append(f"database {database}: missing (in compare_to, not on this server)")
        elif database not in before:
            found.append(f"database {database}: extra (on this server, not in compare_to)")
        else:
            found += database_differences(database, before[database], now[database])
    return found


def summary(found, limit=MESSAGE_DIFFERENCES):
    shown = "; ".join(found[:limit])
    more = f"; ... and {len(found) - limit} more" if len(found) > limit else ""
    return f"the fingerprint differs from compare_to in {len(found)} place(s): {shown}{more}"


# --- the module ---------------------------------------------------------------------------------------------------

def run(module):
    params = module.params
    expected = None if params["compare_to"] is None else check_compare_to(params["compare_to"])
    transport = factory.open_transport(params)
    info = server_info(transport, params)
    analyze = params["analyze"] and not module.check_mode
    databases = {name: fingerprint_database(transport, params, name, int(info.get("version_num") or 0), analyze)
                 for name in info["databases"]}
    result = dict(changed=params["analyze"], databases=databases, server_version=info.get("version"),
                  tables=sum(len(db["tables"]) for db in databases.values()),
                  rows=sum(t["rows"] for db in databases.values() for t in db["tables"]))
    if expected is None:
        return result
    found = differences(expected, databases)
    result.update(equal=not found, differences=found[:RESULT_DIFFERENCES])
    if found:
        raise BackupError(summary(found), **result)
    return result


def main():
    argument_spec = transport_argument_spec()
    argument_spec.update(connection_argument_spec())
    argument_spec.update(
        exclude_databases=dict(type="list", elements="str", default=list(DEFAULT_EXCLUDED_DATABASES)),
        analyze=dict(type="bool", default=False),
        compare_to=dict(type="raw"),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=TRANSPORT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
