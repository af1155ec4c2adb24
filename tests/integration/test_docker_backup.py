# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/backup.yml (role authentik_ops.backup.backup, Docker flavour) against the test bed stacks.

Order per stack: check mode (writes nothing) -> real run (complete set, proven by restoring it) -> second run
(a second set, latest moves). Then failure cases on the current stack, each leaving no set and latest unchanged,
and the discovery cases. Every run is a real `ansible-playbook` subprocess against localhost.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from testbed import ansible_run, paths, proof, stacks
from testbed._docker import docker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_restore_roundtrip as roundtrip  # noqa: E402  pylint: disable=wrong-import-position

REPO = paths.REPO_ROOT
PLAYBOOK = REPO / "playbooks" / "backup.yml"
STACK_FIXTURES = ["stack_current", "stack_legacy", "stack_alpine"]


# --- running the playbook ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_backup(inventory):
    def run(dest, project=None, *extra, check=False, verbose=False, timeout=300):
        project_vars = [f"authentik_backup_compose_project={project}"] if project else []
        return ansible_run.run_playbook(inventory, PLAYBOOK, f"authentik_backup_dest={dest}", *project_vars, *extra,
                                        check=check, verbose=verbose, timeout=timeout)

    return run


def backup_result(run):
    """The role's result for the caller (the fact authentik_backup_result), or None."""
    return run.fact("authentik_backup_result")


# --- helpers ---------------------------------------------------------------------------------------------------

def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sets_of(dest):
    dest = Path(dest)
    if not dest.exists():
        return []
    return sorted(p.name for p in dest.iterdir() if p.is_dir() and not p.is_symlink())


def latest_of(dest):
    link = Path(dest) / "latest"
    return os.readlink(link) if link.is_symlink() else None


def files_parts(stack):
    """(file name, container path, host dir) of every directory archive expected for the stack."""
    app = "data" if stack.layout == "current" else "media"
    return [(f"{app}.tar.zst", f"/{app}", stack.mounts["server"][f"/{app}"]),
            ("templates.tar.zst", "/templates", stack.mounts["server"]["/templates"]),
            ("certs.tar.zst", "/certs", stack.mounts["worker"]["/certs"])]


def expected_files(stack):
    names = ["postgres.sql.zst"] + (["redis.rdb"] if stack.has_redis else [])
    return names + [name for name, _c, _h in files_parts(stack)] + ["config.tar.zst"]


# --- per stack: check mode, real run, proofs, second run -------------------------------------------------------

