# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A deployment whose media lives in S3: the backup records it, and copies the objects when asked to.

A current-layout stack of its own (project akbt-s3m<suffix>) whose ``.env`` (read by server and worker through
authentik's compose file) says ``AUTHENTIK_STORAGE__BACKEND=s3`` with a bucket, an endpoint as authentik would reach
it (``http://minio:9000``), a region and credentials. A moto S3 server on 127.0.0.1 stands in for the object store
(tests/testbed/s3server.py); ``authentik_backup_media_s3.endpoint_url`` points the collection at it.

With the default components, playbooks/backup.yml records the backend, bucket, endpoint and key prefix in the
manifest (``authentik.storage.media``) and lists ``media-s3`` as skipped, naming the bucket; no object is copied, and
the restore plan of that set says the set holds no copy. With ``media-s3`` in the components, the objects under the
key prefix are copied into ``media-s3.tar.zst``, and playbooks/restore.yml with ``media-s3`` puts them back into the
bucket the deployment is configured with, leaving objects the set does not hold alone. Neither credential appears in
any file of a set nor in any run's output. Every run is a real ``ansible-playbook`` subprocess.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from testbed import ansible_run, paths, stacks
from testbed.s3server import bucket_state, moto_server

REPO = paths.REPO_ROOT
BACKUP = REPO / "playbooks" / "backup.yml"
RESTORE = REPO / "playbooks" / "restore.yml"
ACCESS_KEY = "AKIA" + secrets.token_hex(8).upper()
SECRET_KEY = secrets.token_urlsafe(30)
S3_ENV = {
    "AUTHENTIK_STORAGE__BACKEND": "s3",
    "AUTHENTIK_STORAGE__S3__BUCKET_NAME": "authentik-media",
    "AUTHENTIK_STORAGE__S3__ENDPOINT": "http://minio:9000",
    "AUTHENTIK_STORAGE__S3__REGION": "eu-central-1",
    "AUTHENTIK_STORAGE__S3__ACCESS_KEY": ACCESS_KEY,
    "AUTHENTIK_STORAGE__S3__SECRET_KEY": SECRET_KEY,
}


BUCKET = S3_ENV["AUTHENTIK_STORAGE__S3__BUCKET_NAME"]
OBJECTS = {
    "media/public/application-icons/app.png": (bytes(range(256)) * 64, "image/png"),
    "media/public/flow-backgrounds/Zürich night.jpg": (os.urandom(3 * 1024 * 1024 + 11), "image/jpeg"),
    "media/public/empty.txt": (b"", "text/plain"),
    "media/tenant_b/ünïcode/ß.svg": ("<svg>ß</svg>".encode(), "image/svg+xml"),
}
OUTSIDE = {"other-app/keep.txt": (b"not authentik's media", "text/plain")}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto-s3m"), ACCESS_KEY, SECRET_KEY) as (endpoint, client):
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield endpoint, client


@pytest.fixture(scope="module")
def stack_s3(images):  # pylint: disable=unused-argument
    project = "akbt-s3m" + paths.PROJECT_SUFFIX
    with stacks.lock(project, wait=float(os.environ.get("AKBT_LOCK_WAIT", "1800"))):
        stack = stacks.up(project, layout="current", naming="v2", extra_env=S3_ENV)
        try:
            yield stack
        finally:
            if os.environ.get("AKBT_KEEP_STACKS") != "1":
                stacks.down(project)


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    return ansible_run.player(tmp_path_factory.mktemp("s3media"))


def test_backup_records_media_in_s3(stack_s3, play, tmp_path):
    dest = tmp_path / "backups"
    run_vars = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack_s3.project}
    run = play(BACKUP, run_vars)
    assert run.rc == 0, run.explain()
    set_dir = Path(os.path.realpath(dest / "latest"))
    manifest = json.loads((set_dir / "manifest.json").read_text())

    assert manifest["authentik"]["storage"] == {"media": {
        "backend": "s3", "backend_setting": "AUTHENTIK_STORAGE__BACKEND", "bucket": "authentik-media",
        "endpoint": "http://minio:9000", "region": "eu-central-1", "prefix": "media/", "credentials_set": True,
        "unresolved": []}}
    skipped = {s["part"]: s["reason"] for s in manifest["skipped"]}
    assert "media-s3" in skipped, manifest["skipped"]
    assert "bucket authentik-media" in skipped["media-s3"] and "no copy" in skipped["media-s3"]
    assert "media-s3" not in {f["part"] for f in manifest["files"]}
    assert "skips: media-s3: authentik keeps its media in S3" in ansible_run.one_line(run.stdout)

    # no credential anywhere: the files of the set (manifest, report, ...) and the run's output
    for path in set_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (ACCESS_KEY, SECRET_KEY, stack_s3.secret_key):
                assert secret.encode() not in data, f"a credential is in {path.name}"
    for secret in (ACCESS_KEY, SECRET_KEY, stack_s3.secret_key):
        assert secret not in run.stdout and secret not in run.stderr

    plan = play(RESTORE, dict(run_vars, authentik_restore_from=str(set_dir)), check=True)
    assert plan.rc == 0, plan.explain()
    assert ("media-s3: authentik kept its media in S3 when the set was made (bucket authentik-media); the set "
            "holds no copy, the bucket is left as it is") in ansible_run.one_line(plan.stdout)
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in plan.stdout and secret not in plan.stderr


def no_credentials(*texts):
    for text in texts:
        for secret in (ACCESS_KEY, SECRET_KEY):
            assert secret not in text, "a credential is in a run's output"


def test_media_objects_copied_into_the_set_and_restored(stack_s3, s3, play, tmp_path):
    endpoint, client = s3
    for key, (body, content_type) in {**OBJECTS, **OUTSIDE}.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)
    before = bucket_state(client, BUCKET)
    dest = tmp_path / "backups"
    run_vars = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack_s3.project,
                "authentik_backup_media_s3": {"endpoint_url": endpoint}}
    components = {"authentik_backup_components": ["postgres", "files", "media-s3"]}

    run = play(BACKUP, run_vars, components)
    assert run.rc == 0, run.explain()
    no_credentials(run.stdout, run.stderr)
    set_dir = Path(os.path.realpath(dest / "latest"))
    manifest = json.loads((set_dir / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["part"] == "media-s3")
    assert entry["name"] == "media-s3.tar.zst" and entry["details"]["objects"] == len(OBJECTS), entry
    assert entry["details"]["bytes"] == sum(len(body) for body, _type in OBJECTS.values())
    assert entry["details"]["bucket"] == f"s3://{BUCKET}/media/"
    assert "media-s3" not in {s["part"] for s in manifest["skipped"]}
    assert oct((set_dir / entry["name"]).stat().st_mode & 0o777) == "0o600"
    for path in set_dir.rglob("*"):
        if path.is_file():
            for secret in (ACCESS_KEY, SECRET_KEY):
                assert secret.encode() not in path.read_bytes(), f"a credential is in {path.name}"

    # the bucket loses, changes and gains objects after the backup
    lost, changed = "media/public/application-icons/app.png", "media/tenant_b/ünïcode/ß.svg"
    client.delete_object(Bucket=BUCKET, Key=lost)
    client.put_object(Bucket=BUCKET, Key=changed, Body=b"changed", ContentType="text/plain")
    client.put_object(Bucket=BUCKET, Key="media/public/new-since.txt", Body=b"new", ContentType="text/plain")
    restore_vars = dict(run_vars, authentik_restore_from=str(set_dir), authentik_restore_components=["media-s3"])

    plan = play(RESTORE, restore_vars, check=True)
    assert plan.rc == 0, plan.explain()
    assert (f"uploads the {len(OBJECTS)} media objects of media-s3.tar.zst into s3://{BUCKET}/media/"
            in ansible_run.one_line(plan.stdout)), plan.stdout[-3000:]
    assert lost not in bucket_state(client, BUCKET)  # check mode uploaded nothing

    done = play(RESTORE, restore_vars, {"authentik_restore_confirm": True})
    assert done.rc == 0, done.explain()
    no_credentials(done.stdout, done.stderr, plan.stdout, plan.stderr)
    after = bucket_state(client, BUCKET)
    for key in before:
        assert after[key] == before[key], key
    assert after["media/public/new-since.txt"] == (b"new", "text/plain")  # not in the set: left alone
    assert "restored: media-s3" in ansible_run.one_line(done.stdout)


def test_media_s3_asked_of_a_set_without_a_copy_is_refused(stack_s3, s3, play, tmp_path):
    endpoint, client = s3
    dest = tmp_path / "backups"
    run_vars = {"authentik_backup_dest": str(dest), "authentik_backup_compose_project": stack_s3.project,
                "authentik_backup_media_s3": {"endpoint_url": endpoint}}
    run = play(BACKUP, run_vars, {"authentik_backup_components": ["postgres"]})
    assert run.rc == 0, run.explain()
    before = bucket_state(client, BUCKET)
    refused = play(RESTORE, run_vars, {"authentik_restore_from": "latest", "authentik_restore_confirm": True,
                                       "authentik_restore_components": ["postgres", "media-s3"]})
    assert refused.rc != 0
    text = ansible_run.one_line(refused.stdout)
    assert "media-s3 is in authentik_restore_components but the set holds no copy" in text, text[-3000:]
    assert "Nothing was stopped or changed" in text
    assert bucket_state(client, BUCKET) == before
