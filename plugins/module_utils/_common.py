# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Shared option specs, the one way a module runs and fails, and small helpers of the collection's modules."""

from __future__ import annotations

import os
import time
import traceback

from ansible.module_utils.basic import env_fallback

from ansible_collections.authentik_ops.backup.plugins.module_utils import _proc
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError

COLLECTION_VERSION = "0.1.0"

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

COMPRESSION_CHOICES = ["none", "gzip", "zstd"]

STDERR_EXCERPT = 2000


def run_module(module, body):
    """Run ``body(module)``, which returns the result dict, and end the module with it.

    A BackupError raised anywhere below fails the module exactly once, with the error's fields in the result and
    the traceback in ``exception``. Nothing else calls ``fail_json`` or ``exit_json``.

    A module with an ``owner`` option (the data modules) stops once that run is gone (``_proc.OwnerWatch``): its
    ``with`` blocks unwind (partial file, helper container) and it fails with ``_errors.RunGone``.
    """
    try:
        with _proc.OwnerWatch(module.params.get("owner")):
            result = body(module)
    except BackupError as exc:
        fields = dict(exc.fields)
        fields.setdefault("exception", traceback.format_exc())
        module.fail_json(msg=exc.msg, **fields)
    module.exit_json(**result)


def transport_argument_spec():
    """Options every data module takes to reach its container or pod."""
    spec = dict(
        platform=dict(type="str", default="docker", choices=["docker", "kubernetes"]),
        container=dict(type="str"),
        docker_host=dict(type="str", default=DEFAULT_DOCKER_HOST, fallback=(env_fallback, ["DOCKER_HOST"])),
        api_timeout=dict(type="int", default=60),
        pod=dict(type="str"),
        namespace=dict(type="str"),
        pod_container=dict(type="str"),
    )
    for name, option in k8s_auth_spec().items():
        spec.setdefault(name, option)
    return spec


def k8s_auth_spec():
    """kubernetes.core's authentication options (kubeconfig, context, host, api_key, ...), or {} without it."""
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    except ImportError:  # kubernetes.core not installed: the docker platform still works
        return {}
    return {name: dict(option) for name, option in AUTH_ARG_SPEC.items()}


def output_argument_spec(default_compression="zstd"):
    """Options of the modules that write one file into a backup set."""
    return dict(
        dest=dict(type="path", required=True),
        compression=dict(type="str", default=default_compression, choices=COMPRESSION_CHOICES),
        compression_level=dict(type="int"),
        compression_threads=dict(type="int", default=0),
        force=dict(type="bool", default=False),
        encrypt_recipients=dict(type="list", elements="str", default=[]),
        owner=dict(type="str"),
    )


def decrypt_argument_spec():
    """Options of the modules that read files of a backup set that may be age-encrypted."""
    return dict(
        decrypt_identity=dict(type="str", no_log=True),
        decrypt_identity_file=dict(type="path"),
    )


DECRYPT_MUTUALLY_EXCLUSIVE = [("decrypt_identity", "decrypt_identity_file")]


