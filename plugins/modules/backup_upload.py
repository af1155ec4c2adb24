#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_upload
short_description: Copy authentik backup sets to S3-compatible storage, verify the copies, lock them, prune them
version_added: 0.1.0
description:
  - Uploads every file of a complete backup set (one that has C(manifest.json)) to a bucket of Amazon S3 or an
    S3-compatible service (MinIO, Ceph RGW, Garage, Wasabi, ...), as objects C(<prefix><set name>/<file>), and
    C(manifest.json) last, so a copy without its manifest is incomplete, exactly as a set on disk is.
  - Every file is hashed while it is read for the upload and must match the SHA-256 the manifest records, else
    nothing of it stays in the bucket. Every request carries C(Content-MD5), so the service refuses a part that
    arrives damaged. Each object gets the manifest's SHA-256 as its C(sha256) user metadata.
  - After the upload each object is verified against the manifest (see O(verify)); a set counts as copied only when
    every object passed.
  - Objects already in the bucket that pass the verification are not uploaded again (the task reports no change);
    objects that fail it are uploaded again and reported in RV(repaired).
  - With O(mode=verify) nothing is uploaded; the copy in the bucket is checked against the local manifest, and the
    task fails when an object is missing or differs.
  - With O(object_lock_mode) and O(object_lock_days) every object is written under S3 Object Lock retention
    (write once, read many), so nobody, this module included, can delete or overwrite that version before the
    date. Objects already in the bucket get the retention they lack. The bucket must have object lock enabled; O(require_versioning) and
    O(require_object_lock) refuse a bucket without versioning or object lock before anything is uploaded.
  - With O(mode=prune) the sets under O(prefix) follow the keep rules of M(authentik_ops.backup.backup_prune),
    O(keep_last), O(keep_days), the newest complete set always kept, sets without a C(manifest.json) object
    (incomplete) and sets whose manifest says C(partial) never counted and never removed by the rules. A set is
    removed with every version of its objects, C(manifest.json) first. A set holding an object version under lock
    (retention date in the future, or legal hold) is not touched; the task warns and lists it in RV(locked).
  - A signed set's C(manifest.sig) is copied and verified like every other file, just before C(manifest.json).
    With O(verify_keys) the local set's signature is checked first (see
    M(authentik_ops.backup.backup_verify)), and a set that is not validly signed by one of those keys is neither
    uploaded nor vouched for.
  - Streams in parts of O(part_size) MiB; memory use does not grow with the size of the set.
  - Needs the Python package C(boto3) on the host the module runs on, and only this module needs it.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.s3
attributes:
  check_mode:
    support: full
    details:
      - Reads the set and the bucket (including the verification of objects already there) and reports in
        RV(objects) what would be uploaded or locked, and with O(mode=prune) in RV(removed) what would be
        removed. Nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run finds every object verified (and locked as asked) and uploads nothing; a second prune
        removes nothing.
