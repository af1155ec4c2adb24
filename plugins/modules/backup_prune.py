#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_prune
short_description: Remove old authentik backup sets by a retention policy, keeping latest valid
version_added: 0.1.0
description:
  - Applies a retention policy to the complete sets of O(prefix) in O(dest). A set is complete when it has
    C(manifest.json); only sets named C(<prefix>-<UTC yyyymmddThhmmssZ>) (optionally followed by C(-<n>)) are
    considered, anything else in O(dest) is never touched.
  - O(keep_last) keeps the newest N complete sets, O(keep_days) keeps the complete sets that started less than D days
    ago. A set is kept when either rule keeps it. V(0) turns a rule off; with both off nothing is removed.
  - The newest complete set is always kept, whatever the rules say, and so is every set named in O(protect) or in
    the C(protect) list of the destination's lock (the set a restore reads; see M(authentik_ops.backup.backup_lock)).
  - Partial sets (their manifest says C(partial), as a run whose tags left out parts the deployment has writes it)
    are never counted and never removed by the policy, and C(latest) never moves to one; they are listed in
    RV(partial).
  - Incomplete sets (no manifest) are never counted and never removed by the policy, as another run may still be
    writing one. Those older than O(incomplete_age) are reported as stale; they are removed only with
    O(remove_stale_incomplete=true) and only while no other run holds the destination's lock (C(<dest>/.lock)).
  - A set is removed by first renaming it to a hidden C(.<name>.deleting-<random>) directory (it stops being a set
    at once), then deleting that directory. Such leftovers of an interrupted removal are deleted by the next run.
  - C(<dest>/latest) is never left pointing at a removed or incomplete set. When it is missing, dangling or points at
    a set that is removed, it is moved (atomically) to the newest complete set before anything is removed.
  - Run it after a successful backup, while holding the destination's lock (M(authentik_ops.backup.backup_lock)).
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
attributes:
  check_mode:
    support: full
    details:
      - Lists the sets that would be removed and what would happen to C(latest); removes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run with the same policy and no new set removes nothing.
