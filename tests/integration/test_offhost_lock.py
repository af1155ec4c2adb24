# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Copies nobody can delete: backup_upload under S3 Object Lock, buckets refused without versioning or object lock,
and the keep rules applied to the sets in a bucket, which never remove an object under lock.

The S3 side is moto's standalone server on 127.0.0.1 (tests/testbed/s3server.py): real S3 HTTP requests, versioned
buckets, object lock with retention and legal holds, refused deletions of locked versions. Sets are written by the
collection's own modules; the role runs through playbooks/backup.yml against the current stack.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import pytest

from testbed import ansible_run, paths
from testbed.s3server import moto_server

REPO = paths.REPO_ROOT
CREDENTIALS = {"access_key": "akbt-b5-access", "secret_key": "akbt-b5-secret-never-logged"}
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")
LOCKED = "akbt-b5-locked"        # versioned, object lock enabled
VERSIONED = "akbt-b5-versioned"  # versioned, no object lock
PLAIN = "akbt-b5-plain"          # neither


def run_module(module, check_mode=False, **args):
    return ansible_run.run_module(module, check_mode=check_mode, unset=AWS_ENV, **args)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto-b5"), **CREDENTIALS) as (endpoint, client):
        client.create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True)
        client.create_bucket(Bucket=VERSIONED)
        client.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
        client.create_bucket(Bucket=PLAIN)
        yield endpoint, client


def s3_args(endpoint, bucket, **extra):
    return dict(bucket=bucket, endpoint_url=endpoint, region="us-east-1", **CREDENTIALS, **extra)


def keys(client, bucket, prefix):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def versions(client, bucket, prefix):
    answer = client.list_object_versions(Bucket=bucket, Prefix=prefix)
    return answer.get("Versions", []) + answer.get("DeleteMarkers", [])


@pytest.fixture(scope="module")
def local_set(tmp_path_factory):
    """A complete set written by the collection's modules: a 11 MiB file (multipart with 5 MiB parts), a small one."""
    base = tmp_path_factory.mktemp("lockset-b5")
    source = base / "source"
    source.mkdir()
    (source / "blob.bin").write_bytes(os.urandom(11 * 1024 * 1024))
    (source / "small.txt").write_text("small\n")
    dest = base / "sets"
    created, _proc = run_module("backup_set", dest=str(dest))
    assert not created.get("failed"), created
    parts = []
    archives = (("big.tar", [source / "blob.bin"], "none"), ("small.tar.gz", [source / "small.txt"], "gzip"))
    for name, files, codec in archives:
        result, _proc = run_module("path_archive", platform="local", paths=[str(f) for f in files],
                                   dest=f"{created['path']}/{name}", compression=codec)
        assert not result.get("failed"), result
        parts.append(dict(result, part=name.split(".", maxsplit=1)[0]))
    done, _proc = run_module("backup_set", state="complete", dest=str(dest), name=created["name"], parts=parts)
    assert not done.get("failed"), done
    return Path(created["path"])


def copy_as(local_set, name):
    """The set under another set name (a copy of its directory), as a later or earlier run would have left it."""
    target = local_set.parent / name
    if not target.exists():
        shutil.copytree(local_set, target)
    return target


# --- the bucket must give the protection asked for -----------------------------------------------------------------

def test_bucket_without_versioning_is_refused_before_anything_is_uploaded(s3, local_set):
    endpoint, client = s3
    result, proc = run_module("backup_upload", path=str(local_set), part_size=5,
                              **s3_args(endpoint, PLAIN, prefix="refused/", require_versioning=True))
    assert result.get("failed"), result
    assert f"bucket '{PLAIN}' has versioning never enabled" in result["msg"] and "Nothing was uploaded" in result["msg"]
    assert keys(client, PLAIN, "refused/") == []
    assert CREDENTIALS["secret_key"] not in proc.stdout + proc.stderr


@pytest.mark.parametrize("ask", [dict(object_lock_mode="GOVERNANCE", object_lock_days=1),
                                 dict(require_object_lock=True)])
def test_bucket_without_object_lock_is_refused(s3, local_set, ask):
    endpoint, client = s3
    result, _proc = run_module("backup_upload", path=str(local_set), part_size=5,
                               **s3_args(endpoint, VERSIONED, prefix="nolock/", require_versioning=True, **ask))
    assert result.get("failed"), result
    assert f"bucket '{VERSIONED}' has no object lock" in result["msg"], result["msg"]
    assert result["bucket_protection"]["versioning"] == "Enabled" and result["bucket_protection"]["object_lock"] is False
    assert keys(client, VERSIONED, "nolock/") == []


