#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: postgres_dump
short_description: Stream a pg_dumpall of authentik's PostgreSQL from a container or pod into a checked file
version_added: 0.1.0
description:
  - Runs C(pg_dumpall --clean --if-exists) inside the database container (Docker) or pod (Kubernetes), excluding
    the databases in O(exclude_databases), and streams its output straight into O(dest) on the host the module runs
    on. Nothing is written inside the container.
  - On Docker the dump is by default (O(method=auto)) taken by a throw-away helper container of the database's own
    image that joins the database container's network namespace and connects over loopback TCP, writing into a FIFO
    that the module reads; this skips the Docker daemon's exec stream, the slowest link of a dump through
    C(docker exec). When the server does not accept the dump's role over TCP there, or the helper cannot run on
    this host, the dump goes through C(docker exec) instead; RV(method) and RV(method_note) say which way was
    taken and why.
  - The dump runs as the superuser found in the container's own environment, read by the container's shell so that
    no secret crosses the API as an argument. With the Bitnami image's C(POSTGRES_POSTGRES_PASSWORD[_FILE]) it is
    C(postgres); otherwise it is C($POSTGRES_USER) (or C($POSTGRESQL_USERNAME)), with C($POSTGRES_PASSWORD) or the
    file named by C($POSTGRES_PASSWORD_FILE) as password when the server asks for one.
  - The stream is compressed and hashed (sha256) on the host while it arrives, then the exit status of
    C(pg_dumpall) and the dump's completion trailer are checked before the file is synced and renamed into place
    with mode C(0600). On any failure the partial file is removed.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - authentik_ops.backup._common.output
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Connects to the database read-only to list the databases and the server version, checks whether the
        dump helper could be used (O(method)), and reports the plan in RV(plan). Nothing is written and no helper
        container is created.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run takes a new dump. An existing O(dest) is refused unless O(force=true).
