# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/restore.yml restores PostgreSQL beside the live data, keeps the previous databases, rolls back and
cleans up (Docker current stack of the test bed, real ansible-playbook runs).

Back up, change the data after the backup (a row in a table of authentik's database), restore: the data equals the
backup and the changed data is kept as akp_<run>_<n> (not accepting connections); then
``-e authentik_restore_rollback=true`` brings the changed data back (the restored one kept as akn_<run>_<n>), and
``-e authentik_restore_cleanup=true`` drops the kept databases. A dump of a newer major is refused by the role with
the live data intact.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from testbed import ansible_run, paths, proof, stacks  # noqa: E402  pylint: disable=wrong-import-position

REPO = paths.REPO_ROOT
BACKUP = REPO / "playbooks" / "backup.yml"
RESTORE = REPO / "playbooks" / "restore.yml"


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    return ansible_run.player(tmp_path_factory.mktemp("beside"))


def all_databases(stack):
    out = stacks.psql(stack, "SELECT json_agg(json_build_array(datname, datallowconn) ORDER BY datname) "
                             "FROM pg_database WHERE NOT datistemplate;", db="postgres")
    return dict(json.loads(out.strip()))


def db_state(stack):
    return proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)


def test_restore_keeps_previous_rolls_back_and_cleans_up(stack_current, play, tmp_path):
    stack = stack_current
    # restores of other tests on this stack keep their previous databases too: judge only the ones this test makes
    before = set(all_databases(stack))

    def ours(*prefixes):
        return {name: allow for name, allow in all_databases(stack).items()
                if name not in before and name.startswith(prefixes)}

    dest = tmp_path / "backups"
    base = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack.project,
            "authentik_restore_components": ["postgres"]}
    run = play(BACKUP, base)
    assert run.rc == 0, run.explain()
    in_backup = db_state(stack)
    stacks.psql(stack, "CREATE TABLE akbt_after_backup (v text); INSERT INTO akbt_after_backup VALUES ('newer');",
                db="authentik")
    changed = db_state(stack)
    assert changed != in_backup
    try:
        run = play(RESTORE, dict(base, authentik_restore_confirm=True))
        assert run.rc == 0, run.explain()
        assert db_state(stack) == in_backup
        kept = ours("akp_")
        assert kept and not any(kept.values()), all_databases(stack)
        assert not ours("akr_"), all_databases(stack)
        journals = list((dest / ".restore").glob("*.json"))
        assert len(journals) == 1 and json.loads(journals[0].read_text())["phase"] == "swapped"
        assert oct(os.stat(dest / ".restore").st_mode & 0o777) == "0o700"

        run = play(RESTORE, dict(base, authentik_restore_rollback=True), check=True)
        assert run.rc == 0 and "authentik -> akn_" in " ".join(run.stdout.split()), run.explain()
        assert db_state(stack) == in_backup
        run = play(RESTORE, dict(base, authentik_restore_rollback=True, authentik_restore_confirm=True))
        assert run.rc == 0, run.explain()
        assert db_state(stack) == changed
        assert ours("akn_") and not ours("akp_"), all_databases(stack)

        run = play(RESTORE, dict(base, authentik_restore_cleanup=True, authentik_restore_confirm=True))
        assert run.rc == 0, run.explain()
        assert not ours("akn_", "akp_", "akr_"), all_databases(stack)
        assert db_state(stack) == changed
    finally:
        stacks.psql(stack, "DROP TABLE IF EXISTS akbt_after_backup;", db="authentik")
        for name in ours("akn_", "akp_", "akr_"):
            stacks.psql(stack, f"DROP DATABASE {name} WITH (FORCE);", db="postgres")
