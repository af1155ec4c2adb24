# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Off-host copies: to the controller, to another inventory host and to S3-compatible storage.

The S3 side is moto's standalone server (the real S3 HTTP API) on 127.0.0.1 with a free port, started here; the test
talks to it with boto3, as the module does. The role is run through playbooks/backup.yml against the current stack;
backup_upload also runs on its own against a set holding a file large enough for a multipart upload, and against
objects tampered with in the bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import ansible_run, paths, s3server
from testbed.ansible_run import results_of

REPO = paths.REPO_ROOT
BUCKET = "akbt-en-bucket"
CREDENTIALS = {"access_key": "akbt-en-access", "secret_key": "akbt-en-secret-key-never-logged"}
# the caller's AWS settings are left out of every ansible run: credentials come from the test only
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")


def run_module(module, check_mode=False, **args):
    return ansible_run.run_module(module, check_mode=check_mode, unset=AWS_ENV, **args)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3server.moto_server(tmp_path_factory.mktemp("moto-en"), CREDENTIALS["access_key"],
                              CREDENTIALS["secret_key"]) as (endpoint, client):
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client


def s3_args(endpoint, **extra):
    return dict(bucket=BUCKET, endpoint_url=endpoint, region="us-east-1", **CREDENTIALS, **extra)


def object_sha256(client, key):
    return hashlib.sha256(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()


# --- the role: fetch to the controller, copy to another host, upload --------------------------------------------

@pytest.fixture(scope="module")
def role_run(stack_current, s3, tmp_path_factory):
    endpoint, _client = s3
    base = tmp_path_factory.mktemp("offhost-en")
    inventory = base / "hosts.yml"
    ansible_run.local_inventory(inventory, extra=(
        "peers:\n  hosts:\n    akbt-en-peer:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"))
    dest, controller, peer = base / "backups", base / "controller", base / "peer"
    extra = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack_current.project,
             "authentik_backup_fetch_dest": str(controller), "authentik_backup_copy_to_host": "akbt-en-peer",
             "authentik_backup_copy_to_path": str(peer),
             "authentik_backup_s3": dict(s3_args(endpoint), prefix="role/")}
    proc = ansible_run.run_playbook(inventory, REPO / "playbooks" / "backup.yml", extra, unset=AWS_ENV)
    assert proc.rc == 0, proc.explain()
    set_dir = Path(os.path.realpath(dest / "latest"))
    manifest = json.loads((set_dir / "manifest.json").read_text())
    return dict(proc=proc, set_dir=set_dir, manifest=manifest, controller=controller / "localhost" / set_dir.name,
                peer=peer / "localhost" / set_dir.name)


@pytest.mark.parametrize("where", ["controller", "peer"])
def test_role_copies_are_complete_and_match_the_manifest(role_run, where):
    copy, manifest = role_run[where], role_run["manifest"]
    assert sorted(p.name for p in copy.iterdir()) == sorted([f["name"] for f in manifest["files"]] + ["manifest.json"])
    for entry in manifest["files"]:
        assert sha256(copy / entry["name"]) == entry["sha256"]
        assert (copy / entry["name"]).stat().st_mode & 0o077 == 0
    assert (copy / "manifest.json").read_bytes() == (role_run["set_dir"] / "manifest.json").read_bytes()


def test_role_upload_is_verified_and_secret_not_logged(role_run, s3):
    _endpoint, client = s3
    set_dir, manifest = role_run["set_dir"], role_run["manifest"]
    for entry in manifest["files"]:
        key = f"role/{set_dir.name}/{entry['name']}"
        assert object_sha256(client, key) == entry["sha256"]
        assert client.head_object(Bucket=BUCKET, Key=key)["Metadata"]["sha256"] == entry["sha256"]
    assert object_sha256(client, f"role/{set_dir.name}/manifest.json") == sha256(set_dir / "manifest.json")
    proc = role_run["proc"]
    assert CREDENTIALS["secret_key"] not in proc.stdout + proc.stderr
    shown = [r for n, r in results_of(proc.stdout) if n.endswith("Show the off-host copies")]
    assert shown and "s3://" in shown[-1]["msg"] and "controller" in shown[-1]["msg"]


# --- the module on its own: multipart, idempotence, check mode, tampering -----------------------------------------

