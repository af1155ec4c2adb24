# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that read where authentik keeps its media from the settings in a deployment's environment.

Every filter is pure. The documentation of each filter is in the YAML file of the same name next to this file.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.module_utils import _versions

PREFIX = "AUTHENTIK_STORAGE__"
# S3 settings recorded in a manifest (storage.<usage>.s3.<key>, then storage.s3.<key>); never the credentials
RECORDED = {"BUCKET_NAME": "bucket", "ENDPOINT": "endpoint", "REGION": "region", "CUSTOM_DOMAIN": "custom_domain",
            "ADDRESSING_STYLE": "addressing_style", "USE_SSL": "use_ssl"}
CREDENTIALS = ("ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", "SECURITY_TOKEN", "SESSION_PROFILE")


def _as_dict(env):
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    if isinstance(env, (list, tuple)):
        out = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            if sep:
                out[key] = value
        return out
    raise AnsibleFilterError("authentik_storage expects the environment as a list of NAME=value or a dict")


def _resolve(env, value):
    """(value, unresolved) of a setting: ``env://NAME[?default]`` is read from the same environment; a
    ``file://`` URI (a file in the container) is not read and reported as unresolved."""
    if value.startswith("env://"):
        name, _sep, default = value[len("env://"):].partition("?")
        return env.get(name, default or None), False
    if value.startswith("file://"):
        return None, True
    return value, False


def _setting(env, usage, key):
    """The value of storage.<usage>.<key>, else storage.<key> (authentik's lookup order), with its variable."""
    for name in (f"{PREFIX}{usage.upper()}__{key}", f"{PREFIX}{key}"):
        if env.get(name, "") != "":
            return name, env[name]
    return None, None


def _s3(env, usage, version):
    record, unresolved = {}, []
    for key, field in RECORDED.items():
        name, raw = _setting(env, usage, f"S3__{key}")
        if name is None:
            continue
        value, open_uri = _resolve(env, raw)
        if open_uri:
            unresolved.append(name)
        record[field] = value
    # object keys: media/<schema>/... from 2025.12 on, <schema>/... before (django-storages); unknown version: none
    if _versions.parse(version) is None:
        record["prefix"] = None
    else:
        record["prefix"] = f"{usage}/" if _versions.at_least(version, _versions.DATA_LAYOUT) else ""
    record["credentials_set"] = any(_setting(env, usage, f"S3__{key}")[0] for key in CREDENTIALS)
    record["unresolved"] = unresolved
    return record


def authentik_storage(env, version=None, usages=("media",)):
    """{usage: {backend, backend_setting, and for s3 bucket, endpoint, region, prefix, ...}} from an environment."""
    env = _as_dict(env)
    out = {}
    for usage in usages:
        name, raw = _setting(env, usage, "BACKEND")
        value, open_uri = _resolve(env, raw) if name else (None, False)
        entry = {"backend": "unknown" if open_uri else (value or "file").strip().lower(), "backend_setting": name}
        if open_uri:
            entry["unresolved"] = [name]
        if entry["backend"] == "s3":
            entry.update(_s3(env, usage, version))
        out[usage] = entry
    return out


def authentik_storage_credentials(env, usage="media"):
    """{access_key, secret_key, session_token} of a usage's S3 storage (env:// resolved; unset or file:// is None).

    The values are secrets: use the result only in tasks with ``no_log``.
    """
    env = _as_dict(env)
    out = {}
    for key in ("ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN"):
        name, raw = _setting(env, usage, f"S3__{key}")
        out[key.lower()] = _resolve(env, raw)[0] if name else None
    return out


class FilterModule:
    """authentik_ops.backup filters for authentik's storage settings."""

    def filters(self):
        return {"authentik_storage": authentik_storage, "authentik_storage_credentials": authentik_storage_credentials}
