#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_set
short_description: Create, complete (manifest and latest) or discard an authentik backup set directory
version_added: 0.1.0
description:
  - A backup set is a directory C(<dest>/<prefix>-<UTC yyyymmddThhmmssZ>) (mode C(0700)) holding the files of one
    backup and, written last, C(manifest.json). A set without a manifest is incomplete and never counts as a backup.
  - O(state=present) creates a new, empty set directory (and O(dest) with mode C(0700) if it is missing).
  - O(state=complete) checks that every part's file is in the set with the recorded size (and sha256 with
    O(verify_checksums=true)), writes C(manifest.json) atomically with mode C(0600), and points the C(latest)
    symlink of O(dest) at this set when it is the newest complete set of O(prefix).
  - O(state=absent) removes an incomplete set, for example after a failed run. A set that has a manifest is never
    removed by this module.
  - With O(signing_key) or O(signing_key_file), O(state=complete) signs the manifest it wrote with that Ed25519 key
    and writes the detached signature C(manifest.sig) atomically (mode C(0600)) after it, before C(latest) moves;
    the signature covers the exact bytes of the manifest, which hold every file's name, size and sha256, the set's
    name and times, the platform and the source deployment. A set whose manifest says it is partial is never
    signed. If the signature cannot be written, the manifest is removed again, so the set stays incomplete.
    O(state=present) checks the key before the set directory is created.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
attributes:
  check_mode:
    support: full
    details:
      - Reports the set that would be created, completed or removed; changes nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - V(present) creates a new set on every run. V(complete) refuses a set that already has a manifest.
        V(absent) is idempotent.
