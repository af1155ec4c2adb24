# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/restore.yml across authentik releases: the version guard and the layout mapping.

A set of the legacy stack (authentik 2025.2.4: Redis, ``/media``) is restored into a stack of the current layout
(authentik 2026.2.2: ``/data``, no Redis) of its own (project akbt-upg<suffix>, so the session's stack_current keeps
its data): the restore is an upgrade, allowed with a warning naming both releases; the database ends equal to the
legacy one, the media files land in ``/data/media`` (the deployment's mount, not the set's path), the Redis
snapshot is skipped with a note, and what the set does not hold (``/data/reports``) stays. Before that, the refusals
on the same target, each before anything is stopped or changed: a set from a newer release (also with
``authentik_restore_force_version``), a set from another patch of the release without it (and its plan with it),
and a set of the current layout into the legacy deployment (a downgrade, with the force switch). Every run is a
real ``ansible-playbook`` subprocess against the Compose stacks of the test bed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from testbed import ansible_run, paths, proof, stacks
from testbed._docker import docker

REPO = paths.REPO_ROOT
BACKUP = REPO / "playbooks" / "backup.yml"
RESTORE = REPO / "playbooks" / "restore.yml"
NOT_CHANGED = "Nothing was stopped or changed"
TARGET = {"project": "akbt-upg" + paths.PROJECT_SUFFIX, "layout": "current", "naming": "v2", "pg_user": None}


@pytest.fixture(scope="module")
def stack_target(images):  # pylint: disable=unused-argument
    """A current-layout stack only this module restores into."""
    project = TARGET["project"]
    with stacks.lock(project, wait=float(os.environ.get("AKBT_LOCK_WAIT", "1800"))):
        stack = stacks.up(project, layout="current", naming="v2")
        try:
            yield stack
        finally:
            if os.environ.get("AKBT_KEEP_STACKS") != "1":
                stacks.down(project)


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    return ansible_run.player(tmp_path_factory.mktemp("upgrade"))


