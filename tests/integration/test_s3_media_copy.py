# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""s3_media: authentik's media objects copied out of a bucket into a checked archive, and uploaded back.

Against moto's S3 server on 127.0.0.1 (tests/testbed/s3server.py), through real ansible runs of the module. The
objects are authentik-like media keys with unicode names, binary bytes, an empty object, a 6 MiB one, and content
types; the bucket has versioning on, as a media bucket should.
"""

from __future__ import annotations

import os
import stat

import pytest

from testbed import ansible_run
from testbed.s3server import bucket_state, moto_server

CREDENTIALS = {"access_key": "akbt-media-copy", "secret_key": "akbt-media-copy-secret-never-logged"}
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")
BUCKET = "akbt-media-copy"
PREFIX = "media/"
OBJECTS = {
    "media/public/application-icons/app.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, "image/png"),
    "media/public/flow-backgrounds/Zürich – night.jpg": (os.urandom(6 * 1024 * 1024 + 7), "image/jpeg"),
    "media/public/empty.txt": (b"", "text/plain"),
    "media/tenant_b/icons/ünïcode/ß.svg": ("<svg>ß</svg>".encode(), "image/svg+xml"),
}
OUTSIDE = {"other/keep-me.txt": b"not media"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto-media-copy"), **CREDENTIALS) as (endpoint, client):
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield endpoint, client


def fill(client):
    for key, (body, content_type) in OBJECTS.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)
    for key, body in OUTSIDE.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)


def media(endpoint, **args):
    result, run = ansible_run.run_module("s3_media", unset=AWS_ENV, bucket=BUCKET, prefix=PREFIX,
                                         endpoint_url=endpoint, region="us-east-1", **CREDENTIALS, **args)
    assert CREDENTIALS["secret_key"] not in run.stdout + run.stderr
    return result


def test_archive_then_restore_gives_back_every_object(s3, tmp_path):
    endpoint, client = s3
    fill(client)
    before = bucket_state(client, BUCKET)
    archive = tmp_path / "media-s3.tar.zst"

    plan = media(endpoint, dest=str(archive), check_mode=True)
    assert plan["plan"]["objects"] == len(OBJECTS) and not archive.exists(), plan
    made = media(endpoint, dest=str(archive))
    assert not made.get("failed"), made
    assert made["objects"] == len(OBJECTS) and made["bytes"] == sum(len(b) for b, _t in OBJECTS.values())
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600 and made["size"] == archive.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]  # no partial file left

    # the bucket loses, changes and gains objects
    lost, changed = "media/public/application-icons/app.png", "media/tenant_b/icons/ünïcode/ß.svg"
    client.delete_object(Bucket=BUCKET, Key=lost)
    client.put_object(Bucket=BUCKET, Key=changed, Body=b"changed", ContentType="text/plain")
    client.put_object(Bucket=BUCKET, Key="media/public/new-since.txt", Body=b"new")

    plan = media(endpoint, state="restored", src=str(archive), check_mode=True)
    assert plan["plan"]["objects"] == len(OBJECTS), plan
    assert lost not in bucket_state(client, BUCKET)  # check mode uploaded nothing

    done = media(endpoint, state="restored", src=str(archive))
    assert not done.get("failed") and done["objects"] == len(OBJECTS), done.get("msg")
    after = bucket_state(client, BUCKET)
    for key in list(OBJECTS) + list(OUTSIDE):
        assert after[key] == before[key], key
    assert after["media/public/new-since.txt"] == (b"new", "binary/octet-stream")  # not in the archive: left alone


def test_a_damaged_archive_uploads_nothing(s3, tmp_path):
    endpoint, client = s3
    fill(client)
    archive = tmp_path / "media-s3.tar"
    made = media(endpoint, dest=str(archive), compression="none")
    assert not made.get("failed"), made
    client.delete_object(Bucket=BUCKET, Key="media/public/empty.txt")
    before = bucket_state(client, BUCKET)

    data = bytearray(archive.read_bytes())
    at = data.index(b"<svg>")
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data[:at]) + b"<SVG>" + bytes(data[at + 5:]))
    result = media(endpoint, state="restored", src=str(damaged))
    assert result.get("failed") and "does not match the index" in result["msg"], result
    assert "nothing was uploaded" in result["msg"]

    cut = tmp_path / "cut.tar"
    cut.write_bytes(bytes(data[:len(data) // 2]))
    result = media(endpoint, state="restored", src=str(cut))
    assert result.get("failed") and "nothing was uploaded" in result["msg"], result
    assert bucket_state(client, BUCKET) == before


def test_a_bucket_that_cannot_be_listed_leaves_no_archive(s3, tmp_path):
    endpoint, _client = s3
    result, run = ansible_run.run_module("s3_media", unset=AWS_ENV, bucket="akbt-no-such-bucket", prefix=PREFIX,
                                         endpoint_url=endpoint, region="us-east-1", **CREDENTIALS,
                                         dest=str(tmp_path / "media-s3.tar.zst"))
    assert CREDENTIALS["secret_key"] not in run.stdout + run.stderr
    assert result.get("failed") and "listing s3://akbt-no-such-bucket/media/ failed" in result["msg"], result
    assert not list(tmp_path.iterdir())  # neither the archive nor a partial file
