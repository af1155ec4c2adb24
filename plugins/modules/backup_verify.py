#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_verify
short_description: Check an authentik backup set without touching any deployment
version_added: 0.1.0
description:
  - Reads the set's C(manifest.json) and checks every file it lists. A set without a manifest is incomplete and
    fails the check.
  - For each file, the size and SHA-256 recorded in the manifest are compared with the file on disk, and the
    compressed stream must decompress completely (no truncated or corrupt gzip member or zstd frame).
  - With O(check_formats=true) the content is checked by part. A PostgreSQL dump must carry pg_dumpall's header and
    its completion trailer. A Redis RDB must have a valid header, EOF opcode and CRC64. A tar archive must walk
    completely to its end-of-archive marker and pass the same member-safety rules as
    M(authentik_ops.backup.path_restore) (no absolute names, no C(..), no escaping symlinks or hardlinks, no
    devices or fifos, only the top-level names of the archived paths when the manifest records them).
  - Files in the set directory that the manifest does not list are reported as warnings.
  - With O(restore_test=true) the PostgreSQL dump is also restored into a throw-away PostgreSQL container on the
    Docker host the module runs on (no network, a random superuser password in its environment, a superuser name
    that is not in the dump), the databases and their tables are counted, and the container and its anonymous
    volumes are removed whatever happens.
  - Files encrypted with age (see O(authentik_ops.backup.postgres_dump#module:encrypt_recipients)) are decrypted in
    memory while they are checked when O(decrypt_identity) or O(decrypt_identity_file) is given. Without an identity
    their size and SHA-256 are still checked, but not their compression or format; the result says so in a
    warning and in the C(content_checked) key of each entry of RV(files).
  - With O(verify_keys) the set must be signed (C(manifest.sig), written by M(authentik_ops.backup.backup_set)
    with a signing key) by one of those Ed25519 keys, over the exact bytes of its manifest; an unsigned set, a
    signature by another key and a signature that does not match the manifest each fail the check. The manifest's
    C(set) must then equal the set directory's name (an old set renamed to look newer is refused), and with
    O(name=latest) the set C(latest) points at must be the newest validly signed complete set of its source
    deployment in O(dest) (an old set cannot be passed off as the latest one).
  - Without O(verify_keys) nothing proves who wrote the set; the result says so (RV(authenticated=false)) and the
    module warns that the set is unauthenticated. Sets made before signing existed verify as before.
  - The set itself is only read.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.decrypt
attributes:
  check_mode:
    support: full
    details:
      - Runs the same read-only checks. No restore-test container is created.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Never changes anything; the task never reports a change.
options:
  path:
    description:
      - Directory of the set to check. Mutually exclusive with O(dest).
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
  check_formats:
    description:
      - Check the content of each file by its part (see the description), besides size, checksum and compression.
    type: bool
    default: true
  fail_on_error:
    description:
      - Fail the task when a problem is found. With V(false) the result reports RV(ok=false) and the problems.
    type: bool
    default: true
  restore_test:
    description:
      - Restore the PostgreSQL dump into a throw-away container (see the description). Needs the Docker engine on
        the host the module runs on (O(docker_host), O(api_timeout)) and the image O(image) present there (it is
        not pulled).
    type: bool
    default: false
  image:
    description:
      - PostgreSQL image of the restore test. It must honour C(POSTGRES_USER), C(POSTGRES_PASSWORD) and
        C(POSTGRES_DB) like the official image. Required with O(restore_test=true).
      - Give the image of the deployment's own database (the restore role passes the one it discovers). The image
        the manifest records is never used; a set is data, and must not choose what runs on the host.
    type: str
  verify_keys:
    description:
      - Ed25519 public keys whose signature the set must carry, as OpenSSH lines (V(ssh-ed25519 AAAA... comment), as in
        the C(.pub) file of C(ssh-keygen -t ed25519)) or PEM public keys. An entry may hold several OpenSSH lines.
      - Several keys allow a rotation; a set signed by any one of them passes.
      - Empty (the default) checks no signature; the result says the set is unauthenticated.
    type: list
    elements: str
    default: []
  restore_timeout:
    description:
      - Seconds the restore test waits for the throw-away server to accept connections.
    type: int
    default: 180
  docker_host:
    description:
      - The Docker daemon socket for O(restore_test), as V(unix:///path).
      - If not set, the value of the E(DOCKER_HOST) environment variable is used, else V(unix:///var/run/docker.sock).
    type: str
    default: unix:///var/run/docker.sock
  api_timeout:
    description:
      - Timeout in seconds for a single Docker API call.
    type: int
    default: 60
seealso:
  - module: authentik_ops.backup.backup_set
  - module: authentik_ops.backup.postgres_restore
  - module: authentik_ops.backup.path_restore
"""

EXAMPLES = r"""
- name: Check the newest complete set
  authentik_ops.backup.backup_verify:
    dest: /var/backups/authentik

- name: Check one set and restore its database into a throw-away container
  authentik_ops.backup.backup_verify:
    path: /var/backups/authentik/authentik-20261130T020000Z
    restore_test: true
    image: docker.io/library/postgres:16-alpine

- name: Accept only sets signed by the backup's key (two keys during a rotation)
  authentik_ops.backup.backup_verify:
    dest: /var/backups/authentik
    verify_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3c6E2o3W0pG8l3bq3XkO7yq9m5w6G0d8r1Y0c7aB1F backup-2026
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq1d0n9m2lX4p7rQ2f8s5t1u3v9w0y6z2a4b8c0d1eF backup-2027

- name: Report problems without failing
  authentik_ops.backup.backup_verify:
    dest: /var/backups/authentik
    name: authentik-20261130T020000Z
    fail_on_error: false
  register: verify
"""

RETURN = r"""
ok:
  description: Whether the set passed every check.
  returned: always
  type: bool
  sample: true
set_path:
  description: Directory of the checked set (the target of C(latest) when O(name=latest)).
  returned: always
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z
set:
  description: Name of the checked set.
  returned: always
  type: str
  sample: authentik-20261130T020000Z
problems:
  description: What failed, one line each.
  returned: always
  type: list
  elements: str
  sample: ["postgres.sql.zst: sha256 differs from the manifest"]
warnings_found:
  description: Findings that do not fail the check, such as files the manifest does not list.
  returned: always
  type: list
  elements: str
  sample: ["notes.txt: in the set directory but not in the manifest"]
files:
  description: The result for each file of the manifest.
  returned: when the manifest could be read
  type: list
  elements: dict
  sample:
    - {name: postgres.sql.zst, part: postgres, ok: true, size: 1234, sha256: "9f86...", format: pg_dumpall,
       content_checked: true, problems: [], details: {raw_size: 5678}}
    - {name: redis.rdb.age, part: redis, ok: true, size: 2345, sha256: "1c2d...", format: none, encryption: age,
       content_checked: false, problems: [], details: {}}
authentik:
  description: The authentik version, image and layout the manifest records.
  returned: when the manifest could be read
  type: dict
  sample: {version: "2026.2.2", image: "ghcr.io/goauthentik/server:2026.2.2", layout: current}
platform:
  description: Platform of the backed-up deployment as the manifest records it.
  returned: when the manifest could be read
  type: str
  sample: docker
manifest:
  description: Format, set name, times and collection version from the manifest.
  returned: when the manifest could be read
  type: dict
  sample: {format: 1, started_at: "2026-11-30T02:00:00Z", completed_at: "2026-11-30T02:00:09Z"}
authenticated:
  description:
    - Whether the set's signature was checked and is valid (only with O(verify_keys)). V(false) without
      O(verify_keys); nothing then proves who wrote the set.
  returned: always
  type: bool
  sample: true
signature:
  description:
    - The signature check. C(status) is V(valid), V(unsigned), V(invalid), V(unknown_key) (signed by a key not in
      O(verify_keys)) or V(unchecked) (signed, but no O(verify_keys) given); C(key) is the OpenSSH fingerprint the
      signature file names; C(problem) says what is wrong unless it is valid.
  returned: when the manifest could be read
  type: dict
  sample: {status: valid, algorithm: ed25519, key: "SHA256:7sGzYf0mQ9c0nqkM4hJm1W0lqf0s1u2bqQ8l0v6Jx2E"}
source:
  description: The deployment the manifest says the set came from, in words, or V(null) when it names none.
  returned: when the manifest could be read
  type: str
  sample: Compose project authentik
restore_test:
  description: Outcome of O(restore_test).
  returned: when O(restore_test=true)
  type: dict
  sample: {ok: true, image: "postgres:16-alpine", container: authentik-verify-1a2b3c, databases: {authentik: 180},
           duration: 12.5}
"""

import hashlib
import json
import os
import secrets
import time

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.authentik_ops.backup.plugins.module_utils._age import (
    AgeError,
    decrypt_chunks,
    is_age_file,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DECRYPT_MUTUALLY_EXCLUSIVE,
    DEFAULT_DOCKER_HOST,
    Stopwatch,
    decrypt_argument_spec,
    excerpt,
    load_identities,
    run_module,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import RdbChecker
from ansible_collections.authentik_ops.backup.plugins.module_utils._postgres import (
    PROBE_SQL,
    PSQL_MEANING,
    restore_dump,
    shell,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import (
    DumpCheck,
    RestoreError,
    compression_of,
    count_dump,
    decode_strict,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import (
    LATEST,
    MANIFEST,
    REPORT,
    SIGNATURE,
    bad_file_name,
    complete_sets,
    resolve_set,
    set_prefix,
    source_of,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._signing import (
    UNSIGNED,
    check_signature,
    load_verify_keys,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._tarsafe import TarSafetyError, validate_stream
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import ChunkReader, TransportError
from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory

RAW_CHUNK = 256 * 1024
TABLES_SQL = ("select count(*) from pg_catalog.pg_tables "
              "where schemaname not in ('pg_catalog', 'information_schema')")
DATABASES_SQL = ("select coalesce(json_agg(datname order by datname), '[]') from pg_database "
                 "where not datistemplate and datname <> 'postgres'")


class _RawReader:
    """Reads a file in chunks, hashing and counting the bytes on disk."""

    def __init__(self, path):
        self.path = path
        self.sha = hashlib.sha256()
        self.size = 0

    def chunks(self):
        with open(self.path, "rb") as handle:
            while True:
                block = handle.read(RAW_CHUNK)
                if not block:
                    return
                self.sha.update(block)
                self.size += len(block)
                yield block

    def finish(self):
        """Hash the whole file again when a check stopped reading early."""
        if self.size < os.path.getsize(self.path):
            with open(self.path, "rb") as handle:
                self.sha = hashlib.sha256()
                while True:
                    block = handle.read(RAW_CHUNK)
                    if not block:
                        break
                    self.sha.update(block)
            self.size = os.path.getsize(self.path)


def kind_of(entry):
    part = str(entry.get("part") or "")
    name = entry.get("name") or ""
    if part == "postgres" or name.startswith("postgres.sql"):
        return "pg_dumpall"
    if part == "redis" or name.startswith("redis.rdb"):
        return "rdb"
    if ".tar" in name:
        return "tar"
    return None


def allowed_tops(entry):
    """Top-level names a tar part may hold, from the paths the manifest says were archived; None if unknown."""
    details = entry.get("details") or {}
    archived = details.get("archived")
    if not isinstance(archived, list) or not archived:
        return None
    target = details.get("target") if isinstance(details.get("target"), dict) else {}
    tops = {factory.archive_top(target, str(path)) for path in archived}
    tops.discard(None)
    return tops or None


def check_content(kind, chunks, entry, record):
    """Consume the decompressed ``chunks`` with the format check of ``kind``; returns a problem or None."""
    if kind == "pg_dumpall":
        check = DumpCheck()
        for block in check.watch(chunks):
            del block
        record["details"]["raw_size"] = check.size
        return check.problem()
    if kind == "rdb":
        checker = RdbChecker()
        for block in chunks:
            checker.feed(block)
        ok, message, version = checker.finish()
        record["details"].update(raw_size=checker.size, rdb_version=version, rdb_check=message)
        return None if ok else message
    if kind == "tar":
        stream = ChunkReader(chunks)
        try:
            summary = validate_stream(stream, allowed_tops=allowed_tops(entry))
        except TarSafetyError as exc:
            stream.drain()
            return str(exc)
        stream.drain()
        record["details"].update(summary.as_dict())
        return None
    for block in chunks:
        del block
    return None


def file_problem(set_path, name, entry):
    """Why the manifest entry cannot be checked at all (bad name, missing, not a file), or None."""
    if bad_file_name(name):
        return f"manifest entry {entry!r} has no valid file name"
    path = os.path.join(set_path, name)
    if not os.path.lexists(path):
        return f"{name}: listed in the manifest but missing"
    if os.path.islink(path) or not os.path.isfile(path):
        return f"{name}: not a regular file"
    return None


def content_problems(path, name, entry, record, kind, identities):
    """Decrypt (when possible), decompress and check the content of ``path``; returns (problems, _RawReader)."""
    problems = []
    compression = record["compression"]
    raw = _RawReader(path)
    chunks = raw.chunks()
    try:
        encrypted = is_age_file(path)
    except OSError:
        encrypted = False
    if (entry.get("encryption") or {}).get("scheme") == "age" and not encrypted:
        problems.append(f"{name}: the manifest says it is encrypted with age, but it is not an age file")
    if encrypted:
        record["encryption"] = "age"
        if identities:
            chunks = decrypt_chunks(chunks, identities)
        else:  # size and sha256 only: neither compression nor format can be checked without the identity
            kind, compression = None, "none"
            record.update(format="none", content_checked=False)
    try:
        problem = check_content(kind, decode_strict(chunks, compression), entry, record)
        if problem:
            problems.append(f"{name}: {problem}")
    except AgeError as exc:
        problems.append(f"{name}: cannot be decrypted: {exc}")
    except RestoreError as exc:
        problems.append(f"{name}: {exc}")
    except OSError as exc:
        problems.append(f"{name}: cannot be read: {exc}")
    raw.finish()
    return problems, raw


def verify_file(set_path, entry, check_formats, identities=()):
    name = entry.get("name") if isinstance(entry, dict) else None
    record = dict(name=name, part=entry.get("part") if isinstance(entry, dict) else None, ok=False, problems=[],
                  details={})
    problems = record["problems"]
    problem = file_problem(set_path, name, entry)
    if problem:
        problems.append(problem)
        return record
    kind = kind_of(entry) if check_formats else None
    record.update(format=kind or "none", compression=entry.get("compression") or compression_of(name),
                  content_checked=True)
    found, raw = content_problems(os.path.join(set_path, name), name, entry, record, kind, identities)
    problems.extend(found)
    record.update(size=raw.size, sha256=raw.sha.hexdigest())
    if entry.get("size") is not None and int(entry["size"]) != raw.size:
        problems.append(f"{name}: {raw.size} bytes on disk, the manifest says {entry['size']}")
    if not entry.get("sha256"):
        problems.append(f"{name}: the manifest records no sha256")
    elif entry["sha256"] != record["sha256"]:
        problems.append(f"{name}: sha256 {record['sha256']} differs from the manifest's {entry['sha256']}")
    record["ok"] = not problems
    return record


def restore_test(module, set_path, manifest, files):
    """Restore the set's dump into a throw-away container; returns the outcome dict (a problem of the set or of the
    container is the outcome's ``problem``; only a missing image name raises)."""
    params = module.params
    outcome = dict(ok=False)
    dumps = [f for f in files if f.get("format") == "pg_dumpall" or f.get("part") == "postgres"]
    if not dumps:
        outcome["problem"] = "the set has no PostgreSQL dump to restore"
        return outcome
    image = params["image"]
    name = f"authentik-verify-{secrets.token_hex(6)}"
    user = f"akbt_verify_{secrets.token_hex(4)}"
    outcome.update(image=image, container=name, user=user)
    watch = Stopwatch()
    scratch = None
    try:
        scratch = factory.open_scratch_containers(params)
        if not scratch.has_image(image):
            raise TransportError(f"image {image!r} is not present on this Docker host (it is not pulled); load it "
                                 "or set image")
        transport = scratch.run(name, image, dict(POSTGRES_USER=user, POSTGRES_PASSWORD=secrets.token_urlsafe(24),
                                                  POSTGRES_DB="postgres"),
                                {"authentik_ops.backup.restore_test": "true"})
        outcome.update(restore_into(transport, user, os.path.join(set_path, dumps[0]["name"]), dumps[0],
                                    manifest, time.monotonic() + params["restore_timeout"]))
    except (TransportError, RestoreError, OSError, ValueError) as exc:
        outcome["problem"] = str(exc)
    finally:
        if scratch is not None:
            try:
                scratch.remove(name)
                outcome["removed"] = True
            except TransportError as exc:
                outcome["removed"] = False
                outcome["problem"] = (outcome.get("problem", "") + f"; removing container {name} failed: {exc}"
                                      ).lstrip("; ")
    outcome["duration"] = watch.elapsed
    return outcome


def restore_into(transport, user, src, dump, manifest, deadline):
    """Restore ``src`` into the fresh server behind ``transport`` and count databases and tables."""
    pg = dict(user=user, host="127.0.0.1", port=None, password=None)
    wait_postgres(transport, pg, deadline)
    compression = compression_of(src, dump.get("compression") or "auto")
    size, _removed, check = count_dump(src, compression, user)
    problem = check.problem()
    if problem:
        raise RestoreError(problem)
    result, feed, _role_filter, check = restore_dump(transport, pg, src, compression, user, size)
    if feed.error is not None:
        raise RestoreError(f"reading {src} failed: {feed.error}")
    if not result.complete or result.exit_code != 0:
        raise RestoreError(f"psql exited with status {result.exit_code} "
                           f"({result.problem or PSQL_MEANING.get(result.exit_code, 'error')}): "
                           f"{excerpt(result.stderr, 1000)}")
    databases = {}
    for database in json.loads(query(transport, pg, "template1", DATABASES_SQL) or "[]"):
        databases[database] = int(query(transport, pg, database, TABLES_SQL))
    outcome = dict(ok=True, databases=databases, bytes=size)
    expected = set()
    for entry in manifest.get("files") or []:
        if isinstance(entry, dict) and entry.get("name") == dump["name"]:
            expected = set((entry.get("details") or {}).get("databases") or [])
    missing = sorted(expected - set(databases))
    if missing:
        outcome.update(ok=False, problem=f"databases missing after the restore: {', '.join(missing)}")
    return outcome


def query(transport, pg, database, sql):
    argv = shell(pg, 'exec psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"') + [database, sql]
    result = transport.exec_capture(argv)
    if not result.ok:
        raise RestoreError(f"psql in {transport.describe()} failed ({result.problem or result.exit_code}): "
                           f"{excerpt(result.stderr, 500)}")
    return result.stdout.decode("utf-8").strip()


def wait_postgres(transport, pg, deadline):
    """Wait until the final server answers over TCP (the entrypoint's init server listens on no TCP port)."""
    last = "no answer yet"
    while True:
        try:
            transport.refresh()
            query(transport, pg, "template1", PROBE_SQL)
            return
        except (TransportError, RestoreError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RestoreError(f"the throw-away PostgreSQL did not accept connections in time (last: {last})")
        time.sleep(0.5)


def load_manifest(set_path):
    """(manifest, its exact bytes) of a set; OSError or ValueError when it cannot be read."""
    with open(os.path.join(set_path, MANIFEST), "rb") as handle:
        data = handle.read()
    manifest = json.loads(data.decode("utf-8"))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise ValueError("it has no list of files")
    return manifest, data


def read_manifest(set_path, problems):
    """(manifest, its bytes) of the set, or (None, None) with the reason added to ``problems``."""
    if not os.path.isfile(os.path.join(set_path, MANIFEST)):
        problems.append(f"{MANIFEST} is missing: the set is incomplete and is not a backup")
        return None, None
    try:
        return load_manifest(set_path)
    except (OSError, ValueError) as exc:
        problems.append(f"{MANIFEST} cannot be read: {exc}")
        return None, None


def newer_signed_set(dest, set_path, manifest, keys):
    """The newest complete set of ``dest`` that is newer than ``set_path``, from the same source and validly
    signed; None when there is none. Raises ValueError when ``set_path`` is not a set of ``dest``."""
    name = os.path.basename(set_path)
    prefix = set_prefix(name)
    if os.path.dirname(set_path) != os.path.realpath(dest) or prefix is None:
        raise ValueError(f"{LATEST} points at {set_path}, which is not a set of {dest}")
    names = complete_sets(dest, prefix)
    newer = names[names.index(name) + 1:] if name in names else []
    source = source_of(manifest)
    for other in reversed(newer):
        other_path = os.path.join(dest, other)
        try:
            other_manifest, data = load_manifest(other_path)
        except (OSError, ValueError):
            continue
        if other_manifest.get("set") != other or source_of(other_manifest) != source:
            continue
        if check_signature(other_path, data, keys).valid:
            return other
    return None


def check_authenticity(params, set_path, manifest, data, result):
    """The signature, the set's name and (for latest) its place among the signed sets; fills ``result``."""
    keys = load_verify_keys(params["verify_keys"])
    problems, warnings = result["problems"], result["warnings_found"]
    check = check_signature(set_path, data, keys)
    result.update(signature=check.as_dict(), authenticated=check.valid, source=source_of(manifest))
    name = os.path.basename(set_path)
    named = manifest.get("set")
    renamed = None if named == name else (f"{MANIFEST} names the set {named!r}, but its directory is {name!r}: "
                                          "the set was renamed or copied under another name")
    if not keys:
        why = "it is not signed" if check.status == UNSIGNED else f"its signature by {check.key} was not checked"
        warnings.append(f"the set is unauthenticated: no verify_keys were given and {why}; anyone who can write "
                        "the backup store could have changed it")
        if renamed:
            warnings.append(renamed)
        return
    if not check.valid:
        problems.append(f"signature: {check.problem}")
        return
    if renamed:
        problems.append(renamed)
    elif params["dest"] and not params["path"] and params["name"] == LATEST:
        try:
            newer = newer_signed_set(params["dest"], set_path, manifest, keys)
        except ValueError as exc:
            problems.append(str(exc))
            return
        if newer:
            problems.append(f"{LATEST} points at {name}, but {newer} is a newer validly signed set of "
                            f"{source_of(manifest) or 'the same source'}: {LATEST} was moved back to an older set")


def check_manifest_files(params, set_path, manifest, result):
    """Check every file the manifest lists, and report the files it does not list."""
    problems, warnings = result["problems"], result["warnings_found"]
    if manifest.get("format") != 1:
        warnings.append(f"{MANIFEST}: format {manifest.get('format')!r}, this module knows format 1")
    identities = load_identities(params)
    files = [verify_file(set_path, entry if isinstance(entry, dict) else {}, params["check_formats"], identities)
             for entry in manifest["files"]]
    for record in files:
        problems.extend(record["problems"])
    unchecked = [record["name"] for record in files if record.get("content_checked") is False]
    if unchecked:
        warnings.append(f"{', '.join(unchecked)}: encrypted with age and no identity given (decrypt_identity or "
                        "decrypt_identity_file): size and sha256 were checked, compression and format were not")
    listed = {record["name"] for record in files if record.get("name")}
    for entry in sorted(os.listdir(set_path)):
        # report.json: the run report the backup role writes after the manifest (it describes, not holds, data)
        if entry not in (MANIFEST, SIGNATURE, REPORT) and entry not in listed:
            warnings.append(f"{entry}: in the set directory but not in the manifest")
    result.update(files=files, authentik=manifest.get("authentik") or {}, platform=manifest.get("platform"),
                  manifest={key: manifest.get(key) for key in ("format", "set", "started_at", "completed_at",
                                                               "collection_version")})
    return files


def verify(module):
    params = module.params
    load_verify_keys(params["verify_keys"])  # a bad key fails the task, before anything is read
    if params["restore_test"] and not params["image"]:
        raise ConfigError("restore_test: give image, the PostgreSQL image of the deployment's own database (the "
                          "restore role passes the one it discovers); the image a manifest names is never run",
                          ok=False, problems=[])
    set_path = resolve_set(params["path"], params["dest"], params["name"], ok=False, problems=[])
    result = dict(changed=False, ok=False, set_path=set_path, set=os.path.basename(set_path), problems=[],
                  warnings_found=[], authenticated=False)
    problems = result["problems"]
    manifest, data = read_manifest(set_path, problems)
    if manifest is not None:
        check_authenticity(params, set_path, manifest, data, result)
        files = check_manifest_files(params, set_path, manifest, result)
        if params["restore_test"]:
            if module.check_mode:
                result["restore_test"] = dict(ok=None, skipped="check mode: no container is created")
            elif problems:
                result["restore_test"] = dict(ok=False, skipped="the set failed its checks; nothing was restored")
            else:
                outcome = restore_test(module, set_path, manifest, files)
                result["restore_test"] = outcome
                if not outcome.get("ok"):
                    problems.append(f"restore test: {outcome.get('problem')}")
    result["ok"] = not problems
    for warning in result["warnings_found"]:
        module.warn(warning)
    if problems and params["fail_on_error"]:
        raise BackupError(f"backup set {set_path} failed verification: {'; '.join(problems)}", **result)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            dest=dict(type="path"),
            name=dict(type="str", default=LATEST),
            check_formats=dict(type="bool", default=True),
            fail_on_error=dict(type="bool", default=True),
            restore_test=dict(type="bool", default=False),
            image=dict(type="str"),
            restore_timeout=dict(type="int", default=180),
            docker_host=dict(type="str", default=DEFAULT_DOCKER_HOST, fallback=(env_fallback, ["DOCKER_HOST"])),
            api_timeout=dict(type="int", default=60),
            verify_keys=dict(type="list", elements="str", default=[], no_log=False),
            **decrypt_argument_spec(),
        ),
        mutually_exclusive=[("path", "dest")] + DECRYPT_MUTUALLY_EXCLUSIVE,
        required_one_of=[("path", "dest")],
        supports_check_mode=True,
    )
    run_module(module, verify)


if __name__ == "__main__":
    main()
