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
    following symlinks. An existing file or symlink where the archive has a file is replaced by a new file. Files
    are created with mode C(0600), or the archived mode when that is stricter, directories with C(0700); owners are
    not set (RV(files) lists the archived mode, uid and gid of every file). Where Python has it (3.12, 3.11.4 and
    the security releases of older versions), C(tarfile)'s V(data) extraction filter checks each member as well.
  - Members of a container or pod archive are named from each path's last component, as
    M(authentik_ops.backup.path_archive) writes them, for example C(data/media/icon.png) for C(/data), and are
    extracted into the path's parent directory.
  - B(Safety first.) The whole archive is read and checked before anything is written. It is refused, naming the
    member, if a member name is absolute or has a C(..) component, lies outside the top-level names the O(paths)
    allow (their last components; with O(platform=local) any top-level name is allowed), lies below a symlink or a
    file of the archive itself, makes one path both a directory and something else, is a symlink whose target is
    absolute or resolves outside the member's top-level directory, is a hardlink to something outside its
    top-level directory or not in the archive, or is a device node, a fifo or another special file. A tar stream
    that ends without its end-of-archive marker (truncated) is refused too.
  - A symlink in the target where the archive has a directory, or a directory in the target where the archive has
    a symlink or a file, fails the task before anything is written (check mode too). With O(clean=true) only the
    restored directories themselves are compared.
  - Only the checked members are sent; the stream is rebuilt member by member from the checked headers, with one
    member policy on every platform. setuid, setgid and sticky bits are cleared; user and group names are dropped,
    so a C(tar) running as root in a container or pod sets the archived numeric uid and gid (with
    O(platform=local) owners are never set); members that are not regular files carry size 0.
  - With O(clean=true) each restored directory is replaced as a whole and ends equal to the backup (files added
    since the backup disappear). The archive is first extracted into a stage inside the directory
    (C(.akb-restore-<random>), the same file system also when the directory is a mount point), beside the current
    contents. Only when every directory's stage is complete are the current entries moved aside
    (C(.akb-previous-<random>)) and the staged ones moved in, renames only, then the previous entries deleted. A
    failure before that (a stream cut off, a full disk, a source that changed) removes the stages and leaves every
    directory as it was; a failed move puts the previous entries back, and the error says in which state each
    directory is. The directory needs room for both copies while the archive is extracted. The directory itself
    (often a mount point) stays; where the transport extracts as root (Docker), its owner and mode come from the
    archive. A stage left by a run that died is removed by the next clean restore of that directory.
  - Without O(clean), archive entries replace same-name entries and other entries stay; a failure half-way leaves
    the directory partly restored. Commands in the target use POSIX options only (busybox userlands work) and put
    C(--) before every path.
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
      - Replace the contents of each restored directory as a whole, staged beside them first (see the
        description).
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
  description: Directories whose contents were replaced as a whole (O(clean=true)).
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
import secrets

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DECRYPT_MUTUALLY_EXCLUSIVE,
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    decrypt_argument_spec,
    excerpt,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    ConfigError,
    RestoreError,
    SinkError,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import Source
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import open_decompressed
from ansible_collections.authentik_ops.backup.plugins.module_utils._tarsafe import (
    DIR,
    SYMLINK,
    TarSafetyError,
    check_local_kinds,
    kind_conflict,
    rebuild,
    validate_stream,
)

# "--" ends the options of every command given an operator path; find starts at "./<name>" (find has no "--")
# With clean, each directory is replaced as a whole: the archive is extracted into a stage inside it (the same file
# system, also when the directory is a mount point), then the current entries are moved aside into a "previous"
# directory and the staged ones moved in (renames only), and the previous entries are deleted. The stage and
# previous directories are named per run; a stage left by a run that died is removed by the next one.
STAGE = ".akb-restore-"
PREVIOUS = ".akb-previous-"
# $1 directory, $2 stage: remove stages of earlier runs, create this run's
STAGE_SH = ('cd -- "$1" && find . ! -name . -prune -name ".akb-restore-*" -exec rm -rf -- {} + '
            '&& mkdir -m 700 -- "$2"')
