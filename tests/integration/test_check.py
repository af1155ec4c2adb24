# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/check.yml: passes on a good set with good copies; fails, naming why, on a set older than
authentik_backup_max_age, a copy missing or different in S3 (moto's server on 127.0.0.1) or on the controller, and a
corrupted set. The set is written by the collection's own modules (backup_set, path_archive), the S3 copy by
backup_upload; each run is a real ansible-playbook subprocess."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from testbed import ansible_run, paths
from testbed.s3server import moto_server

PLAYBOOK = paths.REPO_ROOT / "playbooks" / "check.yml"
CREDENTIALS = {"access_key": "akbt-b5-check", "secret_key": "akbt-b5-check-secret-never-logged"}
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")
BUCKET = "akbt-b5-check"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto-check-b5"), **CREDENTIALS) as (endpoint, client):
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client


def run_module(module, **args):
    result, _proc = ansible_run.run_module(module, unset=AWS_ENV, **args)
    assert not result.get("failed"), result
    return result


def make_set(base):
    """A complete set of two parts in base/sets, written by the collection's modules; its directory."""
    source = base / "source"
    source.mkdir()
    (source / "data.txt").write_text("authentik data\n" * 1000)
    dest = base / "sets"
    created = run_module("backup_set", dest=str(dest))
    parts = []
    for name, codec in (("files.tar.gz", "gzip"), ("more.tar", "none")):
        result = run_module("path_archive", platform="local", paths=[str(source / "data.txt")],
                            dest=f"{created['path']}/{name}", compression=codec)
        parts.append(dict(result, part=name.split(".", maxsplit=1)[0]))
    run_module("backup_set", state="complete", dest=str(dest), name=created["name"], parts=parts)
    return Path(created["path"])


@pytest.fixture
def world(s3, tmp_path):
    """A good set with a good copy in the bucket (its own prefix) and one on the controller, and the extra vars."""
    endpoint, client = s3
    local = make_set(tmp_path)
    prefix = f"{tmp_path.name}/"
    s3_vars = dict(bucket=BUCKET, prefix=prefix, endpoint_url=endpoint, region="us-east-1", **CREDENTIALS)
    run_module("backup_upload", path=str(local), **s3_vars)
    controller = tmp_path / "controller"
    shutil.copytree(local, controller / "localhost" / local.name)
    extra = {"authentik_backup_dest": str(local.parent), "authentik_backup_s3": s3_vars,
             "authentik_backup_fetch_dest": str(controller)}
    return local, client, f"{prefix}{local.name}/", controller / "localhost" / local.name, extra


def check(inventory, extra, check_mode=False):
    run = ansible_run.run_playbook(inventory, PLAYBOOK, json.dumps(extra), check=check_mode, unset=AWS_ENV)
    assert CREDENTIALS["secret_key"] not in run.stdout + run.stderr
    return run, "\n".join(run.msg("Summary") or [])


def test_good_set_and_copies_pass_also_in_check_mode(inventory, world):
    local, _client, _key, _controller, extra = world
    for check_mode in (False, True):
        run, summary = check(inventory, extra, check_mode)
        assert run.rc == 0, run.explain()
        assert "localhost: OK" in summary and f"newest complete set: {local.name}" in summary, summary
        assert "copies checked: s3, controller" in summary, summary


def test_set_older_than_max_age_fails(inventory, world):
    local, _client, _key, _controller, extra = world
    time.sleep(2)
    run, summary = check(inventory, dict(extra, authentik_backup_max_age=1))
    assert run.rc != 0 and "localhost: FAILED" in summary, run.explain()
    assert f"the newest complete set {local.name} is" in run.failure()
    assert "more than authentik_backup_max_age (1 s)" in run.failure(), run.failure()


@pytest.mark.parametrize("damage", ["missing", "different"])
def test_s3_copy_missing_or_different_fails(inventory, world, damage):
    _local, client, key, _controller, extra = world
    if damage == "missing":
        client.delete_object(Bucket=BUCKET, Key=f"{key}more.tar")
    else:
        client.put_object(Bucket=BUCKET, Key=f"{key}more.tar", Body=b"not the archive")
    run, summary = check(inventory, extra)
    assert run.rc != 0 and "localhost: FAILED" in summary, run.explain()
    assert f"the copy in s3://{BUCKET} is missing or differs" in run.failure(), run.failure()
    assert "more.tar" in run.failure(), run.failure()


def test_controller_copy_that_differs_fails(inventory, world):
    _local, _client, _key, controller, extra = world
    with open(controller / "more.tar", "r+b") as handle:
        handle.seek(600)
        handle.write(b"X")
    run, _summary = check(inventory, extra)
    assert run.rc != 0, run.explain()
    assert "the copy on the controller is missing or differs" in run.failure(), run.failure()
    assert "more.tar" in run.failure(), run.failure()


def test_corrupted_set_fails(inventory, world):
    local, _client, _key, _controller, extra = world
    with open(local / "files.tar.gz", "r+b") as handle:
        handle.seek(40)
        byte = handle.read(1)
        handle.seek(40)
        handle.write(bytes([byte[0] ^ 0xFF]))
    run, summary = check(inventory, dict(extra, authentik_backup_s3={}, authentik_backup_fetch_dest=""))
    assert run.rc != 0 and "localhost: FAILED" in summary, run.explain()
    assert f"the set {local.name} does not verify" in run.failure() and "files.tar.gz" in run.failure(), run.failure()


def test_copy_on_another_host_is_checked(world, tmp_path):
    """authentik_backup_copy_to_host / _path: the copy on another inventory host is verified there."""
    local, _client, _key, _controller, extra = world
    peer = "akbt-check-peer"
    inventory = ansible_run.local_inventory(tmp_path / "peer-hosts.yml", extra=(
        f"peers:\n  hosts:\n    {peer}:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"))
    copies = tmp_path / "peer"
    shutil.copytree(local, copies / "localhost" / local.name)
    extra = dict(extra, authentik_backup_s3={}, authentik_backup_fetch_dest="", authentik_backup_copy_to_host=peer,
                 authentik_backup_copy_to_path=str(copies))
    run, summary = check(inventory, extra)
    assert run.rc == 0, run.explain()
    assert f"copies checked: {peer}" in summary, summary
    with open(copies / "localhost" / local.name / "more.tar", "r+b") as handle:
        handle.seek(600)
        handle.write(b"X")
    run, summary = check(inventory, extra)
    assert run.rc != 0 and "localhost: FAILED" in summary, run.explain()
    assert f"the copy on {peer} is missing or differs" in run.failure() and "more.tar" in run.failure(), run.failure()
    shutil.rmtree(copies / "localhost" / local.name)
    run, _summary = check(inventory, extra)
    assert run.rc != 0 and f"the copy on {peer} is missing or differs" in run.failure(), run.explain()


def test_no_set_at_all_fails(inventory, tmp_path):
    run, _summary = check(inventory, {"authentik_backup_dest": str(tmp_path / "empty")})
    assert run.rc != 0, run.explain()
    assert f"no complete set in {tmp_path / 'empty'}" in run.failure(), run.failure()
