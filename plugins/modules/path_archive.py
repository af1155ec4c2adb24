#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: path_archive
short_description: Stream directories of a container, a pod or the host into one checked tar archive
version_added: 0.1.0
description:
  - Archives authentik's directories (C(/data) or C(/media), C(/templates), C(/certs), C(/blueprints)) into one tar
    file on the host the module runs on, compressed and hashed while it streams.
  - With O(platform=docker) each path comes from the Docker Engine API's archive endpoint. With
    O(platform=kubernetes) it comes from C(tar -C <parent> -cf - <name>) run in the pod over exec. With O(platform=local) the
    paths are files or directories of the host itself (used for C(.env) and compose files).
  - The tar structure of every stream is walked while it passes; a stream cut short (no end-of-archive marker) fails
    the task and leaves no file.
  - A path that is not mounted into the container (Docker and Kubernetes, with O(only_mounted=true)) or that does
    not exist is reported in RV(skipped_paths) and is not an error, unless O(required=true). When every path is skipped,
    no file is written.
  - Members of a container or pod path are named from the path's last component, as Docker's archive endpoint
    names them, for example C(data/media/icon.png) for C(/data). Host paths (O(platform=local)) keep their full
    path without the leading C(/), for example C(opt/authentik/.env).
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - authentik_ops.backup._common.output
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Checks which paths exist or are mounted and reports the plan in RV(plan). Nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: none
options:
  platform:
    description:
      - Where the paths are. V(local) means the host the module runs on.
    type: str
    choices: [docker, kubernetes, local]
    default: docker
  paths:
    description:
      - Absolute paths to archive, in order.
      - At least one of O(paths) and O(content) is required.
    type: list
    elements: str
    default: []
  content:
    description:
      - With O(platform=local), files to put into the archive from the given text instead of from disk, after the
        O(paths). Used for the Kubernetes Secrets of a Helm deployment, which exist only in the API.
      - Each member is written with mode C(0600), owner C(0:0) and the current time. The values are treated as
        secrets (C(no_log)) and never appear in the task's output.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Relative member name, for example C(secrets/authentik.yaml). No C(..) components.
        type: str
        required: true
      content:
        description:
          - The member's text (stored UTF-8 encoded).
        type: str
        required: true
  required:
    description:
      - Fail when a path is absent or not mounted, instead of skipping it.
    type: bool
    default: false
  allow_stopped:
    description:
      - Read the paths of a stopped container too (on Docker the Engine API's archive endpoint reads any
        container). Fails on Kubernetes, where a stopped pod has nothing to read. Without it a container that does not run fails
        the task.
    type: bool
    default: false
  only_mounted:
    description:
      - With O(platform=docker) or O(platform=kubernetes), treat a path that is not a mount of the container (or
        inside one) as absent. Files baked into the image are not data worth a backup. On Kubernetes the mounts are
        the container's C(volumeMounts) in the pod spec.
    type: bool
    default: true
  compression:
    description:
      - Codec applied on the host while the archive streams.
    type: str
    choices: [none, gzip, zstd]
    default: zstd
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.backup_set
"""

EXAMPLES = r"""
- name: Archive the data directory of authentik's server container
  authentik_ops.backup.path_archive:
    container: authentik-server-1
    paths: [/data]
    dest: /var/backups/authentik/authentik-20261130T020000Z/data.tar.zst

- name: Archive .env and the compose file of the deployment
  authentik_ops.backup.path_archive:
    platform: local
    paths:
      - /opt/authentik/.env
      - /opt/authentik/docker-compose.yml
    required: true
    dest: /var/backups/authentik/authentik-20261130T020000Z/config.tar.zst

- name: Archive Secrets read from the Kubernetes API (kept out of the log)
  authentik_ops.backup.path_archive:
    platform: local
    content:
      - name: secrets/authentik.yaml
        content: "{{ authentik_secret | to_nice_yaml }}"
    dest: /var/backups/authentik/authentik-20261130T020000Z/config.tar.zst
  no_log: true

- name: Archive custom templates from the server pod
  authentik_ops.backup.path_archive:
    platform: kubernetes
    namespace: authentik
    pod: authentik-server-7d9c8b5f4-abcde
    paths: [/templates]
    dest: /var/backups/authentik/authentik-20261130T020000Z/templates.tar.zst
"""

RETURN = r"""
dest:
  description: Path of the archive, or V(null) when every path was skipped.
  returned: always
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z/data.tar.zst
size:
  description: Size of the archive on disk, in bytes.
  returned: when an archive was written
  type: int
  sample: 204800
sha256:
  description: SHA-256 of the archive on disk.
  returned: when an archive was written
  type: str
  sample: fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9
raw_size:
  description: Size of the uncompressed tar, in bytes.
  returned: when an archive was written
  type: int
  sample: 1024000
compression:
  description: Codec of the archive.
  returned: always
  type: str
  sample: zstd
encryption:
  description: How the file is encrypted (O(encrypt_recipients)); the recipients are public keys.
  returned: success with O(encrypt_recipients)
  type: dict
  sample: {scheme: age, recipients: [age124n3glqf2ltpr3x33zh7dlznrdsrc8f343z8gpxhm4teqs550fqqnvkd3e]}
duration:
  description: Seconds to stream the archive.
  returned: when an archive was written
  type: float
  sample: 0.3
throughput:
  description: Uncompressed bytes per second.
  returned: when an archive was written
  type: int
  sample: 90000000
members:
  description: Number of entries (files, directories, links) in the archive.
  returned: when an archive was written
  type: int
  sample: 42
archived:
  description: Paths that are in the archive, then the member names of O(content).
  returned: always
  type: list
  elements: str
  sample: [/data]
