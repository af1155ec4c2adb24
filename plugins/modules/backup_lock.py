#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_lock
short_description: Take or release the lock that lets one backup run at a time write to a destination
version_added: 0.1.0
description:
  - The lock is the file C(<dest>/.lock), a small JSON document naming its holder (C(run_id), C(pid), C(host),
    C(started_at), C(purpose)). Only one run at a time can hold it, so two runs never write into, prune or move
    C(latest) of the same destination together.
  - O(state=present) takes the lock. The record is written to a temporary file and hard-linked to C(.lock), which
    fails when C(.lock) exists (atomic like C(O_EXCL), and the lock is never seen half-written; on file systems
    without hard links C(O_CREAT|O_EXCL) is used). When another run holds the lock, the module polls until
    O(timeout) seconds have passed and then fails with a message naming the holder.
  - A lock left by a dead run is recognised and taken over. It is dead when its recorded process (with the same
    start time, so a reused pid does not count) no longer runs on this host, in this boot and in this pid namespace
    (two runners in containers that share a host name, or in different pid namespaces of one host, never judge
    each other's process, and only O(stale_age) ends such a lock); when this host has restarted since the lock was
    taken; or when it is older than O(stale_age) seconds. The takeover atomically replaces C(.lock) (rename over
    it) while holding the short-lived guard C(<dest>/.lock.takeover), so C(.lock) never disappears and two runs
    cannot both take it over.
  - The recorded process is the one that lives as long as the whole run on the host where the module runs, found
    among the module's ancestors with C(/proc) (RV(via)). A local run (cron, systemd, C(ansible_connection=local))
    records its topmost C(ansible-playbook) (or C(ansible-runner)) process. A run over SSH records the SSH session
    of its connection (the C(sshd) process titled C(user@notty)); that session lives as long as the run only when
    the connection is shared by the run's tasks (ControlMaster/ControlPersist, Ansible's default for SSH), so it is
    used only once a second call with the same O(run_id) found the same session (RV(confirmed)); call the module
    again right after taking the lock (the backup role does). Without a shared connection, and for other
    connections, the lock records no process and only O(stale_age) recognises a dead run.
  - Re-entrant by O(run_id). A run, or a run inside it (a backup inside a restore), that calls the module with the
    O(run_id) of the holder shares the lock (no change, RV(acquired=false)); only the call that took it releases
    it. O(protect) names sets that retention (M(authentik_ops.backup.backup_prune)) never removes while this lock
    is held, for example the set a restore reads; a call with the holder's O(run_id) adds them.
  - O(state=absent) releases the lock, but only when it is held by O(run_id); a lock held by another run is left
    alone and reported.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the lock is free, held (and by whom) or stale, without waiting and without writing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - V(present) with the O(run_id) of the current holder and V(absent) of a lock that is not held report no change.
options:
  state:
    description:
      - V(present) takes the lock, V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  dest:
    description:
      - Directory that holds the backup sets. Created with mode C(0700) when it is missing and the lock is taken.
    type: path
    required: true
  run_id:
    description:
      - Identifier of the run. With O(state=present) a random one is made when it is not given; a lock already held
        by this identifier is kept (no change).
      - Required with O(state=absent); only a lock with this identifier is removed.
    type: str
  timeout:
    description:
      - Seconds to wait for a lock held by a live run before failing. V(0) fails at once.
    type: int
    default: 0
  poll_interval:
    description:
      - Seconds between two looks at a held lock while waiting.
    type: float
    default: 2.0
  stale_age:
    description:
      - Age in seconds after which any lock counts as left behind and is taken over, whoever holds it.
      - Make it longer than the longest backup can take. V(0) turns the age rule off.
    type: int
    default: 86400
  pid:
    description:
      - Process the lock follows on this host. Defaults to the process that lives as long as the run (see the
        description); V(0) records no process.
    type: int
  protect:
    description:
      - Names of sets in O(dest) that retention must not remove while this lock is held (recorded in the lock).
        With the O(run_id) of the holder, they are added to the lock's list.
    type: list
    elements: str
    default: []
  purpose:
    description:
      - Free text recorded in the lock and shown to a run that has to wait, for example the set being written.
    type: str
    default: backup
  remove_empty_dest:
    description:
      - With O(state=absent), also remove O(dest) when it is empty once the lock is gone (C(rmdir), which never
        removes a directory that holds anything). For a run that created O(dest) (RV(created_dest)) and then failed
        before writing to it.
    type: bool
    default: false
