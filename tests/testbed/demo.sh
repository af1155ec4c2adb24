#!/usr/bin/env bash
# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The demo behind `make demo`: a local authentik-like Compose stack (PostgreSQL, server, worker, /data, .env),
# then a real backup of it with playbooks/backup.yml, then the set it wrote.
#   tests/testbed/demo.sh            bring the demo stack up (or reuse it) and back it up
#   tests/testbed/demo.sh legacy     the same with the legacy (2025.2) layout: Redis and /media
#   tests/testbed/demo.sh upgrade    upgrade the demo stack's PostgreSQL 15 -> 17 (playbooks/upgrade_postgres.yml)
#   tests/testbed/demo.sh rollback   roll that upgrade back to 15
#   tests/testbed/demo.sh down       remove the demo stacks and .demo/
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
python=${VENV:-$repo/.venv}/bin/python
demo=$repo/.demo
layout=${1:-current}

case "$layout" in
    down)
        "$python" tests/testbed/stacks.py down --project akbt-demo || true
        "$python" tests/testbed/stacks.py down --project akbt_demo_legacy || true
        rm -rf "$demo"
        exit 0
        ;;
    current) project=akbt-demo naming=v2 ;;
    legacy) project=akbt_demo_legacy naming=v1 ;;
    upgrade|rollback) project=akbt-demo naming=v2 action=$layout layout=current ;;
    *) echo "usage: $0 [current|legacy|upgrade|rollback|down]" >&2; exit 2 ;;
esac
action=${action:-backup}

echo "== Docker engine and test images (built offline from Debian packages; cached after the first run)"
bash tests/testbed/engine.sh
bash tests/testbed/images.sh
if [ "$action" != backup ]; then bash tests/testbed/images-variants.sh; fi  # PostgreSQL 17 as postgres:17-alpine

echo "== authentik-like Compose stack '$project' ($layout layout)"
running=$(docker ps -q --filter "label=com.docker.compose.project=$project" | wc -l)
if [ "$running" -ge 3 ] && "$python" tests/testbed/stacks.py show --project "$project" >/dev/null 2>&1; then
    echo "reusing the running stack"
else
    "$python" tests/testbed/stacks.py up --layout "$layout" --project "$project" --naming "$naming"
fi
docker ps --filter "label=com.docker.compose.project=$project" --format '  {{.Names}}  {{.Image}}  {{.Status}}'

mkdir -p "$demo"
cat > "$demo/inventory.yml" <<INV
authentik:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: $python
      authentik_backup_dest: $demo/backups
      authentik_backup_compose_project: $project
INV

if [ "$action" != backup ]; then
    PATH=$(dirname "$python"):$PATH
    export PATH
    if [ "$action" = rollback ]; then
        echo "== ansible-playbook playbooks/upgrade_postgres.yml -e authentik_upgrade_rollback=true"
        ansible-playbook -i "$demo/inventory.yml" playbooks/upgrade_postgres.yml -e authentik_upgrade_rollback=true
    else
        echo "== the plan: ansible-playbook playbooks/upgrade_postgres.yml --check"
        ansible-playbook -i "$demo/inventory.yml" playbooks/upgrade_postgres.yml --check \
            -e authentik_upgrade_postgres_image=docker.io/library/postgres:17-alpine
        echo "== the upgrade: ... -e authentik_upgrade_confirm=true"
        ansible-playbook -i "$demo/inventory.yml" playbooks/upgrade_postgres.yml \
            -e authentik_upgrade_postgres_image=docker.io/library/postgres:17-alpine -e authentik_upgrade_confirm=true
    fi
    db=$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=postgresql")
    echo "== the database now: $(docker exec "$db" postgres -V)"
    docker ps --filter "label=com.docker.compose.project=$project" --format '  {{.Names}}  {{.Image}}  {{.Status}}'
    echo
    echo "'tests/testbed/demo.sh rollback' goes back to 15; 'tests/testbed/demo.sh down' cleans up."
    exit 0
fi

echo "== ansible-playbook playbooks/backup.yml -i $demo/inventory.yml"
PATH=$(dirname "$python"):$PATH ansible-playbook -i "$demo/inventory.yml" playbooks/backup.yml

echo "== the backup set"
set_dir=$(readlink -f "$demo/backups/latest")
ls -la "$set_dir"
"$python" - "$set_dir/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"set {m['set']}  authentik {m.get('authentik', {}).get('version')}  platform {m.get('platform')}")
for f in m["files"]:
    how = (f.get("details") or {}).get("method")
    print(f"  {f['name']:<22} {f['size']:>12} bytes  sha256 {f['sha256'][:16]}..." + (f"  ({how})" if how else ""))
for s in m.get("skipped", []):
    print(f"  skipped {s.get('part')}: {s.get('reason')}")
PY
echo
echo "Run it again for a second set; 'tests/testbed/demo.sh legacy' for the 2025.2 layout; 'tests/testbed/demo.sh down' to clean up."