# $1 directory, $2 stage: remove this run's stage
DROP_SH = 'cd -- "$1" && rm -rf -- "./$2"'
# $1 directory, $2 stage, $3 previous. Exit 0: swapped (the previous entries deleted; 4 when that deletion failed);
# 2: nothing changed (the entries moved aside were put back); 3: the swap and the way back both failed.
SWAP_SH = r"""
cd -- "$1" || exit 2
back() {
  for e in * .[!.]* ..?*; do
    if [ -e "$e" ] || [ -L "$e" ]; then
      case "$e" in "$2"|"$3"|.akb-previous-*) ;; *) mv -- "$e" "$2/" || return 1 ;; esac
    fi
  done
  for e in "$3"/* "$3"/.[!.]* "$3"/..?*; do
    if [ -e "$e" ] || [ -L "$e" ]; then mv -- "$e" . || return 1; fi
  done
  rmdir -- "$3"
}
mkdir -m 700 -- "$3" || exit 2
for e in * .[!.]* ..?*; do
  if [ -e "$e" ] || [ -L "$e" ]; then
    case "$e" in "$2"|"$3"|.akb-previous-*) ;; *) mv -- "$e" "$3/" || { back "$@" && exit 2; exit 3; } ;; esac
  fi
done
for e in "$2"/* "$2"/.[!.]* "$2"/..?*; do
  if [ -e "$e" ] || [ -L "$e" ]; then mv -- "$e" . || { back "$@" && exit 2; exit 3; }; fi
done
rmdir -- "$2" || exit 4
rm -rf -- "./$3" || exit 4
"""
KINDS_SH = 'cd -- "$1" && find "./$2" -type "$3" -exec printf "%s\\000" {} +'
FIND_TYPES = {DIR: "d", SYMLINK: "l"}
LOCAL_ONLY = {"local_root": "local_root: only with platform=local"}
NOT_LOCAL = {
    "paths": "paths: not used with platform=local, which extracts the whole archive into local_root",
    "clean": "clean: not supported with platform=local; extract into an empty local_root",
}


def parse_paths(paths):
    """{top-level name: (path, parent)} for the paths option; refuses relative or ambiguous paths."""
    tops = {}
    for path in paths:
        if not path.startswith("/"):
            raise ConfigError(f"paths: {path!r} is not absolute")
        clean = posixpath.normpath(path)
        parent, name = posixpath.split(clean)
        if not name or name in (".", ".."):
            raise ConfigError(f"paths: {path!r} has no last component to restore (not /)")
        if name in tops:
            raise ConfigError(f"paths: {tops[name][0]} and {clean} share the name {name!r}; restore them from "
                              "their own archives in separate tasks")
        tops[name] = (clean, parent or "/")
    return tops


def validate(source, tops):
    """Check the whole archive; ``tops`` are the allowed top-level names, or None to allow any."""
    src = source.path
    try:
        with open_decompressed(src, source.compression) as handle:
            return validate_stream(handle, allowed_tops=None if tops is None else set(tops), keep_entries=True)
    except TarSafetyError as exc:
        raise TarSafetyError(f"src: {src} refused, nothing was written: {exc}", src=src) from exc
    except Exception as exc:  # OSError, EOFError, zstandard.ZstdError: unreadable either way
        raise RestoreError(f"src: {src} cannot be read or decompressed, nothing was written: {exc}",
                           src=src) from exc


def rebuilt(source, names, rename):
    handle = open_decompressed(source.path, source.compression)
    try:
        yield from rebuild(handle, tops=names, rename=rename)
    finally:
        handle.close()


def _below_top(parts):
    """Members below the top-level directories only: a ``tar`` that is not root cannot set their owner and mode."""
    return "/".join(parts) if len(parts) > 1 else None


def extract(transport, source, parent, names):
    """Send the members of ``names`` into ``parent``; returns what the transport reports (bytes sent, ...)."""
    rename = None if transport.extracts_top_dirs else _below_top
    return transport.write_archive(parent, lambda: rebuilt(source, names, rename))


def target_kinds(transport, parent, name):
    """{member name: DIR or SYMLINK} of the directories and symlinks at and below ``parent/name`` in the target."""
    kinds = {}
    for kind, find_type in FIND_TYPES.items():
        found = bytearray()
        answer = transport.exec_stream(["sh", "-c", KINDS_SH, "sh", parent, name, find_type], found.extend)
        if not answer.ok:
            raise TransportError(f"listing {posixpath.join(parent, name)} in {transport.describe()} failed "
                                 f"({answer.problem or f'exit status {answer.exit_code}'}): "
                                 f"{excerpt(answer.stderr)}; nothing was written")
        for raw in bytes(found).split(b"\0"):
            if raw.startswith(b"./"):
                kinds[raw[2:].decode("utf-8", "surrogateescape")] = kind
    return kinds


