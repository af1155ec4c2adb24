# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""redis-cli in the target, shared by redis_dump and redis_restore.

The password reaches redis-cli only as REDISCLI_AUTH (from the exec's stdin, see ``_transport.secret_stdin``,
or the container's REDIS_PASSWORD / REDIS_PASSWORD_FILE), never as ``-a``.
"""

from __future__ import annotations

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import excerpt
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RedisAnswerError, TransportError

AUTH_SH = r"""
if [ -z "${REDISCLI_AUTH:-}" ]; then
  if [ -n "${REDIS_PASSWORD:-}" ]; then REDISCLI_AUTH=$REDIS_PASSWORD
  elif [ -n "${REDIS_PASSWORD_FILE:-}" ] && [ -r "$REDIS_PASSWORD_FILE" ]; then REDISCLI_AUTH=$(cat "$REDIS_PASSWORD_FILE")
  fi
fi
if [ -n "${REDISCLI_AUTH:-}" ]; then export REDISCLI_AUTH; fi
"""

# Each command's raw answer after a marker line; errors come back as text and are recognised in Python.
PROBE_SH = AUTH_SH + r"""
for c in "$@"; do printf '@@%s\n' "$c"; redis-cli --raw $c 2>&1; done
"""

AUTH_ERRORS = ("NOAUTH", "WRONGPASS", "ERR invalid password", "AUTH failed")


def run_commands(transport, params, commands):
    """Run each redis-cli command of ``commands`` in the target; {command: [answer lines]}.

    Raises RedisAnswerError when Redis refuses the authentication or cannot be reached, TransportError when the
    exec fails.
    """
    argv = ["sh", "-c", PROBE_SH, "sh"] + list(commands)
    secret = {"REDISCLI_AUTH": params["password"]} if params.get("password") else None
    result = transport.exec_capture(argv, secret_env=secret)
    if not result.ok:
        raise TransportError(f"redis-cli failed in {transport.describe()}: "
                             f"{result.problem or f'exit status {result.exit_code}'}: "
                             f"{excerpt(result.stderr or result.stdout)}")
    answers = {}
    current = None
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("@@"):
            current = line[2:]
            answers[current] = []
        elif current is not None:
            answers[current].append(line)
    for command, lines in answers.items():
        text = "\n".join(lines)
        if any(marker in text for marker in AUTH_ERRORS):
            raise RedisAnswerError(f"Redis in {transport.describe()} refused authentication ({excerpt(text, 200)}); "
                                   "set password (or REDIS_PASSWORD in the container)")
        if "Could not connect" in text or "Connection refused" in text:
            raise RedisAnswerError(f"redis-cli could not connect in {transport.describe()}: {excerpt(text, 300)}")
    return answers


def info_fields(lines):
    fields = {}
    for line in lines:
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def parse_int(lines):
    try:
        return int(lines[0])
    except (TypeError, ValueError, IndexError):
        return None
