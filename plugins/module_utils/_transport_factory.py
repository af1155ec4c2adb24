# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The one place that knows the platforms: it turns a module's options into a Transport, Workloads or the
scratch containers of a restore test. Operation modules ask what a transport can do, never which platform it is.

Adding a platform means one branch in each function here (and an implementation of ``_transport.Transport`` and
``_transport.Workloads``); see docs/architecture.md.
"""

from __future__ import annotations

import posixpath

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import DEFAULT_DOCKER_HOST
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError
LOCAL = "local"


def _platform(params):
    return params.get("platform") or "docker"


def open_transport(params):
    """The Transport of the target named by the module's options (container, pod, or this host)."""
    platform = _platform(params)
    if platform == "docker":
        from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import DockerTransport

        return DockerTransport(params["container"], params.get("docker_host") or DEFAULT_DOCKER_HOST,
                               timeout=params.get("api_timeout") or 60)
    if platform == "kubernetes":
        from ansible_collections.authentik_ops.backup.plugins.module_utils._k8s_exec import K8sTransport

        return K8sTransport.from_params(params)
    if platform == LOCAL:
        from ansible_collections.authentik_ops.backup.plugins.module_utils._local import LocalTransport

        return LocalTransport()
    raise ConfigError(f"platform {platform!r} is not supported; choose docker, kubernetes or local")


def open_workloads(params):
    """The Workloads (containers or Deployments) of the platform the module's options name."""
    platform = _platform(params)
    if platform == "docker":
        from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import DockerWorkloads

        return DockerWorkloads(params.get("docker_host") or DEFAULT_DOCKER_HOST, timeout=params.get("api_timeout") or 60)
    if platform == "kubernetes":
        from ansible_collections.authentik_ops.backup.plugins.module_utils._k8s_exec import K8sWorkloads

        return K8sWorkloads.from_params(params)
    raise ConfigError(f"platform {platform!r} has no workloads to stop or start; choose docker or kubernetes")


def open_scratch_containers(params):
    """Throw-away containers on the Docker host the module runs on (``docker_host``, ``api_timeout``)."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._docker_api import ScratchContainers

    return ScratchContainers(params.get("docker_host") or DEFAULT_DOCKER_HOST, timeout=params.get("api_timeout") or 60)


def archive_top(target, path):
    """The top-level member name under which the transport of ``target`` (the ``target`` a data module returned)
    archived ``path``: host paths keep their full path (``opt`` for ``/opt/authentik/.env``), container and pod
    paths are named from their last component (``data`` for ``/data``). None for an empty path."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        return None
    if target.get("platform") == LOCAL:
        return parts[0]
    return posixpath.basename(posixpath.normpath(path))


def platform_option_problem(params, local_only=None, not_local=None):
    """Why options given do not fit the platform, or None.

    ``local_only`` and ``not_local`` map options to the message for a wrong platform: the first describe this host
    (``platform: local``), the others a container or pod.
    """
    local = _platform(params) == LOCAL
    for option, message in (local_only or {}).items():
        if params.get(option) and not local:
            return message
    for option, message in (not_local or {}).items():
        if params.get(option) and local:
            return message
    return None
