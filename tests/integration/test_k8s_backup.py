"""playbooks/backup.yml with authentik_backup_platform=kubernetes against both Helm-like stacks.

The API server is tests/testbed/k8s/apiserver.py (real kubernetes client and kubernetes.core modules, real pod exec
WebSocket v4 framing, real PostgreSQL and Redis in containers). NOT a real cluster. Per stack: check mode (writes
nothing) -> real run at -vvv (no secret in the output) -> the set is proven by restoring it into a fresh server and
against the pods' files -> the restore role's round trip on it (test_restore_roundtrip.k8s_round_trip). Then bad
input.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
import tarfile

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

pytest_plugins = ["conftest_k8s"]

from testbed import ansible_run, proof  # noqa: E402  pylint: disable=wrong-import-position
from testbed._docker import docker  # noqa: E402

import test_restore_roundtrip as roundtrip  # noqa: E402  pylint: disable=wrong-import-position

PLAYBOOK = ansible_run.REPO / "playbooks" / "backup.yml"


def playbook(k8s, inventory, dest, *extra, namespace=None, release=None, check=False, verbose=False):
    """playbooks/backup.yml on Kubernetes with ansible's default (text) output; ``extra`` are more extra vars."""
    extra_vars = {"authentik_backup_platform": "kubernetes", "authentik_backup_dest": str(dest),
                  "authentik_backup_k8s_auth": {"kubeconfig": k8s.kubeconfig}}
    if namespace is not None:
        extra_vars["authentik_backup_namespace"] = namespace
    if release is not None:
        extra_vars["authentik_backup_release"] = release
    return ansible_run.run_playbook(inventory, PLAYBOOK, extra_vars, *extra, check=check, verbose=verbose,
                                    callback=ansible_run.TEXT, home=os.path.join(k8s.work, "ansible-home"),
                                    timeout=600)


def secret_values(k8s, stack):
    """Every secret value of the stack: the Secrets' data (decoded) and the passwords it was made with."""
    values = {k8s.stacks[stack]["postgres_password"], k8s.stacks[stack]["secret_key"]}
    namespace = k8s.stacks[stack]["namespace"]
    for secret in k8s.state["secrets"]:
        if secret["namespace"] == namespace and secret.get("type") != "helm.sh/release.v1":
            for key, value in secret["data"].items():
                decoded = base64.b64decode(value).decode()
                if "PASSWORD" in key.upper() or "SECRET" in key.upper():
                    values.add(decoded)
    return {v for v in values if len(v) >= 12}


