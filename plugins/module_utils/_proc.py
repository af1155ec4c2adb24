# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Process identity from /proc: who runs (pid and start time), on which boot and in which pid namespace.

A pid alone is reused; a pid with its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) names
one process for as long as the host runs; with the boot id and the pid namespace it names it among every runner
that shares a host name (containers) or a destination. Used by backup_lock (is the lock's run alive?), by the
data modules (is the run that started me still there?) and by the dump helper (is the run that created a helper
container still there?).

The process that lives as long as a run on the host the modules run on (:func:`run_process`) is the topmost
``ansible-playbook`` (or ``ansible-runner``) ancestor when the run is local, else the SSH session (``sshd:
user@notty``) that carries the run's connection.
"""

from __future__ import annotations

import os
import re
import signal
import threading

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RunGone


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


def boot_time():
    """When this kernel booted (seconds since the epoch, ``btime`` of /proc/stat), or None."""
    for line in _read_text("/proc/stat").splitlines():
        if line.startswith("btime "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


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


# --- the process of a run -----------------------------------------------------------------------------------------

RUN_COMMANDS = ("ansible-playbook", "ansible-runner")
# The per-connection process of OpenSSH's server: "sshd: user@notty" (before 9.8: privilege-separated child),
# "sshd-session: user@notty" (9.8 on). The listener and the "[priv]" monitor have no "@".
SSH_SESSION = re.compile(r"^(sshd|sshd-session): \S+@\S+")


def run_process(start=None):
    """``(pid, via)`` of the process that lives as long as the run, among the ancestors of ``start`` (default: this
    process), or ``(0, None)``.

    ``via`` is ``ansible-playbook`` for the topmost ansible-playbook/ansible-runner ancestor (a local run: Ansible
    forks a worker per task from that process, with the same command line, so the topmost one lives for the whole
    run), else ``ssh`` for the nearest SSH session (the run reaches this host over SSH: with a shared connection,
    ControlMaster/ControlPersist as Ansible uses by default, that session ends when the connection closes).
    """
    pid = parent(start or os.getpid())
    found, session = 0, 0
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        line = cmdline(pid)
        words = [os.path.basename(word) for word in line.split()[:3]]
        if any(word in RUN_COMMANDS for word in words):
            found = pid
        elif not session and SSH_SESSION.match(line):
            session = pid
        pid = parent(pid)
    if found:
        return found, "ansible-playbook"
    if session:
        return session, "ssh"
    return 0, None


def identity(pid):
    """The identity of ``pid`` on this host: pid, start time, boot id, pid namespace."""
    return dict(pid=pid, pid_start=start_time(pid), boot_id=boot_id(), pid_ns=pid_namespace())


def owner_of(record):
    """The owner string (:func:`owner_id`'s format) of an identity dict, or None when it lacks a part."""
    parts = [record.get("boot_id"), record.get("pid_ns"), record.get("pid"), record.get("pid_start")]
    if not all(parts):
        return None
    return "/".join(str(part) for part in parts)


# --- stopping when the run is gone ----------------------------------------------------------------------------

class OwnerWatch:
    """While active, checks every ``interval`` seconds whether ``owner`` (an :func:`owner_id`) still runs; once it
    is known to be gone, SIGTERM is sent to this process.

    SIGTERM raises ``_errors.RunGone`` in the main thread (unless a more specific handler, such as the dump helper's,
    is installed at the time), so ``with`` blocks unwind: a sink removes its partial file, a helper container is
    removed. An owner that cannot be judged from here (another boot or pid namespace) never stops anything.
    """

    def __init__(self, owner, interval=1.0):
        self.owner = owner or None
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = None
        self.previous = None
        self.gone = False

    def __enter__(self):
        if self.owner is None or threading.current_thread() is not threading.main_thread():
            return self
        self.previous = signal.signal(signal.SIGTERM, self._handler)
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _handler(self, signum, frame):
        del signum, frame
        if self.gone:
            raise RunGone(f"stopped: the run that started this task ({self.owner}) is gone; the partial file was "
                          "removed")
        raise RunGone("stopped by SIGTERM; the partial file was removed")

    def _watch(self):
        while not self.stopped.wait(self.interval):
            if owner_alive(self.owner) is False:
                self.gone = True
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def __exit__(self, *exc):
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(self.interval + 1)
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False
