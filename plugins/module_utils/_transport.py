# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""What every transport (Docker container, Kubernetes pod) offers the modules."""

from __future__ import annotations

import collections


class TransportError(Exception):
    """A problem reaching or running something in the target; the message says what and where."""


class ExecResult:
    """Outcome of one command run in the target."""

    def __init__(self, exit_code, stderr=b"", stdout=b"", stdout_bytes=0, complete=True, problem=None):
        self.exit_code = exit_code
        self.stderr = stderr
        self.stdout = stdout
        self.stdout_bytes = stdout_bytes
        self.complete = complete
        self.problem = problem

    @property
    def ok(self):
        return self.complete and self.exit_code == 0


class BoundedBuffer:
    """Keeps the last ``limit`` bytes written to it (stderr of long commands)."""

    def __init__(self, limit=64 * 1024):
        self.limit = limit
        self.chunks = collections.deque()
        self.length = 0

    def write(self, data):
        if not data:
            return
        self.chunks.append(bytes(data))
        self.length += len(data)
        while self.chunks and self.length - len(self.chunks[0]) >= self.limit:
            self.length -= len(self.chunks.popleft())

    def getvalue(self):
        return b"".join(self.chunks)[-self.limit:]


class CappedBuffer:
    """Collects small command output; fails past ``limit`` so a probe can never eat memory."""

    def __init__(self, limit=4 * 1024 * 1024):
        self.limit = limit
        self.parts = []
        self.length = 0

    def write(self, data):
        self.length += len(data)
        if self.length > self.limit:
            raise TransportError(f"command output exceeded {self.limit} bytes where a short answer was expected")
        self.parts.append(bytes(data))

    def getvalue(self):
        return b"".join(self.parts)


# Shell snippet that reads secrets, one per line, from stdin into exported variables. Used where a transport
# cannot set the environment of an exec (Kubernetes): the secret travels in the stream, never as an argument.
def secret_env_wrapper(names, argv):
    reads = "; ".join(f'IFS= read -r {name}; export {name}' for name in names)
    return ["sh", "-c", f'{reads}; exec "$@"', "sh"] + list(argv)
