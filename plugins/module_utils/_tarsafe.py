# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Member-safety rules for tar archives that are restored into a container (path_restore, backup_verify).

An archive is checked completely, in stream mode, before a single byte is written anywhere. Refused:

- absolute member names and names with a ``..`` component;
- members whose first component is not one of the allowed top-level names (when they are given);
- members below a path that the archive itself makes a symlink or a file (extraction would follow it, or fail);
- a path the archive makes both a directory and something else (a later member would change its kind);
- symlinks with an absolute target, or whose target resolves (through the archive's own symlinks) outside the
  member's top-level directory;
- hardlinks whose target is absolute, has ``..``, lies in another top-level directory or is not an earlier
  regular-file member of the archive;
- device nodes, fifos and any other member type than regular file, directory, symlink and hardlink.

The archive is then sent as a *rebuilt* stream (:func:`rebuild`): the same members, header by header, from the
validated metadata, so nothing but what was checked reaches the target. The one member policy of both restore
paths (an archive sent into a container or pod, and :func:`extract_local` on this host) is applied there:

- setuid, setgid and sticky bits are always cleared (modes keep only their ``0777`` bits; :func:`extract_local`
  keeps even less: ``0600`` for files, ``0700`` for directories);
- owners are numeric: user and group names of the archive are dropped, so a ``tar`` running as root in the target
  sets the archived uid and gid as they are, without mapping names through the target's ``/etc/passwd``; a ``tar``
  running as another user (a pod's container) makes its own user the owner; :func:`extract_local` never sets owners
  (files belong to the user running the module);
- members that are not regular files carry size 0 (a directory, symlink or hardlink with a size is read differently
  by different tar implementations: GNU tar skips that many bytes, Python's tarfile and busybox read them as the
  next member);
- a symlink in the target where the archive has a directory, or a directory where the archive has a symlink, is
  refused before anything is written (:func:`kind_conflict`); so is a directory where the archive has a file when
  the existing entries are kept (no ``clean``, and :func:`extract_local`).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import FormatError
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import TarWalker

CHUNK = 1 << 20
MAX_LINK_DEPTH = 40


class TarSafetyError(FormatError):
    """The archive is unsafe or unreadable; the message names the member."""


def _components(name):
    return [part for part in name.split("/") if part not in ("", ".")]


def normalize(name):
    """The member name as a list of components; ValueError (with the reason) when it is unsafe by itself."""
    if name.startswith("/"):
        raise ValueError("absolute member name")
    parts = _components(name)
    if ".." in parts:
        raise ValueError("'..' component in the name")
    if not parts:
        raise ValueError("empty member name")
    return parts


class _Tee:
    """File object that passes reads through and feeds the bytes to a TarWalker (to see the end marker)."""

    def __init__(self, raw):
        self.raw = raw
        self.walker = TarWalker()
        self.error = None

    def read(self, size=-1):
        data = self.raw.read(size)
        if data and not self.walker.complete and self.error is None:
            try:
                self.walker.feed(data)
            except ValueError as exc:  # bad header checksum: tarfile reports it too, in its own words
                self.error = str(exc)
        return data


class ArchiveSummary:
    def __init__(self):
        self.members = 0
        self.tops = []
        self.files = 0
        self.dirs = 0
        self.symlinks = 0
        self.hardlinks = 0
        self.data_bytes = 0
        self.entries = None  # with keep_entries: {path: (kind, size)} in archive order, implied directories too

    def as_dict(self):
        return dict(members=self.members, top_level=list(self.tops), files=self.files, directories=self.dirs,
                    symlinks=self.symlinks, hardlinks=self.hardlinks, data_bytes=self.data_bytes)


def _resolve(start_parts, target, symlinks, depth=0):
    """Resolve ``target`` lexically from the directory ``start_parts``, following the archive's own symlinks.

    Returns the resulting component list, or None when it climbs above the archive root.
    """
    if depth > MAX_LINK_DEPTH:
        return None
    if target.startswith("/"):
        return None
    parts = list(start_parts)
    for component in target.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(component)
        key = "/".join(parts)
        if key in symlinks:
            resolved = _resolve(parts[:-1], symlinks[key], symlinks, depth + 1)
            if resolved is None:
                return None
            parts = resolved
    return parts


# The kind of a path, as the rules and the restore plans speak of it.
DIR, FILE, SYMLINK, HARDLINK = "d", "f", "l", "h"
KIND_NAMES = {DIR: "a directory", FILE: "a file", SYMLINK: "a symlink", HARDLINK: "a hardlink"}


class _MemberRules:
    """The per-member rules of :func:`validate_stream`, and what they remember of the members seen so far."""

    def __init__(self, allowed_tops, keep_entries=False):
        self.allowed = set(allowed_tops) if allowed_tops is not None else None
        self.summary = ArchiveSummary()
        self.symlinks = {}
        self.kinds = {}
        self.entries = {} if keep_entries else None
        self.seen_tops = []

    def _record(self, key, kind, size=0):
        self.kinds[key] = kind
        if self.entries is not None:
            self.entries[key] = (kind, size)

    def check(self, member):
        name = member.name
        try:
            parts = normalize(name)
        except ValueError as exc:
            raise TarSafetyError(f"member {name!r}: {exc}") from None
        top = parts[0]
        if self.allowed is not None and top not in self.allowed:
            raise TarSafetyError(f"member {name!r}: outside the expected top-level names "
                                 f"({', '.join(sorted(self.allowed)) or 'none'})")
        self._parents(name, parts)
        key = "/".join(parts)
        self._kind(member, name, top, key)
        if key in self.symlinks and not member.issym():
            del self.symlinks[key]  # a later member replaces the link
        if top not in self.seen_tops:
            self.seen_tops.append(top)
        self.summary.members += 1

    def _parents(self, name, parts):
        """Every directory above the member: not a symlink or file of the archive; implied ones are recorded."""
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in self.symlinks:
                raise TarSafetyError(f"member {name!r}: lies below {prefix!r}, which the archive makes a "
                                     "symlink; extracting it would follow the link")
            kind = self.kinds.get(prefix)
            if kind is None:
                self._record(prefix, DIR)
            elif kind != DIR:
                raise TarSafetyError(f"member {name!r}: lies below {prefix!r}, which the archive makes "
                                     f"{KIND_NAMES[kind]}")

    def _same_kind(self, name, key, kind):
        before = self.kinds.get(key)
        if before is not None and (before == DIR) != (kind == DIR):
            raise TarSafetyError(f"member {name!r}: the archive makes this path both {KIND_NAMES[before]} and "
                                 f"{KIND_NAMES[kind]}")

    def _kind(self, member, name, top, key):
        summary = self.summary
        if member.issym():
            target = member.linkname
            if target.startswith("/"):
                raise TarSafetyError(f"member {name!r}: symlink with an absolute target {target!r}")
            self._same_kind(name, key, SYMLINK)
            self.symlinks[key] = target
            self._record(key, SYMLINK)
            summary.symlinks += 1
        elif member.islnk():
            target = member.linkname
            try:
                target_parts = normalize(target)
            except ValueError as exc:
                raise TarSafetyError(f"member {name!r}: hardlink target {target!r}: {exc}") from None
            if target_parts[0] != top:
                raise TarSafetyError(f"member {name!r}: hardlink to {target!r} outside its top-level "
                                     f"directory {top!r}")
            target_key = "/".join(target_parts)
            if self.kinds.get(target_key) != FILE:
                raise TarSafetyError(f"member {name!r}: hardlink to {target!r}, which is not an earlier "
                                     "regular file of the archive")
            self._same_kind(name, key, HARDLINK)
            size = self.entries[target_key][1] if self.entries is not None else 0
            self._record(key, HARDLINK, size)
            summary.hardlinks += 1
        elif member.isreg():
            self._same_kind(name, key, FILE)
            self._record(key, FILE, member.size)
            summary.files += 1
            summary.data_bytes += member.size
        elif member.isdir():
            self._same_kind(name, key, DIR)
            self._record(key, DIR)
            summary.dirs += 1
        else:
            kind = ("character device" if member.ischr() else "block device" if member.isblk()
                    else "fifo" if member.isfifo() else f"type {member.type!r}")
            raise TarSafetyError(f"member {name!r}: {kind} members are not restored")

    def check_links(self):
        for key, target in self.symlinks.items():
            parts = key.split("/")
            resolved = _resolve(parts[:-1], target, self.symlinks)
            if resolved is None or not resolved or resolved[0] != parts[0]:
                raise TarSafetyError(f"member {key!r}: symlink to {target!r} resolves outside its top-level "
                                     f"directory {parts[0]!r}")


def validate_stream(fileobj, allowed_tops=None, keep_entries=False):
    """Read a whole tar stream (``r|``) and apply the rules of this module's docstring.

    ``allowed_tops``: the allowed first components, or None to allow any. ``keep_entries``: also return every path
    with its kind and size in ``summary.entries`` (implied directories included, parents before children), which a
    restore plans with. Returns an ArchiveSummary; raises TarSafetyError on the first problem, naming the member.
    """
    rules = _MemberRules(allowed_tops, keep_entries)
    tee = _Tee(fileobj)
    try:
        tar = tarfile.open(fileobj=tee, mode="r|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                           errors="surrogateescape")
    except tarfile.TarError as exc:
        raise TarSafetyError(f"not a readable tar archive: {exc}") from exc
    try:
        for member in tar:
            rules.check(member)
    except tarfile.TarError as exc:
        raise TarSafetyError(f"the tar archive is damaged or truncated after {rules.summary.members} members: "
                             f"{exc}") from exc
    finally:
        tar.close()
    rules.check_links()
    summary = rules.summary
    if tee.error:
        raise TarSafetyError(f"the archive is damaged after {summary.members} members: {tee.error}")
    if not tee.walker.complete:
        raise TarSafetyError(f"the tar archive ends after {summary.members} members without the end-of-archive "
                             "marker: it is truncated")
    summary.tops = rules.seen_tops
    summary.entries = rules.entries
    return summary


def _member_data(tar, member, chunk):
    """The data of the regular file ``member`` in blocks of at most ``chunk`` bytes; it must be complete."""
    source = tar.extractfile(member)
    remaining = member.size
    while remaining:
        block = source.read(min(chunk, remaining))
        if not block:
            raise TarSafetyError(f"member {member.name!r}: data ends early")
        remaining -= len(block)
        yield block


def apply_member_policy(member):
    """The member policy of both restore paths (see the module docstring): no setuid, setgid or sticky bit, numeric
    owners only, size 0 for anything but a regular file."""
    member.mode = stat.S_IMODE(member.mode) & 0o777
    member.uname = ""
    member.gname = ""
    if member.isreg():
        member.type = tarfile.REGTYPE
    else:
        member.size = 0
    member.pax_headers = {}  # regenerated by tobuf from the checked attributes where needed
    return member


def rebuild(fileobj, tops=None, chunk=CHUNK, rename=None):
    """Yield a new tar stream with the members of ``fileobj`` (only those under ``tops`` when given).

    Headers are written from the parsed metadata (PAX format) after :func:`apply_member_policy`; regular files'
    data is copied in chunks. ``rename(parts)`` gives the name a member gets in the new stream (from its checked
    components), or None to leave it out; hardlink targets are renamed the same way. Call it only on an archive
    :func:`validate_stream` accepted.
    """
    wanted = set(tops) if tops is not None else None
    tar = tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8", errors="surrogateescape")
    try:
        for member in tar:
            parts = normalize(member.name)
            if wanted is not None and parts[0] not in wanted:
                continue
            name = rename(parts) if rename is not None else "/".join(parts)
            if name is None:
                continue
            if member.islnk():
                target = normalize(member.linkname)
                member.linkname = rename(target) if rename is not None else "/".join(target)
                if member.linkname is None:
                    raise TarSafetyError(f"member {member.name!r}: hardlink to {'/'.join(target)!r}, which is "
                                         "not restored with it")
            member.name = name + ("/" if member.isdir() else "")
            yield apply_member_policy(member).tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8",
                                                    errors="surrogateescape")
            if member.isreg() and member.size:
                yield from _member_data(tar, member, chunk)
                padding = (-member.size) % tarfile.BLOCKSIZE
                if padding:
                    yield bytes(padding)
    finally:
        tar.close()
    yield bytes(2 * tarfile.BLOCKSIZE)


def kind_conflict(path, kind, current, keep):
    """Why an archive entry of ``kind`` cannot take the place of the target's ``current`` entry at ``path``, or None.

    ``current`` is the kind the target has there (``DIR``, ``SYMLINK``, ``FILE`` for anything else that is not a
    directory) or None. ``keep``: the target's other entries stay (no ``clean``, or an extraction on this host), so
    a directory must not be replaced by a file either.
    """
    if current is None:
        return None
    if kind == DIR and current == SYMLINK:
        return (f"{path!r} is a symlink in the target and a directory in the archive; remove or move the symlink "
                "first")
    if kind != DIR and current == DIR and (kind == SYMLINK or keep):
        return (f"{path!r} is a directory in the target and {KIND_NAMES[kind]} in the archive; remove or move the "
                "directory first")
    return None


# --- extraction into a directory of the host the module runs on (path_restore platform=local) ---------------------

FILE_MODE_MAX = 0o600  # files get 0600 unless the archive asks for less
DIR_MODE = 0o700  # directories of the (private) extraction tree

# tarfile's own "data" filter (Python 3.11.4+, 3.12+, and backports): a second opinion on every member.
_DATA_FILTER = getattr(tarfile, "data_filter", None)


class LocalExtraction:
    """What :func:`extract_local` wrote: member counts and the files with their archived mode, uid and gid."""

    def __init__(self):
        self.members = 0
        self.bytes = 0
        self.files = []


def _open_dir(parent_fd, name, create, where):
    """Open (creating when asked) the directory ``name`` below ``parent_fd`` without following a symlink."""
    if create:
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                       dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise TarSafetyError(f"{where!r} exists in the destination and is not a directory (a symlink or a "
                                 "file); it is not followed") from None
        raise


def _walk(root_fd, parts, create):
    """A descriptor of the directory ``parts`` (components) below ``root_fd``; no symlink is ever followed."""
    fd = os.dup(root_fd)
    try:
        for depth, name in enumerate(parts):
            child = _open_dir(fd, name, create, "/".join(parts[:depth + 1]))
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_entry(parent_fd, name, where, kind):
    """Make room at ``name`` for a member of ``kind``: an existing file or symlink (never followed) is removed, an
    existing directory kept for a directory member. What :func:`kind_conflict` refuses (a symlink where the member
    is a directory, a directory where it is not) raises TarSafetyError."""
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    current = _kind_of(info.st_mode)
    problem = kind_conflict(where, kind, current, keep=True)
    if problem:
        raise TarSafetyError(f"member {where!r}: {problem}")
    if current == DIR:
        return
    os.unlink(name, dir_fd=parent_fd)


def _kind_of(mode):
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return FILE


def check_local_kinds(root, entries):
    """Refuse, before anything is written, an archive whose entries (``summary.entries``) would change the kind of
    what ``root`` holds (:func:`kind_conflict`, existing entries kept). Parents come before their children, so a
    symlink on the way is refused before anything below it is looked at."""
    real_root = os.path.realpath(root)
    for key, (kind, _size) in entries.items():
        try:
            info = os.lstat(os.path.join(real_root, *key.split("/")))
        except (FileNotFoundError, NotADirectoryError):
            continue
        problem = kind_conflict(key, kind, _kind_of(info.st_mode), keep=True)
        if problem:
            raise TarSafetyError(f"{problem} (in {real_root}); nothing was written")


def _data_filter(member, root):
    if _DATA_FILTER is None:
        return member
    try:
        return _DATA_FILTER(member, root)
    except tarfile.FilterError as exc:
        raise TarSafetyError(f"member {member.name!r}: refused by tarfile's data filter: {exc}") from None


def extract_local(fileobj, root, chunk=CHUNK):
    """Extract the tar stream ``fileobj`` into the existing host directory ``root``.

    Call it only on an archive :func:`validate_stream` accepted; every member is checked again here
    (:func:`normalize`, tarfile's ``data`` filter where Python has it). Nothing is written outside ``root``:
    every directory is opened below a descriptor of ``root`` with ``O_NOFOLLOW`` (a symlink already in ``root``
    is refused, never followed), an existing file or symlink at a member's place is removed and the file is
    created anew (``O_EXCL``); a symlink where the member is a directory, or a directory where it is not, is refused
    (:func:`check_local_kinds` refuses both before anything is written). Files get mode ``0600`` unless the archive
    has a stricter one, directories ``0700``; owners are not set. Symlinks and hardlinks are recreated as checked.
    The files are listed with their archived mode (setuid, setgid and sticky bits cleared), uid and gid. Returns a
    :class:`LocalExtraction`.
    """
    done = LocalExtraction()
    real_root = os.path.realpath(root)
    root_fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    tar = tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8", errors="surrogateescape")
    try:
        for member in tar:
            try:
                parts = normalize(member.name)
            except ValueError as exc:
                raise TarSafetyError(f"member {member.name!r}: {exc}") from None
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise TarSafetyError(f"member {member.name!r}: only files, directories and links are extracted")
            archived_mode = stat.S_IMODE(member.mode)
            _data_filter(member, real_root)
            key = "/".join(parts)
            if member.isdir():
                fd = _walk(root_fd, parts[:-1], create=True)
                try:
                    _remove_entry(fd, parts[-1], key, DIR)
                    os.close(_open_dir(fd, parts[-1], True, key))
                finally:
                    os.close(fd)
            else:
                fd = _walk(root_fd, parts[:-1], create=True)
                try:
                    _remove_entry(fd, parts[-1], key, SYMLINK if member.issym() else FILE)
                    if member.issym():
                        os.symlink(member.linkname, parts[-1], dir_fd=fd)
                    elif member.islnk():
                        _hardlink(root_fd, member.linkname, fd, parts[-1], key)
                    else:
                        mode = archived_mode & FILE_MODE_MAX
                        _write_file(tar, member, fd, parts[-1], mode, chunk)
                        done.bytes += member.size
                        done.files.append(dict(name=key, mode=f"{archived_mode & 0o777:04o}",
                                               uid=member.uid, gid=member.gid, size=member.size))
                finally:
                    os.close(fd)
            done.members += 1
    except tarfile.TarError as exc:
        raise TarSafetyError(f"the tar archive is damaged or truncated after {done.members} members: "
                             f"{exc}") from exc
    finally:
        tar.close()
        os.close(root_fd)
    return done


def _hardlink(root_fd, target, parent_fd, name, where):
    try:
        target_parts = normalize(target)
    except ValueError as exc:
        raise TarSafetyError(f"member {where!r}: hardlink target {target!r}: {exc}") from None
    source_fd = _walk(root_fd, target_parts[:-1], create=False)
    try:
        os.link(target_parts[-1], name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(source_fd)


def _write_file(tar, member, parent_fd, name, mode, chunk):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    out = os.open(name, flags, mode, dir_fd=parent_fd)
    try:
        os.fchmod(out, mode)  # the umask may have taken bits the mode keeps; never more than asked
        for block in _member_data(tar, member, chunk):
            view = memoryview(block)
            while view:
                view = view[os.write(out, view):]
        os.fsync(out)
    finally:
        os.close(out)
