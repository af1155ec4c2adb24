#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: postgres_restore
short_description: Stream a pg_dumpall file into authentik's PostgreSQL in a container or pod
version_added: 0.1.0
description:
  - Restores a dump written by M(authentik_ops.backup.postgres_dump) (C(.sql), C(.sql.gz) or C(.sql.zst)) by
    streaming it into C(psql -X -q -v ON_ERROR_STOP=1) inside the database container (Docker) or pod (Kubernetes).
    The file is decompressed on the host the module runs on and sent through the exec's standard input in chunks;
    memory use does not grow with the size of the dump, and nothing is written inside the container.
  - The dump is read twice. The first pass decompresses it completely, checks pg_dumpall's header and completion
    trailer and counts the bytes to send; a damaged or truncated file is refused before the database is touched.
  - The first pass also scans the script the way C(psql) splits it (quotes, comments, dollar-quoted bodies,
    parentheses, C(COPY) data) and refuses, before anything is touched, a dump from a newer PostgreSQL major than
    the server (C(Dumped from database version) or C(Dumped by pg_dump version)), psql meta-commands other than
    C(\connect), C(\encoding), C(\restrict) and C(\unrestrict) in pg_dump's forms, the sections of C(template1) and
    C(postgres), tablespaces, C(COPY) from or to anything but standard input, changes of
    C(standard_conforming_strings) and database-level statements on databases the dump does not create.
    The second pass sends exactly that many bytes into C(head -c <bytes> | psql ...), so the command ends on its own
    also where the transport cannot close standard input (Kubernetes). A file that changes between the passes fails
    the task.
  - A C(pg_dumpall --clean) script drops and creates every role, including the one C(psql) is connected as, which
    PostgreSQL refuses (C(current user cannot be dropped), C(role already exists)). With
    O(filter_current_role=true) exactly the C(DROP ROLE) and C(CREATE ROLE) statements of the connected role are
    left out, and only in the global section before the first C(\connect) line; its C(ALTER ROLE) (attributes and
    password) is kept. Data lines are never changed.
  - The connection uses the same credentials as M(authentik_ops.backup.postgres_dump), that is the superuser found
    in the container's own environment, or O(user) and O(password).
  - With O(state=restored) (the default) the databases of the dump are dropped and recreated. Stop authentik's
    server and worker first, because C(DROP DATABASE) fails while they are connected. Before anything is sent, it
    refuses a dump that drops a role which owns or holds something outside the dump's databases (a database, a
    privilege or an object in the C(postgres) database, the previous databases a staged restore kept), since
    C(DROP ROLE) would fail there after the dump's databases were dropped.
  - The other states restore beside the live data, in phases. O(state=staged) loads every database of the dump under
    a temporary name C(akr_<run_id>_<n>) while the live databases keep serving. The dump is rewritten while it
    streams (C(CREATE DATABASE), C(ALTER DATABASE), C(COMMENT)/C(SECURITY LABEL)/C(GRANT)/C(REVOKE) C(ON DATABASE),
    C(ALTER ROLE ... IN DATABASE) and C(\connect) point at the temporary name; C(DROP DATABASE) and C(DROP ROLE) are
    left out; C(CREATE ROLE) only creates a missing role; the connected role's C(CREATE ROLE) and C(ALTER ROLE) are
    left out; C(GRANTED BY) of role memberships is dropped). Then every table is proved equal to the dump by the MD5
    of C(COPY <table> (<columns>) TO STDOUT) of the temporary database, taken in the container by C(md5sum) with
    C(synchronize_seqscans) off (a table loaded by COPY is read back in the order it was loaded), against the MD5
    of the dump's COPY data of that table; a table whose digest differs (or where C(md5sum) is missing) is compared
    again by row count and an order-independent content hash of its COPY lines, read back through the transport, and
    only a difference there fails. A failure of the load or of the proof drops the temporary databases; the live ones are
    never touched.
  - Before anything is written, O(state=staged) compares the free space of the server's data directory (C(df) in
    the container or pod) with what the load is expected to take, a second copy of the databases (the size of the
    dump, or of the live databases it replaces if they are larger) and the write-ahead log written while loading it
    (as much again, at most C(max_wal_size)), and refuses a load that does not fit (see O(space_check)).
  - O(state=swapped) (authentik's server and worker stopped) closes the live databases (C(ALLOW_CONNECTIONS false),
    C(pg_terminate_backend)) and renames, in one transaction, each live database to C(akp_<run_id>_<n>) (kept, not
    accepting connections, so later backups skip it) and each temporary one to the real name.
    O(state=rolled_back) puts the kept databases back the same way and keeps the replaced ones as
    C(akn_<run_id>_<n>). O(state=cleaned) drops the kept databases of the newest swapped (or rolled back) restore.
    O(state=discarded) drops the temporary databases of a staged restore. Nothing else is ever dropped.
  - O(state=recovered) finishes the journals that runs which died before they ended (killed, host restarted) left in
    phase C(staging) or C(staged) for this database. A run whose swap committed (its temporary names are gone, its
    C(akp_<run_id>_<n>) exist) is recorded as C(swapped), so it can be rolled back and cleaned up; the temporary
    databases of every other are dropped and it is recorded as C(discarded). Journals of another container or pod are
    left alone (RV(other_targets)). Call it only while no restore runs with O(journal_dir); the role
    M(authentik_ops.backup.restore) does at the start of each run, holding the destination's lock.
  - Each phase is recorded in a journal C(<journal_dir>/<run_id>.json) (0600 in a 0700 directory, written
    atomically) with source, target, name mapping and phase. The later states find the run by O(run_id), or take the
    newest journal in the phase they need.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - authentik_ops.backup._common.decrypt
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Reads and decompresses the whole file, checks header and trailer, checks that the target runs and that
        C(psql) answers, and reports the plan in RV(plan). The database is not changed.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run drops and recreates the dumped databases and reports a change.