@pytest.mark.parametrize("stack", ["current", "legacy"])
def test_backup_of_a_helm_release(k8s, inventory, tmp_path, stack):
    spec = k8s.stacks[stack]
    dest = tmp_path / "backups"

    # check mode: discovery and module plans run, nothing is written
    run = playbook(k8s, inventory, dest, namespace=spec["namespace"], release=spec["release"], check=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Check mode: would create the backup set" in run.stdout
    assert not dest.exists()

    # the real run, at -vvv: no secret value in anything it prints
    run = playbook(k8s, inventory, dest, namespace=spec["namespace"], release=spec["release"], verbose=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    output = run.stdout + run.stderr
    leaked = [v[:4] + "..." for v in secret_values(k8s, stack) if v in output]
    assert not leaked, f"secret values in the -vvv output: {leaked}"
    for value in secret_values(k8s, stack):
        assert base64.b64encode(value.encode()).decode() not in output

    latest = dest / "latest"
    assert latest.is_symlink()
    set_dir = dest / os.readlink(latest)
    assert stat.S_IMODE(set_dir.stat().st_mode) == 0o700
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["platform"] == "kubernetes"
    assert manifest["source"]["namespace"] == spec["namespace"]
    assert manifest["source"]["release"] == spec["release"]
    assert manifest["authentik"]["version"] == spec["version"]
    assert manifest["authentik"]["layout"] == spec["layout"]
    assert manifest["authentik"]["image"] == f"ghcr.io/goauthentik/server:{spec['version']}"
    assert manifest["source"]["pods"]["postgresql"]["pod"] == k8s.pod(stack, "postgresql")
    files = {f["part"]: f for f in manifest["files"]}
    data_part = "media" if stack == "legacy" else "data"
    expected = {"postgres", data_part, "templates", "config"} | ({"redis"} if stack == "legacy" else set())
    assert set(files) == expected
    for entry in files.values():
        path = set_dir / entry["name"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["size"]
    # report.json: the run report written after the manifest (tests/integration/test_operations.py)
    assert sorted(os.listdir(set_dir)) == sorted([f["name"] for f in manifest["files"]]
                                                 + ["manifest.json", "report.json"])

    # PostgreSQL: the dump restores to the same per-table checksums
    fresh = proof.restore_dump_into_fresh(str(set_dir / files["postgres"]["name"]))
    try:
        want = proof.table_checksums(k8s.container(stack, "postgresql"), "authentik",
                                     password=spec["postgres_password"])
        assert proof.table_checksums(fresh, proof.PROOF_SUPERUSER) == want
    finally:
        proof.cleanup(fresh)

    # Redis (legacy): the RDB loads with the same keys and values
    if stack == "legacy":
        fresh = proof.load_rdb_into_fresh(str(set_dir / files["redis"]["name"]))
        try:
            want = proof.redis_state(k8s.container(stack, "redis"))
            assert want and proof.redis_state(fresh) == want
        finally:
            proof.cleanup(fresh)

    # files: byte-identical with the pod's directories
    server = k8s.container(stack, "server")
    for part, path in ((data_part, spec["data_path"]), ("templates", "/templates")):
        copy = tmp_path / f"src-{part}"
        docker("cp", f"{server}:{path}", str(copy))
        want = proof.tree_state(copy)
        assert want
        assert proof.tar_state(set_dir / files[part]["name"], path.strip("/")) == want

    # config: the Secrets, as manifests
    secrets = {}
    with proof._open_decompressed(str(set_dir / files["config"]["name"]))[0] as raw:  # pylint: disable=protected-access
        with tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                assert member.mode == 0o600
                secrets[member.name] = yaml.safe_load(tar.extractfile(member).read())
    fullname = spec["release"] if "authentik" in spec["release"] else spec["release"] + "-authentik"
    ns = spec["namespace"]
    assert f"secrets/{ns}/{fullname}.yaml" in secrets, sorted(secrets)
    assert f"secrets/{ns}/{spec['release']}-postgresql.yaml" in secrets
    assert f"secrets/{ns}/sh.helm.release.v1.{spec['release']}.v1.yaml" in secrets
    authentik_secret = secrets[f"secrets/{ns}/{fullname}.yaml"]
    assert authentik_secret["kind"] == "Secret" and "resourceVersion" not in authentik_secret["metadata"]
    assert base64.b64decode(authentik_secret["data"]["AUTHENTIK_SECRET_KEY"]).decode() == spec["secret_key"]
    pg_secret = secrets[f"secrets/{ns}/{spec['release']}-postgresql.yaml"]
    assert base64.b64decode(pg_secret["data"]["password"]).decode() == spec["postgres_password"]

    # the restore role's round trip on this set (test_restore_roundtrip.k8s_round_trip): damage, check, restore
    play = ansible_run.player(tmp_path / "restore-play", inventory=inventory, timeout=600)
    roundtrip.k8s_round_trip(k8s, stack, dest, play, tmp_path)


def test_bad_input_fails_before_any_set_directory(k8s, inventory, tmp_path):
    dest = tmp_path / "backups"
    spec = k8s.stacks["current"]
    run = playbook(k8s, inventory, dest, release=spec["release"])
    assert run.returncode != 0
    assert "needs authentik_backup_namespace" in run.stdout and "is not set" in run.stdout
    assert not dest.exists()

    run = playbook(k8s, inventory, dest, namespace=spec["namespace"], release="akbt-no-such-release")
    assert run.returncode != 0
    assert "No authentik pods of the Helm release akbt-no-such-release" in run.stdout
    assert f"Releases of authentik found in {spec['namespace']}: {spec['release']}" in run.stdout
    assert not dest.exists()

    run = playbook(k8s, inventory, dest, namespace="akbt-k8s-nowhere", release=spec["release"])
    assert run.returncode != 0 and "No authentik pods" in run.stdout and "found in akbt-k8s-nowhere: none" in run.stdout
    assert not dest.exists()

    # a failing part: the incomplete set is removed and latest is not created
    run = playbook(k8s, inventory, dest, "authentik_backup_postgres_user=akbt_no_such_role",
                   namespace=spec["namespace"], release=spec["release"])
    assert run.returncode != 0
    assert "failed in part postgres" in run.stdout and "was removed" in run.stdout
    # only the report of the failed run is left (no set directory, no latest, no lock)
    assert os.listdir(dest) == ["last-failure.json"]
