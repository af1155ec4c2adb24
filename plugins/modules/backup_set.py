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
      - With O(state=complete), move the C(latest) symlink when this set is the newest complete one.
    type: bool
    default: true
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.path_archive
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
"""

import datetime
import json
import os
import re
import shutil
import secrets

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import COLLECTION_VERSION
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import LATEST, MANIFEST
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import AtomicSink, fsync_dir, sha256_file

KNOWN_KEYS = ("size", "sha256", "compression", "raw_size", "duration", "encryption")
# Keys of a module result that say nothing about the backup: Ansible's bookkeeping and file attributes.
RESULT_NOISE = ("part", "name", "dest", "changed", "failed", "invocation", "plan", "warnings", "deprecations",
                "diff", "uid", "gid", "owner", "group", "mode", "state", "path", "secontext",
                "skip_reason", "ansible_facts", "_ansible_no_log")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_order(name, prefix):
    """Sort key of a set name ``<prefix>-<yyyymmddThhmmssZ>[-<n>]``, or None when the name is not a set's."""
    match = re.fullmatch(re.escape(prefix) + r"-(\d{8}T\d{6}Z)(?:-(\d+))?", name)
    if not match:
        return None
    return match.group(1), int(match.group(2) or 1)


def complete_sets(dest, prefix):
    """Names of complete sets of ``prefix`` in ``dest``, oldest first.

    Only timestamp-named directories count: a hand-made ``<prefix>-manual`` never takes ``latest``.
    """
    found = []
    for entry in os.scandir(dest):
        key = set_order(entry.name, prefix)
        if (key is not None and entry.is_dir(follow_symlinks=False)
                and os.path.isfile(os.path.join(entry.path, MANIFEST))):
            found.append((key, entry.name))
    return [name for _key, name in sorted(found)]


def point_latest(dest, name):
    link = os.path.join(dest, LATEST)
    if os.path.lexists(link) and not os.path.islink(link):
        raise OSError(f"{link} exists and is not a symlink; move it away so latest can be maintained")
    tmp = os.path.join(dest, f".latest.{os.getpid()}.{secrets.token_hex(4)}")
    os.symlink(name, tmp)
    os.replace(tmp, link)
    fsync_dir(dest)


def do_present(module):
    params = module.params
    dest, prefix = params["dest"], params["prefix"]
    started = utc_now()
    name = params["name"] or f"{prefix}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    if not NAME_RE.match(name):
        module.fail_json(msg=f"name {name!r}: use letters, digits, dot, dash and underscore only")
    path = os.path.join(dest, name)
    if not params["name"]:
        counter = 1
        while os.path.lexists(path):
            counter += 1
            path = os.path.join(dest, f"{name}-{counter}")
        name = os.path.basename(path)
    elif os.path.lexists(path):
        module.fail_json(msg=f"set {path} already exists; choose another name")
    result = dict(changed=True, name=name, path=path, started_at=iso(started))
    if module.check_mode:
        module.exit_json(**result)
    if not os.path.isdir(dest):
        os.makedirs(dest, mode=0o700)
        os.chmod(dest, 0o700)
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)
    module.exit_json(**result)


def check_part(module, path, entry, verify):
    name = entry.get("name") or os.path.basename(entry.get("dest") or "")
    if not name or "/" in name or name in (MANIFEST, LATEST):
        module.fail_json(msg=f"part {entry.get('part')!r}: give dest (a file inside the set) or name")
    if entry.get("dest") and os.path.dirname(os.path.abspath(entry["dest"])) != path:
        module.fail_json(msg=f"part {entry.get('part')!r}: {entry['dest']} is not inside the set {path}")
    file_path = os.path.join(path, name)
    if not os.path.isfile(file_path):
        module.fail_json(msg=f"part {entry.get('part')!r}: {file_path} is missing; the set is incomplete")
    size = os.path.getsize(file_path)
    if entry.get("size") is not None and int(entry["size"]) != size:
        module.fail_json(msg=f"part {entry.get('part')!r}: {file_path} has {size} bytes, the dump reported "
                             f"{entry['size']}")
    record = dict(part=entry.get("part"), name=name, size=size)
    for key in KNOWN_KEYS[1:]:
        if entry.get(key) is not None:
            record[key] = entry[key]
    if verify or not record.get("sha256"):
        digest = sha256_file(file_path)
        if record.get("sha256") and record["sha256"] != digest:
            module.fail_json(msg=f"part {entry.get('part')!r}: sha256 of {file_path} is {digest}, the dump "
                                 f"reported {record['sha256']}: the file changed after it was written")
        record["sha256"] = digest
    details = {k: v for k, v in entry.items() if k not in KNOWN_KEYS + RESULT_NOISE}
    if details:
        record["details"] = details
    return record