options:
  path:
    description:
      - Directory of the set to copy. Mutually exclusive with O(dest). O(path) or O(dest) is required unless
        O(mode=prune).
    type: path
  dest:
    description:
      - Directory holding the sets; the set is O(dest)/O(name). Mutually exclusive with O(path).
    type: path
  name:
    description:
      - Name of the set in O(dest). V(latest) follows the C(latest) symlink to the newest complete set.
    type: str
    default: latest
  bucket:
    description:
      - Name of the bucket. It must exist.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the objects, for example V(authentik/host1/). The set's objects are
        C(<prefix><set name>/<file>).
    type: str
    default: ""
  mode:
    description:
      - V(upload) copies what is missing or differs, then verifies every object.
      - V(verify) only checks the copy in the bucket; it fails when an object is missing or differs (or, with
        O(object_lock_mode), is not under that retention).
      - V(prune) applies the keep rules (O(keep_last), O(keep_days)) to the sets under O(prefix); no local set is
        needed.
    type: str
    choices: [upload, verify, prune]
    default: upload
  verify:
    description:
      - How an object is checked against the manifest.
      - V(download) reads every object back and compares its SHA-256 and size with the manifest. This proves what
        the bucket holds, at the cost of downloading the set once more.
      - V(etag) compares the object's ETag with the MD5 of the local file (per part for multipart uploads), computed
        in the same pass that checks the local file's SHA-256 against the manifest. No download, but it relies on
        the service's ETag being the MD5 of the content, which is not so with some server-side encryption modes
        (the object is then reported as not verifiable).
    type: str
    choices: [download, etag]
    default: download
  verify_keys:
    description:
      - Ed25519 public keys (OpenSSH lines or PEM) one of which must have signed the set, as
        O(authentik_ops.backup.backup_verify#module:verify_keys). Checked before anything is uploaded or compared.
      - Empty checks no signature.
    type: list
    elements: str
    default: []
  part_size:
    description:
      - Size in MiB of the parts of a multipart upload and of the single request for smaller files. At least V(5)
        (the S3 minimum), at most V(5120). Memory use of the module is about one part.
    type: int
    default: 16
  object_lock_mode:
    description:
      - S3 Object Lock retention mode of every object of the set. V(GOVERNANCE) can be lifted by a user with the
        C(s3:BypassGovernanceRetention) permission; V(COMPLIANCE) by nobody, the account's root user included,
        until the date has passed.
      - Needs O(object_lock_days) and a bucket with object lock enabled (checked before anything is uploaded).
      - With O(mode=verify), an object whose retention does not reach O(object_lock_days) after it was written
        fails the check.
    type: str
    choices: [GOVERNANCE, COMPLIANCE]
  object_lock_days:
    description:
      - Days each object stays under O(object_lock_mode) retention after it was written (1 to 36500). An object
        whose retention ends earlier gets it extended (retention is only ever extended, never shortened).
      - Choose it no longer than the retention of the sets (O(keep_days)), or pruning keeps locked sets until
        their lock ends.
    type: int
  require_versioning:
    description:
      - Refuse to upload (or, with O(mode=verify), fail the check) unless the bucket has versioning enabled, so an
        overwritten or deleted object stays recoverable as an older version.
    type: bool
    default: false
  require_object_lock:
    description:
      - Refuse to upload (or fail the check) unless the bucket has object lock enabled. Implied by
        O(object_lock_mode).
    type: bool
    default: false
  set_prefix:
    description:
      - With O(mode=prune), the prefix of the set names (C(<set_prefix>-<UTC yyyymmddThhmmssZ>)) the rules apply
        to; other names under O(prefix) are never touched.
    type: str
    default: authentik
  keep_last:
    description:
      - With O(mode=prune), keep the newest N complete sets. V(0) turns the rule off.
    type: int
    default: 0
  keep_days:
    description:
      - With O(mode=prune), keep the complete sets that started less than this many days ago (fractions allowed).
        V(0) turns the rule off. With both rules off nothing is removed.
    type: float
    default: 0
  protect:
    description:
      - With O(mode=prune), names of sets kept whatever the rules say (the set the run has just copied).
    type: list
    elements: str
    default: []
  planned_set:
    description:
      - With O(mode=prune) in check mode, a set counted as the newest complete set (the one a real run would have
        copied), so the list of what would go is the one a real run would produce. Ignored outside check mode.
    type: str
  incomplete_age:
    description:
      - With O(mode=prune), seconds after which a set without C(manifest.json) counts as stale (reported).
    type: int
    default: 86400
  remove_stale_incomplete:
    description:
      - With O(mode=prune), also remove stale incomplete sets (never objects under lock).
    type: bool
    default: false
notes:
  - The set directory's C(latest) symlink has no equivalent in S3; list the prefix to find the newest set (set names
    sort by their UTC time stamp), and take only sets whose C(manifest.json) object exists.
  - S3 Object Lock works on versioned buckets only. An object is never deleted while it is under lock; no request
    of this module asks to bypass a governance retention.
  - Files stay encrypted as they are on disk when the set was written with
    O(authentik_ops.backup.postgres_dump#module:encrypt_recipients); the bucket never sees plaintext of such files.
seealso:
  - module: authentik_ops.backup.backup_verify
  - module: authentik_ops.backup.backup_set
  - module: authentik_ops.backup.backup_prune
requirements:
  - boto3 (on the host the module runs on)
"""

EXAMPLES = r"""
- name: Copy the newest set to MinIO and read it back to verify
  authentik_ops.backup.backup_upload:
    dest: /var/backups/authentik
    bucket: backups
    prefix: "authentik/{{ inventory_hostname }}/"
    endpoint_url: https://minio.example.com:9000
    access_key: "{{ vault_minio_access_key }}"
    secret_key: "{{ vault_minio_secret_key }}"

- name: Copy one set to Amazon S3 (credentials from the environment), verify by ETag
  authentik_ops.backup.backup_upload:
    path: /var/backups/authentik/authentik-20261130T020000Z
    bucket: example-authentik-backups
    region: eu-central-1
    verify: etag

- name: Check the copy in the bucket without uploading anything
  authentik_ops.backup.backup_upload:
    dest: /var/backups/authentik
    bucket: backups
    endpoint_url: https://minio.example.com:9000
    mode: verify

- name: Copy the newest set under a 30-day compliance lock, only to a versioned bucket with object lock
  authentik_ops.backup.backup_upload:
    dest: /var/backups/authentik
    bucket: example-authentik-worm
    prefix: "authentik/{{ inventory_hostname }}/"
    object_lock_mode: COMPLIANCE
    object_lock_days: 30
    require_versioning: true

- name: Keep a week of sets in the bucket, at least 7 (locked sets stay until their lock ends)
  authentik_ops.backup.backup_upload:
    bucket: example-authentik-worm
    prefix: "authentik/{{ inventory_hostname }}/"
    mode: prune
    keep_last: 7
    keep_days: 7
"""

RETURN = r"""
mode:
  description: The O(mode) of the run.
  returned: always
  type: str
  sample: upload
set:
  description: Name of the set.
  returned: when O(mode) is V(upload) or V(verify)
  type: str
  sample: authentik-20261130T020000Z
set_path:
  description: Directory of the set.
  returned: when O(mode) is V(upload) or V(verify)
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: backups
key_prefix:
  description: Key prefix of the set's objects (O(prefix) and the set name).
  returned: when O(mode) is V(upload) or V(verify)
  type: str
  sample: authentik/host1/authentik-20261130T020000Z/
objects:
  description:
    - One entry per file of the set, C(manifest.json) last.
    - C(action) is V(uploaded), V(repaired) (it was in the bucket but failed the verification),
      V(present) (already there and verified), V(would upload) / V(would repair) in check mode, or V(missing) /
      V(differs) with O(mode=verify).
    - With O(object_lock_mode), C(lock) is the object's lock after the run (C(mode), C(retain_until),
      C(legal_hold)), and C(lock_action) is V(locked) (this run set or extended its retention) or V(would lock).
  returned: when O(mode) is V(upload) or V(verify)
  type: list
  elements: dict
  sample:
    - {name: postgres.sql.zst.age, key: "authentik/host1/authentik-20261130T020000Z/postgres.sql.zst.age",
       size: 1234, sha256: "9f86...", action: uploaded, verified: download, ok: true,
       lock: {mode: COMPLIANCE, retain_until: "2026-12-30T02:00:04Z", legal_hold: false}}
