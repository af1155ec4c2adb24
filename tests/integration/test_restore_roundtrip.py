# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/restore.yml (role authentik_ops.backup.restore): the round trips of both platforms, and the refusals.

The round trips (``docker_round_trip``, ``k8s_round_trip``) run on the backups that test_docker_backup.py (Docker
Compose current + legacy + legacy on the busybox images) and test_k8s_backup.py (Helm-like current + legacy behind
the test API server) make of each deployment with playbooks/backup.yml: damage the deployment (drop the authentik
database, drop a table, delete, alter and add files in the mounted directories, flush Redis), check mode (prints
the plan, changes nothing), restore with ``-e authentik_restore_confirm=true``, and prove the data equals the
original: per-table row checksums, file trees, Redis keys and values; server and worker run again. Here: the
refusals on the Docker current stack, each before anything is stopped: a set with a corrupted byte, a missing file
and a truncated dump, a set from a newer release, no confirmation.
Every run is a real ``ansible-playbook`` subprocess. The Kubernetes API is tests/testbed/k8s/apiserver.py, NOT a
real cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

pytest_plugins = ["conftest_k8s"]

from testbed import ansible_run, paths, proof  # noqa: E402  pylint: disable=wrong-import-position
from testbed._docker import docker  # noqa: E402  pylint: disable=wrong-import-position

REPO = paths.REPO_ROOT
BACKUP = REPO / "playbooks" / "backup.yml"
RESTORE = REPO / "playbooks" / "restore.yml"
NOT_CHANGED = "Nothing was stopped or changed"


# --- running the playbooks ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def play(inventory, tmp_path_factory):
    """Run a playbook with ansible's default (text) output, as a user sees it."""
    return ansible_run.player(tmp_path_factory.mktemp("restore-ansible"), inventory=inventory, timeout=600)


def started_at(container):
    state = json.loads(docker("inspect", container).stdout)[0]["State"]
    return state["Running"], state["StartedAt"]


# --- Docker ------------------------------------------------------------------------------------------------------

def docker_vars(stack, dest, **more):
    return dict({"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack.project}, **more)


def docker_dirs(stack):
    """{container path: host dir} of the bind-mounted directories of server and worker."""
    dirs = {}
    for service in ("server", "worker"):
        for path, host in stack.mounts[service].items():
            if path in ("/data", "/media", "/templates", "/certs"):
                dirs.setdefault(path, host)
    return dirs


def docker_state(stack):
    state = {"db": proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password),
             "files": {path: proof.tree_state(host) for path, host in docker_dirs(stack).items()}}
    if stack.has_redis:
        state["redis"] = proof.redis_state(stack.redis_container, password=stack.redis_password)
    return state


def damage_tree(root):
    """Delete one file, alter another, add a stray file (and a stray directory) under ``root``."""
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())
    assert len(files) >= 2, f"{root} has too few files to damage"
    files[0].unlink()
    with open(files[-1], "ab") as fh:
        fh.write(b"\nakbt damage\n")
    (Path(root) / "akbt-stray-dir").mkdir()
    (Path(root) / "akbt-stray-dir" / "stray.txt").write_text("not in the backup")
    (Path(root) / "akbt-stray.bin").write_bytes(os.urandom(64))
    # as if authentik had written them: owned like the directory (the container's user must be able to delete them)
    owner = os.stat(root)
    for stray in ("akbt-stray-dir", "akbt-stray-dir/stray.txt", "akbt-stray.bin"):
        os.chown(Path(root) / stray, owner.st_uid, owner.st_gid)


