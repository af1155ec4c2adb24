# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Helm path of a PostgreSQL major upgrade (docs/upgrade-postgres.md, Kubernetes): back up the release on
PostgreSQL 15, "helm upgrade" the database to 17 on a new volume (what the chart does with a new image and a new
PVC: an empty server initialised with the release's credentials), restore the set with playbooks/restore.yml and
prove the data equal to the original (per-table row counts and checksums, sequences, files). Then the reverse is
refused: a set made on 17 cannot be restored into the release "rolled back" to 15 (on its old volume, which is
untouched), before anything is scaled down.

The Kubernetes API is tests/testbed/k8s/apiserver.py, NOT a real cluster; "helm upgrade" is the test bed replacing
the pod's container (tests/testbed/k8s/helm_stacks.py set_postgres).
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "testbed", "k8s"))

pytest_plugins = ["conftest_k8s"]

from testbed import ansible_run, paths  # noqa: E402  pylint: disable=wrong-import-position
from testbed._docker import docker  # noqa: E402  pylint: disable=wrong-import-position
from test_restore_roundtrip import (  # noqa: E402  pylint: disable=wrong-import-position
    BACKUP, NOT_CHANGED, RESTORE, k8s_psql, k8s_state, k8s_vars, started_at)

import helm_stacks  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order

STACK = "current"
PG17_REPORTED = "docker.io/bitnami/postgresql:17.6.0-debian-12-r4"


@pytest.fixture(scope="module")
def play(inventory, tmp_path_factory):
    return ansible_run.player(tmp_path_factory.mktemp("k8s-upgrade-ansible"), inventory=inventory, timeout=600)


def server_major(k8s):
    return int(k8s_psql(k8s, STACK, "SHOW server_version_num;").strip()) // 10000


def set_postgres(k8s, image, volume, reported, version):
    spec = k8s.stacks[STACK]
    helm_stacks.set_postgres(spec["release"], spec["namespace"], k8s.state_path, image=image, volume=volume,
                             reported=reported, chart_version=version)
    k8s.admin("POST", "/_test/reload")


def test_restore_into_a_newer_major_and_never_into_an_older_one(k8s, play, tmp_path):
    spec = k8s.stacks[STACK]
    old_volume = spec["volumes"]["vol_pg"]
    new_volume = old_volume + "-pg17"
    work = tmp_path / "copies"
    work.mkdir()
    assert server_major(k8s) == 15

    # 1. the operator's backup on 15, verified by the backup role
    dest15 = tmp_path / "on15"
    run = play(BACKUP, k8s_vars(k8s, STACK, dest15))
    assert run.rc == 0, run.explain()
    original = k8s_state(k8s, STACK, work)
    assert original["db"]["authentik"]

    try:
        # 2. "helm upgrade": the database pod runs 17 on a new, empty volume; the old volume is kept
        set_postgres(k8s, paths.IMAGE_POSTGRES_17, new_volume, PG17_REPORTED, "17.6.0")
        assert server_major(k8s) == 17
        assert "akbt_sample" not in k8s_psql(k8s, STACK, "SELECT tablename FROM pg_tables;", db="authentik")

        # 3. the plan says what happens, then the restore of the 15 set into 17 with its proof
        run = play(RESTORE, k8s_vars(k8s, STACK, dest15), check=True)
        assert run.rc == 0, run.explain()
        out = ansible_run.one_line(run.stdout)
        assert "Check mode: nothing is changed." in out
        assert "(dumped from PostgreSQL 15." in out, out
        assert "the dump is of PostgreSQL 15, the server runs 17." in out, out
        run = play(RESTORE, k8s_vars(k8s, STACK, dest15, authentik_restore_confirm=True))
        assert run.rc == 0, run.explain()
        assert "the dump is of PostgreSQL 15, the server runs 17." in ansible_run.one_line(run.stdout)
        assert server_major(k8s) == 17
        assert k8s_state(k8s, STACK, work) == original
        for component in ("server", "worker"):
            running, _since = started_at(k8s.container(STACK, component))
            assert running, f"{component} does not run after the restore"

        # 4. a set made on 17 is never restored into 15: refused before anything is scaled down
        dest17 = tmp_path / "on17"
        run = play(BACKUP, k8s_vars(k8s, STACK, dest17))
        assert run.rc == 0, run.explain()
        set_postgres(k8s, paths.IMAGE_POSTGRES, old_volume, helm_stacks.PG_REPORTED, "15.4.0")
        assert server_major(k8s) == 15
        on_old_volume = k8s_state(k8s, STACK, work)
        assert on_old_volume == original, "the volume of 15 changed during the upgrade"
        before = {c: started_at(k8s.container(STACK, c)) for c in ("server", "worker")}
        run = play(RESTORE, k8s_vars(k8s, STACK, dest17, authentik_restore_confirm=True))
        assert run.rc != 0, run.explain()
        out = ansible_run.one_line(run.stdout)
        assert "the dump comes from a newer PostgreSQL (Dumped from database version 17) than the target server" \
            " (15)" in out, run.explain()
        assert NOT_CHANGED in out, run.explain()
        assert {c: started_at(k8s.container(STACK, c)) for c in ("server", "worker")} == before
        assert k8s_state(k8s, STACK, work) == original
    finally:
        if server_major(k8s) != 15:
            set_postgres(k8s, paths.IMAGE_POSTGRES, old_volume, helm_stacks.PG_REPORTED, "15.4.0")
        docker("volume", "rm", "-f", new_volume, check=False)