uploaded:
  description: Names of the files uploaded by this run (including repaired ones).
  returned: when O(mode) is V(upload) or V(verify)
  type: list
  elements: str
  sample: [postgres.sql.zst, manifest.json]
repaired:
  description: Names of the files that were in the bucket but failed the verification, and were uploaded again.
  returned: when O(mode) is V(upload) or V(verify)
  type: list
  elements: str
  sample: []
lock_applied:
  description: Names of the files whose retention this run set or extended after they were written (objects
    already in the bucket, or written by a service that ignored the lock asked with the upload).
  returned: when O(mode) is V(upload) or V(verify)
  type: list
  elements: str
  sample: []
bucket_protection:
  description: What the bucket guarantees, as read before the copy (versioning status, object lock, default
    retention). C(object_lock) is null when it was not asked.
  returned: with O(require_versioning), O(require_object_lock) or O(object_lock_mode)
  type: dict
  sample: {versioning: Enabled, object_lock: true, default_retention: null}
bytes_uploaded:
  description: Bytes sent by this run.
  returned: when O(mode) is V(upload) or V(verify)
  type: int
  sample: 1048576
problems:
  description: Why objects failed the verification (with O(mode=verify), or objects that still fail after upload).
  returned: when O(mode) is V(upload) or V(verify)
  type: list
  elements: str
  sample: ["postgres.sql.zst: sha256 of the object is 1c2d..., the manifest says 9f86..."]
