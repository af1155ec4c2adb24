# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The collection's errors: one hierarchy, raised by module_utils and turned into one failure by the module.

module_utils never call ``fail_json`` or ``exit_json``. They raise a :class:`BackupError` (or a subclass) whose
message says what went wrong, where, and what to do; keyword arguments become extra fields of the failed task's
result (``rc``, ``stderr_excerpt``, ``dest``, ``set_path``, ...). ``_common.run_module`` catches it and fails the
module once, with the traceback in ``exception``.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base of every error the collection reports; ``fields`` go into the failed result."""

    def __init__(self, msg, **fields):
        super().__init__(msg)
        self.msg = msg
        self.fields = fields

    def add_fields(self, **fields):
        """Add result fields the raiser did not know (its own win); returns the error, to raise it again."""
        for key, value in fields.items():
            self.fields.setdefault(key, value)
        return self


class ConfigError(BackupError):
    """An option or a combination of options cannot be used; found before anything is touched."""


class TransportError(BackupError):
    """A problem reaching or running something in the target; the message says what and where."""


class NotSupported(TransportError):
    """The target's platform cannot do what was asked (for example stop a single container of a pod)."""


class HelperUnavailable(BackupError):
    """A fast path (the dump helper) cannot be used here; the caller can take the ordinary way instead."""


class SinkError(BackupError):
    """The backup file cannot be written."""


class FormatError(BackupError):
    """A file or a stream is not what it should be (truncated dump, bad RDB checksum, damaged tar)."""


class RestoreError(BackupError):
    """The source cannot be restored; the message says why."""


class RedisAnswerError(BackupError):
    """Redis answered with an error (refused authentication, failed save, ...)."""


class LockError(BackupError):
    """The destination's lock cannot be taken or released."""


class RunGone(BackupError):
    """The run that started this task is gone (its playbook or SSH session ended): the task stops, cleaning up."""