options:
  dest:
    description:
      - Directory that holds the backup sets.
    type: path
    required: true
  prefix:
    description:
      - Prefix of the set names to consider.
    type: str
    default: authentik
  keep_last:
    description:
      - Keep the newest N complete sets. V(0) turns the rule off.
    type: int
    default: 0
  keep_days:
    description:
      - Keep the complete sets that started less than this many days ago (fractions allowed). V(0) turns the rule off.
    type: float
    default: 0
  protect:
    description:
      - Names of sets that are kept whatever the rules say, for example the set the run has just written (which is
        not the newest when the clock went back since an older run).
    type: list
    elements: str
    default: []
  planned_set:
    description:
      - Name of a set the run is about to complete, counted as the newest complete set. For check mode, where the
        new set is not written, so that the list of what would go is the one a real run would produce.
      - Used in check mode only; a real run counts only the sets that have a manifest.
    type: str
  incomplete_age:
    description:
      - Seconds after which an incomplete set counts as stale (left by a run that died).
    type: int
    default: 86400
  remove_stale_incomplete:
    description:
      - Also remove incomplete sets older than O(incomplete_age), unless another run than O(run_id) holds the lock.
    type: bool
    default: false
  run_id:
    description:
      - Identifier of the lock this run holds (RV(authentik_ops.backup.backup_lock#module:run_id)). A lock held by
        anyone else stops the removal of stale incomplete sets.
    type: str
seealso:
  - module: authentik_ops.backup.backup_set
  - module: authentik_ops.backup.backup_lock
"""

EXAMPLES = r"""
- name: Keep the last 7 sets and every set of the last 30 days
  authentik_ops.backup.backup_prune:
    dest: /var/backups/authentik
    keep_last: 7
    keep_days: 30
  register: prune

- name: Show what a policy of 3 sets would remove
  authentik_ops.backup.backup_prune:
    dest: /var/backups/authentik
    keep_last: 3
  check_mode: true
"""

RETURN = r"""
removed:
  description: Names of the complete sets removed (in check mode, that would be removed), oldest first.
  returned: always
  type: list
  elements: str
  sample: [authentik-20261101T020000Z]
kept:
  description: The complete sets kept, oldest first, each with the rules that keep it.
  returned: always
  type: list
  elements: dict
  sample: [{name: authentik-20261130T020000Z, reasons: [newest, keep_last]}]
incomplete:
  description: Incomplete sets of O(prefix), each with its age in seconds and whether it counts as stale.
  returned: always
  type: list
  elements: dict
  sample: [{name: authentik-20261129T020000Z, age: 90000, stale: true, removed: false}]
partial:
  description: Names of the partial sets of O(prefix), oldest first; never counted, never removed.
  returned: always
  type: list
  elements: str
  sample: [authentik-20261130T140000Z]
latest:
  description: The set C(latest) points at after the run (in check mode, would point at).
  returned: always
  type: str
  sample: authentik-20261130T020000Z
latest_changed:
  description: Whether C(latest) was (or would be) moved because it was missing, dangling or pointed at a removed set.
  returned: always
  type: bool
  sample: false
policy:
  description: The policy applied.
  returned: always
  type: dict
  sample: {keep_last: 7, keep_days: 30}
"""

import os
import secrets
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import fsync_dir
from ansible_collections.authentik_ops.backup.plugins.module_utils._retention import (
    classify_incomplete,
    plan_retention,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import (
    name_problem,
    point_latest,
    read_latest,
    read_lock,
    scan,
    set_time,
    sort_sets,
    split_partial,
)


# --- pure functions (unit-tested; the keep rules are in _retention, shared with the copies in a bucket) -----

def latest_after(complete_after):
    """Where latest must point once the removals are done: the newest remaining complete set (or None)."""
    return complete_after[-1] if complete_after else None


# --- the file system ----------------------------------------------------------------------------------------------

def dir_age(path, now):
    """Seconds since anything in the set directory last changed (the newest mtime of it and its files)."""
    newest = os.stat(path).st_mtime
    for entry in os.scandir(path):
        try:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except OSError:
            pass
    return max(now - newest, 0)


def remove_set(dest, name):
    """Rename the set to a hidden name (it stops being a set at once), then delete it."""
    hidden = os.path.join(dest, f".{name}.deleting-{secrets.token_hex(4)}")
    os.rename(os.path.join(dest, name), hidden)
    fsync_dir(dest)
    shutil.rmtree(hidden)


# --- main ---------------------------------------------------------------------------------------------------------

def check_options(params):
    prefix = params["prefix"]
    problem = name_problem("prefix", prefix)
    if problem:
        raise ConfigError(problem)
    if params["keep_last"] < 0 or params["keep_days"] < 0 or params["incomplete_age"] < 0:
        raise ConfigError("keep_last, keep_days and incomplete_age must be 0 or more (0 turns the rule off)")
    if params["planned_set"] is not None and set_time(params["planned_set"], prefix) is None:
        raise ConfigError(f"planned_set {params['planned_set']!r} is not a set name of prefix {prefix!r}")


def protected_by_lock(lock):
    """The set names the destination's lock (a dict, or None) protects from retention."""
    names = (lock or {}).get("protect") or []
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def survey(module):
    """What is in dest and what the policy makes of it; changes nothing."""
    params = module.params
    dest, prefix = params["dest"], params["prefix"]
    complete, incomplete, leftovers = scan(dest, prefix)
    # partial sets (parts left out by a run's tags) are never counted and never removed
    complete, partial = split_partial(dest, complete)
    if params["planned_set"] and module.check_mode and params["planned_set"] not in complete + partial:
        complete = sort_sets(complete + [params["planned_set"]], prefix)
        incomplete = [n for n in incomplete if n != params["planned_set"]]
    lock = read_lock(dest)
    kept, removed = plan_retention(complete, prefix, params["keep_last"], params["keep_days"],
                                   protected=list(params["protect"]) + protected_by_lock(lock))
    now = time.time()
    ages = {name: dir_age(os.path.join(dest, name), now) for name in incomplete}
    incomplete_info = classify_incomplete(incomplete, ages, params["incomplete_age"])
    holder = None if lock is None else str(lock.get("run_id") or "")
    foreign_lock = holder is not None and holder != params["run_id"]
    current_latest = read_latest(dest)
    remaining = [n for n in complete if n not in removed]
    # latest moves only when it is missing, dangling, not a complete set, or a set about to be removed
    new_latest = current_latest if current_latest in remaining else latest_after(remaining)
    for info in incomplete_info:
        info["removed"] = bool(info["stale"] and params["remove_stale_incomplete"] and not foreign_lock)
        if info["stale"] and not info["removed"]:
            module.warn(f"{os.path.join(dest, info['name'])} is an incomplete set untouched for {info['age']} s "
                        f"(left by a run that died?); it is not a backup. Remove it once you are sure no run "
                        f"writes it" + (", or set remove_stale_incomplete" if not foreign_lock else
                                        f" (the destination is locked by run {holder or '?'})"))
    return dict(removed=removed, kept=kept, incomplete=incomplete_info, partial=partial, leftovers=leftovers,
                current_latest=current_latest, new_latest=new_latest,
                latest_changed=new_latest is not None and current_latest != new_latest)


def prune(dest, plan):
    # latest first moves to the newest set (never removed), so it never points at a set being removed
    if plan["latest_changed"] and plan["new_latest"]:
        point_latest(dest, plan["new_latest"])
    for name in plan["removed"]:
        remove_set(dest, name)
    for info in plan["incomplete"]:
        if info["removed"]:
            remove_set(dest, info["name"])
    for name in plan["leftovers"]:
        shutil.rmtree(os.path.join(dest, name), ignore_errors=True)


def run(module):
    params = module.params
    dest = params["dest"]
    check_options(params)
    result = dict(changed=False, removed=[], kept=[], incomplete=[], partial=[], latest=None, latest_changed=False,
                  policy=dict(keep_last=params["keep_last"], keep_days=params["keep_days"]))
    if not os.path.isdir(dest):
        return result
    try:
        plan = survey(module)
        result.update(removed=plan["removed"], kept=[dict(name=n, reasons=r) for n, r in plan["kept"].items()],
                      incomplete=plan["incomplete"], partial=plan["partial"],
                      latest=plan["new_latest"] or plan["current_latest"],
                      latest_changed=plan["latest_changed"],
                      changed=bool(plan["removed"] or plan["latest_changed"] or plan["leftovers"]
                                   or any(i["removed"] for i in plan["incomplete"])))
        if not module.check_mode:
            prune(dest, plan)
    except OSError as exc:
        raise BackupError(f"pruning {dest}: {exc}", **result) from exc
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            prefix=dict(type="str", default="authentik"),
            keep_last=dict(type="int", default=0),
            keep_days=dict(type="float", default=0),
            protect=dict(type="list", elements="str", default=[]),
            planned_set=dict(type="str"),
            incomplete_age=dict(type="int", default=86400),
            remove_stale_incomplete=dict(type="bool", default=False),
            run_id=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