# --- uploads under object lock -----------------------------------------------------------------------------------

def test_upload_under_compliance_lock_cannot_be_deleted(s3, local_set):
    endpoint, client = s3
    args = s3_args(endpoint, LOCKED, prefix="worm/", object_lock_mode="COMPLIANCE", object_lock_days=2,
                   require_versioning=True)
    planned, _proc = run_module("backup_upload", check_mode=True, path=str(local_set), part_size=5, **args)
    assert planned["changed"] and not planned.get("failed"), planned
    assert keys(client, LOCKED, "worm/") == []

    first, _proc = run_module("backup_upload", path=str(local_set), part_size=5, **args)
    assert not first.get("failed"), first
    assert first["uploaded"] == ["big.tar", "small.tar.gz", "manifest.json"]
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2) - datetime.timedelta(minutes=10)
    for name in first["uploaded"]:
        key = f"worm/{local_set.name}/{name}"
        info = client.head_object(Bucket=LOCKED, Key=key)
        assert info["ObjectLockMode"] == "COMPLIANCE", (name, info)
        assert info["ObjectLockRetainUntilDate"] >= soon, (name, info["ObjectLockRetainUntilDate"])
        with pytest.raises(client.exceptions.ClientError) as refused:
            client.delete_object(Bucket=LOCKED, Key=key, VersionId=info["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied"

    again, _proc = run_module("backup_upload", path=str(local_set), part_size=5, **args)
    assert not again.get("failed") and not again["changed"], again
    assert again["lock_applied"] == [] and {o["action"] for o in again["objects"]} == {"present"}

    # a check that asks for a longer lock than the objects carry fails, naming the object
    longer = dict(args)
    longer["object_lock_days"] = 30
    checked, _proc = run_module("backup_upload", path=str(local_set), part_size=5, mode="verify", **longer)
    assert checked.get("failed") and "not under COMPLIANCE retention until" in checked["msg"], checked


def test_objects_already_in_the_bucket_get_the_lock_they_lack(s3, local_set):
    endpoint, client = s3
    plain = s3_args(endpoint, LOCKED, prefix="later/")
    first, _proc = run_module("backup_upload", path=str(local_set), part_size=5, **plain)
    assert not first.get("failed"), first
    key = f"later/{local_set.name}/small.tar.gz"
    assert "ObjectLockMode" not in client.head_object(Bucket=LOCKED, Key=key)

    locked, _proc = run_module("backup_upload", path=str(local_set), part_size=5,
                               **dict(plain, object_lock_mode="GOVERNANCE", object_lock_days=1))
    assert not locked.get("failed") and locked["changed"], locked
    assert locked["uploaded"] == [] and sorted(locked["lock_applied"]) == ["big.tar", "manifest.json", "small.tar.gz"]
    assert client.head_object(Bucket=LOCKED, Key=key)["ObjectLockMode"] == "GOVERNANCE"


# --- retention in the bucket ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bucket_sets(s3, local_set):
    """Sets under prune/ in the locked bucket: old and free (two versions of one object), old under a governance
    lock, old with a legal hold, old incomplete, old partial, the newest complete, and a name that is no set."""
    endpoint, client = s3
    prefix = "prune/"
    names = {f"authentik-2020010{day}T000000Z": day for day in range(1, 7)}
    for name, day in names.items():
        lock = dict(object_lock_mode="GOVERNANCE", object_lock_days=1) if day == 2 else {}
        result, _proc = run_module("backup_upload", path=str(copy_as(local_set, name)), part_size=5,
                                   **s3_args(endpoint, LOCKED, prefix=prefix, **lock))
        assert not result.get("failed"), result
    client.put_object(Bucket=LOCKED, Key=f"{prefix}authentik-20200101T000000Z/small.tar.gz", Body=b"second version")
    client.put_object_legal_hold(Bucket=LOCKED, Key=f"{prefix}authentik-20200103T000000Z/small.tar.gz",
                                 LegalHold={"Status": "ON"})
    client.delete_object(Bucket=LOCKED, Key=f"{prefix}authentik-20200104T000000Z/manifest.json")
    manifest = json.loads((local_set / "manifest.json").read_text())
    client.put_object(Bucket=LOCKED, Key=f"{prefix}authentik-20200105T000000Z/manifest.json",
                      Body=json.dumps(dict(manifest, partial=True, missing=["postgres"])).encode())
    client.put_object(Bucket=LOCKED, Key=f"{prefix}authentik-manual/notes.txt", Body=b"not a set")
    return endpoint, client, prefix


def test_prune_keeps_the_newest_and_never_removes_what_is_locked(bucket_sets):
    endpoint, client, prefix = bucket_sets
    args = s3_args(endpoint, LOCKED, prefix=prefix, mode="prune", keep_last=1)
    gone = f"{prefix}authentik-20200101T000000Z/"
    before = versions(client, LOCKED, gone)
    assert len(before) == 4, before  # three objects, one of them in two versions

    planned, _proc = run_module("backup_upload", check_mode=True, planned_set="authentik-20300101T000000Z", **args)
    assert not planned.get("failed"), planned
    # with the set a real run would have copied, the newest of the bucket would go as well
    assert planned["removed"] == ["authentik-20200101T000000Z", "authentik-20200106T000000Z"], planned
    assert len(versions(client, LOCKED, gone)) == 4

    pruned, _proc = run_module("backup_upload", **args)
    assert not pruned.get("failed") and pruned["changed"], pruned
    assert pruned["removed"] == ["authentik-20200101T000000Z"] and pruned["versions_deleted"] == 4
    assert versions(client, LOCKED, gone) == []
    locked = {entry["name"]: entry for entry in pruned["locked"]}
    assert sorted(locked) == ["authentik-20200102T000000Z", "authentik-20200103T000000Z"], pruned["locked"]
    assert locked["authentik-20200102T000000Z"]["objects"] == 3
    assert locked["authentik-20200102T000000Z"]["reasons"][0].startswith("GOVERNANCE retention until ")
    assert locked["authentik-20200103T000000Z"]["reasons"] == ["legal hold on"]
    warned = " ".join(pruned.get("warnings", []))
    assert "authentik-20200102T000000Z" in warned and "under lock" in warned, warned
    assert [k["name"] for k in pruned["kept"]] == ["authentik-20200106T000000Z"]
    assert [i["name"] for i in pruned["incomplete"]] == ["authentik-20200104T000000Z"]
    assert pruned["partial"] == ["authentik-20200105T000000Z"]
    for name in ("20200102", "20200103", "20200104", "20200105", "20200106"):
        assert keys(client, LOCKED, f"{prefix}authentik-{name}T000000Z/"), name
    assert keys(client, LOCKED, f"{prefix}authentik-manual/") == [f"{prefix}authentik-manual/notes.txt"]

    again, _proc = run_module("backup_upload", **args)
    assert not again.get("failed") and not again["changed"] and again["removed"] == [], again
    by_days = dict(args)
    by_days.update(keep_last=0, keep_days=36500)
    kept_by_days, _proc = run_module("backup_upload", **by_days)
    assert kept_by_days["removed"] == [] and not kept_by_days["changed"], kept_by_days


# --- the role: copies under lock, retention of the bucket after each backup ----------------------------------------

def test_role_locks_copies_and_skips_locked_sets_in_retention(stack_current, s3, tmp_path):
    endpoint, client = s3
    inventory = tmp_path / "hosts.yml"
    ansible_run.local_inventory(inventory)
    dest = tmp_path / "backups"
    extra = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack_current.project,
             "authentik_backup_components": ["postgres"], "authentik_backup_keep_last": 1,
             "authentik_backup_s3": s3_args(endpoint, LOCKED, prefix="role-b5/", object_lock_mode="GOVERNANCE",
                                            object_lock_days=1, require_versioning=True)}
    runs = []
    for _run in range(2):
        proc = ansible_run.run_playbook(inventory, REPO / "playbooks" / "backup.yml", extra, unset=AWS_ENV)
        assert proc.rc == 0, proc.explain()
        runs.append(proc)
    local = sorted(p.name for p in dest.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(local) == 1, local  # keep_last 1 on the host
    in_bucket = {k.split("/")[1] for k in keys(client, LOCKED, "role-b5/")}
    assert len(in_bucket) == 2 and local[0] in in_bucket, in_bucket  # the older copy is under lock: kept
    for key in keys(client, LOCKED, "role-b5/"):
        assert client.head_object(Bucket=LOCKED, Key=key)["ObjectLockMode"] == "GOVERNANCE", key
    assert runs[1].result("Apply the retention policy to the copies in S3").get("censored"), "arguments hidden"
    pruned = runs[1].fact("__authentik_backup_s3_prune")
    assert pruned and pruned["removed"] == [] and [e["name"] for e in pruned["locked"]] == sorted(in_bucket - {local[0]})
    report = " ".join(runs[1].msg("Report of the run"))
    assert f"kept under lock: {sorted(in_bucket - {local[0]})[0]}" in report, report
    assert CREDENTIALS["secret_key"] not in runs[1].stdout + runs[1].stderr
