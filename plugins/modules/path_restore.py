#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: path_restore
short_description: Safely extract an archive of authentik's directories back into a container, a pod or a host directory
version_added: 0.1.0
description:
  - Extracts a tar archive written by M(authentik_ops.backup.path_archive) (C(.tar), C(.tar.gz) or C(.tar.zst)) back
    into the directories O(paths) of a container (Docker Engine API archive endpoint) or pod
    (C(head -c <bytes> | tar -C <parent> -xf -) over exec). The archive is decompressed on the host the module runs
    on and streamed; memory use does not grow with its size.
  - With O(platform=local) the archive (for example the C(config.tar.zst) or C(config.tar.zst.age) of a backup set,
    written by M(authentik_ops.backup.path_archive) with O(authentik_ops.backup.path_archive#module:platform=local))
    is extracted as a whole into the directory O(local_root) of the host the module runs on, with Python's C(tarfile)
    module; no C(tar) or C(zstd) binary is needed, and an age-encrypted archive is decrypted in memory
    (O(decrypt_identity) or O(decrypt_identity_file)). Host paths are stored without their leading C(/), so
    C(/opt/authentik/.env) lands in C(<local_root>/opt/authentik/.env), and Kubernetes Secrets saved with
    O(authentik_ops.backup.path_archive#module:content) in C(<local_root>/secrets/<namespace>/<name>.yaml).
  - With O(platform=local) nothing is written outside O(local_root). Every directory is opened below it without
    following symlinks; a symlink already in O(local_root) where the archive has a directory fails the task and is
    never followed. An existing file or symlink where the archive has a file is replaced by a new file. Files are
    created with mode C(0600), or the archived mode when that is stricter, directories with C(0700); owners are
    not set (RV(files) lists the archived mode, uid and gid of every file). Where Python has it (3.12, 3.11.4 and
    the security releases of older versions), C(tarfile)'s V(data) extraction filter checks each member as well.
  - Members of a container or pod archive are named from each path's last component, as
    M(authentik_ops.backup.path_archive) writes them, for example C(data/media/icon.png) for C(/data), and are
    extracted into the path's parent directory.
  - B(Safety first.) The whole archive is read and checked before anything is written. It is refused, naming the
    member, if a member name is absolute or has a C(..) component, lies outside the top-level names the O(paths)
    allow (their last components; with O(platform=local) any top-level name is allowed), lies below a symlink of
    the archive itself, is a symlink whose target is absolute or resolves outside the member's top-level
    directory, is a hardlink to something outside its top-level directory or not in the archive, or is a device
    node, a fifo or another special file. A tar stream that ends without its end-of-archive marker (truncated) is
    refused too.
  - Only the checked members are sent; the stream is rebuilt member by member from the checked headers.
  - With O(clean=true) the contents of each restored directory are deleted first (C(find <dir> -mindepth 1 -delete)),
    so files added since the backup disappear and the directory ends equal to the backup. The directory itself
    (often a mount point) stays.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - authentik_ops.backup._common.decrypt
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Reads and checks the whole archive, checks that the target runs and that the directories exist (with
        O(platform=local), that O(local_root) is a directory), and reports the plan in RV(plan). Nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run extracts the archive and reports a change.
options:
  platform:
    description:
      - Where the archive is extracted.
      - V(docker) talks to the Docker Engine API over the daemon socket of the host the module runs on.
      - V(kubernetes) execs into a pod through the Kubernetes API, with the credentials of
        the C(kubernetes.core) authentication options.
      - V(local) extracts the whole archive into O(local_root) on the host the module runs on; the container and
        pod options are not used.
    type: str
    choices: [docker, kubernetes, local]
    default: docker
  local_root:
    description:
      - Existing directory of the host the module runs on to extract the archive into, with O(platform=local), for
        example a private temporary directory. Required with O(platform=local), not used otherwise.
      - Members replace files of the same name in it; use an empty directory.
    type: path
  src:
    description:
      - Path of the archive on the host the module runs on.
    type: path
    required: true
  compression:
    description:
      - Codec of O(src). V(auto) decides by the suffix (C(.zst), C(.gz), else none).
    type: str
    choices: [auto, none, gzip, zstd]
    default: auto
  paths:
    description:
      - Absolute paths of the directories in the container or pod, for example V([/data, /templates]).
      - Their last components are the top-level names the archive may contain; each must be different.
      - A path whose name is not in the archive is reported in RV(skipped_paths) and left alone.
      - Required with O(platform=docker) and O(platform=kubernetes). Not used with O(platform=local), which extracts
        the whole archive.
    type: list
    elements: str
  clean:
    description:
      - Delete the contents of each restored directory before extracting (see the description).
      - Not supported with O(platform=local).
    type: bool
    default: false
notes:
  - Docker keeps the owner, group and mode of every member as archived. On Kubernetes C(tar) runs as the container's
    user; unless that is root, files get that user as owner, and the top-level directories' own entries (the mount
    points) are not extracted.
  - Needs C(sh), C(head), C(tar) and (for O(clean=true)) C(find) in the pod; on Docker only C(find), for O(clean=true).
  - With O(platform=local) nothing but Python is needed (and the Python packages C(zstandard) for C(.zst) archives and
    C(cryptography) for age-encrypted ones).
seealso:
  - module: authentik_ops.backup.path_archive
  - module: authentik_ops.backup.backup_verify
"""

EXAMPLES = r"""
- name: Restore /data of authentik's server container, removing files added since the backup
  authentik_ops.backup.path_restore:
    container: authentik-server-1
    src: /var/backups/authentik/latest/data.tar.zst
    paths: [/data]
    clean: true

- name: Restore custom templates into the server pod
  authentik_ops.backup.path_restore:
    platform: kubernetes
    namespace: authentik
    pod: authentik-server-7d9c8b5f4-abcde
    src: /var/backups/authentik/latest/templates.tar.zst
    paths: [/templates]

- name: Extract an encrypted config archive into a private temporary directory of this host
  authentik_ops.backup.path_restore:
    platform: local
    src: /var/backups/authentik/latest/config.tar.zst.age
    local_root: "{{ restore_tmp.path }}"
    decrypt_identity_file: /root/.config/authentik-backup/age-identity.txt
  no_log: true
"""

RETURN = r"""
src:
  description: Path of the archive.
  returned: always
  type: str
  sample: /var/backups/authentik/latest/data.tar.zst
members:
  description: Number of members checked (and, unless check mode, extracted for the restored paths or into
    O(local_root)).
  returned: success
  type: int
  sample: 42
archive:
  description: Counts of the checked archive by kind, its top-level names and the bytes of file data.
  returned: success
  type: dict
  sample: {members: 42, top_level: [data], files: 30, directories: 10, symlinks: 2, hardlinks: 0, data_bytes: 1048576}
restored:
  description: Paths that were (or in check mode would be) restored. With O(platform=local), O(local_root), or
    nothing when the archive is empty.
  returned: success
  type: list
  elements: str
  sample: [/data]
skipped_paths:
  description: Paths of O(paths) with no members in the archive, each with the reason. Empty with O(platform=local).
  returned: success
  type: list
  elements: dict
  sample: [{path: /templates, reason: not in the archive}]
cleaned:
  description: Directories whose contents were deleted first (O(clean=true)).
  returned: success
  type: list
  elements: str
  sample: [/data]
files:
  description:
    - With O(platform=local), the regular files extracted into O(local_root) (or, in check mode, none); each
      with its member name, the mode (octal), uid and gid it has in the archive and its size in bytes.
    - The extracted file itself has mode C(0600) or the stricter archived one; use RV(files[].mode) to give the
      file its archived mode where it is copied to.
  returned: success with O(platform=local)
  type: list
  elements: dict
  sample: [{name: opt/authentik/.env, mode: "0600", uid: 0, gid: 0, size: 512}]
  contains:
    name:
      description: Member name, the path below O(local_root).
      type: str
      sample: opt/authentik/.env
    mode:
      description: Permission bits in the archive, four octal digits.
      type: str
      sample: "0600"
    uid:
      description: Owner in the archive.
      type: int
      sample: 0
    gid:
      description: Group in the archive.
      type: int
      sample: 0
    size:
      description: Bytes of the file.
      type: int
      sample: 512
raw_size:
  description: Bytes of tar stream sent to the target (with O(platform=local), the bytes of file data written).
  returned: success and not check mode
  type: int
  sample: 1095680
duration:
  description: Seconds for cleaning and extracting.
  returned: success and not check mode
  type: float
  sample: 0.4
target:
  description: The container or pod, or for O(platform=local) the host and O(local_root).
  returned: success
  type: dict
  sample: {platform: docker, container: authentik-server-1}
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: extract, restored: [/data], clean: [/data], members: 42}
"""

import os
import posixpath
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DECRYPT_MUTUALLY_EXCLUSIVE,
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    decrypt_argument_spec,
    excerpt,
    open_transport,
    prepare_decryption,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import (
    RestoreError,
    compression_of,
    Feed,
    count_bytes,
    file_identity,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import (
    SinkError,
    compression_problem,
    open_decompressed,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._tarsafe import (
    TarSafetyError,
    extract_local,
    rebuild,
    validate_stream,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import TransportError

CLEAN_SH = 'find "$1" -mindepth 1 -delete'
EXTRACT_SH = 'head -c "$1" | tar -C "$2" -xf -'


def parse_paths(module):
    """{top-level name: (path, parent)} for the paths option; fails on relative or ambiguous paths."""
    tops = {}
    for path in module.params["paths"]:
        if not path.startswith("/"):
            module.fail_json(msg=f"paths: {path!r} is not absolute")
        clean = posixpath.normpath(path)
        parent, name = posixpath.split(clean)
        if not name or name in (".", ".."):
            module.fail_json(msg=f"paths: {path!r} has no last component to restore (not /)")
        if name in tops:
            module.fail_json(msg=f"paths: {tops[name][0]} and {clean} share the name {name!r}; restore them from "
                                 "their own archives in separate tasks")
        tops[name] = (clean, parent or "/")
    return tops


def validate(module, tops):
    """Check the whole archive; ``tops`` are the allowed top-level names, or None to allow any."""
    src = module.params["src"]
    try:
        with open_decompressed(src, module.params["compression"]) as handle:
            return validate_stream(handle, allowed_tops=None if tops is None else set(tops))
    except TarSafetyError as exc:
        module.fail_json(msg=f"src: {src} refused, nothing was written: {exc}", src=src)
    except Exception as exc:  # OSError, EOFError, zstandard.ZstdError: unreadable either way
        module.fail_json(msg=f"src: {src} cannot be read or decompressed, nothing was written: {exc}", src=src)


def rebuilt(params, names, skip_top_dirs):
    handle = open_decompressed(params["src"], params["compression"])
    try:
        yield from rebuild(handle, tops=names, skip_top_dirs=skip_top_dirs)
    finally:
        handle.close()


def extract(transport, params, parent, names):
    """Send the members of ``names`` into ``parent``; returns the bytes sent."""
    if transport.platform == "docker":
        counter = _Counted(rebuilt(params, names, False))
        transport.put_archive(parent, counter)
        return counter.size
    size = count_bytes(rebuilt(params, names, True))
    feed = Feed(rebuilt(params, names, True), size)  # a failing source is padded with newlines (not a tar header)
    result = transport.exec_stream(["sh", "-c", EXTRACT_SH, "sh", str(size), parent], _discard, stdin=feed)
    if feed.error is not None:
        raise RestoreError(f"reading the archive failed while it was sent: {feed.error}")
    if not result.complete or result.exit_code != 0:
        raise TransportError(f"tar in {transport.describe()} failed extracting into {parent} "
                             f"({result.problem or f'exit status {result.exit_code}'}): {excerpt(result.stderr)}")
    return size


def _discard(data):
    del data  # tar -x prints nothing on stdout; nothing to keep


class _Counted:
    def __init__(self, chunks):
        self.chunks = chunks
        self.size = 0

    def __iter__(self):
        for block in self.chunks:
            self.size += len(block)
            yield block


def check_local_options(module):
    """platform=local: the real path of local_root, after refusing the options it does not use."""
    params = module.params
    if params["paths"]:
        module.fail_json(msg="paths: not used with platform=local, which extracts the whole archive into local_root")
    if params["clean"]:
        module.fail_json(msg="clean: not supported with platform=local; extract into an empty local_root")
    root = params["local_root"]
    if not os.path.isabs(root) or not os.path.isdir(root):
        module.fail_json(msg=f"local_root: {root} is not an existing directory (absolute path) on this host")
    return os.path.realpath(root)


def run_local(module, identity):
    """Check the whole archive, then extract it into local_root (platform=local); exits the module."""
    params = module.params
    src = params["src"]
    root = check_local_options(module)
    summary = validate(module, None)
    restored = [root] if summary.members else []
    target = dict(platform="local", host=socket.gethostname(), local_root=root)
    result = dict(src=src, members=summary.members, archive=summary.as_dict(), restored=restored,
                  skipped_paths=[], cleaned=[], target=target)
    if module.check_mode or not restored:
        module.exit_json(changed=bool(restored), files=[],
                         plan=dict(action="extract" if restored else "nothing to restore", restored=restored,
                                   clean=[], members=summary.members), **result)
    watch = Stopwatch()
    try:
        if file_identity(src) != identity:
            raise RestoreError(f"{src} changed after it was checked; nothing was written")
        handle = open_decompressed(src, params["compression"])
        try:
            done = extract_local(handle, root)
        finally:
            handle.close()
        if file_identity(src) != identity:
            raise RestoreError(f"{src} changed while it was extracted; restore it again from an unchanged file")
    except (RestoreError, TarSafetyError, SinkError, OSError) as exc:
        module.fail_json(msg=f"{exc}; {root} may be partly written", **result)
    except Exception as exc:  # zstandard.ZstdError, age authentication errors: the file broke after it was checked
        module.fail_json(msg=f"src: {src} cannot be read or decompressed: {exc}; {root} may be partly written",
                         **result)
    module.exit_json(changed=True, files=done.files, raw_size=done.bytes, duration=watch.elapsed, **result)


def main():
    argument_spec = transport_argument_spec()
    argument_spec["platform"]["choices"] = ["docker", "kubernetes", "local"]
    argument_spec.update(
        src=dict(type="path", required=True),
        compression=dict(type="str", default="auto", choices=["auto", "none", "gzip", "zstd"]),
        paths=dict(type="list", elements="str"),
        clean=dict(type="bool", default=False),
        local_root=dict(type="path"),
    )
    argument_spec.update(decrypt_argument_spec())
    required_if = TRANSPORT_REQUIRED_IF + [
        ("platform", "docker", ("paths",)),
        ("platform", "kubernetes", ("paths",)),
        ("platform", "local", ("local_root",)),
    ]
    module = AnsibleModule(argument_spec=argument_spec, required_if=required_if,
                           mutually_exclusive=DECRYPT_MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    params = module.params
    src = params["src"]
    if not os.path.isfile(src) or not os.access(src, os.R_OK):
        module.fail_json(msg=f"src: {src} is not a readable file on this host", src=src)
    prepare_decryption(module, src)
    params["compression"] = compression_of(src, params["compression"])
    problem = compression_problem(params["compression"])
    if problem:
        module.fail_json(msg=f"src: {problem}", src=src)
    if params["platform"] == "local":
        run_local(module, file_identity(src))
    if params["local_root"]:
        module.fail_json(msg="local_root: only with platform=local")
    tops = parse_paths(module)

    identity = file_identity(src)
    summary = validate(module, tops)
    present = [name for name in tops if name in summary.tops]
    restored = [tops[name][0] for name in present]
    skipped = [dict(path=tops[name][0], reason="not in the archive") for name in tops if name not in summary.tops]
    result = dict(src=src, members=summary.members, archive=summary.as_dict(), restored=restored,
                  skipped_paths=skipped)

    try:
        transport = open_transport(module)
        result["target"] = transport.target_facts()
        missing = [path for path in restored if not transport.path_exists(path)]
        if missing:
            module.fail_json(msg=f"{', '.join(missing)} do(es) not exist in {transport.describe()}; create or "
                                 "mount the directory first, nothing was written", **result)
        if transport.platform == "docker":
            for path in restored:
                if not transport.is_mounted(path):
                    module.warn(f"{path} is not a mount of {transport.describe()}: restored files land in the "
                                "container's own layer and are lost when it is recreated")
    except TransportError as exc:
        module.fail_json(msg=str(exc), **result)

    cleaned = restored if params["clean"] else []
    if module.check_mode or not restored:
        module.exit_json(changed=bool(restored), cleaned=cleaned,
                         plan=dict(action="extract" if restored else "nothing to restore", restored=restored,
                                   clean=cleaned, members=summary.members), **result)

    groups = {}
    for name in present:
        groups.setdefault(tops[name][1], []).append(name)
    watch = Stopwatch()
    sent = 0
    try:
        if file_identity(src) != identity:
            raise RestoreError(f"{src} changed after it was checked; nothing was written")
        for path in cleaned:
            answer = transport.exec_capture(["sh", "-c", CLEAN_SH, "sh", path])
            if not answer.ok:
                raise TransportError(f"cleaning {path} in {transport.describe()} failed "
                                     f"({answer.problem or f'exit status {answer.exit_code}'}): "
                                     f"{excerpt(answer.stderr)}")
        for parent, names in groups.items():
            sent += extract(transport, params, parent, names)
        if file_identity(src) != identity:
            raise RestoreError(f"{src} changed while it was extracted; restore it again from an unchanged file")
    except (TransportError, RestoreError, TarSafetyError, SinkError, OSError) as exc:
        module.fail_json(msg=f"{exc}; the directories may be partly restored", cleaned=cleaned, **result)
    module.exit_json(changed=True, cleaned=cleaned, raw_size=sent, duration=watch.elapsed, **result)


if __name__ == "__main__":
    main()
