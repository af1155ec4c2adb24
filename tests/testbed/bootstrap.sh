#!/usr/bin/env bash
# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# What the gates and the test bed need from the system, on Debian 12 (bookworm): the Debian packages below and a
# Docker engine that answers. `make test`, `make demo` and .ci/run run it first.
#   as root            installs the packages that are missing (apt-get) and starts dockerd (tests/testbed/engine.sh:
#                      no bridge, no iptables) when no engine answers. A quick no-op when everything is there.
#   as any other user  checks the same; when something is missing, says what and prints the one command to run
#                      (sudo tests/testbed/bootstrap.sh), then exits 1. Nothing is installed.
# Environment: AKBT_BOOTSTRAP_PACKAGES (space-separated) replaces the package list (its test uses it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

packages=(
    # gates: make, git (ansible-test and the sanity copy), python venv (make venv; pip bootstrap in ansible-test)
    make git ca-certificates python3 python3-venv python3-pip
    # sanity test "shellcheck"
    shellcheck
    # test bed: Docker engine, image builds from Debian packages, clients used to check restored data
    docker.io mmdebstrap zstd postgresql-client redis-tools
    # interop tests of the age encryption (the reference age binary)
    age
    # the metrics file read by a real node_exporter, the alert rules evaluated by promtool
    prometheus prometheus-node-exporter
)
if [[ -n ${AKBT_BOOTSTRAP_PACKAGES:-} ]]; then
    read -r -a packages <<<"$AKBT_BOOTSTRAP_PACKAGES"
fi

say() { echo "bootstrap: $*"; }

# The packages of the list that are not installed, one per line (all of them where dpkg is missing).
missing_packages() {
    local installed
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null |
        awk '$NF == "installed" && $(NF-1) == "ok" {print $1}' || true)
    printf '%s\n' "${packages[@]}" | grep -vxF -f <(printf '%s\n' "$installed") || true
}

engine_answers() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# The command to show a user: relative to the repository when run from there, as make does.
command_to_run() {
    if [[ $PWD == "$repo" ]]; then
        echo "sudo tests/testbed/bootstrap.sh"
    else
        echo "sudo $here/bootstrap.sh"
    fi
}

as_root() {
    local missing=("$@")
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null
    fi
    bash "$here/engine.sh"
}

as_user() {
    local missing=("$@") need_root=0 denied=0
    if ((${#missing[@]})); then
        say "missing Debian packages: ${missing[*]}"
        need_root=1
    fi
    if ! engine_answers; then
        if command -v docker >/dev/null 2>&1 &&
            [[ $(docker info 2>&1 || true) == *"permission denied while trying to connect"* ]]; then
            say "a Docker engine runs, but user $(id -un) may not use its socket:" \
                "sudo usermod -aG docker $(id -un) (then log in again), or run make as root"
            denied=1
        else
            say "no Docker engine answers"
            need_root=1
        fi
    fi
    if ((need_root)); then
        say "this needs root once; run:"
        echo
        echo "    $(command_to_run)"
        echo
    fi
    ((need_root == 0 && denied == 0))
}

mapfile -t missing < <(missing_packages)
if [[ $(id -u) == 0 ]]; then
    as_root "${missing[@]}"
else
    as_user "${missing[@]}"
fi