def damage_docker(stack):
    from testbed import stacks  # pylint: disable=import-outside-toplevel

    stacks.psql(stack, "DROP DATABASE authentik;")
    other = [db for db in stack.databases if db != "authentik"]
    if other:
        tables = stacks.psql(stack, "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                                    "WHERE schemaname = 'public' ORDER BY 1 LIMIT 1;", db=other[0]).strip()
        if tables:
            stacks.psql(stack, f"DROP TABLE {tables} CASCADE;", db=other[0])
    for host in docker_dirs(stack).values():
        damage_tree(host)
    if stack.has_redis:
        docker("exec", stack.redis_container, "redis-cli", "FLUSHALL")


def docker_round_trip(stack, dest, play):
    """The restore half of a Docker round trip: ``dest`` holds a fresh backup of ``stack`` (made by the caller, with
    nothing changed since; test_docker_backup.py runs this on each stack's first backup)."""
    original = docker_state(stack)
    assert original["db"].get("authentik") and all(original["files"].values())
    env_before = Path(stack.env_file).read_bytes()

    damage_docker(stack)
    # the current stack restores without config: its .env must stay as it is now; the legacy one restores it
    with_config = stack.layout == "legacy"
    Path(stack.env_file).write_bytes(env_before + b"# akbt: changed after the backup\n")
    damaged = docker_state(stack)
    assert damaged != original
    components = ["postgres", "redis", "files"] + (["config"] if with_config else [])
    try:
        # check mode: the plan, nothing changed, nothing stopped
        before = {c: started_at(c) for c in (stack.containers["server"], stack.containers["worker"])}
        run = play(RESTORE, docker_vars(stack, dest, authentik_restore_components=components), check=True)
        assert run.rc == 0, run.explain()
        out = ansible_run.one_line(run.stdout)
        assert "Check mode: nothing is changed. The restore would do this:" in out
        assert f"stops: containers {stack.containers['server']}, {stack.containers['worker']}" in out
        assert f"restores postgres.sql.zst into the database {stack.pg_container}" in out
        assert docker_state(stack) == damaged
        assert {c: started_at(c) for c in before} == before

        run = play(RESTORE, docker_vars(stack, dest, authentik_restore_confirm=True,
                                        authentik_restore_components=components))
        assert run.rc == 0, run.explain()
        assert docker_state(stack) == original
        for container in (stack.containers["server"], stack.containers["worker"]):
            running, since = started_at(container)
            assert running and since != before[container][1], f"{container} was not stopped and started again"
        baks = sorted(Path(stack.env_file).parent.glob(".env.bak-*"))
        if with_config:
            assert Path(stack.env_file).read_bytes() == env_before
            assert baks and baks[-1].read_bytes().endswith(b"# akbt: changed after the backup\n")
        else:
            assert Path(stack.env_file).read_bytes().endswith(b"# akbt: changed after the backup\n")
            assert not baks
    finally:
        Path(stack.env_file).write_bytes(env_before)
        for bak in Path(stack.env_file).parent.glob("*.bak-*"):
            bak.unlink()


# --- refusals (Docker current) ------------------------------------------------------------------------------------

def rewrite_entry(set_dir, name, data):
    """Replace a file of a set and make its manifest entry match, so only the format check can catch it."""
    (set_dir / name).write_bytes(data)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == name:
            entry["size"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    (set_dir / "manifest.json").write_text(json.dumps(manifest))


def test_refusals_change_nothing(stack_current, play, tmp_path):
    stack = stack_current
    dest = tmp_path / "backups"
    run = play(BACKUP, docker_vars(stack, dest))
    assert run.rc == 0, run.explain()
    good = Path(os.path.realpath(dest / "latest"))
    # a change after the backup: a refused restore must leave it in place
    stray = Path(docker_dirs(stack)["/data"]) / "akbt-after-backup.txt"
    stray.write_text("written after the backup")
    try:
        state = docker_state(stack)
        watched = (stack.containers["server"], stack.containers["worker"], stack.pg_container)
        before = {c: started_at(c) for c in watched}

        def variant(name):
            path = tmp_path / name
            shutil.copytree(good, path)
            return path

        # one set with three faults (verification names every problem it finds): a flipped byte in an archive, a
        # missing archive, a dump cut short whose manifest entry was made to match
        damaged = variant("damaged")
        with open(damaged / "data.tar.zst", "r+b") as fh:
            fh.seek(os.path.getsize(damaged / "data.tar.zst") // 2)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
        (damaged / "templates.tar.zst").unlink()
        with open(damaged / "postgres.sql.zst", "rb") as fh:
            sql = zstandard.ZstdDecompressor().stream_reader(fh).read()
        rewrite_entry(damaged, "postgres.sql.zst", zstandard.ZstdCompressor().compress(sql[: len(sql) * 2 // 3]))
        version = variant("version")
        manifest = json.loads((version / "manifest.json").read_text())
        manifest["authentik"]["version"] = "2026.5.1"
        (version / "manifest.json").write_text(json.dumps(manifest))

        cases = [
            (damaged, True, ["failed verification", "data.tar.zst: sha256", "templates.tar.zst",
                             "postgres.sql.zst"]),
            (version, True, ["was made from authentik 2026.5.1", "newer than the authentik 2026.2.2",
                             "no downgrades", "authentik_restore_force_version"]),
            (good, False, ["Not restoring without authentik_restore_confirm=true", "stops: containers",
                           "restores data.tar.zst into /data of"]),
        ]
        for set_dir, confirm, expected in cases:
            run = play(RESTORE, docker_vars(stack, dest, authentik_restore_from=str(set_dir),
                                            authentik_restore_confirm=confirm))
            assert run.rc != 0, run.explain()
            out = ansible_run.one_line(run.stdout)
            for text in expected + [NOT_CHANGED]:
                assert text in out, f"{set_dir.name}: {text!r} not in the output\n{run.explain()}"
            assert "Stop authentik's server and worker" not in run.stdout, set_dir.name
            assert {c: started_at(c) for c in watched} == before, f"{set_dir.name}: a container was restarted"
        assert docker_state(stack) == state
        assert stray.exists()
    finally:
        stray.unlink(missing_ok=True)


# --- Kubernetes --------------------------------------------------------------------------------------------------

def k8s_vars(k8s, stack, dest, **more):
    spec = k8s.stacks[stack]
    return dict({"authentik_backup_platform": "kubernetes", "authentik_backup_dest": str(dest),
                 "authentik_backup_namespace": spec["namespace"], "authentik_backup_release": spec["release"],
                 "authentik_backup_k8s_auth": {"kubeconfig": k8s.kubeconfig}}, **more)


def k8s_psql(k8s, stack, sql, db="postgres"):
    container = k8s.container(stack, "postgresql")
    return docker("exec", "-i", "-e", "PGPASSWORD", container, "psql", "-X", "-q", "-A", "-t", "-v",
                  "ON_ERROR_STOP=1", "-U", "authentik", "-d", db, input=sql.encode(),
                  env={"PGPASSWORD": k8s.stacks[stack]["postgres_password"]}).stdout.decode()


def k8s_state(k8s, stack, work):
    spec = k8s.stacks[stack]
    state = {"db": proof.table_checksums(k8s.container(stack, "postgresql"), "authentik",
                                         password=spec["postgres_password"]), "files": {}}
    server = k8s.container(stack, "server")
    for path in (spec["data_path"], "/templates"):
        copy = Path(work) / f"copy-{len(list(Path(work).iterdir()))}"
        docker("cp", f"{server}:{path}", str(copy))
        state["files"][path] = proof.tree_state(copy)
    if spec["layout"] == "legacy":
        state["redis"] = proof.redis_state(k8s.container(stack, "redis"))
    return state


def damage_k8s(k8s, stack):
    spec = k8s.stacks[stack]
    k8s_psql(k8s, stack, "DROP DATABASE authentik;")
    server = k8s.container(stack, "server")
    for path in (spec["data_path"], "/templates"):
        docker("exec", server, "sh", "-c",
               'set -e; f=$(find "$1" -type f | sort); first=$(echo "$f" | head -n1); last=$(echo "$f" | tail -n1); '
               'rm -f "$first"; echo akbt-damage >> "$last"; mkdir -p "$1/akbt-stray-dir"; '
               'echo stray > "$1/akbt-stray-dir/stray.txt"; echo stray > "$1/akbt-stray.txt"', "sh", path)
    if spec["layout"] == "legacy":
        docker("exec", k8s.container(stack, "redis"), "redis-cli", "FLUSHALL")


def k8s_round_trip(k8s, stack, dest, play, tmp_path):
    """The restore half of a Kubernetes round trip: ``dest`` holds a fresh backup of the release ``stack`` (made by
    the caller, with nothing changed since; test_k8s_backup.py runs this on each release's backup)."""
    spec = k8s.stacks[stack]
    work = tmp_path / "copies"
    work.mkdir()
    original = k8s_state(k8s, stack, work)
    assert original["db"].get("authentik") and all(original["files"].values())
    if stack == "legacy":
        assert original["redis"]

    if stack == "legacy":
        # the test API server has no kubelet: Docker's restart policy stands in for it restarting Redis after
        # redis_restore's SHUTDOWN NOSAVE (as in test_restore_modules.py)
        docker("update", "--restart", "always", k8s.container(stack, "redis"))
    damage_k8s(k8s, stack)
    damaged = k8s_state(k8s, stack, work)
    assert damaged != original

    run = play(RESTORE, k8s_vars(k8s, stack, dest), check=True)
    assert run.rc == 0, run.explain()
    out = ansible_run.one_line(run.stdout)
    assert "Check mode: nothing is changed." in out
    assert "stops: scales Deployment" in out and "to 0 replicas" in out
    assert "skips config: not in authentik_restore_components" in out
    assert k8s_state(k8s, stack, work) == damaged

    run = play(RESTORE, k8s_vars(k8s, stack, dest, authentik_restore_confirm=True))
    assert run.rc == 0, run.explain()
    assert k8s_state(k8s, stack, work) == original
    for component in ("server", "worker"):
        running, _since = started_at(k8s.container(stack, component))
        assert running, f"{component} of {spec['release']} does not run after the restore"
    if stack == "legacy":
        assert "Redis restarts: SHUTDOWN NOSAVE" in ansible_run.one_line(run.stdout)