def check_kinds(transport, summary, groups, clean):
    """Refuse, before anything is written, an archive entry that would change a symlink of the target into a
    directory or a directory into anything else (with ``clean`` only the top-level directories stay to compare)."""
    for parent, names in groups.items():
        for name in names:
            current = target_kinds(transport, parent, name)
            for key, (kind, _size) in summary.entries.items():
                if key.split("/", 1)[0] != name or (clean and key != name):
                    continue
                problem = kind_conflict(key, kind, current.get(key), keep=True)
                if problem:
                    raise TarSafetyError(f"{problem} (below {parent} in {transport.describe()}); nothing was "
                                         "written")


def check_local_root(root):
    """The real path of local_root (platform=local)."""
    if not os.path.isabs(root) or not os.path.isdir(root):
        raise ConfigError(f"local_root: {root} is not an existing directory (absolute path) on this host")
    return os.path.realpath(root)


def restore_into_root(module, source):
    """Check the whole archive, then extract it into local_root (platform=local)."""
    src = source.path
    root = check_local_root(module.params["local_root"])
    summary = validate(source, None)
    transport = factory.open_transport(module.params)
    restored = [root] if summary.members else []
    result = dict(src=src, members=summary.members, archive=summary.as_dict(), restored=restored,
                  skipped_paths=[], cleaned=[], target=dict(transport.target_facts(), local_root=root))
    try:
        check_local_kinds(root, summary.entries)
    except TarSafetyError as exc:
        raise exc.add_fields(**result)
    if module.check_mode or not restored:
        return dict(result, changed=bool(restored), files=[],
                    plan=dict(action="extract" if restored else "nothing to restore", restored=restored,
                              clean=[], members=summary.members))
    watch = Stopwatch()
    try:
        if source.changed():
            raise RestoreError(f"{src} changed after it was checked; nothing was written")
        done = extract(transport, source, root, None)
        if source.changed():
            raise RestoreError(f"{src} changed while it was extracted; restore it again from an unchanged file")
    except (RestoreError, TarSafetyError, SinkError, OSError) as exc:
        raise BackupError(f"{exc}; {root} may be partly written", **result) from exc
    except Exception as exc:  # zstandard.ZstdError, age authentication errors: the file broke after it was checked
        raise BackupError(f"src: {src} cannot be read or decompressed: {exc}; {root} may be partly written",
                          **result) from exc
    return dict(result, changed=True, files=done["files"], raw_size=done["size"], duration=watch.elapsed)


def check_targets(module, transport, restored, result):
    """Every restored path must exist in the target; a path that is not a mount is restored with a warning."""
    missing = [path for path in restored if not transport.path_exists(path)]
    if missing:
        raise TransportError(f"{', '.join(missing)} do(es) not exist in {transport.describe()}; create or "
                             "mount the directory first, nothing was written", **result)
    if transport.has_mounts:
        for path in restored:
            if not transport.is_mounted(path):
                module.warn(f"{path} is not a mount of {transport.describe()}: restored files land in the "
                            "container's own layer and are lost when it is recreated")


def _into(stage):
    """Members below a top-level directory, renamed into ``stage`` inside it (the top directory itself left out)."""
    return lambda parts: "/".join((stage,) + tuple(parts[1:])) if len(parts) > 1 else None


def _top_only(parts):
    """Only the top-level directory entries: their owner and mode, where the transport extracts as root."""
    return parts[0] if len(parts) == 1 else None


def _run_sh(transport, script, *args):
    answer = transport.exec_capture(["sh", "-c", script, "sh", *args])
    return answer, (answer.problem or f"exit status {answer.exit_code}") + f": {excerpt(answer.stderr)}"


def drop_stages(transport, staged):
    """Remove this run's stages (best effort); the directories keep their current contents."""
    for path, stage in staged:
        _run_sh(transport, DROP_SH, path, stage)


