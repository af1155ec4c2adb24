# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/upgrade_postgres.yml: a PostgreSQL 15 -> 17 upgrade of a Compose deployment, its rollback, its cleanup.

Two stacks of their own, each brought up with the real Compose CLI on authentik's compose file and loaded with the
test bed's sample data (several databases, unicode identifiers, non-UTF-8 bytea, large rows, sequences):
- the current layout with the upstream image names (``postgres:16-alpine`` is the test bed's PostgreSQL 15 with a
  busybox userland): the image and the volume are both in authentik's file. Refusals first (an image that is not
  there, a major that is not newer, no confirmation, check mode), each leaving containers and files as they were;
  then the upgrade to ``postgres:17-alpine`` (the test bed's PostgreSQL 17), the rollback to 15 and the cleanup of
  the volume left behind.
- the legacy layout (Redis) with the test bed's override setting the database image: the image is changed in the
  override, the volume in authentik's file. First an upgrade to an image whose ``psql`` fails (built here from the
  17 image): it is undone (files, database, volumes as before); then the upgrade to 17.
Every run is a real ``ansible-playbook`` subprocess. Equality is checked with the test bed's own per-table checksums,
independently of the collection's proof.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from testbed import ansible_run, paths, proof, stacks
from testbed._docker import docker, inspect

REPO = paths.REPO_ROOT
UPGRADE = REPO / "playbooks" / "upgrade_postgres.yml"
NEW_IMAGE = "docker.io/library/postgres:17-alpine"
BROKEN_IMAGE = "akbt.local/postgres:17-broken-psql"
NOT_CHANGED = "Nothing was changed"


def _stack(project, **kwargs):
    with stacks.lock(project, wait=float(os.environ.get("AKBT_LOCK_WAIT", "1800"))):
        stack = stacks.up(project, **kwargs)
        try:
            yield stack
        finally:
            if os.environ.get("AKBT_KEEP_STACKS") != "1":
                stacks.down(project)
                for suffix in ("database-pg17", "database-pgx"):
                    docker("volume", "rm", "-f", f"{project}_{suffix}", check=False)


@pytest.fixture(scope="module")
def stack_alpine_up(images):  # pylint: disable=unused-argument
    yield from _stack("akbt-pgup" + paths.PROJECT_SUFFIX, layout="current", naming="v2", flavour="alpine")


@pytest.fixture(scope="module")
def stack_legacy_up(images):  # pylint: disable=unused-argument
    yield from _stack("akbt-pgupl" + paths.PROJECT_SUFFIX, layout="legacy", naming="v2")


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    return ansible_run.player(tmp_path_factory.mktemp("pgupgrade"))


