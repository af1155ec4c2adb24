#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_media
short_description: Copy authentik's media objects from an S3 bucket into a checked archive, and back
version_added: 0.1.0
description:
  - For authentik deployments that keep their media in S3 (C(AUTHENTIK_STORAGE__MEDIA__BACKEND=s3) or
    C(AUTHENTIK_STORAGE__BACKEND=s3)). The backup role finds the bucket, endpoint and key prefix in the deployment's
    environment (see the collection's docs/s3-media.md).
  - With O(state=archived) every object under O(prefix) is streamed into one tar archive at O(dest) (written as every
    file of a backup set is, compressed and optionally encrypted while it streams, to a hidden partial file, synced
    and renamed). Each member is named by its key without O(prefix), with the object's size and modification time;
    the last member, C(.akb-media-index.json), lists every object's name, size, SHA-256 and content type. An object
    whose bytes do not match its listed size, or its MD5 ETag when the service gives one, fails the run and no
    archive is kept.
  - With O(state=restored) the archive at O(src) is read twice. The first pass checks every member (a regular file,
    a relative name without C(..), its size and SHA-256 against the index) before any object is written; the second
    uploads each member to O(prefix) + its name, with its content type. Objects of the bucket that the archive does
    not hold are left as they are. With bucket versioning on, the objects replaced keep their previous versions.
  - Memory does not grow with the size of the objects; nothing is written to disk but O(dest).
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.output
  - authentik_ops.backup._common.s3
attributes:
  check_mode:
    support: full
    details:
      - V(archived) lists the objects and reports their number and bytes in RV(plan); nothing is read or written.
      - V(restored) reads and checks the whole archive and reports what would be uploaded; nothing is uploaded.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every archive is a new copy; a restore uploads every member again.
options:
  state:
    description:
      - V(archived) copies the objects into O(dest); V(restored) uploads the members of O(src).
    type: str
    choices: [archived, restored]
    default: archived
  bucket:
    description:
      - The bucket of authentik's media.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the media objects (authentik 2025.12 and later V(media/); before, empty).
    type: str
    default: ""
  dest:
    description:
      - With O(state=archived), the archive to write (C(.tar), C(.tar.gz) or C(.tar.zst), with C(.age) when
        encrypted). The data is written to a hidden partial file in the same directory, checked, synced and renamed
        with mode C(0600); a failed run removes it. The directory must exist.
    type: path
    required: false
  compression:
    description:
      - Codec of the archive.
    type: str
    choices: [none, gzip, zstd]
    default: zstd
  src:
    description:
      - With O(state=restored), the archive to upload (as written with O(state=archived)).
    type: path
  decrypt_identity:
    description:
      - An age identity (or the text of an identity file) to read an encrypted O(src). Never logged.
    type: str
  decrypt_identity_file:
    description:
      - Path of an age identity file to read an encrypted O(src).
    type: path
notes:
  - Needs the Python package C(boto3) on the host the module runs on.
  - The credentials need C(s3:ListBucket) and C(s3:GetObject) to archive, C(s3:PutObject) to restore.
"""

EXAMPLES = r"""
- name: Copy authentik's media objects into the backup set
  authentik_ops.backup.s3_media:
    bucket: authentik-media
    prefix: media/
    endpoint_url: https://s3.example.com
    access_key: "{{ vault_media_access_key }}"
    secret_key: "{{ vault_media_secret_key }}"
    dest: /var/backups/authentik/authentik-20261130T020000Z/media-s3.tar.zst

- name: Put them back
  authentik_ops.backup.s3_media:
    state: restored
    bucket: authentik-media
    prefix: media/
    endpoint_url: https://s3.example.com
    access_key: "{{ vault_media_access_key }}"
    secret_key: "{{ vault_media_secret_key }}"
    src: /var/backups/authentik/latest/media-s3.tar.zst
"""

RETURN = r"""
dest:
  description: Path of the archive (in check mode, the one that would be written).
  returned: success with O(state=archived)
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z/media-s3.tar.zst
size:
  description: Size of the archive on disk, in bytes.
  returned: success with O(state=archived), not check mode
  type: int
  sample: 104857
sha256:
  description: SHA-256 of the archive on disk.
  returned: success with O(state=archived), not check mode
  type: str
  sample: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
raw_size:
  description: Size of the uncompressed tar stream, in bytes.
  returned: success with O(state=archived), not check mode
  type: int
  sample: 204800
compression:
  description: Codec of the archive.
  returned: success with O(state=archived), not check mode
  type: str
  sample: zstd
encryption:
  description: How the archive is encrypted; the recipients are public keys.
  returned: success with O(encrypt_recipients)
  type: dict
  sample: {scheme: age, recipients: [age124n3glqf2ltpr3x33zh7dlznrdsrc8f343z8gpxhm4teqs550fqqnvkd3e]}
duration:
  description: Seconds of the copy.
  returned: success, not check mode
  type: float
  sample: 1.2
throughput:
  description: Bytes of the tar stream per second.
  returned: success with O(state=archived), not check mode
  type: int
  sample: 50000000
objects:
  description: Number of objects archived or uploaded.
  returned: success
  type: int
  sample: 42
bytes:
  description: Bytes of the objects archived or uploaded.
  returned: success
  type: int
  sample: 123456
bucket:
  description: The bucket and prefix.
  returned: success
  type: str
  sample: s3://authentik-media/media/
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: archive, objects: 42, bytes: 123456, dest: /var/backups/authentik/s/media-s3.tar.zst}
"""

import hashlib
import io
import json
import os
import tarfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DECRYPT_MUTUALLY_EXCLUSIVE,
    Stopwatch,
    check_dest,
    file_result,
    load_identities,
    open_sink,
    prepare_decryption,
    run_module,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError, FormatError
from ansible_collections.authentik_ops.backup.plugins.module_utils._s3 import (
    HAS_BOTO3,
    S3Error,
    describe_error,
    s3_argument_spec,
    s3_client,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import compression_problem, open_decompressed

INDEX = ".akb-media-index.json"
CHUNK = 1 << 20


def list_objects(client, bucket, prefix):
    """[(key, size, etag)] of every object under ``prefix``, in key order."""
    objects = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    objects.append((item["Key"], item["Size"], item.get("ETag", "").strip('"')))
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise S3Error(f"listing s3://{bucket}/{prefix} failed: {describe_error(exc)}") from None
    return objects


def member_name(key, prefix):
    name = key[len(prefix):] if prefix and key.startswith(prefix) else key
    if not name or name == INDEX or name.startswith("/") or ".." in name.split("/"):
        raise ConfigError(f"the object key {key!r} cannot be archived under a safe name; nothing was kept")
    return name


class CheckedBody:
    """The body of one object as tarfile reads it: SHA-256 and MD5 of the bytes, checked against size and ETag."""

    def __init__(self, body, key, size, etag):
        self.body, self.key, self.size, self.etag = body, key, size, etag
        self.read_bytes = 0
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5()

    def read(self, amount=-1):
        data = self.body.read(amount if amount and amount > 0 else None)
        self.read_bytes += len(data)
        self.sha.update(data)
        self.md5.update(data)
        return data

    def check(self):
        if self.read_bytes != self.size:
            raise FormatError(f"{self.key}: read {self.read_bytes} of {self.size} bytes; the stream broke off")
        single_part = len(self.etag) == 32 and "-" not in self.etag
        if single_part and self.md5.hexdigest() != self.etag:
            raise FormatError(f"{self.key}: the bytes read do not match the object's MD5 ETag")


def archive_object(client, params, archive, key, size, etag):
    """Stream one object into the archive; its index entry."""
    name = member_name(key, params["prefix"])
    try:
        answer = client.get_object(Bucket=params["bucket"], Key=key)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise S3Error(f"reading s3://{params['bucket']}/{key} failed: {describe_error(exc)}") from None
    body = CheckedBody(answer["Body"], key, size, etag)
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o600
    info.mtime = int(answer["LastModified"].timestamp()) if answer.get("LastModified") else 0
    archive.addfile(info, body)
    body.check()
    return dict(name=name, size=size, sha256=body.sha.hexdigest(), content_type=answer.get("ContentType") or "")


def add_index(archive, entries):
    data = json.dumps(dict(format=1, objects=entries), indent=1, sort_keys=True).encode()
    info = tarfile.TarInfo(INDEX)
    info.size, info.mode = len(data), 0o600
    archive.addfile(info, io.BytesIO(data))


class _Reader:
    """Only ``read``: the member of a streamed archive cannot seek, and boto3 must upload it as a stream."""

    def __init__(self, fileobj):
        self.read = fileobj.read


def archived(module, client):
    params = module.params
    problem = compression_problem(params["compression"]) or check_dest(module, params["dest"])
    if problem:
        raise ConfigError(problem)
    objects = list_objects(client, params["bucket"], params["prefix"])
    for key, _size, _etag in objects:
        member_name(key, params["prefix"])
    total = sum(size for _key, size, _etag in objects)
    result = dict(changed=True, objects=len(objects), bytes=total,
                  bucket=f"s3://{params['bucket']}/{params['prefix']}")
    if module.check_mode:
        return dict(result, dest=params["dest"],
                    plan=dict(action="archive", objects=len(objects), bytes=total, dest=params["dest"]))
    watch = Stopwatch()
    try:
        with open_sink(params) as sink:
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                entries = [archive_object(client, params, archive, *item) for item in objects]
                add_index(archive, entries)
            stats = sink.commit()
    except BackupError as exc:
        raise exc.add_fields(dest=params["dest"])
    except OSError as exc:
        raise BackupError(f"writing {params['dest']} failed: {exc}", dest=params["dest"]) from exc
    return dict(result, **file_result(stats, watch.elapsed))


def _bad(params, what):
    return FormatError(f"{params['src']}: {what}; nothing was uploaded from this archive")


def read_members(params, each):
    """Walk the archive; ``each(member, fileobj)`` for every object member; returns the index it ends with."""
    index = None
    try:
        with open_decompressed(params["src"], identities=load_identities(params) or None) as raw:
            with tarfile.open(fileobj=raw, mode="r|") as archive:
                for member in archive:
                    if index is not None:
                        raise _bad(params, f"member {member.name!r} follows the index")
                    if not member.isfile():
                        raise _bad(params, f"member {member.name!r} is not a regular file")
                    if member.name == INDEX:
                        index = json.loads(archive.extractfile(member).read())
                        continue
                    member_name(member.name, "")
                    each(member, archive.extractfile(member))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise _bad(params, f"not a complete archive ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("objects"), list):
        raise _bad(params, "the archive has no index of its objects (it was cut short or not made by this module)")
    return {entry["name"]: entry for entry in index["objects"]}


def check_archive(params):
    """First pass: every member's SHA-256 and size against the index at the end; the index by name."""
    found = {}

    def each(member, fileobj):
        sha = hashlib.sha256()
        for chunk in iter(lambda: fileobj.read(CHUNK), b""):
            sha.update(chunk)
        found[member.name] = (member.size, sha.hexdigest())

    index = read_members(params, each)
    for name, entry in index.items():
        if found.get(name) != (entry.get("size"), entry.get("sha256")):
            raise _bad(params, f"member {name!r} is missing or does not match the index (size, SHA-256)")
    extra = sorted(set(found) - set(index))
    if extra:
        raise _bad(params, f"members {', '.join(extra[:5])} are not in the index")
    return index


