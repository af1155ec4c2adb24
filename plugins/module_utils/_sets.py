# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Backup sets on disk: their fixed names, naming and ordering, ``latest``, and finding the set options point at.

A set is a directory ``<dest>/<prefix>-<UTC yyyymmddThhmmssZ>[-<n>]``; it is complete when it holds
``manifest.json``. ``<dest>/latest`` is a relative symlink to the newest complete set, ``<dest>/.lock`` the lock of
the run working on the destination. backup_set, backup_prune, backup_lock, backup_verify and backup_upload all
read these names from here.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import fsync_dir

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
LATEST = "latest"
LOCK = ".lock"
REPORT = "report.json"
STAMP = "%Y%m%dT%H%M%SZ"
ISO = "%Y-%m-%dT%H:%M:%SZ"
# Names of sets, prefixes and runs: letters, digits, dot, dash and underscore, not starting with a dot or dash.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Keys of a module result that say nothing about the backup: Ansible's own bookkeeping and the file attributes
# Ansible adds to any result with a dest (uid, gid, owner, group, mode, state, secontext).
RESULT_NOISE = re.compile(r"^(_ansible|ansible_|__)|^(item|invocation|changed|failed|skipped|skip_reason|warnings|"
                          r"deprecations|diff|plan|msg|uid|gid|owner|group|mode|state|path|secontext)$")


def is_result_noise(key):
    return bool(RESULT_NOISE.search(key))


# --- time ---------------------------------------------------------------------------------------------------------

def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def iso(moment):
    return moment.strftime(ISO)


def parse_iso(text):
    try:
        return datetime.datetime.strptime(text, ISO).replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


# --- names and order ----------------------------------------------------------------------------------------------

def name_problem(option, value):
    """Why ``value`` cannot be a set name or prefix (``option`` names the option), or None."""
    if not NAME_RE.match(value or ""):
        return f"{option} {value!r}: use letters, digits, dot, dash and underscore only"
    return None


def set_name(prefix, moment):
    return f"{prefix}-{moment.strftime(STAMP)}"


def _match(name, prefix):
    return re.fullmatch(re.escape(prefix) + r"-(\d{8}T\d{6}Z)(?:-(\d+))?", name)


def set_time(name, prefix):
    """UTC start time encoded in a set name ``<prefix>-<yyyymmddThhmmssZ>[-<n>]``, or None when not a set name."""
    match = _match(name, prefix)
    if not match:
        return None
    try:
        return datetime.datetime.strptime(match.group(1), STAMP).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def set_order(name, prefix):
    """Sort key of a set name: its time, then its collision counter (``-2`` after the plain name, ``-10`` after
    ``-9``); None when ``name`` is not a set name of ``prefix`` (a real date and time is required)."""
    if set_time(name, prefix) is None:
        return None
    match = _match(name, prefix)
    return match.group(1), int(match.group(2) or 1)


def sort_sets(names, prefix):
    """The set names of ``prefix`` among ``names``, oldest first (other names are left out)."""
    return sorted((n for n in names if set_order(n, prefix) is not None), key=lambda n: set_order(n, prefix))


def bad_file_name(name):
    """True unless ``name`` can be a file of a set (as a manifest entry lists it)."""
    return not name or "/" in name or name in (MANIFEST, SIGNATURE, LATEST, ".", "..")


def scan(dest, prefix):
    """(complete, incomplete, leftovers) of ``dest``: set names of ``prefix`` oldest first, and the hidden
    ``.<set>.deleting-<random>`` directories an interrupted removal left.

    Only timestamp-named directories count: a hand-made ``<prefix>-manual`` is never a set.
    """
    complete, incomplete, leftovers = [], [], []
    for entry in os.scandir(dest):
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith(f".{prefix}-") and ".deleting-" in entry.name:
            leftovers.append(entry.name)
        elif set_order(entry.name, prefix) is not None:
            is_complete = os.path.isfile(os.path.join(entry.path, MANIFEST))
            (complete if is_complete else incomplete).append(entry.name)
    return sort_sets(complete, prefix), sort_sets(incomplete, prefix), sorted(leftovers)