def docker_vars(stack, dest, **more):
    return dict({"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack.project}, **more)


def started_at(container):
    return json.loads(docker("inspect", container).stdout)[0]["State"]["StartedAt"]


def host_dir(stack, path):
    for service in ("server", "worker"):
        if path in stack.mounts[service]:
            return Path(stack.mounts[service][path])
    raise AssertionError(f"{path} is not mounted in {stack.project}")


def state(stack):
    """The database (per-table checksums) and the files of a stack, by the path authentik reads them from."""
    media = host_dir(stack, "/media") if stack.layout == "legacy" else host_dir(stack, "/data") / "media"
    return {"db": proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password),
            "media": proof.tree_state(media),
            "templates": proof.tree_state(host_dir(stack, "/templates")),
            "certs": proof.tree_state(host_dir(stack, "/certs"))}


def backup(play, stack, dest):
    run = play(BACKUP, docker_vars(stack, dest))
    assert run.rc == 0, run.explain()
    return Path(os.path.realpath(dest / "latest"))


def with_version(set_dir, tmp_path, version):
    """A copy of a set whose manifest says it was made from ``version`` (the files are untouched)."""
    copy = tmp_path / f"set-{version}"
    shutil.copytree(set_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["authentik"]["version"] = version
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def assert_refused(run, expected, containers, before):
    assert run.rc != 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    for text in expected + [NOT_CHANGED]:
        assert text in out, f"{text!r} not in the output\n{run.explain()}"
    assert "Stop authentik's server and worker" not in run.stdout
    assert {c: started_at(c) for c in containers} == before, "a container was restarted"


def test_refusals_across_releases(stack_target, stack_legacy, play, tmp_path):
    target = stack_target
    current_set = backup(play, target, tmp_path / "target-backups")
    watched = (target.containers["server"], target.containers["worker"], target.pg_container)
    before = {c: started_at(c) for c in watched}
    unchanged = state(target)

    newer = with_version(current_set, tmp_path, "2026.5.0")
    for force in (False, True):
        run = play(RESTORE, docker_vars(target, tmp_path / "target-backups", authentik_restore_from=str(newer),
                                        authentik_restore_confirm=True, authentik_restore_force_version=force))
        assert_refused(run, ["was made from authentik 2026.5.0 (release 2026.5)", "newer than the authentik 2026.2.2",
                             "supports no downgrades", "authentik_restore_force_version does not change that"],
                       watched, before)

    patch = with_version(current_set, tmp_path, "2026.2.1")
    run = play(RESTORE, docker_vars(target, tmp_path / "target-backups", authentik_restore_from=str(patch),
                                    authentik_restore_confirm=True))
    assert_refused(run, ["was made from authentik 2026.2.1", "runs authentik 2026.2.2", "Both are release 2026.2",
                         "authentik_restore_force_version=true"], watched, before)
    # with the switch a same-release mismatch is restored: its plan (check mode) says so
    run = play(RESTORE, docker_vars(target, tmp_path / "target-backups", authentik_restore_from=str(patch),
                                    authentik_restore_force_version=True), check=True)
    assert run.rc == 0, run.explain()
    assert "version mismatch restored anyway (authentik_restore_force_version): set 2026.2.1, deployment 2026.2.2" \
        in ansible_run.one_line(run.stdout)

    # the current layout's set into the legacy deployment: a downgrade, whatever the switch says
    legacy_watched = (stack_legacy.containers["server"], stack_legacy.containers["worker"], stack_legacy.pg_container)
    legacy_before = {c: started_at(c) for c in legacy_watched}
    run = play(RESTORE, docker_vars(stack_legacy, tmp_path / "legacy-backups", authentik_restore_from=str(current_set),
                                    authentik_restore_confirm=True, authentik_restore_force_version=True))
    assert_refused(run, ["was made from authentik 2026.2.2 (release 2026.2)", "newer than the authentik 2025.2.4"],
                   legacy_watched, legacy_before)
    assert state(target) == unchanged


def test_legacy_set_upgrades_into_the_current_layout(stack_target, stack_legacy, play, tmp_path):
    target = stack_target
    legacy_set = backup(play, stack_legacy, tmp_path / "legacy-backups")
    legacy = state(stack_legacy)
    manifest = json.loads((legacy_set / "manifest.json").read_text())
    assert manifest["authentik"]["version"] == "2025.2.4" and manifest["authentik"]["layout"] == "legacy"
    assert {f["part"] for f in manifest["files"]} >= {"postgres", "redis", "media"}
    assert legacy["media"] and legacy["db"].get("authentik")

    before = state(target)
    assert before["media"] != legacy["media"] and before["db"] != legacy["db"]
    reports = host_dir(target, "/data") / "reports"
    reports_before = proof.tree_state(reports)
    assert reports_before, "the current stack has /data/reports, which the legacy set does not hold"
    restore_vars = docker_vars(target, tmp_path / "legacy-backups", authentik_restore_from=str(legacy_set))

    run = play(RESTORE, restore_vars, check=True)
    assert run.rc == 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert "upgrade: from authentik 2025.2.4 to 2026.2.2" in out
    assert f"restores media.tar.zst into /data/media of {target.containers['server']}" in out
    assert "the set has it as /media, which this release keeps there" in out
    assert "skips redis: the set holds a Redis snapshot (redis.rdb" in out and "uses no Redis" in out
    assert state(target) == before

    run = play(RESTORE, dict(restore_vars, authentik_restore_confirm=True))
    assert run.rc == 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert ("Upgrade: the set was made from authentik 2025.2.4 (release 2025.2), the deployment runs authentik "
            "2026.2.2 (release 2026.2)") in out
    after = state(target)
    assert after["db"] == legacy["db"]
    assert after["media"] == legacy["media"]
    assert after["templates"] == legacy["templates"] and after["certs"] == legacy["certs"]
    assert proof.tree_state(reports) == reports_before
    assert not (host_dir(target, "/data") / "public").exists(), "the media landed outside /data/media"
    for container in (target.containers["server"], target.containers["worker"]):
        assert json.loads(docker("inspect", container).stdout)[0]["State"]["Running"]
