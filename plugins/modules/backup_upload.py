#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_upload
short_description: Copy a complete authentik backup set to S3-compatible storage and verify the copy
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
attributes:
  check_mode:
    support: full
    details:
      - Reads the set and the bucket (including the verification of objects already there) and reports in
        RV(objects) what would be uploaded. Nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run finds every object verified and uploads nothing.
options:
  path:
    description:
      - Directory of the set to copy. Mutually exclusive with O(dest).
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
      - V(verify) only checks the copy in the bucket; it fails when an object is missing or differs.
    type: str
    choices: [upload, verify]
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
  endpoint_url:
    description:
      - URL of an S3-compatible service, for example V(https://minio.example.com:9000). Unset for Amazon S3.
      - If not set, the value of the E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL) environment variable is used.
    type: str
  region:
    description:
      - Region of the bucket. If not set, the value of E(AWS_REGION) or E(AWS_DEFAULT_REGION) is used, else
        V(us-east-1).
    type: str
  access_key:
    description:
      - Access key ID. If not set, the value of E(AWS_ACCESS_KEY_ID) is used, else boto3's own credential chain
        (shared credentials file, instance profile, ...).
    type: str
  secret_key:
    description:
      - Secret access key. If not set, the value of E(AWS_SECRET_ACCESS_KEY) is used. Never logged.
    type: str
  session_token:
    description:
      - Session token of temporary credentials. If not set, the value of E(AWS_SESSION_TOKEN) is used. Never logged.
    type: str
  validate_certs:
    description:
      - Check the TLS certificate of the service.
    type: bool
    default: true
  ca_bundle:
    description:
      - A CA bundle file to check the service's certificate with.
    type: path
  addressing_style:
    description:
      - V(path) puts the bucket in the URL path (what most S3-compatible services need), V(virtual) in the host
        name. V(auto) lets boto3 decide.
      - Defaults to V(path) with O(endpoint_url), else V(auto).
    type: str
    choices: [auto, path, virtual]
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
notes:
  - The set directory's C(latest) symlink has no equivalent in S3; list the prefix to find the newest set (set names
    sort by their UTC time stamp), and take only sets whose C(manifest.json) object exists.
  - Files stay encrypted as they are on disk when the set was written with
    O(authentik_ops.backup.postgres_dump#module:encrypt_recipients); the bucket never sees plaintext of such files.
seealso:
  - module: authentik_ops.backup.backup_verify
  - module: authentik_ops.backup.backup_set
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
"""

RETURN = r"""
set:
  description: Name of the set.
  returned: always
  type: str
  sample: authentik-20261130T020000Z
set_path:
  description: Directory of the set.
  returned: always
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: backups
key_prefix:
  description: Key prefix of the set's objects (O(prefix) and the set name).
  returned: always
  type: str
  sample: authentik/host1/authentik-20261130T020000Z/
objects:
  description:
    - One entry per file of the set, C(manifest.json) last.
    - C(action) is V(uploaded), V(repaired) (it was in the bucket but failed the verification),
      V(present) (already there and verified), V(would upload) / V(would repair) in check mode, or V(missing) /
      V(differs) with O(mode=verify).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: postgres.sql.zst.age, key: "authentik/host1/authentik-20261130T020000Z/postgres.sql.zst.age",
       size: 1234, sha256: "9f86...", action: uploaded, verified: download, ok: true}
uploaded:
  description: Names of the files uploaded by this run (including repaired ones).
  returned: always
  type: list
  elements: str
  sample: [postgres.sql.zst, manifest.json]
repaired:
  description: Names of the files that were in the bucket but failed the verification, and were uploaded again.
  returned: always
  type: list
  elements: str
  sample: []
bytes_uploaded:
  description: Bytes sent by this run.
  returned: always
  type: int
  sample: 1048576
problems:
  description: Why objects failed the verification (with O(mode=verify), or objects that still fail after upload).
  returned: always
  type: list
  elements: str
  sample: ["postgres.sql.zst: sha256 of the object is 1c2d..., the manifest says 9f86..."]
authenticated:
  description: Whether the local set's signature was checked against O(verify_keys) and is valid.
  returned: always
  type: bool
  sample: false
duration:
  description: Seconds the run took.
  returned: always
  type: float
  sample: 3.2
"""

import base64
import hashlib
import json
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import Stopwatch, run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import sha256_file
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import (
    LATEST,
    MANIFEST,
    SIGNATURE,
    bad_file_name,
    resolve_set,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._signing import check_signature, load_verify_keys

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()
    BotoCoreError = ClientError = Exception
else:
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None

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


# --- S3 -----------------------------------------------------------------------------------------------------------

def s3_client(module):
    params = module.params
    endpoint = params["endpoint_url"] or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    style = params["addressing_style"] or ("path" if endpoint else "auto")
    options = dict(signature_version="s3v4", s3=dict(addressing_style=style),
                   retries=dict(max_attempts=5, mode="standard"))
    try:  # botocore >= 1.36 adds its own CRC checksums by default, which some S3-compatible services refuse
        config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        **options)
    except TypeError:
        config = Config(**options)
    region = params["region"] or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = boto3.session.Session(aws_access_key_id=params["access_key"] or None,
                                    aws_secret_access_key=params["secret_key"] or None,
                                    aws_session_token=params["session_token"] or None,
                                    region_name=region)
    verify = params["ca_bundle"] if params["ca_bundle"] else params["validate_certs"]
    return session.client("s3", endpoint_url=endpoint or None, verify=verify, config=config)


def describe_error(exc):
    """A message for a boto3 error that names the S3 error code, never the credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) if hasattr(exc, "response") else {}
        return f"{error.get('Code', 'error')}: {error.get('Message') or exc}"
    return f"{exc.__class__.__name__}: {exc}"