def complete_sets(dest, prefix):
    """Names of the complete sets of ``prefix`` in ``dest``, oldest first."""
    return scan(dest, prefix)[0]


def is_partial(set_path):
    """Whether the set's manifest says ``"partial": true`` (parts the deployment has were left out by the run)."""
    try:
        with open(os.path.join(set_path, MANIFEST), "rb") as handle:
            manifest = json.loads(handle.read())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("partial") is True


def split_partial(dest, names):
    """(full, partial): the complete set names of ``dest`` split by their manifests, order kept."""
    partial = [name for name in names if is_partial(os.path.join(dest, name))]
    return [name for name in names if name not in partial], partial


# --- latest -------------------------------------------------------------------------------------------------------

def _not_a_symlink(link):
    return OSError(f"{link} exists and is not a symlink; move it away so latest can be maintained")


def read_latest(dest):
    """The set ``<dest>/latest`` points at, or None; refuses a ``latest`` that is not a symlink."""
    link = os.path.join(dest, LATEST)
    if os.path.islink(link):
        return os.readlink(link)
    if os.path.lexists(link):
        raise _not_a_symlink(link)
    return None


def point_latest(dest, name):
    """Point ``<dest>/latest`` at the set ``name`` (relative symlink, replaced atomically, directory synced)."""
    link = os.path.join(dest, LATEST)
    if os.path.lexists(link) and not os.path.islink(link):
        raise _not_a_symlink(link)
    tmp = os.path.join(dest, f".latest.{os.getpid()}.{secrets.token_hex(4)}")
    os.symlink(name, tmp)
    os.replace(tmp, link)
    fsync_dir(dest)


def set_prefix(name):
    """The prefix of a set name ``<prefix>-<yyyymmddThhmmssZ>[-<n>]``, or None when ``name`` is not one."""
    match = re.fullmatch(r"(.+)-\d{8}T\d{6}Z(?:-\d+)?", name or "")
    if not match or set_time(name, match.group(1)) is None:
        return None
    return match.group(1)


def source_of(manifest):
    """The deployment a manifest says its set came from, in words: ``Compose project X`` or ``Helm release R in
    namespace N``; None when the manifest names none."""
    source = manifest.get("source") if isinstance(manifest, dict) else None
    if not isinstance(source, dict):
        return None
    if source.get("release") or source.get("namespace"):
        return f"Helm release {source.get('release')} in namespace {source.get('namespace')}"
    if source.get("compose_project"):
        return f"Compose project {source['compose_project']}"
    return None


# --- the lock's holder --------------------------------------------------------------------------------------------

def read_lock(dest):
    """The record of ``<dest>/.lock`` as a dict ({} while it cannot be read yet), or None when unlocked."""
    try:
        with open(os.path.join(dest, LOCK), "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lock_holder(dest):
    """run_id of the run holding ``<dest>/.lock``, ``""`` when the lock cannot be read yet, None when unlocked."""
    try:
        with open(os.path.join(dest, LOCK), "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    match = re.search(r'"run_id"\s*:\s*"([^"]*)"', text)
    return match.group(1) if match else ""


# --- the set of a module's options --------------------------------------------------------------------------------

def resolve_set(path, dest, name, **fail_fields):
    """The set directory of ``path``, or of ``dest`` and ``name`` (``latest`` follows the symlink).

    Raises ConfigError, with ``set_path`` and ``fail_fields`` in its fields, when there is no such set directory.
    """
    if name in ("", ".", "..") or "/" in name:
        raise ConfigError(f"name {name!r}: give the name of a set directory in dest, or latest", **fail_fields)
    if not path:
        path = os.path.join(dest, name)
        if name == LATEST:
            if not os.path.islink(path):
                raise ConfigError(f"{path} does not exist or is not a symlink: there is no complete set in "
                                  f"{dest} yet", set_path=path, **fail_fields)
            path = os.path.realpath(path)
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a backup set directory", set_path=path, **fail_fields)
    return path
