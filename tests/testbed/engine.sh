#!/usr/bin/env bash
# Make sure a Docker engine answers. Starts dockerd (no bridge, no iptables: the test bed runs every container
# with --network none) when none does, then makes sure both Compose CLIs are there (compose.sh). Idempotent.
# Log: /var/log/akbt-dockerd.log
set -Eeuo pipefail
docker="${DOCKER:-docker}"
log=/var/log/akbt-dockerd.log
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

command -v "$docker" >/dev/null 2>&1 || { echo "engine.sh: error: docker CLI not found (apt-get install docker.io)" >&2; exit 1; }
if "$docker" info >/dev/null 2>&1; then
	echo "engine.sh: docker engine answers ($("$docker" version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
	exec bash "$here/compose.sh"
fi
command -v dockerd >/dev/null 2>&1 || { echo "engine.sh: error: dockerd not found (apt-get install docker.io)" >&2; exit 1; }

if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null 2>&1; then
	echo "engine.sh: dockerd is running but not answering yet; waiting"
else
	echo "engine.sh: starting dockerd (log $log)"
	mkdir -p "$(dirname "$log")"
	nohup setsid dockerd --bridge=none --iptables=false --ip6tables=false >>"$log" 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
	if "$docker" info >/dev/null 2>&1; then
		echo "engine.sh: docker engine answers ($("$docker" version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
		exec bash "$here/compose.sh"
	fi
	sleep 0.5
done
echo "engine.sh: error: docker engine did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
