# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-tests of the test bed's variants: the stacks are brought up by the real Compose CLIs, the Alpine-like stack
runs the names authentik's file uses on a busybox userland with the Alpine uids, and PostgreSQL 17 holds the sample
data (and the backup role dumps it). The backup, verify and restore round trips on the Alpine-like stack are the
``stack_alpine`` cases of test_docker_backup.py and test_restore_roundtrip.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from testbed import ansible_run, paths, proof, stacks
from testbed._docker import docker, inspect
from testbed.ansible_run import run_playbook

BUSYBOX_TOOLS = ("sh", "tar", "stat", "head", "cat", "find", "gzip", "sed")


def _exec(container, *cmd):
    proc = docker("exec", container, *cmd, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def test_compose_clis_are_the_real_ones(stack_current, stack_legacy):
    assert stack_current.compose_version.startswith("2.")
    assert stack_legacy.compose_version.startswith("1.29")
    # Compose v2 knows the projects it created (docker-compose 1.x has no such listing)
    listed = json.loads(docker("compose", "ls", "--all", "--format", "json").stdout)
    by_name = {p["Name"]: p for p in listed}
    assert stack_current.project in by_name
    assert by_name[stack_current.project]["ConfigFiles"] == ",".join(stack_current.compose_files)
    # the override is what Compose needs offline, nothing that changes authentik's services
    spec = yaml.safe_load(Path(stack_current.compose_files[1]).read_text(encoding="utf-8"))
    for service, entry in spec["services"].items():
        assert entry["network_mode"] == "none" and entry["pull_policy"] == "never", service
        assert set(entry) <= {"network_mode", "pull_policy", "image", "healthcheck", "command"}, service
    label = f"label=com.docker.compose.project={stack_current.project}"
    assert not docker("network", "ls", "-q", "--filter", label).stdout.strip(), "Compose created a network"


def test_alpine_stack_runs_the_names_of_authentiks_file(stack_alpine):
    stack = stack_alpine
    assert stack.naming == "v2" and stack.layout == "legacy" and stack.flavour == "alpine"
    assert stack.images == {
        "postgresql": "docker.io/library/postgres:16-alpine",
        "redis": "docker.io/library/redis:alpine",
        "server": f"{paths.UPSTREAM_AUTHENTIK_REPO}:2025.2.4",
        "worker": f"{paths.UPSTREAM_AUTHENTIK_REPO}:2025.2.4",
    }
    spec = yaml.safe_load(Path(stack.compose_files[1]).read_text(encoding="utf-8"))
    assert not any("image" in entry for entry in spec["services"].values()), "the override must not set images"
    # the upstream names are the test bed's images, never someone else's
    for upstream, ours in paths.UPSTREAM_IMAGES.items():
        info = inspect("image", upstream)
        assert info and info["Config"]["Labels"].get("akbt.testbed") == "1", upstream
        assert info["Id"] == inspect("image", ours)["Id"], upstream
    # and the files' own healthchecks passed
    for service in ("postgresql", "redis"):
        health = inspect("container", stack.containers[service])["State"]["Health"]
        assert health["Status"] == "healthy", (service, health["Log"][-1:])


def test_alpine_userland_is_busybox(stack_alpine, stack_current):
    for container in (stack_alpine.pg_container, stack_alpine.redis_container):
        env = dict(e.split("=", 1) for e in inspect("container", container)["Config"]["Env"])
        assert env["PATH"].split(":")[0] == "/usr/local/busybox/bin", container
        for tool in BUSYBOX_TOOLS:
            _rc, out = _exec(container, tool, "--help")
            assert "BusyBox" in out, (container, tool, out[:200])
        rc, out = _exec(container, "sh", "-c", "tar --help 2>&1 | head -n 1; stat -c %u /proc/1")
        assert rc == 0 and out.startswith("BusyBox"), out
    # the Debian stack's tools are GNU's: the check above can tell them apart
    _rc, out = _exec(stack_current.pg_container, "tar", "--help")
    assert "BusyBox" not in out and "GNU" in out


def test_alpine_uids(stack_alpine):
    pg, redis = stack_alpine.pg_container, stack_alpine.redis_container
    assert _exec(pg, "stat", "-c", "%u:%g", "/proc/1") == (0, "70:70\n")
    assert _exec(pg, "stat", "-c", "%u:%g", "/var/lib/postgresql/data/PG_VERSION") == (0, "70:70\n")
    assert _exec(redis, "stat", "-c", "%u", "/proc/1") == (0, "999\n")
    assert _exec(redis, "stat", "-c", "%u", "/data/dump.rdb") == (0, "999\n")
    assert _exec(redis, "id", "-u", "redis") == (0, "999\n") and _exec(pg, "id", "-u", "postgres") == (0, "70\n")


def _inventory(tmp_path):
    return ansible_run.local_inventory(tmp_path / "hosts.yml")


def test_postgres_17_stack_holds_the_sample_data(images, tmp_path):  # pylint: disable=unused-argument
    project = "akbt-pg17" + paths.PROJECT_SUFFIX
    with stacks.lock(project, wait=float(os.environ.get("AKBT_LOCK_WAIT", "1800"))):
        stack = stacks.up(project, layout="current", naming="v2", postgres="17")
        fresh = None
        try:
            assert stack.images["postgresql"] == paths.IMAGE_POSTGRES_17
            version = stacks.psql(stack, "SHOW server_version_num;").strip()
            assert int(version) // 10000 == 17, version
            assert set(stack.databases) >= {"authentik", "akbt_extra", "données ünï-表"}
            count = stacks.psql(stack, "SELECT count(*) FROM public.akbt_blobs;", db="authentik").strip()
            all_bytes = stacks.psql(stack, "SELECT encode(data, 'hex') FROM public.akbt_blobs WHERE id = 1;",
                                    db="authentik").strip()
            assert count == "8" and all_bytes == bytes(range(256)).hex()
            source = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
            assert "ünïcødé_表.tåble ✓ Ω" in source["authentik"]
            # the backup role dumps it; the dump restores into a fresh PostgreSQL 17 to identical tables and roles
            dest = tmp_path / "backups"
            run = run_playbook(
                _inventory(tmp_path),
                paths.REPO_ROOT / "playbooks" / "backup.yml",
                json.dumps({"authentik_backup_dest": str(dest), "authentik_backup_compose_project": project,
                            "authentik_backup_components": ["postgres"]}),
                timeout=600,
            )
            assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
            manifest = json.loads((dest / "latest" / "manifest.json").read_text())
            assert [f["name"] for f in manifest["files"]] == ["postgres.sql.zst"]
            fresh = proof.restore_dump_into_fresh(dest / "latest" / "postgres.sql.zst", image=paths.IMAGE_POSTGRES_17)
            assert proof.table_checksums(fresh, proof.PROOF_SUPERUSER) == source
            assert proof.role_state(fresh, proof.PROOF_SUPERUSER) == proof.role_state(
                stack.pg_container, stack.pg_user, stack.pg_password
            )
        finally:
            if fresh:
                proof.cleanup(fresh)
            stacks.down(project)