def staged_restore(module, transport, source, groups):
    """With clean: every directory extracted into its stage first; only when all are complete, each is swapped in.

    Returns the bytes sent. Before the swaps a failure removes the stages and leaves every directory as it was.
    """
    token = secrets.token_hex(4)
    stage, previous = STAGE + token, PREVIOUS + token
    staged, sent = [], 0
    try:
        for parent, names in groups.items():
            for name in names:
                path = posixpath.join(parent, name)
                answer, problem = _run_sh(transport, STAGE_SH, path, stage)
                if not answer.ok:
                    raise TransportError(f"preparing {path}/{stage} in {transport.describe()} failed ({problem})")
                staged.append((path, stage))
                sent += transport.write_archive(
                    path, lambda name=name: rebuilt(source, [name], _into(stage)))["size"]
        if source.changed():
            raise RestoreError(f"{source.path} changed while it was extracted; restore it again from an unchanged "
                               "file")
    except (TransportError, RestoreError, TarSafetyError, SinkError, OSError) as exc:
        drop_stages(transport, staged)
        raise RestoreError(f"{exc}; nothing was changed: every directory keeps its previous contents (the "
                           "extracted copy was removed)") from exc
    swapped = []
    for index, (path, _stage) in enumerate(staged):
        answer, problem = _run_sh(transport, SWAP_SH, path, stage, previous)
        if answer.ok or answer.exit_code == 4:
            swapped.append(path)
            if not answer.ok:
                module.warn(f"{path}: restored, but {path}/{previous} (its previous contents) or {path}/{stage} "
                            f"could not be removed ({problem}); remove it")
            continue
        drop_stages(transport, staged[index:] if answer.exit_code == 2 else staged[index + 1:])
        state = (f"{path} keeps its previous contents" if answer.exit_code == 2 else
                 f"{path} is half swapped: its previous entries are in {path}/{previous}, the restored ones in "
                 f"{path} and {path}/{stage}")
        raise RestoreError(f"replacing the contents of {path} in {transport.describe()} failed ({problem}); "
                           f"{state}; restored before it: {', '.join(swapped) or 'none'}; not restored: "
                           f"{', '.join(p for p, _s in staged[index + 1:]) or 'none'}")
    if transport.extracts_top_dirs:
        for parent, names in groups.items():
            sent += transport.write_archive(parent, lambda names=names: rebuilt(source, names, _top_only))["size"]
    return sent


def restore_paths(module, source):
    """Check the whole archive, then (optionally clean and) extract its top-level names into ``paths``."""
    src = source.path
    tops = parse_paths(module.params["paths"])
    summary = validate(source, tops)
    present = [name for name in tops if name in summary.tops]
    restored = [tops[name][0] for name in present]
    skipped = [dict(path=tops[name][0], reason="not in the archive") for name in tops if name not in summary.tops]
    result = dict(src=src, members=summary.members, archive=summary.as_dict(), restored=restored,
                  skipped_paths=skipped)
    try:
        transport = factory.open_transport(module.params)
        result["target"] = transport.target_facts()
        check_targets(module, transport, restored, result)
    except BackupError as exc:
        raise exc.add_fields(**result)
    cleaned = restored if module.params["clean"] else []
    groups = {}
    for name in present:
        groups.setdefault(tops[name][1], []).append(name)
    try:
        check_kinds(transport, summary, groups, module.params["clean"])
    except BackupError as exc:
        raise exc.add_fields(**result)
    if module.check_mode or not restored:
        return dict(result, changed=bool(restored), cleaned=cleaned,
                    plan=dict(action="extract" if restored else "nothing to restore", restored=restored,
                              clean=cleaned, members=summary.members))
    watch = Stopwatch()
    sent = 0
    if source.changed():
        raise RestoreError(f"{src} changed after it was checked; nothing was written", **result)
    if cleaned:
        try:
            sent = staged_restore(module, transport, source, groups)
        except (TransportError, RestoreError, TarSafetyError, SinkError, OSError) as exc:
            raise BackupError(str(exc), cleaned=[], **result) from exc
        return dict(result, changed=True, cleaned=cleaned, raw_size=sent, duration=watch.elapsed)
    try:
        for parent, names in groups.items():
            sent += extract(transport, source, parent, names)["size"]
        if source.changed():
            raise RestoreError(f"{src} changed while it was extracted; restore it again from an unchanged file")
    except (TransportError, RestoreError, TarSafetyError, SinkError, OSError) as exc:
        raise BackupError(f"{exc}; the directories may be partly restored", cleaned=[], **result) from exc
    return dict(result, changed=True, cleaned=cleaned, raw_size=sent, duration=watch.elapsed)


def run(module):
    params = module.params
    source = Source(params, src=params["src"])
    problem = factory.platform_option_problem(params, local_only=LOCAL_ONLY, not_local=NOT_LOCAL)
    if problem:
        raise ConfigError(problem, src=source.path)
    if params["local_root"]:
        return restore_into_root(module, source)
    return restore_paths(module, source)


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
    run_module(module, run)


if __name__ == "__main__":
    main()