def upgrade_vars(stack, dest, **more):
    return dict({"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack.project}, **more)


def db_container(stack):
    """The database container of the project now (Compose recreates it under the same name)."""
    return stacks.container_name(stack.project, "postgresql", stack.naming)


def major(stack):
    out = docker("exec", db_container(stack), "postgres", "-V").stdout.decode()
    return int(out.split(")")[1].split(".")[0])


def checksums(stack):
    return proof.table_checksums(db_container(stack), stack.pg_user, stack.pg_password)


def sequences(stack):
    sql = ("SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ',' "
           "ORDER BY schemaname, sequencename) FROM pg_sequences")
    return {db: stacks.psql(stack, sql, db=db) for db in stack.databases}


def files_state(stack):
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in stack.compose_files}


def started(stack):
    return {c: inspect("container", c)["State"]["StartedAt"] for c in stack.containers.values()}


def running(stack):
    return {service: inspect("container", c)["State"]["Running"] for service, c in stack.containers.items()}


def volume_of(stack):
    return next(m["Name"] for m in inspect("container", db_container(stack))["Mounts"]
                if m["Destination"].startswith("/var/lib/postgresql"))


def assert_refused(run, texts, stack, before):
    out = ansible_run.one_line(run.stdout)
    assert run.rc != 0, run.explain()
    for text in texts + [NOT_CHANGED]:
        assert text in out, f"{text!r} not in the output\n{run.explain()}"
    assert "Stop authentik's server and worker" not in run.stdout
    assert (started(stack), files_state(stack)) == before, "a container was restarted or a file changed"


def test_upgrade_refusals_rollback_and_cleanup(stack_alpine_up, play, tmp_path):
    stack = stack_alpine_up
    dest = tmp_path / "backups"
    data, seqs, files = checksums(stack), sequences(stack), files_state(stack)
    original = {f: Path(f).read_bytes() for f in stack.compose_files}
    old_volume = volume_of(stack)
    assert major(stack) == 15
    before = (started(stack), files)

    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image="akbt.local/postgres:99",
                                     authentik_upgrade_confirm=True))
    assert_refused(run, ["akbt.local/postgres:99 is not on this host and could not be pulled"], stack, before)
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image="docker.io/library/postgres:16-alpine",
                                     authentik_upgrade_confirm=True))
    assert_refused(run, ["runs PostgreSQL 15, which is not newer than the running PostgreSQL 15"], stack, before)
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image=NEW_IMAGE))
    assert_refused(run, ["Run again with -e authentik_upgrade_confirm=true"], stack, before)
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image=NEW_IMAGE,
                                     authentik_upgrade_confirm=True), check=True)
    assert run.rc == 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert "PostgreSQL 15 (docker.io/library/postgres:16-alpine) -> PostgreSQL 17 (docker.io/library/postgres:17-alpine)" in out
    assert "volume database:/var/lib/postgresql/data -> database-pg17:/var/lib/postgresql/data" in out
    assert "Check mode: nothing was changed." in out
    assert (started(stack), files_state(stack)) == before
    assert not dest.exists() or not any(dest.iterdir())

    # the upgrade
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image=NEW_IMAGE,
                                     authentik_upgrade_confirm=True))
    assert run.rc == 0, run.explain()
    assert major(stack) == 17
    assert volume_of(stack) == f"{stack.project}_database-pg17"
    assert checksums(stack) == data and sequences(stack) == seqs
    assert all(running(stack).values()), running(stack)
    compose = Path(stack.compose_files[0])
    text = compose.read_text()
    assert f"image: {NEW_IMAGE}" in text and "- database-pg17:/var/lib/postgresql/data" in text
    copies = sorted(compose.parent.glob(compose.name + ".*.orig"))
    assert len(copies) == 1 and copies[0].read_bytes() == original[str(compose)]
    changed = [(a, b) for a, b in zip(original[str(compose)].decode().splitlines(), text.splitlines()) if a != b]
    assert len(changed) == 2, changed  # the image line and the volume item; the new volume's block is inserted
    assert inspect("volume", old_volume) is not None, "the old volume must be kept"
    sets = [p for p in dest.iterdir() if p.name.startswith("authentik-")]
    manifest = json.loads((sets[0] / "manifest.json").read_text())
    assert len(sets) == 1 and manifest["completed_at"], manifest
    assert {f["part"] for f in manifest["files"]} >= {"postgres", "data", "config"}, "a full set"
    secrets_seen = [s for s in (stack.pg_password, stack.secret_key) if s in run.stdout]
    assert not secrets_seen, "a secret is in the output"

    # rollback: the old image and volume, the data the upgrade began with
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_rollback=True))
    assert run.rc == 0, run.explain()
    assert major(stack) == 15 and volume_of(stack) == old_volume
    assert checksums(stack) == data and sequences(stack) == seqs
    assert all(running(stack).values()), running(stack)
    assert {f: Path(f).read_bytes() for f in stack.compose_files} == original
    assert "proved equal to the data the upgrade began with" in ansible_run.one_line(run.stdout)

    # cleanup removes what the deployment left behind: after the rollback, the new volume
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_cleanup=True), check=True)
    assert run.rc == 0, run.explain()
    assert inspect("volume", f"{stack.project}_database-pg17") is not None
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_cleanup=True))
    assert run.rc == 0, run.explain()
    assert inspect("volume", f"{stack.project}_database-pg17") is None
    assert inspect("volume", old_volume) is not None and checksums(stack) == data


