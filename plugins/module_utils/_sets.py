# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Backup sets on disk: their fixed names, and finding the set a module's options point at."""

from __future__ import annotations

import os

MANIFEST = "manifest.json"
LATEST = "latest"


def bad_file_name(name):
    """True unless ``name`` can be a file of a set (as a manifest entry lists it)."""
    return not name or "/" in name or name in (MANIFEST, LATEST, ".", "..")


def resolve_set(module, **fail_fields):
    """The set directory of the options ``path``, or ``dest`` and ``name`` (``latest`` follows the symlink).

    Fails the module, with ``set_path`` and ``fail_fields`` in the result, when there is no such set directory.
    """
    params = module.params
    if params["name"] in ("", ".", "..") or "/" in params["name"]:
        module.fail_json(msg=f"name {params['name']!r}: give the name of a set directory in dest, or latest",
                         **fail_fields)
    if params["path"]:
        path = params["path"]
    else:
        path = os.path.join(params["dest"], params["name"])
        if params["name"] == LATEST:
            if not os.path.islink(path):
                module.fail_json(msg=f"{path} does not exist or is not a symlink: there is no complete set in "
                                     f"{params['dest']} yet", set_path=path, **fail_fields)
            path = os.path.realpath(path)
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        module.fail_json(msg=f"{path} is not a backup set directory", set_path=path, **fail_fields)
    return path