options:
  src:
    description:
      - Path of the dump file on the host the module runs on.
      - Required with O(state=restored) and O(state=staged).
    type: path
  compression:
    description:
      - Codec of O(src). V(auto) decides by the suffix (C(.zst), C(.gz), else none).
    type: str
    choices: [auto, none, gzip, zstd]
    default: auto
  database:
    description:
      - Database C(psql) connects to first. The dump's C(\connect) lines switch to the dumped databases.
      - It must not be one of the dumped databases (it is dropped by the script).
    type: str
    default: postgres
  user:
    description:
      - Database role to restore as. It must be a superuser.
      - Defaults to the role found in the container's environment, as for M(authentik_ops.backup.postgres_dump).
    type: str
  password:
    description:
      - Password of O(user), when the server requires one and the container's environment does not provide it.
      - Passed as E(PGPASSWORD) in the exec environment (Docker) or on the exec's standard input before the dump
        (Kubernetes); never on a command line.
    type: str
  host:
    description:
      - Host name or socket directory C(psql) connects to inside the container (E(PGHOST)).
    type: str
  port:
    description:
      - Port C(psql) connects to inside the container (E(PGPORT)).
    type: int
  filter_current_role:
    description:
      - Leave out the C(DROP ROLE) and C(CREATE ROLE) statements of the connected role in the dump's global section
        (see the description). Without it such a dump stops at the first of them.
    type: bool
    default: true
  state:
    description:
      - V(restored) restores in place (the dumped databases are dropped first).
      - V(staged), V(swapped), V(rolled_back), V(cleaned), V(discarded) are the phases of the restore beside the
        live data (see the description).
      - V(recovered) finishes the journals of runs that died half-way (see the description).
    type: str
    choices: [restored, staged, swapped, discarded, rolled_back, cleaned, recovered]
    default: restored
  run_id:
    description:
      - Identifier of a restore beside the live data (1-24 lower-case letters or digits); part of the temporary
        names. Generated by O(state=staged) when not given (returned in RV(run_id)).
      - For the other phases, the restore to act on; without it the newest one in the right phase.
      - Ignored with O(state=recovered), which acts on every unfinished run.
    type: str
  journal_dir:
    description:
      - Directory of the journals on the host the module runs on (created 0700). Required except with
        O(state=restored).
    type: path
  space_check:
    description:
      - With O(state=staged), refuse the load before anything is written when the database server's data directory
        has less free space than the load is expected to take (see the description). A full disk can stop
        PostgreSQL (a checkpoint that cannot write its files ends the server, and it cannot start again until space
        is freed).
      - V(false) skips the check, for a server whose write-ahead log is on another volume or whose data the
        estimate overrates. Where C(df) is missing in the container the check is skipped with a warning.
    type: bool
    default: true
