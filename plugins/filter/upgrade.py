# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the restore role for sets of another authentik release: how the set's version relates to the
deployment's, and where the directories of an older layout go in the deployment's.

Every filter is pure. The documentation of each filter is in the YAML file of the same name next to this file.
"""

from __future__ import annotations

import posixpath

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.module_utils import _versions

# Directories an older layout had that a newer one keeps elsewhere: set path -> (the mount the deployment must
# have, the path it restores into, the release from which on authentik reads it there).
MOVED_PATHS = {"/media": ("/data", "/data/media", _versions.DATA_LAYOUT)}


def authentik_version_relation(set_version, deployment_version):
    """How a set made from ``set_version`` relates to a deployment running ``deployment_version``."""
    return _versions.compare(set_version, deployment_version)


def authentik_version_at_least(version, minimum):
    """Whether ``version`` is of the release ``minimum`` (YYYY.M) or a later one; false when it is unknown."""
    if _versions.parse(minimum) is None:
        raise AnsibleFilterError(f"authentik_version_at_least: {minimum!r} is not a release like 2025.12")
    return _versions.at_least(version, minimum)


def _mounted(container, path):
    for mount in container.get("mounts") or []:
        mount = posixpath.normpath(mount)
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return True
    return False


def authentik_restore_path_map(deployment, paths):
    """{archived path: the deployment's path to restore it into}.

    A path the deployment's server or worker mounts is restored where it is. A path an older layout had and the
    deployment's release keeps elsewhere (``/media`` -> ``/data/media`` from 2025.12 on) goes there when the
    deployment mounts the new place and not the old one. Anything else maps to itself (the restore plan then says
    it is not mounted). The targets come from the deployment (its mounts and version), never from the set.
    """
    if not isinstance(deployment, dict) or "containers" not in deployment:
        raise AnsibleFilterError("authentik_restore_path_map expects the deployment of the discovery")
    containers = deployment.get("containers") or {}
    sources = [containers[c] for c in ("server", "worker") if isinstance(containers.get(c), dict)]
    out = {}
    for path in paths or []:
        norm = posixpath.normpath(str(path))
        target = norm
        moved = MOVED_PATHS.get(norm)
        if moved and not any(_mounted(c, norm) for c in sources):
            mount, new_path, since = moved
            if _versions.at_least(deployment.get("version"), since) and any(_mounted(c, mount) for c in sources):
                target = new_path
        out[path] = target
    return out


class FilterModule:
    """authentik_ops.backup filters for restores across releases."""

    def filters(self):
        return {
            "authentik_version_relation": authentik_version_relation,
            "authentik_version_at_least": authentik_version_at_least,
            "authentik_restore_path_map": authentik_restore_path_map,
        }
