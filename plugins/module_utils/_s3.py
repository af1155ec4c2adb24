# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""S3-compatible storage of backup sets: the client, object lock, and the sets under a key prefix.

boto3 is imported here and nowhere else, and only backup_upload imports this file: without copies to S3 no S3
library is needed anywhere. Functions raise S3Error (a BackupError) with a message that names the bucket or the
object and never the credentials; boto3's own errors are left to the caller, which adds what it was doing.

A set in a bucket is the objects ``<key prefix><set name>/<file>``. As on disk, it is complete when its
``manifest.json`` object exists and reads as a manifest, partial when that manifest says ``"partial": true``, and
incomplete otherwise. An object is under lock while its retention date is in the future or its legal hold is on;
such objects are never deleted (no request ever asks to bypass a governance retention).
"""

from __future__ import annotations

import datetime
import json
import os
import traceback

from ansible.module_utils.basic import env_fallback

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError
from ansible_collections.authentik_ops.backup.plugins.module_utils._retention import classify_incomplete, plan_retention
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import MANIFEST, sort_sets

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError  # pylint: disable=unused-import  # for backup_upload
except ImportError:
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()
    BotoCoreError = ClientError = Exception
else:
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
# A retention date this much earlier than asked still counts: the host's and the service's clocks differ, and the
# service stamps LastModified when the upload ends, after the date was computed.
LOCK_TOLERANCE = datetime.timedelta(minutes=10)
MANIFEST_LIMIT = 4 << 20


class S3Error(BackupError):
    """The bucket or an object is not as the options require; the message says what and what to do."""


# --- the client ---------------------------------------------------------------------------------------------------

def s3_argument_spec():
    """The S3 connection options (doc fragment ``_common.s3``) of the modules that talk to a bucket."""
    return dict(
        endpoint_url=dict(type="str"),
        region=dict(type="str"),
        access_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])),
        secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])),
        session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
        validate_certs=dict(type="bool", default=True),
        ca_bundle=dict(type="path"),
        addressing_style=dict(type="str", choices=["auto", "path", "virtual"]),
    )


def s3_client(params):
    """A boto3 S3 client for the connection options of backup_upload."""
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


def error_code(exc):
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def describe_error(exc):
    """A message for a boto3 error that names the S3 error code, never the credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) if hasattr(exc, "response") else {}
        return f"{error.get('Code', 'error')}: {error.get('Message') or exc}"
    return f"{exc.__class__.__name__}: {exc}"


def head(client, bucket, key, version_id=None):
    """HEAD of an object (of one version when ``version_id`` is given), or None when there is no such object."""
    args = dict(Bucket=bucket, Key=key)
    if version_id and version_id != "null":
        args["VersionId"] = version_id
    try:
        return client.head_object(**args)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchVersion") or status == 404:
            return None
        raise


# --- what the bucket guarantees -------------------------------------------------------------------------------------

def bucket_protection(client, bucket, want_lock):
    """{versioning: Enabled|Suspended|None, object_lock: bool|None, default_retention: dict|None} of the bucket.

    ``object_lock`` is only asked when ``want_lock`` (it needs its own permission); None means not asked.
    """
    versioning = client.get_bucket_versioning(Bucket=bucket).get("Status") or None
    found = dict(versioning=versioning, object_lock=None, default_retention=None)
    if want_lock:
        try:
            config = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration") or {}
        except ClientError as exc:
            if "ObjectLockConfiguration" not in error_code(exc) and error_code(exc) != "NotImplemented":
                raise
            config = {}
        found["object_lock"] = config.get("ObjectLockEnabled") == "Enabled"
        found["default_retention"] = (config.get("Rule") or {}).get("DefaultRetention")
    return found


def protection_problem(bucket, found, require_versioning, require_object_lock, lock_mode):
    """Why the bucket cannot take the copy as the options ask, or None."""
    if require_versioning and found["versioning"] != "Enabled":
        return (f"bucket {bucket!r} has versioning {found['versioning'] or 'never enabled'}; require_versioning "
                "copies only to a versioned bucket, where an overwritten or deleted object stays recoverable. "
                "Enable versioning on the bucket (S3 API PutBucketVersioning, Status=Enabled), or choose another "
                "bucket. Nothing was uploaded")
    if (require_object_lock or lock_mode) and not found["object_lock"]:
        why = f"object_lock_mode={lock_mode}" if lock_mode else "require_object_lock"
        return (f"bucket {bucket!r} has no object lock; {why} needs a bucket with object lock enabled (Amazon S3: "
                "PutObjectLockConfiguration on a versioned bucket; MinIO and most others: only when the bucket is "
                "created, e.g. `mc mb --with-lock`). Nothing was uploaded")
    return None