def head(client, bucket, key):
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NotFound") or status == 404:
            return None
        raise


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


def upload_file(client, bucket, key, path, expected, part_size):
    """Upload ``path`` to ``key``, hashing it on the way; nothing stays in the bucket if it does not match the
    manifest. Returns the bytes sent."""
    name, size, sha256 = expected
    metadata = {"sha256": sha256, "part-size": str(part_size)}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= part_size:
            data = handle.read(part_size + 1)
            digest.update(data)
            if len(data) != size or digest.hexdigest() != sha256:
                raise UploadError(f"{name}: the local file does not match the manifest (sha256 {digest.hexdigest()}, "
                                  f"{len(data)} bytes); it was not uploaded")
            client.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=_md5_b64(data), Metadata=metadata,
                              ContentType="application/octet-stream")
            return len(data)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata,
                                                   ContentType="application/octet-stream")["UploadId"]
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


# --- main -----------------------------------------------------------------------------------------------------------

def run(module, client, set_path, files):
    params = module.params
    bucket, how = params["bucket"], params["verify"]
    part_size = params["part_size"] * MIB
    key_prefix = f"{params['prefix']}{os.path.basename(set_path)}/"
    objects, uploaded, repaired, problems = [], [], [], []
    sent = 0
    for expected in files:
        name, size, sha256 = expected
        key = key_prefix + name
        path = os.path.join(set_path, name)
        record = dict(name=name, key=key, size=size, sha256=sha256, verified=how)
        objects.append(record)
        if name in (SIGNATURE, MANIFEST) and problems:
            record.update(action="not uploaded", ok=False)
            continue  # the manifest goes last and only over a verified copy
        problem = verify_object(client, bucket, key, expected, path, part_size, how)
        if problem is None:
            record.update(action="present", ok=True)
            continue
        exists = not problem.endswith("not in the bucket")
        if params["mode"] == "verify":
            record.update(action="differs" if exists else "missing", ok=False, problem=problem)
            problems.append(problem)
            continue
        if module.check_mode:
            record.update(action="would repair" if exists else "would upload", ok=None, problem=problem)
            continue
        sent += upload_file(client, bucket, key, path, expected, part_size)
        uploaded.append(name)
        if exists:
            repaired.append(name)
            record["previous_problem"] = problem
        after = verify_object(client, bucket, key, expected, path, part_size, how)
        record.update(action="repaired" if exists else "uploaded", ok=after is None)
        if after is not None:
            record["problem"] = after
            problems.append(after)
    return dict(key_prefix=key_prefix, objects=objects, uploaded=uploaded, repaired=repaired, problems=problems,
                bytes_uploaded=sent)


def upload(module):
    params = module.params
    if not HAS_BOTO3:
        raise ConfigError(missing_required_lib("boto3", reason="to copy backup sets to S3-compatible storage"),
                          exception=BOTO3_IMPORT_ERROR)
    if not 5 <= params["part_size"] <= 5120:
        raise ConfigError(f"part_size: {params['part_size']} MiB is outside what S3 accepts; choose 5 to 5120")
    if params["prefix"].startswith("/"):
        raise ConfigError(f"prefix: {params['prefix']!r} must not start with /; S3 keys are relative")
    watch = Stopwatch()
    set_path = resolve_set(params["path"], params["dest"], params["name"])
    common = dict(changed=False, set=os.path.basename(set_path), set_path=set_path, bucket=params["bucket"])
    files = set_files(set_path)
    try:
        common["authenticated"] = check_authentic(set_path, params["verify_keys"])
    except BackupError as exc:
        raise exc.add_fields(**common)
    try:
        client = s3_client(module)
        result = run(module, client, set_path, files)
    except UploadError as exc:
        raise UploadError(exc.msg, **common) from exc
    except (BotoCoreError, ClientError) as exc:
        raise UploadError(f"S3 request to bucket {params['bucket']!r} failed: {describe_error(exc)}",
                          **common) from exc
    except OSError as exc:
        raise UploadError(f"reading the set failed: {exc}", **common) from exc
    common.update(result, duration=watch.elapsed)
    common["changed"] = bool(result["uploaded"]) or (module.check_mode and any(
        str(o.get("action", "")).startswith("would") for o in result["objects"]))
    if result["problems"]:
        what = "the copy in the bucket does not match the manifest" if params["mode"] == "verify" else \
            "the copy could not be verified"
        raise UploadError(f"{what}: {'; '.join(result['problems'])}", **common)
    return common


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            dest=dict(type="path"),
            name=dict(type="str", default=LATEST),
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            mode=dict(type="str", default="upload", choices=["upload", "verify"]),
            verify=dict(type="str", default="download", choices=["download", "etag"]),
            endpoint_url=dict(type="str"),
            region=dict(type="str"),
            access_key=dict(type="str", no_log=False, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])),
            secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])),
            session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
            validate_certs=dict(type="bool", default=True),
            ca_bundle=dict(type="path"),
            addressing_style=dict(type="str", choices=["auto", "path", "virtual"]),
            part_size=dict(type="int", default=16),
            verify_keys=dict(type="list", elements="str", default=[], no_log=False),
        ),
        mutually_exclusive=[("path", "dest")],
        required_one_of=[("path", "dest")],
        supports_check_mode=True,
    )
    run_module(module, upload)


if __name__ == "__main__":
    main()