@pytest.fixture(scope="module")
def big_set(tmp_path_factory):
    """A complete set written by the collection's own modules: one 12 MiB file (three 5 MiB parts) and a small one."""
    base = tmp_path_factory.mktemp("bigset-en")
    source = base / "source"
    source.mkdir()
    (source / "blob.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    (source / "small.txt").write_text("small\n")
    dest = base / "sets"
    created, _proc = run_module("backup_set", dest=str(dest), prefix="big")
    assert not created.get("failed"), created
    parts = []
    for name, paths_ in (("big.tar", [str(source / "blob.bin")]), ("small.tar.gz", [str(source / "small.txt")])):
        result, _proc = run_module("path_archive", platform="local", paths=paths_, dest=f"{created['path']}/{name}",
                                   compression="none" if name == "big.tar" else "gzip")
        assert not result.get("failed"), result
        parts.append(dict(result, part=name.split(".", maxsplit=1)[0]))
    done, _proc = run_module("backup_set", state="complete", dest=str(dest), prefix="big", name=created["name"],
                             parts=parts)
    assert not done.get("failed"), done
    return Path(created["path"])


def test_multipart_upload_then_idempotent_and_check_mode(big_set, s3):
    endpoint, client = s3
    first, _proc = run_module("backup_upload", path=str(big_set), part_size=5, **s3_args(endpoint, prefix="m/"))
    assert not first.get("failed"), first
    assert first["changed"] and first["uploaded"] == ["big.tar", "small.tar.gz", "manifest.json"]
    assert [o["name"] for o in first["objects"]][-1] == "manifest.json"
    assert client.head_object(Bucket=BUCKET, Key=f"m/{big_set.name}/big.tar")["ETag"].strip('"').endswith("-3")
    assert object_sha256(client, f"m/{big_set.name}/big.tar") == sha256(big_set / "big.tar")

    again, _proc = run_module("backup_upload", path=str(big_set), part_size=5, verify="etag",
                              **s3_args(endpoint, prefix="m/"))
    assert not again.get("failed") and not again["changed"], again
    assert {o["action"] for o in again["objects"]} == {"present"}

    client.delete_object(Bucket=BUCKET, Key=f"m/{big_set.name}/small.tar.gz")
    planned, _proc = run_module("backup_upload", check_mode=True, path=str(big_set), part_size=5,
                                **s3_args(endpoint, prefix="m/"))
    assert planned["changed"] and not planned.get("failed"), planned
    assert {o["name"]: o["action"] for o in planned["objects"]}["small.tar.gz"] == "would upload"
    with pytest.raises(client.exceptions.ClientError):
        client.head_object(Bucket=BUCKET, Key=f"m/{big_set.name}/small.tar.gz")


@pytest.mark.parametrize("how", ["download", "etag"])
def test_tampered_object_is_detected_then_repaired(big_set, s3, how):
    endpoint, client = s3
    prefix = f"t-{how}/"
    first, _proc = run_module("backup_upload", path=str(big_set), part_size=5, **s3_args(endpoint, prefix=prefix))
    assert not first.get("failed"), first
    key = f"{prefix}{big_set.name}/small.tar.gz"
    original = client.get_object(Bucket=BUCKET, Key=key)
    body = bytearray(original["Body"].read())
    body[20] ^= 0xFF  # same size, same metadata: only the content says it is not the backup
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body), Metadata=original["Metadata"])

    checked, _proc = run_module("backup_upload", path=str(big_set), mode="verify", verify=how, part_size=5,
                                **s3_args(endpoint, prefix=prefix))
    assert checked.get("failed") and not checked["changed"]
    assert "small.tar.gz" in checked["msg"] and "does not match the manifest" in checked["msg"]
    assert {o["name"]: o["action"] for o in checked["objects"]}["small.tar.gz"] == "differs"

    repaired, _proc = run_module("backup_upload", path=str(big_set), verify=how, part_size=5,
                                 **s3_args(endpoint, prefix=prefix))
    assert not repaired.get("failed") and repaired["repaired"] == ["small.tar.gz"], repaired
    assert object_sha256(client, key) == sha256(big_set / "small.tar.gz")


def test_missing_manifest_object_fails_verification(big_set, s3):
    endpoint, client = s3
    prefix = "nomanifest/"
    first, _proc = run_module("backup_upload", path=str(big_set), part_size=5, **s3_args(endpoint, prefix=prefix))
    assert not first.get("failed"), first
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}{big_set.name}/manifest.json")
    checked, _proc = run_module("backup_upload", path=str(big_set), mode="verify", part_size=5,
                                **s3_args(endpoint, prefix=prefix))
    assert checked.get("failed") and "manifest.json: not in the bucket" in checked["msg"]


def test_wrong_credentials_fail_clearly(big_set, s3):
    endpoint, _client = s3
    args = s3_args(endpoint, prefix="x/")
    args["bucket"] = "akbt-en-no-such-bucket"
    result, proc = run_module("backup_upload", path=str(big_set), **args)
    assert result.get("failed") and "akbt-en-no-such-bucket" in result["msg"]
    assert CREDENTIALS["secret_key"] not in proc.stdout + proc.stderr


def test_modules_other_than_upload_never_import_boto3():
    code = ("import sys; sys.path.insert(0, sys.argv[1]);\n"
            "import importlib\n"
            "for name in ('postgres_dump', 'redis_dump', 'path_archive', 'backup_set', 'backup_verify',"
            " 'postgres_restore'):\n"
            "    importlib.import_module('ansible_collections.authentik_ops.backup.plugins.modules.' + name)\n"
            "print('boto3' in sys.modules or 'botocore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / ".collections")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
