# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Process identity from /proc: who runs (pid and start time), on which boot and in which pid namespace.

A pid alone is reused; a pid with its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) names
one process for as long as the host runs. Used by backup_lock (is the lock's run alive?) and by the dump helper
(is the run that created a helper container still there?).
"""

from __future__ import annotations

import os


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (field 3 on), or []."""
    stat = _read_text(f"/proc/{pid}/stat")
    # the command name (field 2) is in parentheses and may itself hold spaces and parentheses
    return stat[stat.rfind(")") + 2:].split() if stat else []


def start_time(pid):
    """Start time of ``pid`` in clock ticks since boot, or None when the process is gone or unreadable."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def parent(pid):
    """The parent pid of ``pid``, or 0."""
    fields = _stat_fields(pid)
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return 0


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def boot_id():
    return _read_text("/proc/sys/kernel/random/boot_id")


def pid_namespace():
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def alive(pid, start=None):
    """Whether ``pid`` runs and, when ``start`` is known, is still the process that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return True
    if start is not None:
        current = start_time(pid)
        if current is not None and current != start:
            return False
    return True


def owner_id(pid=None):
    """``<boot id>/<pid namespace>/<pid>/<start time>``: one process of one boot, as a label value."""
    pid = os.getpid() if pid is None else pid
    started = start_time(pid)
    return "/".join([boot_id(), pid_namespace(), str(pid), "" if started is None else str(started)])


def owner_alive(owner):
    """True or False when the owner can be judged from here (same boot and pid namespace), else None."""
    parts = (owner or "").split("/")
    if len(parts) != 4 or not all(parts):
        return None
    boot, pidns, pid, started = parts
    if boot != boot_id() or pidns != pid_namespace() or not pid.isdigit() or not started.isdigit():
        return None
    return start_time(int(pid)) == int(started)