def do_complete(module):
    params = module.params
    dest, name = params["dest"], params["name"]
    path = os.path.join(dest, name)
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        module.fail_json(msg=f"set {path} does not exist")
    if os.path.exists(manifest_path):
        module.fail_json(msg=f"set {path} is already complete (it has a manifest)")
    missing = [p for p in params["parts"] if not p.get("part")]
    if missing:
        module.fail_json(msg="every entry of parts needs a part name")
    files = [check_part(module, path, entry, params["verify_checksums"]) for entry in params["parts"]]
    leftovers = [f for f in os.listdir(path) if f.endswith(".partial")]
    if leftovers:
        module.fail_json(msg=f"set {path} holds unfinished files {leftovers}; a dump did not end cleanly")
    started = params["started_at"] or iso(datetime.datetime.fromtimestamp(os.stat(path).st_mtime,
                                                                          datetime.timezone.utc))
    manifest = dict(format=1, collection_version=COLLECTION_VERSION, set=name, started_at=started)
    manifest.update(params["metadata"])
    manifest.update(files=files, skipped=params["skipped"])
    if module.check_mode:
        module.exit_json(changed=True, name=name, path=path, manifest_path=manifest_path, started_at=started,
                         latest=None)
    manifest["completed_at"] = iso(utc_now())
    with AtomicSink(manifest_path) as sink:
        sink.write(json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8") + b"\n")
        sink.commit()
    latest = None
    if params["update_latest"]:
        sets = complete_sets(dest, params["prefix"])
        if sets and sets[-1] == name:
            point_latest(dest, name)
        link = os.path.join(dest, LATEST)
        latest = os.readlink(link) if os.path.islink(link) else None
    module.exit_json(changed=True, name=name, path=path, manifest=manifest, manifest_path=manifest_path,
                     started_at=started, latest=latest)


def do_absent(module):
    params = module.params
    path = os.path.join(params["dest"], params["name"])
    if not os.path.lexists(path):
        module.exit_json(changed=False, name=params["name"], path=path)
    if os.path.islink(path) or not os.path.isdir(path):
        module.fail_json(msg=f"{path} is not a set directory")
    if os.path.exists(os.path.join(path, MANIFEST)):
        module.fail_json(msg=f"set {path} is complete (it has a manifest); this module never removes a complete set")
    if not module.check_mode:
        shutil.rmtree(path)
    module.exit_json(changed=True, name=params["name"], path=path)


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
        ),
        required_if=[("state", "complete", ("name",)), ("state", "absent", ("name",))],
        supports_check_mode=True,
    )
    params = module.params
    if params["name"] is not None and not NAME_RE.match(params["name"]):
        module.fail_json(msg=f"name {params['name']!r}: use letters, digits, dot, dash and underscore only")
    if not NAME_RE.match(params["prefix"]):
        module.fail_json(msg=f"prefix {params['prefix']!r}: use letters, digits, dot, dash and underscore only")
    try:
        if params["state"] == "present":
            do_present(module)
        elif params["state"] == "complete":
            do_complete(module)
        else:
            do_absent(module)
    except OSError as exc:
        module.fail_json(msg=f"{params['state']} of set in {params['dest']}: {exc}")


if __name__ == "__main__":
    main()