# --- object lock of one object ------------------------------------------------------------------------------------

def _aware(moment):
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def lock_of(info):
    """The lock a HEAD answer shows: {mode, retain_until (ISO), legal_hold}; mode and date None when unset."""
    until = _aware(info.get("ObjectLockRetainUntilDate"))
    return dict(mode=info.get("ObjectLockMode") or None,
                retain_until=until.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if until else None,
                legal_hold=info.get("ObjectLockLegalHoldStatus") == "ON")


def lock_reason(info, now):
    """Why the object version of a HEAD answer cannot be deleted now, or None."""
    if info.get("ObjectLockLegalHoldStatus") == "ON":
        return "legal hold on"
    until = _aware(info.get("ObjectLockRetainUntilDate"))
    if info.get("ObjectLockMode") and until and until > now:
        return f"{info['ObjectLockMode']} retention until {until.astimezone(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
    return None


def wanted_retention(info, mode, days, now):
    """The retention date the object still needs (its LastModified + ``days``), or None when its lock already
    covers that in ``mode`` or stronger (COMPLIANCE covers GOVERNANCE), or when that date has passed."""
    written = _aware(info.get("LastModified")) or now
    needed = written + datetime.timedelta(days=days)
    if needed <= now:
        return None
    current = _aware(info.get("ObjectLockRetainUntilDate"))
    current_mode = info.get("ObjectLockMode")
    strong_enough = current_mode in LOCK_MODES and LOCK_MODES.index(current_mode) >= LOCK_MODES.index(mode)
    if strong_enough and current and current >= needed - LOCK_TOLERANCE:
        return None
    return max(needed, current) if current else needed


def apply_retention(client, bucket, key, version_id, mode, until):
    """Put retention ``mode`` until ``until`` on one object version (only ever the same or a later date)."""
    args = dict(Bucket=bucket, Key=key, Retention=dict(Mode=mode, RetainUntilDate=until))
    if version_id and version_id != "null":
        args["VersionId"] = version_id
    client.put_object_retention(**args)


# --- the sets under a key prefix ------------------------------------------------------------------------------------

def _pages(client, operation, **args):
    return client.get_paginator(operation).paginate(**args)


def set_names(client, bucket, key_prefix, set_prefix):
    """Names of the sets of ``set_prefix`` under ``key_prefix``, oldest first (other names are ignored)."""
    names = []
    for page in _pages(client, "list_objects_v2", Bucket=bucket, Prefix=key_prefix, Delimiter="/"):
        for common in page.get("CommonPrefixes") or []:
            names.append(common["Prefix"][len(key_prefix):].rstrip("/"))
    return sort_sets(names, set_prefix)


def set_kind(client, bucket, set_key_prefix):
    """complete, partial or incomplete, from the set's manifest.json object."""
    try:
        answer = client.get_object(Bucket=bucket, Key=set_key_prefix + MANIFEST)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return "incomplete"
        raise
    body = answer["Body"]
    try:
        data = body.read(MANIFEST_LIMIT + 1)
    finally:
        body.close()
    try:
        manifest = json.loads(data.decode("utf-8")) if len(data) <= MANIFEST_LIMIT else None
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return "incomplete"
    return "partial" if manifest.get("partial") is True else "complete"


def set_versions(client, bucket, set_key_prefix):
    """Every object version and delete marker under the set's key prefix: [{key, version_id, marker, modified}]."""
    found = []
    for page in _pages(client, "list_object_versions", Bucket=bucket, Prefix=set_key_prefix):
        for entry in page.get("Versions") or []:
            found.append(dict(key=entry["Key"], version_id=entry.get("VersionId"), marker=False,
                              modified=_aware(entry.get("LastModified"))))
        for entry in page.get("DeleteMarkers") or []:
            found.append(dict(key=entry["Key"], version_id=entry.get("VersionId"), marker=True,
                              modified=_aware(entry.get("LastModified"))))
    return found