skipped_paths:
  description: Paths left out, each with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{path: /blueprints, reason: not mounted in the container}]
target:
  description: The container or pod, or the host for O(platform=local).
  returned: always
  type: dict
  sample: {platform: docker, container: authentik-server-1}
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: archive, paths: [/data], skipped_paths: [], dest: /var/backups/authentik/s/data.tar.zst}
"""

import io
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    check_output,
    file_result,
    open_sink,
    output_argument_spec,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    ConfigError,
    FormatError,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import TarWalker
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import WriteTo

CONTENT_NEEDS_LOCAL = {"content": "content: only with platform=local (the members are written on this host)"}


def missing_message(skipped):
    return "required paths are missing: " + "; ".join(f"{s['path']} {s['reason']}" for s in skipped)


def plan_paths(params, transport):
    """Split the paths into those to archive and those to skip, with reasons. Nothing is read yet."""
    wanted, skipped = [], []
    for path in params["paths"]:
        if transport.has_mounts and params["only_mounted"]:
            present = transport.is_mounted(path)
            reason = "not mounted in the container"
        else:
            present = transport.path_exists(path)
            reason = transport.missing_reason
        if present:
            wanted.append(path)
        else:
            skipped.append(dict(path=path, reason=reason))
    if skipped and params["required"]:
        raise ConfigError(missing_message(skipped), skipped_paths=skipped)
    return wanted, skipped


def content_problem(content):
    """Why the member names of O(content) are unusable, or None."""
    seen = set()
    for entry in content or []:
        name = entry["name"]
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts or "" in parts or "." in parts:
            return f"content: member name {name!r} must be relative, without empty, . or .. components"
        if name in seen:
            return f"content: member name {name!r} is given twice"
        seen.add(name)
    return None


def archive_content(content, on_data):
    """Write the members of O(content) as tar (mode 0600, owner 0:0, now); returns how many."""
    now = int(time.time())
    with tarfile.open(fileobj=WriteTo(on_data), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in content:
            data = entry["content"].encode("utf-8")
            info = tarfile.TarInfo(entry["name"])
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o600, now, 0, 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return len(content)


def _walked(sink):
    """A TarWalker and the callback that passes the members of one archive to ``sink`` (without its end)."""
    walker = TarWalker()

    def take(data):
        out = walker.feed(data)
        if out:
            sink.write(out)

    return walker, take


def archive(sink, transport, paths, skipped, required, content=None):
    """One tar of the archives of ``paths`` (then the members of ``content``) into ``sink``.

    A path that vanished since it was planned is skipped, or fails with ``required``. Returns (members, archived).
    """
    members = 0
    archived = []
    for path in paths:
        walker, take = _walked(sink)
        stat = transport.read_archive(path, take)
        if stat is None:
            if required:
                raise TransportError(f"required path {path} does not exist in {transport.describe()}")
            skipped.append(dict(path=path, reason=transport.missing_reason))
            continue
        if not walker.complete:
            raise FormatError(f"the archive stream of {path} from {transport.describe()} ended before the "
                              "end-of-archive marker: truncated")
        members += walker.members
        archived.append(path)
    if content:
        walker, take = _walked(sink)
        archive_content(content, take)
        members += walker.members
        archived += [entry["name"] for entry in content]
    sink.write(TarWalker.END)
    return members, archived


def check_options(params):
    problem = factory.platform_option_problem(params, local_only=CONTENT_NEEDS_LOCAL) \
        or content_problem(params["content"])
    relative = [p for p in params["paths"] if not p.startswith("/")]
    if not problem and relative:
        problem = f"paths must be absolute; these are not: {', '.join(relative)}"
    if problem:
        raise ConfigError(problem)


def write_archive(params, transport, wanted, skipped, common):
    watch = Stopwatch()
    try:
        with open_sink(params) as sink:
            members, archived = archive(sink, transport, wanted, skipped, params["required"], params["content"])
            if not archived:
                sink.abort()
                if params["required"]:
                    raise ConfigError(missing_message(skipped), skipped_paths=skipped)
                return dict(common, changed=False, dest=None, archived=[], skipped_paths=skipped)
            stats = sink.commit()
    except BackupError as exc:
        raise exc.add_fields(dest=params["dest"])
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise BackupError(str(exc), dest=params["dest"]) from exc
    result = file_result(stats, watch.elapsed)
    result.update(common, changed=True, members=members, archived=archived, skipped_paths=skipped)
    return result


def run(module):
    params = module.params
    check_options(params)
    check_output(module)
    transport = factory.open_transport(params)
    if params["allow_stopped"]:
        transport.allow_stopped()
    target = transport.target_facts()
    wanted, skipped = plan_paths(params, transport)
    common = dict(compression=params["compression"], target=target)
    given = [entry["name"] for entry in params["content"] or []]
    if module.check_mode or not (wanted or given):
        dest = params["dest"] if wanted or given else None
        return dict(common, changed=bool(wanted or given), dest=dest, archived=wanted + given, skipped_paths=skipped,
                    plan=dict(action="archive" if wanted or given else "nothing to archive", paths=wanted,
                              content=given, skipped_paths=skipped, dest=dest))
    return write_archive(params, transport, wanted, skipped, common)


def main():
    argument_spec = transport_argument_spec()
    argument_spec["platform"]["choices"] = ["docker", "kubernetes", "local"]
    argument_spec.update(output_argument_spec("zstd"))
    argument_spec.update(
        paths=dict(type="list", elements="str", default=[]),
        content=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            content=dict(type="str", required=True, no_log=True),
        )),
        required=dict(type="bool", default=False),
        only_mounted=dict(type="bool", default=True),
        allow_stopped=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=TRANSPORT_REQUIRED_IF,
                           required_one_of=[("paths", "content")], supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