options:
  compression:
    description:
      - Codec applied on the host while the dump streams. See also O(compression_level).
    type: str
    choices: [none, gzip, zstd]
    default: zstd
  user:
    description:
      - Database role to dump as. It must be a superuser.
      - Defaults to the role found in the container's environment (see the description).
    type: str
  password:
    description:
      - Password of O(user), when the server requires one and the container's environment does not provide it.
      - Handed to C(pg_dumpall) on the exec's standard input (a shell wrapper reads it into E(PGPASSWORD)), and to
        the dump helper (O(method)) on its standard input; never on a command line nor in the configuration of a
        Docker exec (its C(Env)).
    type: str
  host:
    description:
      - Host name or socket directory C(pg_dumpall) connects to inside the container (E(PGHOST)).
      - Defaults to the client's compiled-in local socket.
    type: str
  port:
    description:
      - Port C(pg_dumpall) connects to inside the container (E(PGPORT)).
    type: int
  method:
    description:
      - How the dump's bytes leave the database container.
      - V(exec) runs C(pg_dumpall) inside the container (C(docker exec) or the pod's exec) and reads its output
        stream.
      - V(helper) (Docker only) runs C(pg_dumpall) in a throw-away container created from the database
        container's image, in the database container's network namespace (C(--network container:<db>)), as the
        module's own uid and gid, with a read-only root filesystem, no capabilities and C(no-new-privileges). It
        connects to O(host) if that is a TCP host name, else to C(127.0.0.1), with the role and password that the
        exec way would use (the password is handed over on the helper's standard input, never in its command or
        environment), and writes into a FIFO in a private C(0700) directory next to O(dest), bind-mounted
        read-only into the helper. The helper is removed when the dump ends; helpers of runs that were killed are
        removed by the next dump on the host. It fails when the helper cannot be used.
      - V(auto) uses V(helper) on Docker when the server accepts the role over TCP in the container's network
        namespace and the helper starts, else V(exec). A helper that cannot be created or started, does not open
        its FIFO within 30 seconds, or fails before its first byte also falls back to V(exec); a helper that
        fails after writing fails the dump. On Kubernetes it is always V(exec).
      - The helper needs the module to run on the Docker host (the bind mount's source must be the daemon's own
        file). On rootless and user-namespace-remapped daemons and with SELinux, the helper is set up accordingly
        (uid 0 of the rootless namespace, C(UsernsMode=host), a C(:Z) bind); where it still cannot work, V(auto)
        falls back.
    type: str
    choices: [auto, exec, helper]
    default: auto
  exclude_databases:
    description:
      - Databases left out of the dump (C(--exclude-database)). C(template0) is never dumped by C(pg_dumpall).
    type: list
    elements: str
    default: [postgres, template0, template1]
notes:
  - Needs C(pg_dumpall) 12 or newer in the container (for C(--exclude-database)) and C(sh).
  - With the helper, C(docker ps) shows a short-lived container named C(<database container>-pgdump-<random>) and
    labelled C(io.authentik-ops.backup.helper=postgres_dump) while the dump runs.
seealso:
  - module: authentik_ops.backup.redis_dump
  - module: authentik_ops.backup.path_archive
  - module: authentik_ops.backup.backup_set
"""

EXAMPLES = r"""
- name: Dump authentik's PostgreSQL of a Compose deployment
  authentik_ops.backup.postgres_dump:
    container: authentik-postgresql-1
    dest: /var/backups/authentik/authentik-20261130T020000Z/postgres.sql.zst
    compression: zstd

- name: Dump through docker exec only (no helper container)
  authentik_ops.backup.postgres_dump:
    container: authentik-postgresql-1
    dest: /var/backups/authentik/manual/postgres.sql.zst
    method: exec

- name: Dump the database pod of the Helm chart
  authentik_ops.backup.postgres_dump:
    platform: kubernetes
    namespace: authentik
    pod: authentik-postgresql-0
    kubeconfig: ~/.kube/config
    dest: /var/backups/authentik/authentik-20261130T020000Z/postgres.sql.gz
    compression: gzip

- name: Dump an external database through a client container with explicit credentials
  authentik_ops.backup.postgres_dump:
    container: pg-client
    host: db.internal
    user: postgres
    password: "{{ vault_pg_superuser_password }}"
    dest: /var/backups/authentik/manual/postgres.sql
    compression: none

- name: Dump encrypted to an age key (no plaintext reaches the disk)
  authentik_ops.backup.postgres_dump:
    container: authentik-postgresql-1
    dest: /var/backups/authentik/manual/postgres.sql.zst.age
    encrypt_recipients:
      - age124n3glqf2ltpr3x33zh7dlznrdsrc8f343z8gpxhm4teqs550fqqnvkd3e
"""

RETURN = r"""
dest:
  description: Path of the dump file.
  returned: success
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z/postgres.sql.zst
size:
  description: Size of the file on disk, in bytes.
  returned: success and not check mode
  type: int
  sample: 5242880
sha256:
  description: SHA-256 of the file on disk.
  returned: success and not check mode
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
raw_size:
  description: Size of the uncompressed dump, in bytes.
  returned: success and not check mode
  type: int
  sample: 41943040
compression:
  description: Codec of the file.
  returned: success
  type: str
  sample: zstd
encryption:
  description: How the file is encrypted (O(encrypt_recipients)); the recipients are public keys.
  returned: success with O(encrypt_recipients)
  type: dict
  sample: {scheme: age, recipients: [age124n3glqf2ltpr3x33zh7dlznrdsrc8f343z8gpxhm4teqs550fqqnvkd3e]}
duration:
  description: Seconds from the start of the dump to the file being in place.
  returned: success and not check mode
  type: float
  sample: 2.41
throughput:
  description: Uncompressed bytes per second.
  returned: success and not check mode
  type: int
  sample: 120000000
databases:
  description: Databases of the cluster that the dump includes.
  returned: success
  type: list
  elements: str
  sample: [authentik]
server_version:
  description: Version of the PostgreSQL server.
  returned: success
  type: str
  sample: "16.4"
user:
  description: Role the dump ran as.
  returned: success
  type: str
  sample: authentik
superuser:
  description: Whether RV(user) is a superuser.
  returned: success
  type: bool
  sample: true
method:
  description: How the dump was taken, V(helper) or V(exec) (see O(method)).
  returned: success
  type: str
  sample: helper
method_note:
  description: Why O(method=auto) did not use the helper (empty when it did, or when O(method) was given).
  returned: success
  type: str
  sample: "the server does not accept the dump's role over TCP on 127.0.0.1 in the database container's network
    namespace (connection refused)"
target:
  description: The container or pod the dump ran in.
  returned: success
  type: dict
  sample: {platform: docker, container: authentik-postgresql-1, image: "docker.io/library/postgres:16-alpine"}
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: dump, dest: /var/backups/authentik/s/postgres.sql.zst, databases: [authentik], method: helper}
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    check_output,
    excerpt,
    file_result,
    open_sink,
    output_argument_spec,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    ConfigError,
    FormatError,
    HelperUnavailable,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import pg_dumpall_complete
from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import (
    DEFAULT_EXCLUDED_DATABASES,
    PROBE_SQL,
    connection_argument_spec,
    secret_env,
    shell,
)


def probe(params, transport):
    argv = shell(params, 'exec psql -X -A -t -q -v ON_ERROR_STOP=1 -d template1 -c "$1"') + [PROBE_SQL]
    result = transport.exec_capture(argv, secret_env=secret_env(params))
    if not result.ok:
        raise TransportError(f"cannot query PostgreSQL in {transport.describe()}: "
                             f"{result.problem or f'psql exited with status {result.exit_code}'}: "
                             f"{excerpt(result.stderr)}",
                             rc=result.exit_code, stderr_excerpt=excerpt(result.stderr))
    try:
        info = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TransportError(f"unexpected answer from psql in {transport.describe()}: "
                             f"{excerpt(result.stdout)}") from None
    excluded = set(params["exclude_databases"])
    info["databases"] = [db for db in (info.get("databases") or []) if db not in excluded]
    return info


class Choice:
    """How the dump is taken: the transport's dump helper (with the plan its probe made) or exec, and why."""

    def __init__(self, helper=None, plan=None, note=""):
        self.helper = helper
        self.plan = plan
        self.note = note

    @property
    def method(self):
        return "helper" if self.plan is not None else "exec"