@pytest.fixture(scope="module")
def broken_image(images):  # pylint: disable=unused-argument
    """The test bed's PostgreSQL 17 whose psql fails the restore's load: the upgrade fails after the switch."""
    build = Path(paths.REPO_ROOT / "tests" / "output" / "broken-psql")
    build.mkdir(parents=True, exist_ok=True)
    # the restore's load is the only psql run with -o (the image's entrypoint still creates its database)
    (build / "psql").write_text('#!/bin/sh\nfor a in "$@"; do if [ "$a" = -o ]; then echo "psql is broken" >&2; '
                                'exit 3; fi; done\nexec /usr/lib/postgresql/17/bin/psql.real "$@"\n')
    (build / "Dockerfile").write_text(
        f"FROM {paths.POSTGRES_IMAGES['17']}\n"
        "RUN mv /usr/lib/postgresql/17/bin/psql /usr/lib/postgresql/17/bin/psql.real\n"
        "COPY psql /usr/lib/postgresql/17/bin/psql\n"
        "RUN chmod 755 /usr/lib/postgresql/17/bin/psql\n")
    docker("build", "--network", "none", "-q", "-t", BROKEN_IMAGE, str(build))
    yield BROKEN_IMAGE
    docker("image", "rm", "-f", BROKEN_IMAGE, check=False)


def test_a_failed_upgrade_is_undone_then_the_upgrade_works(stack_legacy_up, broken_image, play, tmp_path):
    stack = stack_legacy_up
    dest = tmp_path / "backups"
    data, seqs = checksums(stack), sequences(stack)
    original = {f: Path(f).read_bytes() for f in stack.compose_files}
    old_volume = volume_of(stack)

    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image=broken_image,
                                     authentik_upgrade_confirm=True, authentik_upgrade_volume="database-pgx"))
    assert run.rc != 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert "It was undone: the compose files are as before, the database runs PostgreSQL 15" in out, run.explain()
    assert major(stack) == 15 and volume_of(stack) == old_volume
    assert inspect("volume", f"{stack.project}_database-pgx") is None, "the failed try's volume must be removed"
    records = Path(stack.workdir) / ".authentik-upgrade-postgres"
    assert not (records / "upgrading.json").exists() and not (records / "state.json").exists()
    assert {f: Path(f).read_bytes() for f in stack.compose_files} == original
    assert checksums(stack) == data and sequences(stack) == seqs
    assert all(running(stack).values()), running(stack)

    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_postgres_image=NEW_IMAGE,
                                     authentik_upgrade_confirm=True))
    assert run.rc == 0, run.explain()
    assert major(stack) == 17 and checksums(stack) == data and sequences(stack) == seqs
    assert all(running(stack).values()), running(stack)
    override = [f for f in stack.compose_files if f != stack.compose_files[0]]
    assert any(NEW_IMAGE in Path(f).read_text() for f in override), "the image is set in the override"
    record = json.loads((records / "state.json").read_text())
    assert record["phase"] == "upgraded" and not (records / "upgrading.json").exists()
    assert (records / "state.json").stat().st_mode & 0o777 == 0o600 and records.stat().st_mode & 0o777 == 0o700
    assert stack.pg_password not in (records / "state.json").read_text()
    assert "database-pg17:/var/lib/postgresql/data" in Path(stack.compose_files[0]).read_text()

    # cleanup after the upgrade removes the old volume; a rollback is then refused, the project left as it runs
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_cleanup=True))
    assert run.rc == 0, run.explain()
    assert inspect("volume", old_volume) is None and volume_of(stack) == f"{stack.project}_database-pg17"
    before = (started(stack), files_state(stack))
    run = play(UPGRADE, upgrade_vars(stack, dest, authentik_upgrade_rollback=True))
    assert_refused(run, ["was removed (authentik_upgrade_cleanup): there is nothing to roll back to"], stack, before)
    assert major(stack) == 17 and checksums(stack) == data
