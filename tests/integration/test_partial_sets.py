# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tags choose parts, never whether a backup happens; a set that lacks parts is partial and never counts.

Real ``ansible-playbook`` runs of playbooks/backup.yml against the current-layout stack of the test bed (its
database, /data, /templates, /certs and .env), with ``authentik_backup_keep_last: 1``:

- ``--tags authentik_backup_postgres`` makes a set with the dump only, marked ``partial`` in its manifest with the
  parts it lacks; ``latest`` stays on the full set, and retention (keep 1) neither removes the full set nor counts
  the partial one; the run says so.
- ``--tags nightly`` (a tag of the caller's, which names no part) backs up every part, as a run without tags does.
- ``--skip-tags`` of every part the deployment has backs up nothing: the run fails, no set is made, ``latest`` and
  the last success stay.
"""

from __future__ import annotations

import json
import os

import pytest

from testbed import ansible_run, paths

BACKUP = paths.REPO_ROOT / "playbooks" / "backup.yml"


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    return ansible_run.player(tmp_path_factory.mktemp("partial"))


def sets(dest):
    return sorted(p.name for p in dest.iterdir() if p.is_dir() and p.name.startswith("authentik-"))


def manifest(dest, name):
    return json.loads((dest / name / "manifest.json").read_text())


def test_tags_make_partial_sets_that_never_count(stack_current, play, tmp_path):
    dest = tmp_path / "backups"
    run_vars = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack_current.project,
                "authentik_backup_keep_last": 1}

    first = play(BACKUP, run_vars)
    assert first.rc == 0, first.explain()
    (full,) = sets(dest)
    full_parts = [f["part"] for f in manifest(dest, full)["files"]]
    assert "postgres" in full_parts and "config" in full_parts and len(full_parts) >= 3, full_parts
    assert "partial" not in manifest(dest, full)

    only_db = play(BACKUP, run_vars, args=["--tags", "authentik_backup_postgres"])
    assert only_db.rc == 0, only_db.explain()
    (partial,) = [name for name in sets(dest) if name != full]
    made = manifest(dest, partial)
    assert made["partial"] is True and [f["part"] for f in made["files"]] == ["postgres"], made
    assert sorted(made["missing_parts"]) == sorted(p for p in full_parts if p != "postgres")
    assert os.readlink(dest / "latest") == full  # latest stays on the full set
    assert (dest / full).is_dir()  # keep_last 1 did not count the partial set
    text = ansible_run.one_line(only_db.stdout)
    assert f"{partial} is PARTIAL: it lacks" in text and "not latest" in text, text[-3000:]
    assert f"partial sets (not counted, not removed): {partial}" in text

    # a tag of the caller's own selects no part: every part is backed up, and the new full set takes over
    nightly = play(BACKUP, run_vars, args=["--tags", "nightly"])
    assert nightly.rc == 0, nightly.explain()
    newest = os.readlink(dest / "latest")
    assert newest not in (full, partial)
    assert sorted(f["part"] for f in manifest(dest, newest)["files"]) == sorted(full_parts)
    assert "partial" not in manifest(dest, newest)
    assert sets(dest) == sorted([partial, newest])  # keep_last 1: the older full set went, the partial one stays

    # leaving out every part the deployment has backs up nothing: a failure, and no set
    skip = ",".join(f"authentik_backup_{kind}" for kind in ("postgres", "files", "config"))
    nothing = play(BACKUP, run_vars, args=["--skip-tags", skip])
    assert nothing.rc != 0
    text = ansible_run.one_line(nothing.stdout)
    assert "Nothing to back up from Compose project" in text and "No backup set was created" in text, text[-3000:]
    assert sets(dest) == sorted([partial, newest]) and os.readlink(dest / "latest") == newest
    assert json.loads((dest / "last-failure.json").read_text())["status"] == "failed"