def load_identities(params):
    """The age identities of decrypt_identity / decrypt_identity_file (also registered for every reader of this
    run), or [] when neither is set. Raises ConfigError with a message that never shows the key."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._age import (
        AgeError,
        parse_identities,
        register_identities,
    )

    text, origin = params.get("decrypt_identity"), "decrypt_identity"
    if params.get("decrypt_identity_file"):
        origin = f"decrypt_identity_file ({params['decrypt_identity_file']})"
        try:
            with open(params["decrypt_identity_file"], "r", encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{origin} cannot be read: {exc.__class__.__name__}: "
                              f"{getattr(exc, 'strerror', None) or 'not a text file'}") from None
    if not text:
        register_identities([])
        return []
    try:
        keys = parse_identities(text)
    except AgeError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    register_identities(keys)
    return keys


def prepare_decryption(params, path, **fields):
    """Check before anything is touched that ``path`` can be read: an age-encrypted file needs an identity that
    opens it. Returns the encryption scheme of the file (``age`` or None); raises ConfigError with ``fields``."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._age import (
        AgeError,
        check_identities,
        crypto_problem,
        is_age_file,
    )

    keys = load_identities(params)
    try:
        encrypted = is_age_file(path)
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc}", **fields) from None
    if not encrypted:
        return None
    problem = crypto_problem()
    if problem:
        raise ConfigError(f"{path} is encrypted with age: {problem}", **fields)
    if not keys:
        raise ConfigError(f"{path} is encrypted with age; give the identity of one of its recipients in "
                          "decrypt_identity or decrypt_identity_file. Nothing was touched.", **fields)
    try:
        check_identities(path, keys)
    except AgeError as exc:
        raise ConfigError(f"{path} cannot be decrypted with the identity given: {exc}. Nothing was touched.",
                          **fields) from None
    return "age"


TRANSPORT_REQUIRED_IF = [
    ("platform", "docker", ("container",)),
    ("platform", "kubernetes", ("pod", "namespace")),
]


def check_output(module):
    """Check the output options (codec, dest, encryption) before anything is touched; raises ConfigError."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import compression_problem

    problem = compression_problem(module.params["compression"]) or check_dest(module, module.params["dest"])
    if problem:
        raise ConfigError(problem)


def check_dest(module, dest):
    """Validate an output path (and the encryption options) before anything is touched. Returns an error or None."""
    problem = encryption_problem(module.params.get("encrypt_recipients"), dest)
    if problem:
        return problem
    parent = os.path.dirname(dest) or "."
    if module.check_mode and not os.path.exists(parent):
        return None  # the set directory is created by the run that check mode plans
    if not os.path.isdir(parent):
        return f"dest: the directory {parent} does not exist; create the backup set directory first"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"dest: the directory {parent} is not writable by this user"
    if os.path.lexists(dest) and not module.params.get("force"):
        return f"dest: {dest} already exists; choose a new path or set force=true to replace it"
    return None


def open_sink(params):
    """The AtomicSink of a data module's output options."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import AtomicSink

    return AtomicSink(params["dest"], params["compression"], params["compression_level"],
                      params["compression_threads"], recipients=params["encrypt_recipients"])


def encryption_problem(recipients, dest):
    """Why the encryption options cannot be used, or None. Checked before anything is touched."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._age import crypto_problem, recipient_problem

    if not recipients:
        if dest.endswith(".age"):
            return (f"dest: {dest} ends in .age but encrypt_recipients is empty; give the recipients or a name "
                    "without .age (the name must say whether the file is encrypted)")
        return None
    problem = crypto_problem()
    if problem:
        return f"encrypt_recipients: {problem}"
    for recipient in recipients:
        problem = recipient_problem(recipient)
        if problem:
            return f"encrypt_recipients: {problem}"
    if not dest.endswith(".age"):
        return f"dest: {dest} must end in .age when encrypt_recipients is set (for example {dest}.age)"
    return None


def excerpt(data, limit=STDERR_EXCERPT):
    """A bounded, printable excerpt of command output (the end is usually what explains a failure)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8", "replace")
    data = data.strip()
    if len(data) > limit:
        data = "..." + data[-limit:]
    return data


class Stopwatch:
    def __init__(self):
        self.start = time.monotonic()

    @property
    def elapsed(self):
        return round(time.monotonic() - self.start, 3)


def file_result(stats, elapsed):
    """The common part of every data module's result."""
    throughput = int(stats["raw_size"] / elapsed) if elapsed > 0 else None
    result = dict(
        dest=stats["dest"],
        size=stats["size"],
        sha256=stats["sha256"],
        raw_size=stats["raw_size"],
        compression=stats["compression"],
        duration=elapsed,
        throughput=throughput,
    )
    if stats.get("encryption"):
        result["encryption"] = stats["encryption"]
    return result