notes:
  - Needs C(sh), C(head) and C(psql) in the container; the proof of O(state=staged) is fastest with C(md5sum)
    there too (coreutils or busybox).
  - The content proof compares COPY text; the restore session uses C(DateStyle=ISO), C(IntervalStyle=postgres),
    C(extra_float_digits=3), C(bytea_output=hex) as pg_dump does, and the server's TimeZone. A dump taken in another
    TimeZone than the target's shows time stamps with zone differently and fails the proof (nothing is swapped).
  - C(psql) runs with C(ON_ERROR_STOP), so the first failing statement ends the restore with exit status 3 and the task
    fails with the end of C(psql)'s error output. Statements before it have been applied.
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.backup_verify
"""

EXAMPLES = r"""
- name: Restore authentik's database of a Compose deployment (server and worker stopped)
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    src: /var/backups/authentik/latest/postgres.sql.zst

- name: Restore into the database pod of the Helm chart
  authentik_ops.backup.postgres_restore:
    platform: kubernetes
    namespace: authentik
    pod: authentik-postgresql-0
    src: /var/backups/authentik/authentik-20261130T020000Z/postgres.sql.gz

- name: Restore an age-encrypted dump with the identity from a vault
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    src: /var/backups/authentik/latest/postgres.sql.zst.age
    decrypt_identity: "{{ vault_authentik_backup_age_identity }}"

- name: Load and prove a dump beside the live databases while authentik runs
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    src: /var/backups/authentik/latest/postgres.sql.zst
    state: staged
    journal_dir: /var/backups/authentik/.restore
  register: staged

- name: Exchange the names (server and worker stopped); the previous data stays as akp_<run_id>_<n>
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    state: swapped
    run_id: "{{ staged.run_id }}"
    journal_dir: /var/backups/authentik/.restore

- name: Put the previous data back
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    state: rolled_back
    journal_dir: /var/backups/authentik/.restore

- name: Finish the restores that died half-way (the temporary databases of a killed run are dropped)
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    state: recovered
    journal_dir: /var/backups/authentik/.restore

- name: Check a dump and the target without changing anything
  authentik_ops.backup.postgres_restore:
    container: authentik-postgresql-1
    src: /var/backups/authentik/latest/postgres.sql.zst
  check_mode: true
"""

RETURN = r"""
src:
  description: Path of the dump file.
  returned: always
  type: str
  sample: /var/backups/authentik/latest/postgres.sql.zst
raw_size:
  description: Bytes sent to C(psql) (the decompressed dump without the filtered statements).
  returned: success
  type: int
  sample: 41943040
duration:
  description: Seconds the restore took (second pass).
  returned: success and not check mode
  type: float
  sample: 8.2
phases:
  description:
    - With O(state=staged), the seconds of its phases, C(check) (the server asked, the dump read and checked, the
      free space compared, all before anything is written), C(load) and C(proof).
  returned: with O(state=staged), not in check mode
  type: dict
  sample: {check: 2.1, load: 8.4, proof: 1.3}
throughput:
  description: Bytes per second sent to C(psql).
  returned: success and not check mode
  type: int
  sample: 5000000
rc:
  description: Exit status of C(psql).
  returned: when psql ran
  type: int
  sample: 0
stderr_excerpt:
  description: The end of C(psql)'s error output (bounded).
  returned: when psql ran
  type: str
  sample: ""
filtered_statements:
  description: Statements of the connected role that were left out (see O(filter_current_role)).
  returned: success
  type: list
  elements: str
  sample: ["DROP ROLE IF EXISTS authentik;", "CREATE ROLE authentik;"]
