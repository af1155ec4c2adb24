# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Shell preamble and probe shared by postgres_dump, postgres_restore and backup_verify.

The credentials are read by the container's own shell from its environment, so no secret crosses the API as an
argument; an explicit password travels on the exec's stdin into PGPASSWORD (``_transport.secret_stdin``).
"""

from __future__ import annotations

# Runs inside the database container. $1 = user (may be empty), $2 = host, $3 = port, then the command.
# Credentials come from the container's own environment unless PGPASSWORD was provided by the caller.
CREDENTIALS_SH = r"""
u=$1; h=$2; p=$3; shift 3
super_pw="${POSTGRES_POSTGRES_PASSWORD:-${POSTGRESQL_POSTGRES_PASSWORD:-}}"
super_pw_file="${POSTGRES_POSTGRES_PASSWORD_FILE:-${POSTGRESQL_POSTGRES_PASSWORD_FILE:-}}"
if [ -n "$h" ]; then export PGHOST="$h"; fi
if [ -n "$p" ]; then export PGPORT="$p"; fi
own_pw() {
  if [ -n "${POSTGRES_PASSWORD:-${POSTGRESQL_PASSWORD:-}}" ]; then PGPASSWORD=${POSTGRES_PASSWORD:-$POSTGRESQL_PASSWORD}
  else
    f="${POSTGRES_PASSWORD_FILE:-${POSTGRESQL_PASSWORD_FILE:-}}"
    if [ -n "$f" ] && [ -r "$f" ]; then PGPASSWORD=$(cat "$f"); fi
  fi
}
implicit_super=
if [ -z "$u" ]; then
  if [ -n "$super_pw$super_pw_file" ]; then u=postgres; implicit_super=1
  else u="${POSTGRES_USER:-${POSTGRESQL_USERNAME:-postgres}}"; fi
fi
if [ -z "${PGPASSWORD:-}" ]; then
  if [ "$u" = postgres ] && [ -n "$super_pw" ]; then PGPASSWORD=$super_pw
  elif [ "$u" = postgres ] && [ -n "$super_pw_file" ] && [ -r "$super_pw_file" ]; then PGPASSWORD=$(cat "$super_pw_file")
  else own_pw
  fi
  # Bitnami-style superuser variables without a usable postgres role (enablePostgresUser=false, or the image
  # only sets them): fall back to the container's own user and password.
  if [ -n "$implicit_super" ] && [ -n "${POSTGRES_USER:-${POSTGRESQL_USERNAME:-}}" ] \
     && ! PGUSER=postgres PGPASSWORD="${PGPASSWORD:-}" psql -X -q -A -t -d template1 -c 'select 1' >/dev/null 2>&1; then
    u="${POSTGRES_USER:-$POSTGRESQL_USERNAME}"; PGPASSWORD=; own_pw
  fi
fi
if [ -n "${PGPASSWORD:-}" ]; then export PGPASSWORD; fi
export PGUSER="$u"
"""

PROBE_SQL = (
    "select json_build_object("
    "'version', current_setting('server_version'), "
    "'version_num', current_setting('server_version_num')::int, "
    "'user', current_user, "
    "'superuser', (select rolsuper from pg_roles where rolname = current_user), "
    "'databases', (select json_agg(datname order by datname) from pg_database where datallowconn))"
)


# the databases postgres_dump and postgres_fingerprint leave out unless told otherwise (exclude_databases)
DEFAULT_EXCLUDED_DATABASES = ["postgres", "template0", "template1"]


def connection_argument_spec():
    """The connection options of the PostgreSQL modules (the password reaches psql on the exec's stdin)."""
    return dict(
        user=dict(type="str"),
        password=dict(type="str", no_log=True),
        host=dict(type="str"),
        port=dict(type="int"),
    )


def shell(params, command):
    """argv running ``command`` (shell text using "$@") after the credential preamble."""
    return ["sh", "-c", CREDENTIALS_SH + command, "sh", params.get("user") or "", params.get("host") or "",
            str(params.get("port") or "")]


def secret_env(params):
    return {"PGPASSWORD": params["password"]} if params.get("password") else None


# $1 = bytes to read, $2 = database. head ends the input on its own (a Kubernetes exec cannot close stdin);
# psql's exit status is the pipeline's. Notices (e.g. "does not exist, skipping") are not wanted on stderr.
RESTORE_SH = ('PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"; export PGOPTIONS; '
              'head -c "$1" | psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$2"')

PSQL_MEANING = {
    1: "fatal error",
    2: "connection to the server failed or was lost",
    3: "an SQL statement failed (ON_ERROR_STOP); the statements before it were applied",
}


def restore_dump(transport, params, src, compression, role, size, database="postgres", on_stdout=None, **scan):
    """Second pass of a restore: send exactly ``size`` filtered bytes of ``src`` into psql in the target.

    Returns (ExecResult, Feed, RoleFilter, DumpCheck); the run failed if ``Feed.error`` is set (the source could
    not be sent as counted; psql was then stopped with an error). Transport errors propagate.
    """
    from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import PSQL_POISON, dump_stream
    from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import Feed

    stream, role_filter, check = dump_stream(src, compression, role, **scan)
    feed = Feed(stream, size, PSQL_POISON)
    argv = shell(params, RESTORE_SH) + [str(size), database]
    result = transport.exec_stream(argv, on_stdout or _discard, secret_env=secret_env(params), stdin=feed)
    return result, feed, role_filter, check


def _discard(data):
    del data  # psql's query output goes to /dev/null (-o); nothing arrives here worth keeping
