#!/usr/bin/env bash
# Build the test bed's image variants (after tests/testbed/images.sh, whose images they start from):
#   akbt.local/postgres:15-busybox, akbt.local/redis:7-busybox
#       Alpine-like: Debian's busybox (the busybox-static package) as /bin/busybox, its applets installed with
#       `busybox --install -s /usr/local/busybox/bin` and that directory first in PATH (sh, tar, stat, head, cat,
#       find, ... are busybox, as on Alpine), PostgreSQL running as uid/gid 70 and Redis as uid 999, as in the
#       official Alpine images. Tagged also with the names authentik's compose files use:
#       docker.io/library/postgres:16-alpine and docker.io/library/redis:alpine (the PostgreSQL inside is 15).
#   ghcr.io/goauthentik/server:2025.2.4 and :2026.2.2
#       the authentik stand-ins under the upstream name.
#   akbt.local/postgres:17
#       PostgreSQL 17 from Debian trixie (mmdebstrap), with the same entrypoint as akbt.local/postgres:15; tagged
#       also docker.io/library/postgres:17-alpine.
# An upstream name is only given to our image when it is free or already ours (label akbt.testbed=1): an official
# image pulled on a developer's machine is never retagged.
# Skips what exists with the label akbt.build-hash of the current inputs (AKBT_FORCE_BUILD=1 rebuilds anyway).
# Env: AKBT_MIRROR overrides the Debian mirror.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docker="${DOCKER:-docker}"
mirror="${AKBT_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
authentik_versions=(2026.2.2 2025.2.4)
pg17_packages=postgresql-17,postgresql-client-17,tar,gzip,zstd,procps,util-linux,libnss-wrapper,ca-certificates
path_tail=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
busybox_bin=/usr/local/busybox/bin

die() { echo "images-variants.sh: error: $*" >&2; exit 1; }
log() { echo "images-variants.sh: $*"; }
command -v "$docker" >/dev/null 2>&1 || die "docker CLI not found (apt-get install docker.io)"
"$docker" info >/dev/null 2>&1 || die "docker engine not answering (run tests/testbed/engine.sh)"