def choose_method(params, transport):
    """Decide between the transport's dump helper and exec."""
    method = params["method"]
    if method == "exec":
        return Choice()
    helper = transport.dump_helper()
    if helper is None:
        if method == "helper":
            raise ConfigError("method=helper needs platform=docker (a helper container next to the database); "
                              "use method=exec or auto on Kubernetes")
        return Choice()
    try:
        return Choice(helper, helper.probe(params, secret_env(params)))
    except (HelperUnavailable, TransportError) as exc:
        if method == "helper":
            raise ConfigError(f"method=helper cannot be used for {transport.describe()}: {exc}; "
                              "use method=exec or auto") from exc
        return Choice(note=f"{exc}; dumped through exec")


def dump_failed(transport, info, exit_code, stderr, way):
    hint = ""
    if not info.get("superuser"):
        hint = (f" (role {info.get('user')!r} is not a superuser; pg_dumpall needs one: set user and "
                "password of a superuser)")
    return BackupError(f"pg_dumpall exited with status {exit_code} {way} {transport.describe()}{hint}: "
                       f"{excerpt(stderr)}", rc=exit_code, stderr_excerpt=excerpt(stderr))


def dump_with_helper(params, transport, info, choice, excludes, sink):
    """Dump through the helper into ``sink``; returns None when it did, else why exec has to (nothing was written)."""
    try:
        outcome = choice.helper.dump(choice.plan, excludes, os.path.dirname(os.path.abspath(params["dest"])),
                                     sink.write, run_owner=params["owner"])
    except HelperUnavailable as exc:
        if params["method"] == "helper":
            raise TransportError(f"method=helper failed for {transport.describe()}: {exc}") from exc
        return f"{exc}; dumped through exec"
    if outcome.ok:
        return None
    if sink.raw_size or params["method"] == "helper":
        if outcome.problem:
            raise TransportError(f"the dump through the helper of {transport.describe()} broke off: "
                                 f"{outcome.problem}; {sink.raw_size} bytes received. "
                                 f"stderr: {excerpt(outcome.stderr)}")
        raise dump_failed(transport, info, outcome.exit_code, outcome.stderr, "in the helper of")
    return (f"the helper ended with status {outcome.exit_code} before writing anything "
            f"({excerpt(outcome.stderr) or outcome.problem or 'no message'}); dumped through exec")


def dump_with_exec(params, transport, info, excludes, sink):
    argv = shell(params, 'exec pg_dumpall --clean --if-exists "$@"') + excludes
    result = transport.exec_stream(argv, sink.write, secret_env=secret_env(params))
    if not result.complete:
        raise TransportError(f"the dump stream from {transport.describe()} broke off: {result.problem}; "
                             f"{sink.raw_size} bytes received. stderr: {excerpt(result.stderr)}")
    if result.exit_code != 0:
        raise dump_failed(transport, info, result.exit_code, result.stderr, "in")


def dump(params, transport, info, choice):
    excludes = [f"--exclude-database={db}" for db in params["exclude_databases"] if db != "template0"]
    watch = Stopwatch()
    method, note = choice.method, choice.note
    try:
        with open_sink(params) as sink:
            if method == "helper":
                helper_note = dump_with_helper(params, transport, info, choice, excludes, sink)
                if helper_note is not None:
                    method, note = "exec", helper_note
            if method == "exec":
                dump_with_exec(params, transport, info, excludes, sink)
            if not pg_dumpall_complete(sink.tail()):
                raise FormatError(f"the dump from {transport.describe()} lacks pg_dumpall's completion trailer "
                                  f"after {sink.raw_size} bytes: the stream was truncated")
            stats = sink.commit()
    except BackupError as exc:
        raise exc.add_fields(dest=params["dest"])
    except OSError as exc:
        raise BackupError(str(exc), dest=params["dest"]) from exc
    result = file_result(stats, watch.elapsed)
    result.update(method=method, method_note=note if method == "exec" else "")
    return result


def run(module):
    params = module.params
    check_output(module)
    transport = factory.open_transport(params)
    target = transport.target_facts()
    info = probe(params, transport)
    common = dict(changed=True, dest=params["dest"], compression=params["compression"], databases=info["databases"],
                  server_version=info.get("version"), user=info.get("user"),
                  superuser=bool(info.get("superuser")), target=target)
    choice = choose_method(params, transport)
    if module.check_mode:
        return dict(common, plan=dict(action="dump", dest=params["dest"], databases=info["databases"],
                                      user=info.get("user"), compression=params["compression"],
                                      method=choice.method),
                    method=choice.method, method_note=choice.note)
    common.update(dump(params, transport, info, choice))
    return common


def main():
    argument_spec = transport_argument_spec()
    argument_spec.update(output_argument_spec("zstd"))
    argument_spec.update(connection_argument_spec())
    argument_spec.update(
        exclude_databases=dict(type="list", elements="str", default=list(DEFAULT_EXCLUDED_DATABASES)),
        method=dict(type="str", default="auto", choices=["auto", "exec", "helper"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=TRANSPORT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