@pytest.fixture(scope="module", params=STACK_FIXTURES)
def stack(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def first_backup(stack, run_backup, tmp_path_factory):
    """The first real backup of the stack: (dest, run, set dir)."""
    dest = tmp_path_factory.mktemp(f"dest-{stack.project}") / "backups"
    run = run_backup(dest, stack.project)
    assert run.rc == 0, run.explain()
    return dest, run, Path(backup_result(run)["path"])


def test_check_mode_writes_nothing_and_reports_plan(stack, run_backup, tmp_path):
    dest = tmp_path / "backups"
    run = run_backup(dest, stack.project, check=True)
    assert run.rc == 0, run.explain()
    assert not dest.exists(), "check mode created the destination"
    summary = "\n".join(run.msg("Summary"))
    assert "Check mode: would create the backup set" in summary
    for name in expected_files(stack):
        assert f"  {name}  from " in summary, summary
    if not stack.has_redis:
        assert "skipped redis: no redis service" in summary
    assert backup_result(run)["check_mode"] is True and backup_result(run)["manifest"] is None


def test_backup_set_is_complete(stack, first_backup):
    dest, run, set_dir = first_backup
    assert set_dir.parent == dest
    assert stat.S_IMODE(set_dir.stat().st_mode) == 0o700
    assert latest_of(dest) == set_dir.name
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest == backup_result(run)["manifest"]
    assert [f["name"] for f in manifest["files"]] == expected_files(stack)
    # report.json: the run report the role writes after the manifest (tests/integration/test_operations.py)
    assert sorted(p.name for p in set_dir.iterdir()) == sorted(expected_files(stack) + ["manifest.json", "report.json"])
    for entry in manifest["files"]:
        path = set_dir / entry["name"]
        assert path.stat().st_size == entry["size"]
        assert sha256(path) == entry["sha256"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((set_dir / "manifest.json").stat().st_mode) == 0o600
    # the database part went through the dump helper (password-only TCP logins in the test bed image), and the
    # helper container is gone
    postgres = [f for f in manifest["files"] if f["part"] == "postgres"][0]
    assert postgres["details"]["method"] == "helper", postgres["details"]
    helpers = docker("ps", "-a", "--format", "{{.Names}}", "--filter", "label=io.authentik-ops.backup.helper")
    assert f"{stack.pg_container}-pgdump-" not in helpers.stdout.decode()
    assert manifest["platform"] == "docker"
    assert manifest["authentik"]["version"] == stack.versions["authentik"]
    assert manifest["authentik"]["layout"] == stack.layout
    assert manifest["authentik"]["image"] == stack.images["server"]
    source = manifest["source"]
    assert source["compose_project"] == stack.project
    assert source["working_dir"] == stack.workdir
    assert source["config_files"] == stack.compose_files  # authentik's file and the override
    assert {svc: c["name"] for svc, c in source["containers"].items()} == stack.containers
    assert {svc: c["image"] for svc, c in source["containers"].items()} == stack.images
    skipped = {s["part"] for s in manifest["skipped"]}
    assert skipped == ({"data", "blueprints"} if stack.has_redis else {"redis", "media", "blueprints"})
    summary = "\n".join(run.msg("Summary"))
    assert f"Backup set {set_dir} is complete (latest)" in summary
    for name in expected_files(stack):
        assert f"  {name}  " in summary


def test_sql_dump_restores_to_identical_tables(stack, first_backup):
    _dest, _run, set_dir = first_backup
    fresh = proof.restore_dump_into_fresh(set_dir / "postgres.sql.zst")
    try:
        restored = proof.table_checksums(fresh, proof.PROOF_SUPERUSER)
    finally:
        proof.cleanup(fresh)
    source = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
    assert source and all(source.values())
    assert restored == source


def test_redis_rdb_loads_to_identical_state(stack, first_backup):
    if not stack.has_redis:
        pytest.skip("the current layout has no Redis")
    _dest, _run, set_dir = first_backup
    fresh = proof.load_rdb_into_fresh(set_dir / "redis.rdb")
    try:
        restored = proof.redis_state(fresh)
    finally:
        proof.cleanup(fresh)
    source = proof.redis_state(stack.redis_container, password=stack.redis_password)
    assert source
    assert restored == source


def test_archives_match_the_bind_mounts(stack, first_backup):
    _dest, _run, set_dir = first_backup
    for name, container_path, host_dir in files_parts(stack):
        source = proof.tree_state(host_dir)
        assert source, f"{host_dir} is empty"
        assert proof.tar_state(set_dir / name, strip_prefix=container_path.strip("/")) == source, name
    # the sample data has what breaks naive copies: check they are really there (and so compared above)
    app_state = proof.tree_state(files_parts(stack)[0][2])
    assert any(v[0] == "link" for v in app_state.values())
    assert any(v[0] == "dir" and not any(k.startswith(p + "/") for k in app_state) for p, v in app_state.items())
    assert any(not p.isascii() for p in app_state)


def test_config_archive_holds_env_and_compose_file(stack, first_backup):
    _dest, _run, set_dir = first_backup
    import zstandard  # pylint: disable=import-outside-toplevel

    with open(set_dir / "config.tar.zst", "rb") as raw, \
            zstandard.ZstdDecompressor().stream_reader(raw) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert contents == {path.lstrip("/"): Path(path).read_bytes() for path in [stack.env_file] + stack.compose_files}
    assert b"AUTHENTIK_SECRET_KEY=" in contents[stack.env_file.lstrip("/")]


def test_first_backup_restores_over_a_damaged_deployment(stack, first_backup, tmp_path_factory):
    """The round trip of the restore role on this backup (test_restore_roundtrip.docker_round_trip): damage, check
    mode, restore, data equal to what was backed up. Last of the per-stack tests: it changes the deployment."""
    dest, _run, _set_dir = first_backup
    play = ansible_run.player(tmp_path_factory.mktemp(f"restore-{stack.project}"), timeout=600)
    roundtrip.docker_round_trip(stack, dest, play)


def test_second_run_makes_a_new_set_and_moves_latest(stack_current, current_dest, run_backup):
    # the sets and latest do not depend on the layout: the current stack's destination only
    dest = current_dest
    set_dir = Path(current_dest) / latest_of(current_dest)
    run = run_backup(dest, stack_current.project)
    assert run.rc == 0, run.explain()
    second = Path(backup_result(run)["path"])
    assert second != set_dir and second.parent == dest
    assert latest_of(dest) == second.name
    assert (set_dir / "manifest.json").is_file() and (second / "manifest.json").is_file()
    assert set(sets_of(dest)) >= {set_dir.name, second.name}


def test_postgres_method_exec_is_passed_by_the_role(stack_current, run_backup, tmp_path):
    dest = tmp_path / "backups"
    run = run_backup(dest, stack_current.project, "authentik_backup_postgres_method=exec")
    assert run.rc == 0, run.explain()
    manifest = json.loads((Path(backup_result(run)["path"]) / "manifest.json").read_text())
    postgres = [f for f in manifest["files"] if f["part"] == "postgres"][0]
    assert postgres["details"]["method"] == "exec" and postgres["details"]["method_note"] == ""
    bad = run_backup(tmp_path / "bad", stack_current.project, "authentik_backup_postgres_method=tcp")
    assert bad.rc != 0 and "authentik_backup_postgres_method" in bad.failure(), bad.explain()
    assert not (tmp_path / "bad").exists()


# --- failures (current stack) ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def current_dest(stack_current, run_backup, tmp_path_factory):
    """A destination holding one complete set of the current stack."""
    dest = tmp_path_factory.mktemp("dest-failures") / "backups"
    run = run_backup(dest, stack_current.project)
    assert run.rc == 0, run.explain()
    return dest


def test_stopped_database_fails_before_creating_a_set(stack_current, current_dest, run_backup):
    before, latest = sets_of(current_dest), latest_of(current_dest)
    docker("stop", "-t", "5", stack_current.pg_container)
    try:
        run = run_backup(current_dest, stack_current.project)
    finally:
        docker("start", stack_current.pg_container)
        stacks.wait_postgres(stack_current)
    assert run.rc != 0, run.explain()
    assert stack_current.pg_container in run.failure() and "exited" in run.failure(), run.failure()
    assert sets_of(current_dest) == before
    assert latest_of(current_dest) == latest


def test_pg_dumpall_failure_removes_the_set(stack_current, current_dest, run_backup):
    before, latest = sets_of(current_dest), latest_of(current_dest)
    role, password = "akbt_not_super", "akbt-not-super-pw"
    stacks.psql(stack_current, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password}';")
    try:
        run = run_backup(current_dest, stack_current.project, f"authentik_backup_postgres_user={role}",
                         f"authentik_backup_postgres_password={password}")
    finally:
        stacks.psql(stack_current, f"DROP ROLE IF EXISTS {role};")
    assert run.rc != 0, run.explain()
    message = run.failure()
    assert "failed in part postgres" in message, message
    assert "pg_dumpall exited with status 1" in message and "permission denied" in message, message
    assert "was removed; latest was not moved" in message
    assert password not in run.proc.stdout
    assert sets_of(current_dest) == before
    assert latest_of(current_dest) == latest
    assert not list(Path(current_dest).glob("*/.*partial*"))


def test_explicit_password_is_in_no_output_of_a_verbose_run(stack_current, current_dest, run_backup):
    """A real backup at -vvv with an explicit database password and secure logging (the default): the password
    shows nowhere in what ansible-playbook prints, and the dump used it (a TCP login that needs it)."""
    role, password = "akbt_vvv_su", "akbt-vvv-" + os.urandom(12).hex()
    stacks.psql(stack_current, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} SUPERUSER LOGIN PASSWORD '{password}';")
    try:
        run = run_backup(current_dest, stack_current.project, f"authentik_backup_postgres_user={role}",
                         f"authentik_backup_postgres_password={password}", verbose=True)
    finally:
        stacks.psql(stack_current, f"DROP ROLE IF EXISTS {role};")
    assert run.rc == 0, run.explain()
    assert password not in run.proc.stdout and password not in run.proc.stderr
    manifest = json.loads((Path(current_dest) / latest_of(current_dest) / "manifest.json").read_text())
    assert password not in json.dumps(manifest)


# --- discovery ----------------------------------------------------------------------------------------------------

def test_two_authentik_projects_and_none_chosen_fails(stack_current, stack_legacy, run_backup, tmp_path):
    # The pattern keeps other akbt stacks that may share this engine out of the candidates.
    pattern = f"^({stack_current.project}|{stack_legacy.project})$"
    run = run_backup(tmp_path / "backups", None, f"authentik_backup_compose_project_pattern={pattern}")
    assert run.rc != 0, run.explain()
    assert f"2 Docker Compose projects on localhost run authentik: {stack_current.project}, " \
           f"{stack_legacy.project}" in run.failure(), run.failure()
    assert "authentik_backup_compose_project" in run.failure()
    assert not (tmp_path / "backups").exists()


def test_single_authentik_project_is_discovered(stack_current, stack_legacy, run_backup, tmp_path):
    # stack_legacy is up too: only the pattern makes the current stack the single candidate.
    dest = tmp_path / "backups"
    run = run_backup(dest, None, f"authentik_backup_compose_project_pattern=^{stack_current.project}$",
                     '{"authentik_backup_components": ["postgres"]}')
    assert run.rc == 0, run.explain()
    manifest = backup_result(run)["manifest"]
    assert manifest["source"]["compose_project"] == stack_current.project
    assert [f["name"] for f in manifest["files"]] == ["postgres.sql.zst"]
    assert {s["part"] for s in manifest["skipped"]} == {"redis", "files", "config"}
    assert latest_of(dest) == manifest["set"]


def test_unknown_project_fails_listing_candidates(stack_current, run_backup, tmp_path):
    run = run_backup(tmp_path / "backups", "akbt-no-such-project")
    assert run.rc != 0, run.explain()
    assert "there is no such Compose project" in run.failure()
    assert stack_current.project in run.failure()


def test_no_authentik_project_fails_listing_projects(stack_current, run_backup, tmp_path):
    run = run_backup(tmp_path / "backups", None, "authentik_backup_compose_project_pattern=^akbt-none-such$")
    assert run.rc != 0, run.explain()
    assert "No Docker Compose project on localhost runs authentik" in run.failure()
    assert stack_current.project in run.failure()  # listed among the projects found
