# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The host the module runs on as a transport (``platform: local``): files and directories of this host.

Archives of host paths keep their full path without the leading ``/`` as member names (``opt/authentik/.env``);
archives are extracted into a host directory with ``_tarsafe.extract_local``, which never writes outside it. No
command is run on the host: the collection only reads and writes files here.
"""

from __future__ import annotations

import os
import socket
import tarfile

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import NotSupported
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import ChunkReader, Transport, WriteTo


class LocalTransport(Transport):
    """Files of the host the module runs on."""

    has_mounts = False
    extracts_top_dirs = True
    missing_reason = "does not exist on the host"

    def __init__(self):
        self.host = socket.gethostname()

    def describe(self):
        return f"this host ({self.host})"

    def target_facts(self):
        return dict(platform="local", host=self.host)

    def check_running(self):
        """The host runs: nothing to check."""

    def allow_stopped(self):
        """A host directory is read whatever runs."""

    def exec_stream(self, argv, on_stdout, secret_env=None, stdin=None):
        raise NotSupported("commands are not run on the host the module runs on; give a container or a pod")

    def path_exists(self, path):
        return os.path.lexists(path)

    def read_archive(self, path, on_data):
        """A tar of the host path ``path`` (recursively, links not followed); None when it does not exist."""
        if not os.path.lexists(path):
            return None
        name = path.lstrip("/") or "."
        with tarfile.open(fileobj=WriteTo(on_data), mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(path, arcname=name, recursive=True)
        return {"name": name}

    def write_archive(self, path, source):
        """Extract the tar stream into the existing host directory ``path`` (see ``_tarsafe.extract_local``);
        returns the bytes of file data written and the files with their archived mode, uid and gid."""
        from ansible_collections.authentik_ops.backup.plugins.module_utils._tarsafe import extract_local

        reader = ChunkReader(source())
        done = extract_local(reader, path)
        reader.drain()
        return dict(size=done.bytes, files=done.files, members=done.members)
