#!/bin/sh
# akbt test bed: stand-in for the authentik server/worker (the real image cannot be pulled here).
# Whatever the command (server, worker, ...), it idles until stopped.
echo "authentik stand-in ${AKBT_AUTHENTIK_VERSION:-?}: pretending to run: $*"
trap 'exit 0' TERM INT
while :; do
	sleep 3600 &
	wait $!
done