def restored(module, client):
    params = module.params
    prepare_decryption(params, params["src"], src=params["src"])
    before = os.stat(params["src"])
    index = check_archive(params)
    total = sum(entry["size"] for entry in index.values())
    result = dict(changed=bool(index), objects=len(index), bytes=total,
                  bucket=f"s3://{params['bucket']}/{params['prefix']}")
    if module.check_mode:
        return dict(result, plan=dict(action="upload", objects=len(index), bytes=total, src=params["src"]))
    watch = Stopwatch()

    def upload(member, fileobj):
        key = params["prefix"] + member.name
        content_type = index[member.name].get("content_type")
        try:
            client.upload_fileobj(_Reader(fileobj), params["bucket"], key,
                                  ExtraArgs={"ContentType": content_type} if content_type else None)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise S3Error(f"uploading s3://{params['bucket']}/{key} failed: {describe_error(exc)}; the objects "
                          "before it in the archive were uploaded, the others are as they were") from None

    after = os.stat(params["src"])
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise _bad(params, "the file changed while it was checked")
    read_members(params, upload)
    return dict(result, duration=watch.elapsed)


def run(module):
    if not HAS_BOTO3:
        raise ConfigError("the Python package boto3 is needed on the host the module runs on")
    client = s3_client(module.params)
    if module.params["state"] == "archived":
        return archived(module, client)
    return restored(module, client)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="archived", choices=["archived", "restored"]),
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            dest=dict(type="path"),
            compression=dict(type="str", default="zstd", choices=["none", "gzip", "zstd"]),
            compression_level=dict(type="int"),
            compression_threads=dict(type="int", default=0),
            force=dict(type="bool", default=False),
            encrypt_recipients=dict(type="list", elements="str", default=[]),
            owner=dict(type="str"),
            src=dict(type="path"),
            decrypt_identity=dict(type="str", no_log=True),
            decrypt_identity_file=dict(type="path"),
            **s3_argument_spec(),
        ),
        mutually_exclusive=DECRYPT_MUTUALLY_EXCLUSIVE + [("dest", "src")],
        required_if=[("state", "archived", ["dest"]), ("state", "restored", ["src"])],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