def locks_in(client, bucket, versions, now):
    """[(key, reason)] of the object versions that are under lock now (delete markers never are)."""
    locked = []
    for version in versions:
        if version["marker"]:
            continue
        info = head(client, bucket, version["key"], version["version_id"])
        reason = lock_reason(info, now) if info is not None else None
        if reason:
            locked.append((version["key"], reason))
    return locked


def remove_versions(client, bucket, set_key_prefix, versions):
    """Delete every version of the set, manifest.json's first (the set stops being complete at once), then the
    files, then the delete markers. Returns the number of versions deleted."""
    def order(version):
        return (version["marker"], version["key"] != set_key_prefix + MANIFEST)

    deleted = 0
    for version in sorted(versions, key=order):
        args = dict(Bucket=bucket, Key=version["key"])
        if version["version_id"] and version["version_id"] != "null":
            args["VersionId"] = version["version_id"]
        try:
            client.delete_object(**args)
        except ClientError as exc:
            raise S3Error(f"deleting {version['key']} (version {version['version_id']}) failed after {deleted} "
                          f"version(s) of the set were deleted: {describe_error(exc)}; the set is incomplete now "
                          f"and counts as no backup") from exc
        deleted += 1
    return deleted


# --- retention of the sets in a bucket ------------------------------------------------------------------------------

def _age(versions, now):
    newest = max((v["modified"] for v in versions if v["modified"]), default=None)
    return max((now - newest).total_seconds(), 0) if newest else 0


def _removable(client, bucket, key_prefix, name, now):
    """(versions, locks) of a set about to be removed: its versions, and those under lock."""
    versions = set_versions(client, bucket, key_prefix + name + "/")
    return versions, locks_in(client, bucket, versions, now)


def survey_bucket(client, bucket, key_prefix, rules, now):
    """What the keep rules make of the sets under ``key_prefix``; changes nothing.

    ``rules``: set_prefix, keep_last, keep_days, protect, planned_set (counted as the newest complete set, for check
    mode), incomplete_age, remove_stale_incomplete. Sets to remove that hold an object under lock are not removed
    but listed in ``locked`` with the reason.
    """
    set_prefix = rules["set_prefix"]
    names = set_names(client, bucket, key_prefix, set_prefix)
    kinds = {name: set_kind(client, bucket, key_prefix + name + "/") for name in names}
    complete = [n for n in names if kinds[n] == "complete"]
    if rules.get("planned_set") and rules["planned_set"] not in complete:
        complete = sort_sets(complete + [rules["planned_set"]], set_prefix)
    kept, removed = plan_retention(complete, set_prefix, rules["keep_last"], rules["keep_days"], now=now,
                                   protected=rules["protect"])
    incomplete = [n for n in names if kinds[n] == "incomplete" and n != rules.get("planned_set")]
    ages = {n: _age(set_versions(client, bucket, key_prefix + n + "/"), now) for n in incomplete}
    incomplete_info = classify_incomplete(incomplete, ages, rules["incomplete_age"])
    plan = dict(kept=kept, remove={}, locked=[], incomplete=incomplete_info,
                partial=[n for n in names if kinds[n] == "partial"])
    candidates = list(removed)
    if rules["remove_stale_incomplete"]:
        candidates += [info["name"] for info in incomplete_info if info["stale"]]
    for name in candidates:
        if name == rules.get("planned_set"):
            continue
        versions, locks = _removable(client, bucket, key_prefix, name, now)
        if locks:
            plan["locked"].append(dict(name=name, objects=len(locks),
                                       reasons=sorted({reason for _key, reason in locks})))
        else:
            plan["remove"][name] = versions
    for info in incomplete_info:
        info["removed"] = info["name"] in plan["remove"]
    return plan


def prune_bucket(client, bucket, key_prefix, plan):
    """Remove the sets ``survey_bucket`` planned to remove, oldest first. Returns the versions deleted."""
    deleted = 0
    for name, versions in plan["remove"].items():
        deleted += remove_versions(client, bucket, key_prefix + name + "/", versions)
    return deleted
