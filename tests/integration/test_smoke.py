# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test: one backup and one restore of the current Compose stack through the playbooks, data proved equal.

Part of the whole suite, and the integration test `make matrix` runs under every older ansible-core the collection
claims (.venv-<X.Y>, with the oldest community.docker, kubernetes.core and Python libraries claimed): the backup
role, the restore role, the modules and the filters all run on that ansible-core.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from testbed import paths, proof, stacks
from testbed.ansible_run import run_playbook

REPO = paths.REPO_ROOT


def state(stack):
    return {"db": proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password),
            "data": proof.tree_state(stack.mounts["server"]["/data"])}


def explain(proc):
    return f"rc={proc.returncode}\nstdout (tail):\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-2000:]}"


def test_backup_and_restore_of_the_current_stack(stack_current, inventory, tmp_path):
    stack = stack_current
    dest = tmp_path / "backups"
    where = (f"authentik_backup_dest={dest}", f"authentik_backup_compose_project={stack.project}")
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", *where)
    assert proc.returncode == 0, explain(proc)
    original = state(stack)
    assert original["db"].get("authentik") and original["data"]
    set_dir = Path(os.path.realpath(dest / "latest"))
    names = {entry["name"] for entry in json.loads((set_dir / "manifest.json").read_text())["files"]}
    assert {"postgres.sql.zst", "data.tar.zst", "config.tar.zst"} <= names, names

    stacks.psql(stack, "DROP DATABASE authentik;")
    data = Path(stack.mounts["server"]["/data"])
    victim = sorted(p for p in data.rglob("*") if p.is_file() and not p.is_symlink())[0]
    victim.unlink()
    assert state(stack) != original

    proc = run_playbook(inventory, REPO / "playbooks" / "restore.yml", *where, "authentik_restore_confirm=true")
    assert proc.returncode == 0, explain(proc)
    assert state(stack) == original