seealso:
  - module: authentik_ops.backup.backup_set
  - module: authentik_ops.backup.backup_prune
"""

EXAMPLES = r"""
- name: Take the lock of the destination, waiting up to 10 minutes for another run
  authentik_ops.backup.backup_lock:
    dest: /var/backups/authentik
    timeout: 600
  register: backup_lock

- name: Back up, then release the lock even when the backup fails
  block:
    - name: Start a backup set
      authentik_ops.backup.backup_set:
        dest: /var/backups/authentik
  always:
    - name: Release the lock
      authentik_ops.backup.backup_lock:
        state: absent
        dest: /var/backups/authentik
        run_id: "{{ backup_lock.run_id }}"
"""

RETURN = r"""
path:
  description: Path of the lock file.
  returned: always
  type: str
  sample: /var/backups/authentik/.lock
run_id:
  description: Identifier of the run that holds the lock after the task (this run's with O(state=present)).
  returned: success
  type: str
  sample: 3f9c2a7d1b4e4c55
acquired:
  description: Whether this task took the lock (V(false) in check mode and when it was already held by O(run_id)).
  returned: state=present
  type: bool
  sample: true
released:
  description: Whether this task removed the lock.
  returned: state=absent
  type: bool
  sample: true
waited:
  description: Seconds spent waiting for another run to release the lock.
  returned: state=present
  type: float
  sample: 12.4
took_over:
  description: The record of a dead run's lock that this task replaced, or V(null).
  returned: state=present
  type: dict
  sample: {pid: 4242, host: backup01, started_at: "2026-11-30T02:00:00Z", run_id: 0c1d2e3f4a5b6c7d, reason: "process 4242 on backup01 is gone"}
holder:
  description:
    - The record of the lock as found. In check mode, or with O(state=absent) when another run holds the lock,
      that run's record; V(null) when there is no lock.
  returned: always
  type: dict
  sample: {pid: 4242, host: backup01, started_at: "2026-11-30T02:00:00Z", run_id: 0c1d2e3f4a5b6c7d, purpose: backup}
state:
  description: In check mode, what a real run would find, V(free), V(held), V(stale) or V(own).
  returned: check mode
  type: str
  sample: free
created_dest:
  description: Whether this task created O(dest).
  returned: state=present
  type: bool
  sample: false
record:
  description: The record of the lock after this task (this run's, or the holder's when shared by O(run_id)).
  returned: state=present and the lock is this run's
  type: dict
  sample: {pid: 4242, pid_start: 1234567, boot_id: 0b6c..., pid_ns: "pid:[4026531836]", via: ansible-playbook,
           confirmed: true, host: backup01, started_at: "2026-11-30T02:00:00Z", run_id: 0c1d2e3f4a5b6c7d, protect: []}
via:
  description:
    - What the recorded process is, V(ansible-playbook) (a local run), V(ssh) (the SSH session of the run's
      connection), V(pid) (given in O(pid)), or V(null) (none, so only O(stale_age) recognises a dead run).
  returned: state=present and the lock is this run's
  type: str
  sample: ansible-playbook
confirmed:
  description:
    - Whether the recorded process decides the lock's liveness. An SSH session is confirmed by a second call with
      the same O(run_id) from the same session (the connection is shared by the run's tasks).
  returned: state=present and the lock is this run's
  type: bool
  sample: true
owner:
  description:
    - The confirmed process of the lock as C(<boot id>/<pid namespace>/<pid>/<start time>), for the option
      O(authentik_ops.backup.postgres_dump#module:owner) of the data modules (they stop by themselves once it is
      gone). V(null) when there is none.
  returned: state=present and the lock is this run's
  type: str
  sample: "0b6c0bc4-.../pid:[4026531836]/4242/1234567"
"""

import errno
import json
import os
import secrets
import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _proc
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError, LockError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import fsync_dir
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import LOCK, iso, parse_iso, utc_now

GUARD = LOCK + ".takeover"
# The guarded section (read, compare, replace) takes milliseconds; a guard older than this was left by a crash.
GUARD_STALE_AGE = 60


# --- the lock record -----------------------------------------------------------------------------------------------

def read_record(path):
    """The lock's record, ``{}`` for an unreadable (half-written by an O_EXCL writer) one, or None when absent."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict):
            record = {}
    except ValueError:
        record = {}
    record["_mtime"] = stat.st_mtime
    record["_ino"] = stat.st_ino
    return record


def public(record):
    return {k: v for k, v in (record or {}).items() if not k.startswith("_")} if record is not None else None


def stale_reason(record, hostname, now, stale_age):
    """Why the lock ``record`` was left by a dead run, or None while its run may be alive."""
    started = parse_iso(record.get("started_at"))
    age = now - (started.timestamp() if started else record.get("_mtime", now))
    if stale_age and age > stale_age:
        return f"it is {int(age)} s old, more than stale_age={stale_age} s"
    if not record.get("run_id") and now - record.get("_mtime", now) > GUARD_STALE_AGE:
        return "it is unreadable and was not written in the last minute"
    return process_gone(record, hostname, started)


def process_gone(record, hostname, started):
    """Why the recorded process of the lock is known to be gone, or None (it runs, or cannot be judged here)."""
    pid = record.get("pid")
    if record.get("host") != hostname or not isinstance(pid, int) or pid <= 0 or record.get("confirmed") is False:
        return None
    if not record.get("boot_id") or not record.get("pid_ns"):
        return None  # a record without boot and pid namespace cannot be judged: another container may own it
    if record["boot_id"] != _proc.boot_id():
        booted = _proc.boot_time()
        if started and booted and started.timestamp() < booted:
            return f"{hostname} has restarted since the lock was taken"
        return None
    if record["pid_ns"] != _proc.pid_namespace():
        return None
    if not _proc.alive(pid, record.get("pid_start")):
        what = "the SSH session of the run" if record.get("via") == "ssh" else "process"
        return f"{what} {pid} on {hostname} is gone"
    return None


def owner(record):
    """The owner string of a lock record whose process decides its liveness, else None."""
    if not record or not record.get("pid") or not record.get("confirmed"):
        return None
    return _proc.owner_of(record)


def describe(record):
    if not record or not record.get("run_id"):
        return "a run that is still writing the lock file"
    if not record.get("pid"):
        pid = "no local process recorded"
    elif record.get("via") == "ssh":
        pid = f"SSH session pid {record['pid']}" + ("" if record.get("confirmed") else " (not shared: not followed)")
    else:
        pid = f"pid {record['pid']}"
    namespace = f", pid namespace {record['pid_ns']}" if record.get("pid_ns") else ""
    return (f"run {record.get('run_id')} ({pid} on host {record.get('host')}{namespace}, started "
            f"{record.get('started_at')}, {record.get('purpose') or 'backup'})")


def write_new(path, data):
    """Create ``path`` (it must not exist) with ``data``, mode 0600, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_create(tmp, path, data):
    """Make ``path`` with ``data`` only if it does not exist. True when made, False when it exists."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK):
            raise
    try:
        write_new(path, data)
    except FileExistsError:
        return False
    return True


class Guard:
    """The short-lived ``.lock.takeover`` file that serialises takeovers and releases."""

    def __init__(self, dest, deadline):
        self.path = os.path.join(dest, GUARD)
        self.deadline = deadline

    def __enter__(self):
        while True:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                return self
            except FileExistsError:
                try:
                    if time.time() - os.stat(self.path).st_mtime > GUARD_STALE_AGE:
                        os.unlink(self.path)
                        continue
                except FileNotFoundError:
                    continue
            if time.time() > self.deadline:
                raise TimeoutError(f"{self.path} is held by another run")
            time.sleep(0.1)

    def __exit__(self, *exc):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Locker:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.dest = self.params["dest"]
        self.path = os.path.join(self.dest, LOCK)
        self.hostname = socket.gethostname()

    def new_record(self):
        params = self.params
        if params["pid"] is not None:
            pid, via = params["pid"], "pid" if params["pid"] else None
        else:
            pid, via = _proc.run_process()
        record = dict(run_id=params["run_id"] or secrets.token_hex(8), pid=pid or None, pid_start=None,
                      boot_id=None, pid_ns=None, via=via if pid else None, confirmed=bool(pid) and via != "ssh",
                      host=self.hostname, started_at=iso(utc_now()), purpose=params["purpose"],
                      protect=sorted(set(params["protect"])))
        if pid:
            record.update(_proc.identity(pid))
        return record

    def shared(self, holder):
        """The result for a holder with our run_id: confirm its SSH session, add protected sets (rewriting the
        record under the guard when anything changes)."""
        record = public(holder)
        changes = {}
        wanted = sorted(set(record.get("protect") or []) | set(self.params["protect"]))
        if wanted != sorted(record.get("protect") or []):
            changes["protect"] = wanted
        if record.get("via") == "ssh" and not record.get("confirmed") and self.params["pid"] is None:
            pid, via = _proc.run_process()
            if via == "ssh" and _proc.owner_of(_proc.identity(pid)) == _proc.owner_of(record):
                changes["confirmed"] = True
        if changes and not self.module.check_mode:
            record = self.rewrite(holder, changes) or record
        return record

    def rewrite(self, holder, changes):
        """Replace the lock (still ``holder``'s) with ``changes`` applied; the new record, or None if it changed."""
        with Guard(self.dest, time.time() + 30):
            current = read_record(self.path)
            if current is None or current.get("run_id") != holder.get("run_id"):
                return None
            record = dict(public(current), **changes)
            tmp = os.path.join(self.dest, f".lock.{record['run_id']}.{secrets.token_hex(4)}.tmp")
            write_new(tmp, json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
            os.replace(tmp, self.path)
            fsync_dir(self.dest)
            return record

    def check(self):
        record = read_record(self.path) if os.path.isdir(self.dest) else None
        if record is None:
            state = "free"
        elif self.params["run_id"] and record.get("run_id") == self.params["run_id"]:
            state = "own"
        elif stale_reason(record, self.hostname, time.time(), self.params["stale_age"]):
            state = "stale"
        else:
            state = "held"
        return dict(changed=state in ("free", "stale"), path=self.path, state=state, run_id=self.params["run_id"],
                    acquired=False, waited=0.0, took_over=None, holder=public(record))

    def acquire(self):
        created_dest = self.make_dest()
        record = self.new_record()
        data = json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"
        tmp = os.path.join(self.dest, f".lock.{record['run_id']}.{secrets.token_hex(4)}.tmp")
        write_new(tmp, data)
        begin = time.time()
        try:
            outcome = self.wait_for_lock(tmp, data, begin)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        result = dict(path=self.path, waited=round(time.time() - begin, 1), took_over=None,
                      created_dest=created_dest or outcome.get("created_dest", False))
        if outcome.get("own"):
            record = self.shared(outcome["holder"])
            return dict(result, changed=False, run_id=self.params["run_id"], acquired=False,
                        holder=public(outcome["holder"]), **self.described(record))
        fsync_dir(self.dest)
        return dict(result, changed=True, run_id=record["run_id"], acquired=True, took_over=outcome["took_over"],
                    holder=public(outcome["holder"]), **self.described(record))

    @staticmethod
    def described(record):
        return dict(record=record, via=record.get("via"), confirmed=bool(record.get("confirmed")),
                    owner=owner(record))

    def wait_for_lock(self, tmp, data, begin):
        """Poll until the lock is ours (made, taken over from a dead run, or already held by our run_id)."""
        params = self.params
        deadline = begin + max(params["timeout"], 0)
        holder = None
        created_dest = False
        while True:
            try:
                if _link_or_create(tmp, self.path, data):
                    return dict(holder=holder, took_over=None, created_dest=created_dest)
            except FileNotFoundError:
                # the run that created dest removed it again (it stayed empty): make it and our tmp again
                created_dest = self.make_dest() or created_dest
                write_new(tmp, data)
                continue
            holder = read_record(self.path)
            if holder is None:
                continue  # released between our two looks
            if params["run_id"] and holder.get("run_id") == params["run_id"]:
                return dict(own=True, holder=holder, created_dest=created_dest)
            reason = stale_reason(holder, self.hostname, time.time(), params["stale_age"])
            if reason:
                taken = self.take_over(tmp, data, holder, deadline)
                if taken:
                    return dict(holder=holder, took_over=dict(public(holder), reason=reason),
                                created_dest=created_dest)
                if taken is False:
                    continue  # the lock changed under us: look at its new holder
            if time.time() >= deadline:
                raise LockError(
                    f"The backup destination {self.dest} is locked by {describe(holder)}; waited "
                    f"{round(time.time() - begin)} s (timeout {params['timeout']} s). Only one run may write "
                    f"to a destination at a time: wait for that run, raise the timeout, or, if that run is "
                    f"dead and its lock was not recognised as such, remove {self.path}.",
                    path=self.path, holder=public(holder), waited=round(time.time() - begin, 1))
            time.sleep(min(params["poll_interval"], max(deadline - time.time(), 0.05)))

    def make_dest(self):
        if os.path.isdir(self.dest):
            return False
        try:
            os.makedirs(self.dest, mode=0o700)
        except FileExistsError:
            return False
        os.chmod(self.dest, 0o700)
        return True

    def take_over(self, tmp, data, stale, deadline):
        """Replace the stale lock ``stale`` with ours, if it is still the lock. True when done, False when the lock
        changed meanwhile (released or taken by someone else: look again), None when another run holds the guard."""
        try:
            with Guard(self.dest, max(deadline, time.time() + 5)):
                current = read_record(self.path)
                if current is None or current.get("_ino") != stale.get("_ino") \
                        or current.get("run_id") != stale.get("run_id"):
                    return False
                twin = tmp + ".takeover"
                write_new(twin, data)
                # rename over the stale lock: .lock never disappears, so no third run can slip in
                os.replace(twin, self.path)
                return True
        except TimeoutError:
            return None

    def release(self):
        run_id = self.params["run_id"]
        result = dict(path=self.path, run_id=run_id, released=False, changed=False)
        record = read_record(self.path) if os.path.isdir(self.dest) else None
        if record is None:
            return dict(result, holder=None)
        if record.get("run_id") != run_id:
            self.module.warn(f"{self.path} is held by {describe(record)}, not by run {run_id}; left alone")
            return dict(result, holder=public(record))
        if self.module.check_mode:
            return dict(result, changed=True, holder=public(record))
        try:
            with Guard(self.dest, time.time() + 30):
                current = read_record(self.path)
                released = current is not None and current.get("run_id") == run_id
                if released:
                    os.unlink(self.path)
                    fsync_dir(self.dest)
        except TimeoutError as exc:
            raise LockError(f"could not release {self.path}: {exc}") from exc
        if not released:
            return dict(result, holder=public(read_record(self.path)))
        if self.params["remove_empty_dest"]:
            try:
                os.rmdir(self.dest)
            except OSError:
                pass  # not empty (or gone): keep it
        return dict(result, changed=True, released=True, holder=None)


def run(module):
    params = module.params
    if params["timeout"] < 0 or params["stale_age"] < 0 or params["poll_interval"] <= 0:
        raise ConfigError("timeout and stale_age must be 0 or more and poll_interval more than 0")
    locker = Locker(module)
    try:
        if params["state"] == "absent":
            return locker.release()
        if module.check_mode:
            return locker.check()
        return locker.acquire()
    except OSError as exc:
        raise LockError(f"lock {locker.path}: {exc}") from exc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            dest=dict(type="path", required=True),
            run_id=dict(type="str"),
            timeout=dict(type="int", default=0),
            poll_interval=dict(type="float", default=2.0),
            stale_age=dict(type="int", default=86400),
            pid=dict(type="int"),
            protect=dict(type="list", elements="str", default=[]),
            purpose=dict(type="str", default="backup"),
            remove_empty_dest=dict(type="bool", default=False),
        ),
        required_if=[("state", "absent", ("run_id",))],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
