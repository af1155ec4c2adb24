# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The keep rules of backup sets, wherever the sets are: on the host (backup_prune) or in a bucket (backup_upload).

Pure functions: they decide from set names, times and ages, and never touch anything.
"""

from __future__ import annotations

import datetime

from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import set_time, sort_sets


def plan_retention(complete, prefix, keep_last=0, keep_days=0.0, now=None, protected=()):
    """Split the complete set names into kept (name -> reasons) and removed (names), both oldest first.

    ``keep_last`` and ``keep_days`` of 0 turn their rule off; with both off everything is kept. The newest set and
    the ``protected`` ones are always kept. Names that are not sets of ``prefix`` are ignored (neither kept nor
    removed).
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    names = sort_sets(complete, prefix)
    kept = {}
    removed = []
    policy_on = keep_last > 0 or keep_days > 0
    cutoff = now - datetime.timedelta(days=keep_days) if keep_days > 0 else None
    for index, name in enumerate(names):
        from_newest = len(names) - 1 - index
        reasons = []
        if from_newest == 0:
            reasons.append("newest")
        if name in protected:
            reasons.append("protected")
        if not policy_on:
            reasons.append("no retention policy")
        if keep_last > 0 and from_newest < keep_last:
            reasons.append("keep_last")
        if cutoff is not None and set_time(name, prefix) > cutoff:
            reasons.append("keep_days")
        if reasons:
            kept[name] = reasons
        else:
            removed.append(name)
    return kept, removed


def classify_incomplete(incomplete, ages, incomplete_age):
    """[{name, age, stale}] for the incomplete set names, with their ages in seconds."""
    return [dict(name=name, age=int(ages[name]), stale=incomplete_age > 0 and ages[name] > incomplete_age)
            for name in incomplete]