label_of() { "$docker" image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
base_hash="$(label_of akbt.local/postgres:15 akbt.build-hash)"
[ -n "$base_hash" ] || die "akbt.local/postgres:15 is missing: run tests/testbed/images.sh first"
[ "$(label_of akbt.local/redis:7 akbt.build-hash)" = "$base_hash" ] || die "akbt.local/redis:7 is missing or stale: run tests/testbed/images.sh"
self="$(cat "${BASH_SOURCE[0]}")"
busybox_hash="$( { echo "$base_hash"; echo "$self"; } | sha256sum | cut -c1-16)"
pg17_hash="$( { echo "trixie $mirror $pg17_packages"; echo "$self"; cat "$here/image/postgres-entrypoint.sh"; } | sha256sum | cut -c1-16)"

work="$(mktemp -d /tmp/akbt-variants.XXXXXX)"
builder=""
cleanup() {
	if [ -n "$builder" ]; then "$docker" rm -f "$builder" >/dev/null 2>&1 || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

uptodate() {  # uptodate HASH IMAGE...: every image exists with akbt.build-hash=HASH
	local want="$1" img
	shift
	[ "${AKBT_FORCE_BUILD:-0}" != 1 ] || return 1
	for img in "$@"; do
		[ "$(label_of "$img" akbt.build-hash)" = "$want" ] || return 1
	done
}

tag_upstream() {  # tag_upstream SOURCE NAME: give NAME to SOURCE unless NAME is someone else's image
	local src="$1" name="$2" have
	if "$docker" image inspect "$name" >/dev/null 2>&1; then
		have="$(label_of "$name" akbt.testbed)"
		if [ "$have" != 1 ]; then
			log "leaving $name alone: it exists and is not a test bed image"
			return 0
		fi
	fi
	"$docker" tag "$src" "$name"
}

fetch_busybox() {  # Debian's static busybox, from the machine's apt sources, unpacked into $work/busybox
	[ -x "$work/busybox/bin/busybox" ] && return 0
	mkdir -p "$work/busybox-deb" "$work/busybox"
	(cd "$work/busybox-deb" && apt-get download -q busybox-static >/dev/null 2>&1) \
		|| { apt-get update -q >/dev/null && (cd "$work/busybox-deb" && apt-get download -q busybox-static >/dev/null); } \
		|| die "apt-get download busybox-static failed"
	dpkg-deb -x "$work"/busybox-deb/busybox-static_*.deb "$work/busybox"
	[ -x "$work/busybox/bin/busybox" ] || die "busybox-static did not hold bin/busybox"
}

# The users as on Alpine: postgres 70:70, redis 999:999 (the Debian rootfs has postgres 999 and redis 100).
# setpriv is removed from the applets: busybox's setpriv lacks --reuid (Alpine's busybox has none either; its images
# use su-exec), and the entrypoints use util-linux's.
# shellcheck disable=SC2016
alpine_script='set -eu
pg_old=$(id -u postgres) redis_old=$(id -u redis) redis_gid_old=$(id -g redis)
sed -i -e "s/^postgres:x:[0-9]*:[0-9]*:/postgres:x:70:70:/" -e "s/^redis:x:[0-9]*:[0-9]*:/redis:x:999:999:/" /etc/passwd
sed -i -e "s/^postgres:x:[0-9]*:/postgres:x:70:/" -e "s/^redis:x:[0-9]*:/redis:x:999:/" /etc/group
find / -xdev \( -uid "$pg_old" -o -gid "$pg_old" \) -exec chown -h 70:70 {} +
find / -xdev \( -uid "$redis_old" -o -gid "$redis_gid_old" \) ! -uid 70 -exec chown -h 999:999 {} +
mkdir -p '"$busybox_bin"'
/bin/busybox --install -s '"$busybox_bin"'
rm -f '"$busybox_bin"'/setpriv
test "$(id -u postgres):$(id -u redis)" = "70:999"'

build_busybox_variant() {  # build_busybox_variant BASE TARGET PATH CHANGES...
	local base="$1" target="$2" path="$3"
	shift 3
	builder="akbt-variant-build-$$"
	"$docker" rm -f "$builder" >/dev/null 2>&1 || true
	"$docker" run -d --name "$builder" --network none --user 0 --entrypoint sleep "$base" infinity >/dev/null
	"$docker" cp "$work/busybox/bin/busybox" "$builder:/bin/busybox"
	"$docker" exec "$builder" /bin/sh -c "$alpine_script"
	"$docker" stop -t 1 "$builder" >/dev/null
	"$docker" commit \
		--change "ENV PATH=$busybox_bin:$path" \
		--change "LABEL akbt.build-hash=$busybox_hash" \
		--change 'LABEL akbt.variant=busybox' \
		--change 'USER root' \
		"$@" "$builder" "$target" >/dev/null
	"$docker" rm -f "$builder" >/dev/null
	builder=""
	log "built $target"
}

start=$(date +%s)
busybox_images=(akbt.local/postgres:15-busybox akbt.local/redis:7-busybox)
if uptodate "$busybox_hash" "${busybox_images[@]}"; then
	log "busybox variants up to date (build hash $busybox_hash)"
else
	fetch_busybox
	build_busybox_variant akbt.local/postgres:15 akbt.local/postgres:15-busybox "/usr/lib/postgresql/15/bin:$path_tail" \
		--change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["postgres"]' --change 'WORKDIR /'
	build_busybox_variant akbt.local/redis:7 akbt.local/redis:7-busybox "$path_tail" \
		--change 'ENTRYPOINT ["redis-entrypoint.sh"]' --change 'CMD ["redis-server"]' --change 'WORKDIR /data'
fi
tag_upstream akbt.local/postgres:15-busybox docker.io/library/postgres:16-alpine
tag_upstream akbt.local/redis:7-busybox docker.io/library/redis:alpine
for v in "${authentik_versions[@]}"; do
	tag_upstream "akbt.local/goauthentik/server:$v" "ghcr.io/goauthentik/server:$v"
done

if uptodate "$pg17_hash" akbt.local/postgres:17; then
	log "akbt.local/postgres:17 up to date (build hash $pg17_hash)"
else
	command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap not found (apt-get install mmdebstrap)"
	[ -r "$keyring" ] || die "$keyring is missing (apt-get install debian-archive-keyring)"
	log "building the PostgreSQL 17 rootfs with mmdebstrap (trixie, $mirror) ..."
	# shellcheck disable=SC2016
	mmdebstrap --variant=apt --format=tar --quiet --keyring="$keyring" \
		--aptopt='APT::Install-Recommends "false"' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--include="$pg17_packages" \
		--essential-hook='echo "postgres:x:999:999:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash" >> "$1/etc/passwd"; echo "postgres:x:999:" >> "$1/etc/group"; if [ -e "$1/etc/shadow" ]; then echo "postgres:*:19000:0:99999:7:::" >> "$1/etc/shadow"; fi' \
		--customize-hook='rm -rf "$1"/var/lib/postgresql/17 "$1"/etc/postgresql/17 "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
		--customize-hook='rm -rf "$1"/usr/lib/postgresql/17/lib/llvmjit* "$1"/usr/lib/postgresql/17/lib/bitcode "$1"/usr/lib/x86_64-linux-gnu/libLLVM*.so* "$1"/usr/lib/x86_64-linux-gnu/libz3.so*' \
		--customize-hook='mkdir -p "$1/var/lib/postgresql/data" "$1/var/run/postgresql"; chown -R 999:999 "$1/var/lib/postgresql" "$1/var/run/postgresql"; chmod 3775 "$1/var/run/postgresql"; chmod 700 "$1/var/lib/postgresql/data"' \
		--customize-hook="upload $here/image/postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" \
		--customize-hook='chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh' \
		trixie "$work/pg17.tar" "$mirror"
	log "rootfs $(du -h "$work/pg17.tar" | cut -f1) in $(( $(date +%s) - start )) s"
	"$docker" import \
		--change 'ENV LANG=C.UTF-8' --change "LABEL akbt.build-hash=$pg17_hash" --change 'LABEL akbt.testbed=1' \
		--change "ENV PATH=/usr/lib/postgresql/17/bin:$path_tail" \
		--change 'ENV PG_MAJOR=17' \
		--change 'ENV PGDATA=/var/lib/postgresql/data' \
		--change 'LABEL org.opencontainers.image.version=17' \
		--change 'LABEL org.opencontainers.image.title=postgres' \
		--change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
		--change 'CMD ["postgres"]' \
		"$work/pg17.tar" akbt.local/postgres:17 >/dev/null
	log "imported akbt.local/postgres:17"
fi
tag_upstream akbt.local/postgres:17 docker.io/library/postgres:17-alpine
log "done in $(( $(date +%s) - start )) s"
# drop the untagged leftovers of earlier builds (only ours: they carry akbt.testbed=1)
for id in $("$docker" images -q --filter dangling=true --filter label=akbt.testbed=1); do
	"$docker" rmi "$id" >/dev/null 2>&1 || true
done
