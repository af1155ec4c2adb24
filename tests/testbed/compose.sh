#!/usr/bin/env bash
# Provide the two Compose CLIs the test bed runs, both from Debian's package `docker-compose`:
#   v1  `docker-compose` 1.29 (Python), bookworm's package, installed with apt-get;
#   v2  `docker compose` 2.26 (the CLI plugin, a static binary), trixie's package: downloaded with apt-get from a
#       private trixie source list (the machine's own apt sources are not changed), unpacked with dpkg-deb -x into
#       /usr/local/lib/akbt/docker-compose-<version> and linked as /usr/local/lib/docker/cli-plugins/docker-compose.
# Idempotent, and quick when both answer. Installs only as root; as another user it says what to run.
# Env: AKBT_MIRROR overrides the Debian mirror; AKBT_COMPOSE_V1 names the v1 binary (default docker-compose).
set -Eeuo pipefail

mirror="${AKBT_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
v1="${AKBT_COMPOSE_V1:-docker-compose}"
plugin_dir=/usr/local/lib/docker/cli-plugins
unpack_root=/usr/local/lib/akbt

die() { echo "compose.sh: error: $*" >&2; exit 1; }
v1_version() { "$v1" version --short 2>/dev/null || true; }
v2_version() { docker compose version --short 2>/dev/null || true; }

have_v1="$(v1_version)"
have_v2="$(v2_version)"
if [[ "$have_v1" == 1.* && "$have_v2" == *2.* ]]; then
	echo "compose.sh: docker-compose $have_v1 (v1) and docker compose $have_v2 (v2) answer"
	exit 0
fi
command -v docker >/dev/null 2>&1 || die "docker CLI not found (apt-get install docker.io)"
if [ "$(id -u)" != 0 ]; then
	die "Compose is missing (v1: '${have_v1:-none}', v2: '${have_v2:-none}'); run as root: sudo bash $0"
fi

if [[ "$have_v1" != 1.* ]]; then
	echo "compose.sh: installing docker-compose (v1) from the machine's apt sources"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends docker-compose </dev/null; then
		apt-get update -q
		apt-get install -y -q --no-install-recommends docker-compose </dev/null
	fi
	have_v1="$(v1_version)"
	[[ "$have_v1" == 1.* ]] || die "docker-compose --version says '${have_v1:-nothing}', not 1.x"
fi

if [[ "$have_v2" != *2.* ]]; then
	echo "compose.sh: unpacking docker-compose (v2 plugin) from Debian trixie ($mirror)"
	[ -r "$keyring" ] || die "$keyring is missing (apt-get install debian-archive-keyring)"
	work="$(mktemp -d /tmp/akbt-compose.XXXXXX)"
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
	echo "deb [signed-by=$keyring] $mirror trixie main" >"$work/sources.list"
	apt=(-q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
	apt-get "${apt[@]}" update >/dev/null
	(cd "$work/deb" && apt-get "${apt[@]}" download docker-compose >/dev/null)
	deb="$(ls "$work"/deb/docker-compose_*.deb)"
	version="$(dpkg-deb -f "$deb" Version)"
	[[ "$version" == 2.* ]] || die "trixie's docker-compose is $version, not 2.x"
	dest="$unpack_root/docker-compose-$version"
	rm -rf "$dest"
	mkdir -p "$dest" "$plugin_dir"
	dpkg-deb -x "$deb" "$dest"
	ln -sfn "$dest/usr/libexec/docker/cli-plugins/docker-compose" "$plugin_dir/docker-compose"
	have_v2="$(v2_version)"
	[[ "$have_v2" == *2.* ]] || die "docker compose version says '${have_v2:-nothing}' after the install"
fi
echo "compose.sh: docker-compose $have_v1 (v1) and docker compose $have_v2 (v2) answer"