databases:
  description: Databases of the cluster after the restore (in check mode, before it).
  returned: success
  type: list
  elements: str
  sample: [authentik, postgres, template1]
server_version:
  description: Version of the PostgreSQL server.
  returned: success
  type: str
  sample: "16.4"
user:
  description: Role the restore ran as.
  returned: success
  type: str
  sample: authentik
superuser:
  description: Whether RV(user) is a superuser.
  returned: success
  type: bool
  sample: true
target:
  description: The container or pod.
  returned: success
  type: dict
  sample: {platform: docker, container: authentik-postgresql-1, image: "docker.io/library/postgres:16-alpine"}
state:
  description: The state the module ran.
  returned: success
  type: str
  sample: staged
run_id:
  description: The restore beside the live data.
  returned: success, except with O(state=restored) and O(state=recovered)
  type: str
  sample: 2612070400001a2b
mapping:
  description: Original database name -> temporary name.
  returned: with O(state=staged) and O(state=swapped)
  type: dict
  sample: {authentik: akr_2612070400001a2b_1}
previous:
  description: Original name -> name under which the previous data is kept.
  returned: with O(state=swapped) and O(state=rolled_back)
  type: dict
  sample: {authentik: akp_2612070400001a2b_1}
replaced:
  description: Original name -> name under which the data replaced by a rollback is kept.
  returned: with O(state=rolled_back)
  type: dict
  sample: {authentik: akn_2612070400001a2b_1}
dropped:
  description: Databases dropped.
  returned: with O(state=discarded) and O(state=cleaned)
  type: list
  elements: str
  sample: [akp_2612070400001a2b_1]
recovered:
  description:
    - With O(state=recovered), each run that was finished, oldest first, with its phase before (C(was)) and after
      (C(phase), V(discarded) or V(swapped)), and the temporary databases dropped (C(dropped)) or the kept ones
      recorded (C(previous)). Empty when no run was left unfinished. In check mode, what would be done.
  returned: with O(state=recovered)
  type: list
  elements: dict
  sample: [{run_id: 2612070400001a2b, was: staging, phase: discarded, dropped: [akr_2612070400001a2b_1]}]
other_targets:
  description: Runs left unfinished on another container or pod; left alone.
  returned: with O(state=recovered)
  type: list
  elements: str
  sample: []
proof:
  description:
    - The comparison of the restored tables with the dump (tables, rows, equal); C(compared_by_rows) is the number
      of tables whose digest in load order differed and that were compared again row by row (order-independent).
  returned: with O(state=staged), not in check mode
  type: dict
  sample: {tables: 181, rows: 52210, equal: true, compared_by_rows: 0}
space:
  description:
    - With O(state=staged), the data directory of the server (C(dir)), its free bytes (C(free), V(null) when C(df)
      gave no answer), the bytes the load is expected to take (C(needed)) and whether they were compared
      (C(checked)).
  returned: with O(state=staged)
  type: dict
  sample: {dir: /var/lib/postgresql/data, free: 8589934592, needed: 104857600, checked: true}
journal:
  description: Path of the journal of the run.
  returned: with O(state=staged)
  type: str
  sample: /var/backups/authentik/.restore/2612070400001a2b.json
majors:
  description: Majors read from the dump (C(from) the server, C(by) pg_dump).
  returned: with O(state=restored) and O(state=staged)
  type: dict
  sample: {from: 15, by: 15}
