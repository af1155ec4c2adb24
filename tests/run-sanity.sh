#!/usr/bin/env bash
# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Run `ansible-test sanity` on this checkout without touching it and without reaching anything but PyPI.
#
#   tests/run-sanity.sh [extra ansible-test sanity arguments, e.g. --test pylint]
#
# 1. Copies the files git would ship (tracked + untracked-not-ignored: `git ls-files -co --exclude-standard`)
#    to <tmp>/ansible_collections/authentik_ops/backup, the layout ansible-test requires, and makes that copy
#    a git repository with everything added, so ansible-test sees exactly those files and no stray output.
# 2. Links the collections we depend on (community.docker, kubernetes.core, from the ansible package in the
#    venv) next to it, so the import and validate-modules tests can resolve their module_utils/doc fragments.
# 3. Puts tests/sanity/get_pip_standin.py where ansible-test looks for its cached pip bootstrap script
#    (~/.ansible/test/cache/get_pip_<pip version>.py), because the real one is downloaded from a host that is
#    not reachable here.
# 4. Runs `ansible-test sanity --local --python <X.Y> --requirements` and copies tests/output back to the
#    checkout (ignored by git) for inspection.
#
# Environment: PYTHON_VERSION (default: the venv's), VENV (default: <repo>/.venv), KEEP_SANITY_TMP=1 keeps the copy.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO_ROOT/.venv}
export PATH="$VENV/bin:$PATH"
# ansible-test sets up its own Ansible configuration; the checkout's ansible.cfg (exported by the Makefile) must not leak in.
unset ANSIBLE_CONFIG ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS
PYTHON_VERSION=${PYTHON_VERSION:-$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}

# Sanity tests we cannot run on this kind of machine; every entry says why.
SKIP_TESTS=()
# (pslint needs PowerShell, but with no .ps1/.psm1 files in the collection it passes without it.)
# The shell script linter test needs its binary (Debian package `shellcheck`, installed by tests/testbed/bootstrap.sh).
# Outside CI a missing one skips that test with a warning; in CI (CI=true) it is an error, never a skip.
if ! command -v shellcheck >/dev/null 2>&1; then
    case ${CI:-} in
        [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss])
            echo "run-sanity: error: shellcheck is not installed: run sudo tests/testbed/bootstrap.sh" >&2
            exit 1
            ;;
    esac
    SKIP_TESTS+=(shellcheck)
    echo "run-sanity: WARNING: shellcheck is not installed (sudo tests/testbed/bootstrap.sh): skipping the shellcheck test, which CI runs" >&2
fi

# --- 3. pip bootstrap stand-in ---------------------------------------------------------------------------
site_packages=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" "$site_packages/ansible_test/_internal/python_requirements.py" | head -n1)
if [[ -z $pip_version ]]; then
    echo "run-sanity: cannot find the pip version ansible-test bootstraps (ansible_test/_internal/python_requirements.py)" >&2
    exit 1
fi
cache_dir="$HOME/.ansible/test/cache"
mkdir -p "$cache_dir"
install -m 0644 "$REPO_ROOT/tests/sanity/get_pip_standin.py" "$cache_dir/get_pip_${pip_version//./_}.py"

# --- 1. the copy -------------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/authentik_ops-sanity.XXXXXX")
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ ${KEEP_SANITY_TMP:-0} == 1 ]]; then
        echo "run-sanity: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

dest="$work/ansible_collections/authentik_ops/backup"
mkdir -p "$dest"
(cd "$REPO_ROOT" && git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$dest" -xf -
(
    cd "$dest"
    git init -q
    git add -A
)

# --- 2. dependencies -----------------------------------------------------------------------------------------
for dep in community/docker kubernetes/core; do
    if [[ -d "$site_packages/ansible_collections/$dep" ]]; then
        mkdir -p "$work/ansible_collections/${dep%/*}"
        ln -s "$site_packages/ansible_collections/$dep" "$work/ansible_collections/$dep"
    else
        echo "run-sanity: warning: dependency $dep not found in $site_packages/ansible_collections" >&2
    fi
done

# --- 4. run ----------------------------------------------------------------------------------------------------
skip_args=()
for test in "${SKIP_TESTS[@]}"; do
    skip_args+=(--skip-test "$test")
done
echo "run-sanity: ansible-test sanity on $dest (python $PYTHON_VERSION${SKIP_TESTS[*]:+, skipping: ${SKIP_TESTS[*]}})"
rc=0
(cd "$dest" && ansible-test sanity --local --python "$PYTHON_VERSION" --requirements --color=no "${skip_args[@]}" "$@") || rc=$?

if [[ -d "$dest/tests/output" ]]; then
    rm -rf "$REPO_ROOT/tests/output/sanity"
    mkdir -p "$REPO_ROOT/tests/output"
    cp -r "$dest/tests/output/." "$REPO_ROOT/tests/output/"
fi
exit "$rc"
