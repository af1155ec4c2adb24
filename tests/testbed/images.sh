#!/usr/bin/env bash
# Build the akbt test bed images from Debian packages: one bookworm rootfs (mmdebstrap) imported as
#   akbt.local/postgres:15, akbt.local/redis:7,
#   akbt.local/goauthentik/server:2026.2.2, akbt.local/goauthentik/server:2025.2.4
# Skips the build when every image exists with the label akbt.build-hash equal to the hash of the build inputs.
# Env: AKBT_FORCE_BUILD=1 rebuilds anyway; AKBT_MIRROR overrides the Debian mirror.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docker="${DOCKER:-docker}"
mirror="${AKBT_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
authentik_versions=(2026.2.2 2025.2.4)
packages=postgresql-15,postgresql-client-15,redis-server,redis-tools,tar,gzip,zstd,procps,util-linux,libnss-wrapper,netcat-openbsd,ca-certificates

die() { echo "images.sh: error: $*" >&2; exit 1; }
command -v "$docker" >/dev/null 2>&1 || die "docker CLI not found (apt-get install docker.io)"
"$docker" info >/dev/null 2>&1 || die "docker engine not answering (run tests/testbed/engine.sh)"

# hash of everything that goes into the images
hash="$( { echo "$suite $mirror $packages ${authentik_versions[*]}"; cat "$here/images.sh" "$here"/image/*; } | sha256sum | cut -c1-16)"

images=(akbt.local/postgres:15 akbt.local/redis:7)
for v in "${authentik_versions[@]}"; do images+=("akbt.local/goauthentik/server:$v"); done

if [ "${AKBT_FORCE_BUILD:-0}" != 1 ]; then
	uptodate=1
	for img in "${images[@]}"; do
		have="$("$docker" image inspect -f '{{ index .Config.Labels "akbt.build-hash" }}' "$img" 2>/dev/null || true)"
		[ "$have" = "$hash" ] || { uptodate=0; break; }
	done
	if [ "$uptodate" = 1 ]; then
		echo "images.sh: all images up to date (build hash $hash): ${images[*]}"
		exit 0
	fi
fi

command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap not found (apt-get install mmdebstrap)"

start=$(date +%s)
work="$(mktemp -d /tmp/akbt-images.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs.tar"

echo "images.sh: building the rootfs with mmdebstrap ($suite, $mirror) ..."
# the hooks run in mmdebstrap's shell, with the rootfs as $1
# shellcheck disable=SC2016
mmdebstrap --variant=apt --format=tar --quiet \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--include="$packages" \
	--essential-hook='echo "postgres:x:999:999:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash" >> "$1/etc/passwd"; echo "postgres:x:999:" >> "$1/etc/group"; if [ -e "$1/etc/shadow" ]; then echo "postgres:*:19000:0:99999:7:::" >> "$1/etc/shadow"; fi' \
	--customize-hook='rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15 "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
	--customize-hook='rm -rf "$1"/usr/lib/postgresql/15/lib/llvmjit* "$1"/usr/lib/postgresql/15/lib/bitcode "$1"/usr/lib/x86_64-linux-gnu/libLLVM-14.so* "$1"/usr/lib/x86_64-linux-gnu/libz3.so*' \
	--customize-hook='echo "authentik:x:1000:1000:authentik:/authentik:/bin/sh" >> "$1/etc/passwd"; echo "authentik:x:1000:" >> "$1/etc/group"; mkdir -p "$1/authentik" "$1/data" "$1/media" "$1/templates" "$1/certs" "$1/blueprints"; chown 1000:1000 "$1/authentik" "$1/media" "$1/templates" "$1/certs"' \
	--customize-hook='mkdir -p "$1/var/lib/postgresql/data" "$1/var/run/postgresql"; chown -R 999:999 "$1/var/lib/postgresql" "$1/var/run/postgresql"; chmod 3775 "$1/var/run/postgresql"; chmod 700 "$1/var/lib/postgresql/data"' \
	--customize-hook='mkdir -p "$1/data"; chroot "$1" chown redis:redis /data' \
	--customize-hook="upload $here/image/postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" \
	--customize-hook="upload $here/image/redis-entrypoint.sh /usr/local/bin/redis-entrypoint.sh" \
	--customize-hook="upload $here/image/authentik-standin.sh /usr/local/bin/authentik-standin" \
	--customize-hook='chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh "$1"/usr/local/bin/redis-entrypoint.sh "$1"/usr/local/bin/authentik-standin' \
	"$suite" "$rootfs" "$mirror"
echo "images.sh: rootfs $(du -h "$rootfs" | cut -f1) in $(( $(date +%s) - start )) s"

common=(--change 'ENV LANG=C.UTF-8' --change "LABEL akbt.build-hash=$hash" --change 'LABEL akbt.testbed=1')

"$docker" import "${common[@]}" \
	--change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV PG_MAJOR=15' \
	--change 'ENV PGDATA=/var/lib/postgresql/data' \
	--change 'LABEL org.opencontainers.image.version=15' \
	--change 'LABEL org.opencontainers.image.title=postgres' \
	--change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
	--change 'CMD ["postgres"]' \
	"$rootfs" akbt.local/postgres:15 >/dev/null
echo "images.sh: imported akbt.local/postgres:15"

"$docker" import "${common[@]}" \
	--change 'LABEL org.opencontainers.image.version=7' \
	--change 'LABEL org.opencontainers.image.title=redis' \
	--change 'WORKDIR /data' \
	--change 'ENTRYPOINT ["redis-entrypoint.sh"]' \
	--change 'CMD ["redis-server"]' \
	"$rootfs" akbt.local/redis:7 >/dev/null
echo "images.sh: imported akbt.local/redis:7"

for v in "${authentik_versions[@]}"; do
	"$docker" import "${common[@]}" \
		--change "LABEL org.opencontainers.image.version=$v" \
		--change 'LABEL org.opencontainers.image.source=https://github.com/goauthentik/authentik' \
		--change 'LABEL org.opencontainers.image.title="authentik stand-in"' \
		--change "ENV AKBT_AUTHENTIK_VERSION=$v" \
		--change 'WORKDIR /' \
		--change 'USER 1000' \
		--change 'ENTRYPOINT ["/usr/local/bin/authentik-standin"]' \
		--change 'CMD ["server"]' \
		"$rootfs" "akbt.local/goauthentik/server:$v" >/dev/null
	echo "images.sh: imported akbt.local/goauthentik/server:$v"
done
echo "images.sh: built ${#images[@]} images (build hash $hash) in $(( $(date +%s) - start )) s"
# drop the untagged leftovers of earlier builds (only ours: they carry akbt.testbed=1)
for id in $("$docker" images -q --filter dangling=true --filter label=akbt.testbed=1); do
	"$docker" rmi "$id" >/dev/null 2>&1 || true
done