swap_duration:
  description: Seconds the swap took.
  returned: with O(state=swapped), not in check mode
  type: float
  sample: 0.4
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: restore, src: /var/backups/authentik/latest/postgres.sql.zst, bytes: 41943040, user: authentik}
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DECRYPT_MUTUALLY_EXCLUSIVE,
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    decrypt_argument_spec,
    excerpt,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    RestoreError,
    SinkError,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import (
    PROBE_SQL,
    PSQL_MEANING,
    connection_argument_spec,
    restore_dump,
    secret_env,
    shell,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgscan import major_problem
from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import Source, count_dump


def server_major(info):
    """The target server's major (``server_version_num`` 150018 -> 15)."""
    return int(info.get("version_num") or 0) // 10000


def probe(params, transport):
    argv = shell(params, 'exec psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"')
    argv += [params["database"], PROBE_SQL]
    result = transport.exec_capture(argv, secret_env=secret_env(params))
    if not result.ok:
        raise TransportError(f"cannot query PostgreSQL in {transport.describe()}: "
                             f"{result.problem or f'psql exited with status {result.exit_code}'}: "
                             f"{excerpt(result.stderr)}",
                             rc=result.exit_code, stderr_excerpt=excerpt(result.stderr))
    try:
        return json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TransportError(f"unexpected answer from psql in {transport.describe()}: "
                             f"{excerpt(result.stdout)}") from None


def restore(params, transport, source, size, role):
    src = source.path
    watch = Stopwatch()
    try:
        result, feed, role_filter, check = restore_dump(transport, params, src, source.compression, role,
                                                        size, params["database"])
    except (TransportError, RestoreError, SinkError, OSError, ValueError) as exc:
        raise BackupError(f"restore into {transport.describe()} broke off: {exc}; the database may be partly "
                          "restored") from exc
    elapsed = watch.elapsed
    stderr = excerpt(result.stderr)
    if feed.error is not None or source.changed():
        raise RestoreError(f"reading {src} failed during the restore: "
                           f"{feed.error or 'the file changed while it was sent'}; the database may be partly "
                           "restored", rc=result.exit_code, stderr_excerpt=stderr)
    if not result.complete:
        raise TransportError(f"the restore stream into {transport.describe()} broke off: {result.problem}; "
                             f"the database may be partly restored. stderr: {stderr}",
                             rc=result.exit_code, stderr_excerpt=stderr)
    if result.exit_code != 0:
        raise BackupError(f"psql exited with status {result.exit_code} "
                          f"({PSQL_MEANING.get(result.exit_code, 'error')}) in {transport.describe()}: {stderr}",
                          rc=result.exit_code, stderr_excerpt=stderr)
    throughput = int(check.size / elapsed) if elapsed > 0 else None
    return dict(duration=elapsed, throughput=throughput, rc=result.exit_code, stderr_excerpt=stderr,
                filtered_statements=role_filter.removed)


def open_target(params, src=None):
    try:
        transport = factory.open_transport(params)
        return transport, transport.target_facts()
    except BackupError as exc:
        raise exc.add_fields(src=src)


def first_pass(params, source, info, role, **scan):
    """Read, check and scan the whole dump before anything is touched; returns (size, removed, DumpCheck)."""
    src = source.path
    try:
        size, removed, check = count_dump(src, source.compression, role, scan=True, **scan)
    except RestoreError as exc:
        raise RestoreError(f"src: {src}: {exc.msg}; nothing was restored or changed", src=src) from exc
    problem = check.problem() or major_problem(check.scanner.majors, server_major(info))
    if problem:
        raise RestoreError(f"src: {src}: {problem}; nothing was restored or changed", src=src)
    return size, removed, check


# What a role the dump drops owns or holds outside the dump's databases (pg_shdepend: owned objects, privileges,
# policies, default privileges; a database or tablespace it owns): DROP ROLE would fail on it.
HELD_OUTSIDE_SQL = """SELECT coalesce(json_agg(DISTINCT jsonb_build_object('role', r.rolname, 'what',
  CASE WHEN s.dbid <> 0 THEN 'objects or privileges in the database ' || quote_ident(d.datname)
       WHEN s.classid = 'pg_database'::regclass THEN 'the database ' || quote_ident(o.datname)
       ELSE 'a tablespace or another shared object' END)), '[]')
FROM pg_shdepend s
JOIN pg_roles r ON s.refclassid = 'pg_authid'::regclass AND r.oid = s.refobjid
LEFT JOIN pg_database d ON d.oid = s.dbid
LEFT JOIN pg_database o ON s.dbid = 0 AND s.classid = 'pg_database'::regclass AND o.oid = s.objid
WHERE s.deptype IN ('o', 'a', 'r', 'i')
  AND r.rolname IN (SELECT json_array_elements_text(%(roles)s::json))
  AND coalesce(d.datname, o.datname, '') NOT IN (SELECT json_array_elements_text(%(databases)s::json));
"""


def held_outside(transport, params, roles, databases):
    """[{role, what}] of the roles ``roles`` that own or hold something outside ``databases``."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._pgswap import literal, run_sql

    if not roles:
        return []
    sql = HELD_OUTSIDE_SQL % dict(roles=literal(json.dumps(roles)), databases=literal(json.dumps(databases)))
    answer = run_sql(transport, params, sql).strip()
    return sorted(json.loads(answer or "[]"), key=lambda item: (item["role"], item["what"]))


def refuse_roles_held_outside(params, transport, src, scanner):
    """Refuse an in-place restore whose DROP ROLE would fail: the dump's databases would already be dropped."""
    held = held_outside(transport, params, scanner.dropped_roles, scanner.databases)
    if held:
        shown = "; ".join(f"{item['role']} owns or holds {item['what']}" for item in held[:10])
        more = f" (and {len(held) - 10} more)" if len(held) > 10 else ""
        raise RestoreError(
            f"src: {src}: the dump drops and recreates roles that own or hold something outside the databases it "
            f"restores: {shown}{more}. DROP ROLE would fail after the dump's databases were dropped. Drop those "
            "objects or reassign them (REASSIGN OWNED, DROP OWNED), or restore beside the live data "
            "(state=staged, as the restore role does); nothing was restored or changed", src=src, held=held)


def run_restored(module, params, transport, target):
    """state=restored: the dump straight into the live databases (they are dropped and recreated)."""
    source = Source(params, src=params["src"])
    src = source.path
    info = probe(params, transport)
    role = info.get("user") if params["filter_current_role"] else None
    size, removed, check = first_pass(params, source, info, role)
    refuse_roles_held_outside(params, transport, src, check.scanner)
    common = dict(changed=True, state="restored", src=src, raw_size=size, server_version=info.get("version"),
                  user=info.get("user"), superuser=bool(info.get("superuser")), target=target,
                  majors=check.scanner.majors)
    if not info.get("superuser"):
        module.warn(f"role {info.get('user')!r} is not a superuser; restoring a pg_dumpall script needs one "
                    "(set user and password of a superuser)")
    if module.check_mode:
        return dict(common, databases=info.get("databases") or [], filtered_statements=removed,
                    plan=dict(action="restore", src=src, bytes=size, user=info.get("user"),
                              database=params["database"], filtered_statements=removed))
    result = restore(params, transport, source, size, role)
    after = probe(params, transport)
    return dict(common, databases=after.get("databases") or [], **result)


def run(module):
    params = module.params
    state = params["state"]
    transport, target = open_target(params, params.get("src"))
    if state == "restored":
        return run_restored(module, params, transport, target)
    from ansible_collections.authentik_ops.backup.plugins.module_utils import _pgstage

    return _pgstage.run_state(module, params, transport, target, dict(
        probe=probe, first_pass=first_pass, source=Source, restore_dump=restore_dump))


def main():
    argument_spec = transport_argument_spec()
    argument_spec.update(connection_argument_spec())
    argument_spec.update(
        src=dict(type="path"),
        compression=dict(type="str", default="auto", choices=["auto", "none", "gzip", "zstd"]),
        database=dict(type="str", default="postgres"),
        filter_current_role=dict(type="bool", default=True),
        state=dict(type="str", default="restored",
                   choices=["restored", "staged", "swapped", "discarded", "rolled_back", "cleaned", "recovered"]),
        run_id=dict(type="str"),
        journal_dir=dict(type="path"),
        space_check=dict(type="bool", default=True),
    )
    argument_spec.update(decrypt_argument_spec())
    required_if = list(TRANSPORT_REQUIRED_IF) + [
        ("state", state, ["journal_dir"])
        for state in ("staged", "swapped", "discarded", "rolled_back", "cleaned", "recovered")]
    required_if.append(("state", "staged", ["src"]))
    required_if.append(("state", "restored", ["src"]))
    module = AnsibleModule(argument_spec=argument_spec, required_if=required_if,
                           mutually_exclusive=DECRYPT_MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
