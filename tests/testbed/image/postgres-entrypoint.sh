#!/usr/bin/env bash
# akbt test bed: entrypoint of akbt.local/postgres:15, modelled on the official postgres image.
# Honours POSTGRES_USER (default postgres), POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE, POSTGRES_DB
# (default = user), PGDATA, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD and AKBT_LOCAL_AUTH
# (scram: local socket logins need the password, like the Bitnami/Helm database).
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

file_env() {
	local var="$1" fileVar="${1}_FILE" def="${2:-}"
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
		exit 1
	fi
	local val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(< "${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 00700 "$PGDATA"
	mkdir -p /var/run/postgresql
	chown postgres:postgres /var/run/postgresql
	chmod 03775 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

# running as a non-root uid from here on
uid="$(id -u)"
if ! getent passwd "$uid" > /dev/null 2>&1; then
	# arbitrary uid (Bitnami/OpenShift style): give initdb and postgres a passwd entry through nss_wrapper
	wrapper=
	for candidate in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
		if [ -e "$candidate" ]; then wrapper="$candidate"; break; fi
	done
	if [ -n "$wrapper" ]; then
		NSS_WRAPPER_PASSWD="$(mktemp /tmp/akbt-passwd.XXXXXX)"
		NSS_WRAPPER_GROUP="$(mktemp /tmp/akbt-group.XXXXXX)"
		export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
		printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$(id -g)" "$PGDATA" > "$NSS_WRAPPER_PASSWD"
		printf 'postgres:x:%s:\n' "$(id -g)" > "$NSS_WRAPPER_GROUP"
		export LD_PRELOAD="$wrapper"
	fi
fi

mkdir -p "$PGDATA" 2>/dev/null || true
chmod 00700 "$PGDATA" 2>/dev/null || true

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		echo >&2 'error: database is uninitialized and superuser password is not specified (POSTGRES_PASSWORD)'
		exit 1
	fi
	# shellcheck disable=SC2086
	if [ -n "$POSTGRES_PASSWORD" ]; then
		initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
			--encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 $POSTGRES_INITDB_ARGS
	else
		initdb --username="$POSTGRES_USER" \
			--encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=trust $POSTGRES_INITDB_ARGS
	fi
	printf "\nlisten_addresses = 'localhost'\n" >> "$PGDATA/postgresql.conf"

	# temporary server on a private socket directory, so nobody mistakes it for the real one
	initsock="$(mktemp -d /tmp/akbt-pginit.XXXXXX)"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$initsock -p 5432" -w start
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		psql -v ON_ERROR_STOP=1 -X -q -h "$initsock" -U "$POSTGRES_USER" -d postgres \
			--set db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db";
			SQL
	fi
	if [ -d /docker-entrypoint-initdb.d ]; then
		for f in /docker-entrypoint-initdb.d/*.sql; do
			[ -e "$f" ] || continue
			psql -v ON_ERROR_STOP=1 -X -h "$initsock" -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f"
		done
	fi
	pg_ctl -D "$PGDATA" -m fast -w stop
	rm -rf "$initsock"

	local_method=trust
	if [ "${AKBT_LOCAL_AUTH:-trust}" = 'scram' ]; then
		local_method=scram-sha-256
	fi
	cat > "$PGDATA/pg_hba.conf" <<-HBA
	# written by the akbt test bed entrypoint
	local all all $local_method
	host all all all $POSTGRES_HOST_AUTH_METHOD
	HBA
	echo
	echo 'PostgreSQL init process complete; ready for start up.'
	echo
fi

unset POSTGRES_PASSWORD
exec "$@"