options:
  state:
    description:
      - What to do with the set.
    type: str
    choices: [present, complete, absent]
    default: present
  dest:
    description:
      - Directory that holds the backup sets.
    type: path
    required: true
  prefix:
    description:
      - Prefix of set names. Sets of other prefixes in O(dest) are ignored by C(latest).
    type: str
    default: authentik
  name:
    description:
      - Name of the set. With O(state=present) it defaults to C(<prefix>-<UTC timestamp>); required otherwise.
    type: str
  parts:
    description:
      - With O(state=complete), the files of the set, usually built from the results of the dump modules.
      - Each entry needs C(part) and C(dest) (or C(name)); C(size), C(sha256), C(compression), C(raw_size),
        C(duration) and C(encryption) (scheme and recipients' public keys) are recorded as such, any other key goes
        into the entry's C(details).
    type: list
    elements: dict
    default: []
  skipped:
    description:
      - With O(state=complete), the parts that were not backed up, each a dict with C(part) and C(reason).
    type: list
    elements: dict
    default: []
  metadata:
    description:
      - With O(state=complete), more top-level manifest keys, for example C(platform), C(authentik), C(source).
      - C(partial=true) (with C(missing_parts), the parts left out) marks a set that lacks parts the deployment has;
        such a set is never signed, never becomes C(latest), and retention neither counts nor removes it.
    type: dict
    default: {}
  started_at:
    description:
      - With O(state=complete), the UTC start time of the run (ISO 8601). Defaults to the set directory's creation.
    type: str
  verify_checksums:
    description:
      - With O(state=complete), read every file back and compare its sha256 with the recorded one.
    type: bool
    default: true
  update_latest:
    description:
      - With O(state=complete), move the C(latest) symlink when this set is the newest complete one. A partial set
        (its manifest says C(partial), see O(metadata)) never moves it, and is not counted as the newest.
    type: bool
    default: true
  signing_key:
    description:
      - The Ed25519 private key that signs the set, as the text of an OpenSSH private key (C(ssh-keygen -t ed25519),
        without a passphrase) or of a PKCS#8 PEM key (C(openssl genpkey -algorithm ed25519)).
      - Never logged. Mutually exclusive with O(signing_key_file).
      - Needs the Python package C(cryptography) on the host the module runs on.
    type: str
  signing_key_file:
    description:
      - Path of such a private key file on the host the module runs on, instead of O(signing_key).
    type: path
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.path_archive
  - module: authentik_ops.backup.backup_verify
"""

EXAMPLES = r"""
- name: Start a backup set
  authentik_ops.backup.backup_set:
    dest: /var/backups/authentik
  register: backup_set

- name: Dump the database into it
  authentik_ops.backup.postgres_dump:
    container: authentik-postgresql-1
    dest: "{{ backup_set.path }}/postgres.sql.zst"
  register: pg

- name: Complete the set
  authentik_ops.backup.backup_set:
    state: complete
    dest: /var/backups/authentik
    name: "{{ backup_set.name }}"
    started_at: "{{ backup_set.started_at }}"
    parts:
      - "{{ pg | combine({'part': 'postgres'}) }}"
    metadata:
      platform: docker
      authentik: {version: "2026.2.2"}

- name: Complete and sign the set
  authentik_ops.backup.backup_set:
    state: complete
    dest: /var/backups/authentik
    name: "{{ backup_set.name }}"
    parts:
      - "{{ pg | combine({'part': 'postgres'}) }}"
    signing_key: "{{ vault_backup_signing_key }}"

- name: Discard the set after a failure
  authentik_ops.backup.backup_set:
    state: absent
    dest: /var/backups/authentik
    name: "{{ backup_set.name }}"
"""

RETURN = r"""
name:
  description: Name of the set.
  returned: always
  type: str
  sample: authentik-20261130T020000Z
path:
  description: Path of the set directory.
  returned: always
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z
started_at:
  description: UTC start time of the set.
  returned: state=present or state=complete
  type: str
  sample: "2026-11-30T02:00:00Z"
manifest:
  description: The manifest written.
  returned: state=complete and not check mode
  type: dict
  sample: {format: 1, set: authentik-20261130T020000Z, files: []}
manifest_path:
  description: Path of C(manifest.json).
  returned: state=complete
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z/manifest.json
latest:
  description: The set C(latest) points at after the run.
  returned: state=complete
  type: str
  sample: authentik-20261130T020000Z
partial:
  description: Whether the set's manifest says it is partial (C(latest) was not moved).
  returned: state=complete
  type: bool
  sample: false
signature:
  description:
    - The signature written (in check mode, the one that would be written), or V(null) when the set is not signed.
  returned: state=complete
  type: dict
  sample: {path: /var/backups/authentik/authentik-20261130T020000Z/manifest.sig, algorithm: ed25519,
           key: "SHA256:7sGzYf0mQ9c0nqkM4hJm1W0lqf0s1u2bqQ8l0v6Jx2E"}
signing_key_fingerprint:
  description: OpenSSH fingerprint of the signing key, checked before the set directory is created.
  returned: state=present with O(signing_key) or O(signing_key_file)
  type: str
  sample: "SHA256:7sGzYf0mQ9c0nqkM4hJm1W0lqf0s1u2bqQ8l0v6Jx2E"
"""

import datetime
import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import COLLECTION_VERSION, run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import sha256_file
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import (
    LATEST,
    MANIFEST,
    SIGNATURE,
    complete_sets,
    is_result_noise,
    iso,
    name_problem,
    point_latest,
    set_name,
    split_partial,
    utc_now,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._signing import (
    SignatureError,
    fingerprint,
    load_signing_key,
    signature_bytes,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import AtomicSink

KNOWN_KEYS = ("size", "sha256", "compression", "raw_size", "duration", "encryption")
# Keys of a part's entry that the manifest records as such (besides the result noise of _sets.RESULT_NOISE).
ENTRY_KEYS = ("part", "name", "dest", "path")


def signing_key(params):
    """The private key of signing_key / signing_key_file, or None; ConfigError before anything is touched."""
    if not (params["signing_key"] or params["signing_key_file"]):
        return None
    return load_signing_key(params["signing_key"], params["signing_key_file"])


def do_present(module):
    params = module.params
    dest, prefix = params["dest"], params["prefix"]
    key = signing_key(params)
    started = utc_now()
    name = params["name"] or set_name(prefix, started)
    problem = name_problem("name", name)
    if problem:
        raise ConfigError(problem)
    path = os.path.join(dest, name)
    if not params["name"]:
        counter = 1
        while os.path.lexists(path):
            counter += 1
            path = os.path.join(dest, f"{name}-{counter}")
        name = os.path.basename(path)
    elif os.path.lexists(path):
        raise ConfigError(f"set {path} already exists; choose another name")
    result = dict(changed=True, name=name, path=path, started_at=iso(started))
    if key is not None:
        result["signing_key_fingerprint"] = fingerprint(key.public_key())
    if module.check_mode:
        return result
    if not os.path.isdir(dest):
        os.makedirs(dest, mode=0o700)
        os.chmod(dest, 0o700)
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)
    return result


def check_part(path, entry, verify):
    """The manifest entry of one part; raises BackupError when its file is not the one the dump reported."""
    part = entry.get("part")
    name = entry.get("name") or os.path.basename(entry.get("dest") or "")
    if not name or "/" in name or name in (MANIFEST, LATEST):
        raise ConfigError(f"part {part!r}: give dest (a file inside the set) or name")
    if entry.get("dest") and os.path.dirname(os.path.abspath(entry["dest"])) != path:
        raise ConfigError(f"part {part!r}: {entry['dest']} is not inside the set {path}")
    file_path = os.path.join(path, name)
    if not os.path.isfile(file_path):
        raise BackupError(f"part {part!r}: {file_path} is missing; the set is incomplete")
    size = os.path.getsize(file_path)
    if entry.get("size") is not None and int(entry["size"]) != size:
        raise BackupError(f"part {part!r}: {file_path} has {size} bytes, the dump reported {entry['size']}")
    record = dict(part=part, name=name, size=size)
    for key in KNOWN_KEYS[1:]:
        if entry.get(key) is not None:
            record[key] = entry[key]
    if verify or not record.get("sha256"):
        digest = sha256_file(file_path)
        if record.get("sha256") and record["sha256"] != digest:
            raise BackupError(f"part {part!r}: sha256 of {file_path} is {digest}, the dump reported "
                              f"{record['sha256']}: the file changed after it was written")
        record["sha256"] = digest
    details = {k: v for k, v in entry.items()
               if k not in KNOWN_KEYS + ENTRY_KEYS and not is_result_noise(k)}
    if details:
        record["details"] = details
    return record


def check_set(params, path):
    """The manifest entries of the parts; raises BackupError unless the set can be completed."""
    if not os.path.isdir(path):
        raise ConfigError(f"set {path} does not exist")
    if os.path.exists(os.path.join(path, MANIFEST)):
        raise BackupError(f"set {path} is already complete (it has a manifest)")
    if any(not p.get("part") for p in params["parts"]):
        raise ConfigError("every entry of parts needs a part name")
    files = [check_part(path, entry, params["verify_checksums"]) for entry in params["parts"]]
    leftovers = [f for f in os.listdir(path) if f.endswith(".partial")]
    if leftovers:
        raise BackupError(f"set {path} holds unfinished files {leftovers}; a dump did not end cleanly")
    return files


def write_signature(path, key, manifest_bytes):
    """Write ``manifest.sig`` next to the manifest just written; on failure remove that manifest again, so the set
    stays incomplete (and the run's cleanup removes it), and raise SignatureError."""
    sig_path = os.path.join(path, SIGNATURE)
    try:
        with AtomicSink(sig_path) as sink:
            sink.write(signature_bytes(key, manifest_bytes))
            sink.commit()
    except Exception as exc:
        try:
            os.unlink(os.path.join(path, MANIFEST))
        except OSError:
            pass
        raise SignatureError(f"set {path}: {SIGNATURE} cannot be written ({exc}); the manifest was removed again, "
                             "the set is incomplete") from exc
    return dict(path=sig_path, algorithm="ed25519", key=fingerprint(key.public_key()))


def do_complete(module):
    params = module.params
    dest, name = params["dest"], params["name"]
    path = os.path.join(dest, name)
    manifest_path = os.path.join(path, MANIFEST)
    key = signing_key(params)
    files = check_set(params, path)
    started = params["started_at"] or iso(datetime.datetime.fromtimestamp(os.stat(path).st_mtime,
                                                                          datetime.timezone.utc))
    manifest = dict(format=1, collection_version=COLLECTION_VERSION, set=name, started_at=started)
    manifest.update(params["metadata"])
    manifest.update(files=files, skipped=params["skipped"])
    # a partial set (some parts the deployment has are missing) is never signed
    key = None if manifest.get("partial") else key
    result = dict(changed=True, name=name, path=path, manifest_path=manifest_path, started_at=started, latest=None,
                  signature=None)
    if key is not None:
        result["signature"] = dict(path=os.path.join(path, SIGNATURE), algorithm="ed25519",
                                   key=fingerprint(key.public_key()))
    if module.check_mode:
        return result
    manifest["completed_at"] = iso(utc_now())
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8") + b"\n"
    with AtomicSink(manifest_path) as sink:
        sink.write(manifest_bytes)
        sink.commit()
    if key is not None:
        result["signature"] = write_signature(path, key, manifest_bytes)
    result["partial"] = manifest.get("partial") is True
    # a partial set (the run's tags left out parts the deployment has) never becomes latest
    if params["update_latest"] and not result["partial"]:
        sets, _partial = split_partial(dest, complete_sets(dest, params["prefix"]))
        if sets and sets[-1] == name:
            point_latest(dest, name)
    link = os.path.join(dest, LATEST)
    result["latest"] = os.readlink(link) if os.path.islink(link) else None
    result["manifest"] = manifest
    return result


def do_absent(module):
    params = module.params
    path = os.path.join(params["dest"], params["name"])
    if not os.path.lexists(path):
        return dict(changed=False, name=params["name"], path=path)
    if os.path.islink(path) or not os.path.isdir(path):
        raise BackupError(f"{path} is not a set directory")
    if os.path.exists(os.path.join(path, MANIFEST)):
        raise BackupError(f"set {path} is complete (it has a manifest); this module never removes a complete set")
    if not module.check_mode:
        shutil.rmtree(path)
    return dict(changed=True, name=params["name"], path=path)


def run(module):
    params = module.params
    problem = (name_problem("name", params["name"]) if params["name"] is not None else None) \
        or name_problem("prefix", params["prefix"])
    if problem:
        raise ConfigError(problem)
    action = {"present": do_present, "complete": do_complete, "absent": do_absent}[params["state"]]
    try:
        return action(module)
    except OSError as exc:
        raise BackupError(f"{params['state']} of set in {params['dest']}: {exc}") from exc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "complete", "absent"]),
            dest=dict(type="path", required=True),
            prefix=dict(type="str", default="authentik"),
            name=dict(type="str"),
            parts=dict(type="list", elements="dict", default=[]),
            skipped=dict(type="list", elements="dict", default=[]),
            metadata=dict(type="dict", default={}),
            started_at=dict(type="str"),
            verify_checksums=dict(type="bool", default=True),
            update_latest=dict(type="bool", default=True),
            signing_key=dict(type="str", no_log=True),
            signing_key_file=dict(type="path"),
        ),
        required_if=[("state", "complete", ("name",)), ("state", "absent", ("name",))],
        mutually_exclusive=[("signing_key", "signing_key_file")],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