removed:
  description: With O(mode=prune), the sets removed (in check mode, that would be removed), oldest first.
  returned: when O(mode=prune)
  type: list
  elements: str
  sample: [authentik-20261101T020000Z]
kept:
  description: With O(mode=prune), the complete sets kept, oldest first, each with the rules that keep it.
  returned: when O(mode=prune)
  type: list
  elements: dict
  sample: [{name: authentik-20261130T020000Z, reasons: [newest, keep_last]}]
locked:
  description: With O(mode=prune), the sets due for removal that were kept because object versions of theirs are
    under lock, with how many and why.
  returned: when O(mode=prune)
  type: list
  elements: dict
  sample: [{name: authentik-20261102T020000Z, objects: 4,
            reasons: ["COMPLIANCE retention until 2026-12-02T02:00:03Z"]}]
incomplete:
  description: With O(mode=prune), the sets without a C(manifest.json) object, with their age in seconds (from
    their newest object), whether they count as stale and whether they were removed.
  returned: when O(mode=prune)
  type: list
  elements: dict
  sample: [{name: authentik-20261129T020000Z, age: 90000, stale: true, removed: false}]
partial:
  description: With O(mode=prune), the sets whose manifest says C(partial); never counted and never removed by
    the keep rules.
  returned: when O(mode=prune)
  type: list
  elements: str
  sample: []
policy:
  description: With O(mode=prune), the keep rules applied.
  returned: when O(mode=prune)
  type: dict
  sample: {keep_last: 7, keep_days: 30}
versions_deleted:
  description: With O(mode=prune), the object versions and delete markers deleted.
  returned: when O(mode=prune)
  type: int
  sample: 10
authenticated:
  description: Whether the local set's signature was checked against O(verify_keys) and is valid.
  returned: when O(mode=upload) or O(mode=verify)
  type: bool
  sample: false
duration:
  description: Seconds the run took.
  returned: always
  type: float
  sample: 3.2
