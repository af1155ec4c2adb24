# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""authentik's versions and releases, and how a backup set's version relates to a deployment's.

authentik numbers its versions ``YYYY.M.patch`` (``2025.2.4``, ``2025.10.1``, ``2026.2.0``), a release being
``YYYY.M``; pre-releases carry a suffix (``2026.2.0-rc1``, ``-rc.1``, ``-beta2``, ``-alpha``) and sort before the
final version of the same patch. A tag may start with ``v``.
"""

from __future__ import annotations

import collections
import re

VERSION_RE = re.compile(r"^v?(?P<year>\d{4})\.(?P<month>\d{1,2})(?:\.(?P<patch>\d+))?"
                        r"(?:-(?P<pre>rc|beta|alpha)\.?(?P<pre_num>\d*))?$")
PRE_RANK = {"alpha": 0, "beta": 1, "rc": 2}
FINAL_RANK = 3

# The releases that changed what a deployment holds (docs/layouts.md).
REDIS_REMOVED = "2025.10"  # no Redis from this release on
DATA_LAYOUT = "2025.12"  # /media moved to /data/media; the storage settings and S3 key layout of FileManager

# How a set's version relates to the deployment's (relation of compare()).
SAME = "same"  # the same version
PATCH = "patch"  # the same release, another patch or pre-release
UPGRADE = "upgrade"  # the set is from an older release: authentik migrates the restored database when it starts
DOWNGRADE = "downgrade"  # the set is from a newer release: authentik cannot run it
UNKNOWN = "unknown"  # one of the versions is missing or not authentik's numbering

Version = collections.namedtuple("Version", "year month patch pre_rank pre_num")


def parse(text):
    """The Version of ``text`` (``2026.2.0-rc1``, ``v2025.2.4``, ``2025.10``), or None when it is not one."""
    match = VERSION_RE.match(str(text).strip()) if text is not None else None
    if not match:
        return None
    month = int(match.group("month"))
    if not 1 <= month <= 12:
        return None
    pre = match.group("pre")
    return Version(int(match.group("year")), month, int(match.group("patch") or 0),
                   PRE_RANK[pre] if pre else FINAL_RANK, int(match.group("pre_num") or 0))


def release(text):
    """The release ``YYYY.M`` of a version, or None."""
    version = parse(text)
    return f"{version.year}.{version.month}" if version else None


def at_least(text, minimum):
    """Whether the version ``text`` belongs to release ``minimum`` (``YYYY.M``) or a later one; False if unknown."""
    version, floor = parse(text), parse(minimum)
    if version is None or floor is None:
        return False
    return (version.year, version.month) >= (floor.year, floor.month)


def compare(set_version, deployment_version):
    """How a set made from ``set_version`` relates to a deployment running ``deployment_version``.

    Returns ``relation`` (same, patch, upgrade, downgrade or unknown; see the constants) with both releases.
    """
    left, right = parse(set_version), parse(deployment_version)
    result = dict(set_version=set_version, deployment_version=deployment_version,
                  set_release=release(set_version), deployment_release=release(deployment_version))
    if left is None or right is None:
        relation = UNKNOWN
    elif (left.year, left.month) > (right.year, right.month):
        relation = DOWNGRADE
    elif (left.year, left.month) < (right.year, right.month):
        relation = UPGRADE
    elif left == right:
        relation = SAME
    else:
        relation = PATCH
    result["relation"] = relation
    return result
