# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A deployment whose media lives in S3: the backup records it, and does not pretend a directory archive is it.

A current-layout stack of its own (project akbt-s3m<suffix>) whose ``.env`` (read by server and worker through
authentik's compose file) says ``AUTHENTIK_STORAGE__BACKEND=s3`` with a bucket, an endpoint and credentials. The
backup with playbooks/backup.yml records the backend, bucket, endpoint and key prefix in the manifest
(``authentik.storage.media``) and lists ``media-s3`` as skipped, naming the bucket; neither credential appears in any
file of the set nor in the run's output. The restore plan of that set (check mode) says the set holds no copy of the
bucket's objects. The bucket itself is not contacted: no object is copied. Every run is a real ``ansible-playbook``
subprocess against a Compose stack of the test bed.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from testbed import ansible_run, paths, stacks

REPO = paths.REPO_ROOT
BACKUP = REPO / "playbooks" / "backup.yml"
RESTORE = REPO / "playbooks" / "restore.yml"
ACCESS_KEY = "AKIA" + secrets.token_hex(8).upper()
SECRET_KEY = secrets.token_urlsafe(30)
S3_ENV = {
    "AUTHENTIK_STORAGE__BACKEND": "s3",
    "AUTHENTIK_STORAGE__S3__BUCKET_NAME": "authentik-media",
    "AUTHENTIK_STORAGE__S3__ENDPOINT": "http://127.0.0.1:9",
    "AUTHENTIK_STORAGE__S3__REGION": "eu-central-1",
    "AUTHENTIK_STORAGE__S3__ACCESS_KEY": ACCESS_KEY,
    "AUTHENTIK_STORAGE__S3__SECRET_KEY": SECRET_KEY,
}


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
        "endpoint": "http://127.0.0.1:9", "region": "eu-central-1", "prefix": "media/", "credentials_set": True,
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