"""

import base64
import datetime
import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import Stopwatch, run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import sha256_file
from ansible_collections.authentik_ops.backup.plugins.module_utils._s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    LOCK_MODES,
    BotoCoreError,
    ClientError,
    S3Error,
    apply_retention,
    bucket_protection,
    describe_error,
    head,
    lock_of,
    protection_problem,
    prune_bucket,
    s3_argument_spec,
    s3_client,
    survey_bucket,
    wanted_retention,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import (
    LATEST,
    MANIFEST,
    SIGNATURE,
    bad_file_name,
    name_problem,
    resolve_set,
    set_time,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._signing import check_signature, load_verify_keys

MIB = 1 << 20
READ_CHUNK = MIB


class UploadError(BackupError):
    """A file cannot be copied as the manifest describes it; the message says why."""


# --- the set ------------------------------------------------------------------------------------------------------

def set_files(set_path):
    """[(name, size, sha256)] of the manifest's files, then manifest.sig when the set is signed, then manifest.json
    itself (the sha256 of these two from disk)."""
    manifest_path = os.path.join(set_path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise UploadError(f"{set_path} has no {MANIFEST}: the set is incomplete and is not copied")
    try:
        with open(manifest_path, "rb") as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
            raise ValueError("it has no list of files")
    except (OSError, ValueError) as exc:
        raise UploadError(f"{manifest_path} cannot be read: {exc}") from None
    files = []
    for entry in manifest["files"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if bad_file_name(name):
            raise UploadError(f"{MANIFEST}: entry {entry!r} has no valid file name")
        if not entry.get("sha256") or entry.get("size") is None:
            raise UploadError(f"{MANIFEST}: {name} has no size or sha256; the copy could not be verified")
        if not os.path.isfile(os.path.join(set_path, name)):
            raise UploadError(f"{name} is listed in {MANIFEST} but missing from {set_path}")
        files.append((name, int(entry["size"]), str(entry["sha256"]).lower()))
    signature_path = os.path.join(set_path, SIGNATURE)
    if os.path.isfile(signature_path) and not os.path.islink(signature_path):
        files.append((SIGNATURE, os.path.getsize(signature_path), sha256_file(signature_path)))
    files.append((MANIFEST, os.path.getsize(manifest_path), sha256_file(manifest_path)))
    return files


def check_authentic(set_path, texts):
    """Whether the local set is validly signed by one of ``texts``; raises UploadError when it is not. False when
    no key is given (nothing checked)."""
    keys = load_verify_keys(texts)
    if not keys:
        return False
    with open(os.path.join(set_path, MANIFEST), "rb") as handle:
        check = check_signature(set_path, handle.read(), keys)
    if not check.valid:
        raise UploadError(f"{set_path}: {check.problem}; the set is not copied or vouched for")
    return True


# --- hashing helpers ----------------------------------------------------------------------------------------------

def local_digests(path, part_size):
    """(sha256 hex, size, expected ETag for single and multipart uploads of ``part_size``) of a local file."""
    sha = hashlib.sha256()
    md5_parts = []
    size = 0
    with open(path, "rb") as handle:
        while True:
            part = hashlib.md5()
            got = 0
            while got < part_size:
                block = handle.read(min(READ_CHUNK, part_size - got))
                if not block:
                    break
                sha.update(block)
                part.update(block)
                got += len(block)
            if not got:
                break
            size += got
            md5_parts.append(part.digest())
    if len(md5_parts) <= 1:
        etag = (md5_parts[0] if md5_parts else hashlib.md5(b"").digest()).hex()
    else:
        etag = f"{hashlib.md5(b''.join(md5_parts)).hexdigest()}-{len(md5_parts)}"
    return sha.hexdigest(), size, etag


# --- one object ---------------------------------------------------------------------------------------------------

def verify_object(client, bucket, key, expected, path, part_size, how):
    """Check the object ``key`` against ``expected`` (name, size, sha256). Returns a problem or None."""
    name, size, sha256 = expected
    info = head(client, bucket, key)
    if info is None:
        return f"{name}: not in the bucket"
    if int(info.get("ContentLength", -1)) != size:
        return f"{name}: the object has {info.get('ContentLength')} bytes, the manifest says {size}"
    if how == "download":
        digest = hashlib.sha256()
        got = 0
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            for block in body.iter_chunks(READ_CHUNK):
                digest.update(block)
                got += len(block)
        finally:
            body.close()
        if got != size:
            return f"{name}: {got} bytes downloaded, the manifest says {size}"
        if digest.hexdigest() != sha256:
            return f"{name}: sha256 of the object is {digest.hexdigest()}, the manifest says {sha256}"
        return None
    etag = str(info.get("ETag", "")).strip('"')
    meta_part = (info.get("Metadata") or {}).get("part-size")
    local_sha, local_size, expected_etag = local_digests(path, int(meta_part) if meta_part else part_size)
    if local_sha != sha256 or local_size != size:
        return f"{name}: the local file no longer matches the manifest (sha256 {local_sha}); it cannot vouch for the copy"
    if etag != expected_etag:
        if "-" not in etag and len(etag) != 32:
            return f"{name}: the object's ETag {etag!r} is not an MD5 (server-side encryption?); use verify=download"
        return f"{name}: the object's ETag {etag} differs from the MD5 of the local file ({expected_etag})"
    return None


def _md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def upload_file(client, bucket, key, path, expected, part_size, lock=None):
    """Upload ``path`` to ``key``, hashing it on the way; nothing stays in the bucket if it does not match the
    manifest. ``lock`` (ObjectLockMode, ObjectLockRetainUntilDate) is asked with the object. Returns the bytes
    sent."""
    name, size, sha256 = expected
    extra = dict(Metadata={"sha256": sha256, "part-size": str(part_size)}, ContentType="application/octet-stream",
                 **(lock or {}))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= part_size:
            data = handle.read(part_size + 1)
            digest.update(data)
            if len(data) != size or digest.hexdigest() != sha256:
                raise UploadError(f"{name}: the local file does not match the manifest (sha256 {digest.hexdigest()}, "
                                  f"{len(data)} bytes); it was not uploaded")
            client.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=_md5_b64(data), **extra)
            return len(data)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
        parts = []
        sent = 0
        try:
            while True:
                data = handle.read(part_size)
                if not data:
                    break
                digest.update(data)
                answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1,
                                            Body=data, ContentMD5=_md5_b64(data))
                parts.append(dict(PartNumber=len(parts) + 1, ETag=answer["ETag"]))
                sent += len(data)
            if sent != size or digest.hexdigest() != sha256:
                raise UploadError(f"{name}: the local file does not match the manifest (sha256 {digest.hexdigest()}, "
                                  f"{sent} bytes); the upload was aborted")
            client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload=dict(Parts=parts))
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except (BotoCoreError, ClientError):
                pass
            raise
    return sent


# --- the copy of a set --------------------------------------------------------------------------------------------

class Copy:
    """One run over the files of a set: the options it needs and what it did."""

    def __init__(self, module, client, set_path):
        params = module.params
        self.client, self.bucket, self.how = client, params["bucket"], params["verify"]
        self.mode, self.check_mode = params["mode"], module.check_mode
        self.part_size = params["part_size"] * MIB
        self.key_prefix = f"{params['prefix']}{os.path.basename(set_path)}/"
        self.set_path = set_path
        self.lock_mode, self.lock_days = params["object_lock_mode"], params["object_lock_days"]
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.objects, self.uploaded, self.repaired, self.locked, self.problems = [], [], [], [], []
        self.sent = 0

    def lock_args(self):
        if not self.lock_mode:
            return None
        return dict(ObjectLockMode=self.lock_mode,
                    ObjectLockRetainUntilDate=self.now + datetime.timedelta(days=self.lock_days))

    def settle_lock(self, key, record):
        """With object_lock_mode: check that the object's retention covers object_lock_days from when it was
        written, and (upload mode) extend it where it does not. Returns a problem or None."""
        if not self.lock_mode:
            return None
        info = head(self.client, self.bucket, key)
        wanted = wanted_retention(info, self.lock_mode, self.lock_days, self.now) if info else None
        record["lock"] = lock_of(info or {})
        if wanted is None:
            return None
        if self.mode == "verify":
            return (f"{record['name']}: not under {self.lock_mode} retention until {wanted:%Y-%m-%dT%H:%M:%SZ} "
                    f"(it has {record['lock']['mode'] or 'no retention'}"
                    f"{' until ' + record['lock']['retain_until'] if record['lock']['retain_until'] else ''})")
        if self.check_mode:
            record["lock_action"] = "would lock"
            return None
        apply_retention(self.client, self.bucket, key, info.get("VersionId"), self.lock_mode, wanted)
        record.update(lock=lock_of(head(self.client, self.bucket, key) or {}), lock_action="locked")
        self.locked.append(record["name"])
        return None

    def one(self, expected):
        """Verify, upload or repair one file of the set; returns its record."""
        name, size, sha256 = expected
        key = self.key_prefix + name
        path = os.path.join(self.set_path, name)
        record = dict(name=name, key=key, size=size, sha256=sha256, verified=self.how)
        if name in (SIGNATURE, MANIFEST) and self.problems:
            record.update(action="not uploaded", ok=False)
            return record  # the manifest goes last and only over a verified copy
        problem = verify_object(self.client, self.bucket, key, expected, path, self.part_size, self.how)
        if problem is None:
            record.update(action="present", ok=True)
        elif self.mode == "verify":
            exists = not problem.endswith("not in the bucket")
            record.update(action="differs" if exists else "missing", ok=False, problem=problem)
            self.problems.append(problem)
            return record
        elif self.check_mode:
            exists = not problem.endswith("not in the bucket")
            record.update(action="would repair" if exists else "would upload", ok=None, problem=problem)
            return record
        else:
            self.transfer(expected, key, path, record, problem)
        if record["ok"]:
            problem = self.settle_lock(key, record)
            if problem:
                record.update(ok=False, problem=problem)
                self.problems.append(problem)
        return record

    def transfer(self, expected, key, path, record, problem):
        exists = not problem.endswith("not in the bucket")
        self.sent += upload_file(self.client, self.bucket, key, path, expected, self.part_size, self.lock_args())
        self.uploaded.append(expected[0])
        if exists:
            self.repaired.append(expected[0])
            record["previous_problem"] = problem
        after = verify_object(self.client, self.bucket, key, expected, path, self.part_size, self.how)
        record.update(action="repaired" if exists else "uploaded", ok=after is None)
        if after is not None:
            record["problem"] = after
            self.problems.append(after)

    def result(self):
        return dict(key_prefix=self.key_prefix, objects=self.objects, uploaded=self.uploaded,
                    repaired=self.repaired, lock_applied=self.locked, problems=self.problems, bytes_uploaded=self.sent)


def run(module, client, set_path, files):
    copy = Copy(module, client, set_path)
    for expected in files:
        copy.objects.append(copy.one(expected))
    return copy.result()


# --- main -----------------------------------------------------------------------------------------------------------

def check_options(params):
    if not HAS_BOTO3:
        raise ConfigError(missing_required_lib("boto3", reason="to copy backup sets to S3-compatible storage"),
                          exception=BOTO3_IMPORT_ERROR)
    if not 5 <= params["part_size"] <= 5120:
        raise ConfigError(f"part_size: {params['part_size']} MiB is outside what S3 accepts; choose 5 to 5120")
    if params["prefix"].startswith("/"):
        raise ConfigError(f"prefix: {params['prefix']!r} must not start with /; S3 keys are relative")
    if params["object_lock_mode"] and not 1 <= (params["object_lock_days"] or 0) <= 36500:
        raise ConfigError(f"object_lock_days: {params['object_lock_days']} must be 1 to 36500 with object_lock_mode")
    if params["mode"] == "prune":
        problem = name_problem("set_prefix", params["set_prefix"])
        if problem:
            raise ConfigError(problem)
        if params["keep_last"] < 0 or params["keep_days"] < 0 or params["incomplete_age"] < 0:
            raise ConfigError("keep_last, keep_days and incomplete_age must be 0 or more (0 turns the rule off)")
        planned = params["planned_set"]
        if planned is not None and set_time(planned, params["set_prefix"]) is None:
            raise ConfigError(f"planned_set {planned!r} is not a set name of set_prefix {params['set_prefix']!r}")
    elif not (params["path"] or params["dest"]):
        raise ConfigError(f"mode={params['mode']} copies or checks a set: give path, or dest (and name)")


def check_bucket(module, client):
    """Refuse a bucket that does not give the protection the options ask for, before anything is uploaded."""
    params = module.params
    want_lock = bool(params["require_object_lock"] or params["object_lock_mode"])
    if not (params["require_versioning"] or want_lock):
        return None
    found = bucket_protection(client, params["bucket"], want_lock)
    problem = protection_problem(params["bucket"], found, params["require_versioning"],
                                 params["require_object_lock"], params["object_lock_mode"])
    if problem:
        raise S3Error(problem, bucket_protection=found)
    return found


def prune(module, client, common):
    """mode=prune: the keep rules on the sets under prefix; a set holding an object under lock is skipped."""
    params = module.params
    rules = {key: params[key] for key in ("set_prefix", "keep_last", "keep_days", "protect", "incomplete_age",
                                          "remove_stale_incomplete")}
    rules["planned_set"] = params["planned_set"] if module.check_mode else None
    now = datetime.datetime.now(datetime.timezone.utc)
    plan = survey_bucket(client, params["bucket"], params["prefix"], rules, now)
    for locked in plan["locked"]:
        module.warn(f"set {locked['name']} in s3://{params['bucket']}/{params['prefix']} is due for removal but "
                    f"was kept: {locked['objects']} object version(s) under lock ({'; '.join(locked['reasons'])}); "
                    "it is removed by a later run once the lock has expired")
    for info in plan["incomplete"]:
        if info["stale"] and not info["removed"]:
            module.warn(f"{info['name']} in s3://{params['bucket']}/{params['prefix']} has no manifest.json and has "
                        f"not changed for {info['age']} s; it is not a backup")
    common.update(removed=list(plan["remove"]), kept=[dict(name=n, reasons=r) for n, r in plan["kept"].items()],
                  locked=plan["locked"], incomplete=plan["incomplete"], partial=plan["partial"],
                  policy=dict(keep_last=params["keep_last"], keep_days=params["keep_days"]), versions_deleted=0,
                  changed=bool(plan["remove"]))
    if not module.check_mode:
        common["versions_deleted"] = prune_bucket(client, params["bucket"], params["prefix"], plan)
    return common


def copy_set(module, client, common):
    """mode=upload or verify: the set of path (or dest and name) against its copy under prefix."""
    params = module.params
    set_path = resolve_set(params["path"], params["dest"], params["name"])
    common.update(set=os.path.basename(set_path), set_path=set_path)
    files = set_files(set_path)
    common["authenticated"] = check_authentic(set_path, params["verify_keys"])
    protection = check_bucket(module, client)
    if protection is not None:
        common["bucket_protection"] = protection
    result = run(module, client, set_path, files)
    common.update(result)
    common["changed"] = bool(result["uploaded"] or result["lock_applied"]) or (module.check_mode and any(
        str(o.get("action", "")).startswith("would") or o.get("lock_action") == "would lock"
        for o in result["objects"]))
    if result["problems"]:
        what = "the copy in the bucket does not match the manifest" if params["mode"] == "verify" else \
            "the copy could not be verified"
        raise UploadError(f"{what}: {'; '.join(result['problems'])}", **common)
    return common


def upload(module):
    params = module.params
    check_options(params)
    watch = Stopwatch()
    common = dict(changed=False, bucket=params["bucket"], mode=params["mode"])
    try:
        client = s3_client(params)
        result = prune(module, client, common) if params["mode"] == "prune" else copy_set(module, client, common)
    except BackupError as exc:
        raise exc.add_fields(**common)
    except (BotoCoreError, ClientError) as exc:
        raise UploadError(f"S3 request to bucket {params['bucket']!r} failed: {describe_error(exc)}",
                          **common) from exc
    except OSError as exc:
        raise UploadError(f"reading the set failed: {exc}", **common) from exc
    result["duration"] = watch.elapsed
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            dest=dict(type="path"),
            name=dict(type="str", default=LATEST),
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            mode=dict(type="str", default="upload", choices=["upload", "verify", "prune"]),
            verify=dict(type="str", default="download", choices=["download", "etag"]),
            **s3_argument_spec(),
            part_size=dict(type="int", default=16),
            verify_keys=dict(type="list", elements="str", default=[], no_log=False),
            object_lock_mode=dict(type="str", choices=list(LOCK_MODES)),
            object_lock_days=dict(type="int"),
            require_versioning=dict(type="bool", default=False),
            require_object_lock=dict(type="bool", default=False),
            set_prefix=dict(type="str", default="authentik"),
            keep_last=dict(type="int", default=0),
            keep_days=dict(type="float", default=0),
            protect=dict(type="list", elements="str", default=[]),
            planned_set=dict(type="str"),
            incomplete_age=dict(type="int", default=86400),
            remove_stale_incomplete=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("path", "dest")],
        required_together=[("object_lock_mode", "object_lock_days")],
        supports_check_mode=True,
    )
    run_module(module, upload)


if __name__ == "__main__":
    main()
