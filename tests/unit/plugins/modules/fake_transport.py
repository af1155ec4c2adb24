# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A scripted Transport and Workloads for the modules' unit tests, and a way to run a module's main().

The integration tests run every module against real containers, pods and servers. What they cannot produce on
demand are the failures: a refused login, a stream cut at byte N, a command still running when its stream ends, an
exit code, stderr, a hang, a path that vanishes between two looks. ``FakeTransport`` scripts each of them, and
``run_main`` drives a module's ``main()`` with ``AnsibleModule`` arguments, as community.docker's unit tests do
(the module fails or exits through ``AnsibleFailJson`` / ``AnsibleExitJson``).
"""

from __future__ import annotations

import contextlib
import json
import time

from unittest import mock

import pytest

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core 2.18 has no testing helper: AnsibleModule reads basic._ANSIBLE_ARGS
    @contextlib.contextmanager
    def patch_module_args(args=None):
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import NotSupported, TransportError
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import (
    CappedBuffer,
    ExecResult,
    Transport,
    WorkloadState,
    Workloads,
)


class AnsibleExitJson(Exception):
    """The module ended with exit_json; ``result`` is what it returned."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


class AnsibleFailJson(Exception):
    """The module ended with fail_json; ``result`` holds msg and the fields."""

    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


WARNINGS = []


def _warn(self, warning):  # pylint: disable=unused-argument
    WARNINGS.append(warning)


def _exit_json(self, **kwargs):  # pylint: disable=unused-argument
    raise AnsibleExitJson(dict(kwargs, warnings=list(WARNINGS)))


def _fail_json(self, **kwargs):  # pylint: disable=unused-argument
    raise AnsibleFailJson(dict(kwargs, warnings=list(WARNINGS)))


def run_main(monkeypatch, module, args, check_mode=False, transport=None, workloads=None, scratch=None):
    """Run ``module.main()`` with ``args``; returns (result, failed). The factory hands out the fakes given; the
    module's warnings are in ``result["warnings"]``."""
    WARNINGS.clear()
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "warn", _warn)
    if transport is not None:
        monkeypatch.setattr(_transport_factory, "open_transport", lambda params: transport)
    if workloads is not None:
        monkeypatch.setattr(_transport_factory, "open_workloads", lambda params: workloads)
    if scratch is not None:
        monkeypatch.setattr(_transport_factory, "open_scratch_containers", lambda params: scratch)
    with patch_module_args(dict(args, _ansible_check_mode=check_mode)):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as ended:
            module.main()
    return ended.value.result, isinstance(ended.value, AnsibleFailJson)


class Reply:
    """How a scripted command behaves.

    ``stdout`` is delivered in ``chunk``-sized pieces; ``cut_at`` ends the stream after that many bytes as a
    broken connection does (incomplete, no exit status); ``still_running`` ends it while the command still runs;
    ``refuse`` fails the exec before it starts (TransportError); ``hang`` sleeps that many seconds first.
    """

    def __init__(self, stdout=b"", stderr=b"", exit_code=0, cut_at=None, still_running=False, refuse=None,
                 hang=0.0, chunk=65536):
        self.stdout = stdout.encode() if isinstance(stdout, str) else stdout
        self.stderr = stderr.encode() if isinstance(stderr, str) else stderr
        self.exit_code = exit_code
        self.cut_at = cut_at
        self.still_running = still_running
        self.refuse = refuse
        self.hang = hang
        self.chunk = chunk


class Call:
    def __init__(self, argv, secret_env, stdin):
        self.argv = list(argv)
        self.secret_env = dict(secret_env or {})
        self.stdin = stdin

    @property
    def text(self):
        return " ".join(self.argv)


class FakeTransport(Transport):
    """A scripted target. ``handler(call)`` returns the Reply of each command (a Call: argv, secret_env, stdin)."""

    def __init__(self, handler=None, archives=None, paths=(), mounts=(), can_stop=False, facts=None,
                 running=True, helper=None, extracts_top_dirs=False):
        self.handler = handler or (lambda call: Reply())
        self.archives = dict(archives or {})
        self.paths = set(paths)
        self._mounts = list(mounts)
        self.can_stop = can_stop
        self.extracts_top_dirs = extracts_top_dirs
        self.facts = facts or dict(platform="fake", container="db")
        self.running = running
        self.helper = helper
        self.calls = []
        self.events = []
        self.written = {}

    def describe(self):
        return "the fake target"

    def check_running(self):
        if not self.running:
            raise TransportError("the fake target is not running")

    def target_facts(self):
        self.check_running()
        return dict(self.facts)

    def exec_stream(self, argv, on_stdout, secret_env=None, stdin=None):
        data = b"".join(bytes(block) for block in stdin) if stdin is not None else None
        call = Call(argv, secret_env, data)
        self.calls.append(call)
        reply = self.handler(call)
        if reply.hang:
            time.sleep(reply.hang)
        if reply.refuse:
            raise TransportError(f"exec in {self.describe()} refused: {reply.refuse}")
        out = reply.stdout if reply.cut_at is None else reply.stdout[:reply.cut_at]
        for start in range(0, len(out), reply.chunk):
            on_stdout(out[start:start + reply.chunk])
        if reply.cut_at is not None:
            return ExecResult(None, stderr=reply.stderr, stdout_bytes=len(out), complete=False,
                              problem=f"the stream was cut after {len(out)} bytes")
        if reply.still_running:
            return ExecResult(None, stderr=reply.stderr, stdout_bytes=len(out), complete=False,
                              problem="the stream ended while the command was still running")
        return ExecResult(reply.exit_code, stderr=reply.stderr, stdout_bytes=len(out))

    def exec_capture(self, argv, secret_env=None, limit=64 * 1024):
        out = CappedBuffer(limit)
        result = self.exec_stream(argv, out.write, secret_env=secret_env)
        result.stdout = out.getvalue()
        return result

    def read_archive(self, path, on_data):
        entry = self.archives.get(path)
        if entry is None:
            return None
        data = entry() if callable(entry) else entry
        for start in range(0, len(data), 4096):
            on_data(data[start:start + 4096])
        return {"name": path.rsplit("/", 1)[-1]}

    def write_archive(self, path, source):
        data = b"".join(bytes(block) for block in source())
        self.written.setdefault(path, []).append(data)
        self.events.append(("write_archive", path))
        return dict(size=len(data))

    def path_exists(self, path):
        return path in self.paths or path in self.archives

    def mounts(self):
        return list(self._mounts)

    def stop(self, timeout=30):
        if not self.can_stop:
            raise NotSupported("the fake target cannot be stopped")
        self.events.append(("stop", timeout))

    def start(self):
        if not self.can_stop:
            raise NotSupported("the fake target cannot be started")
        self.events.append(("start",))

    def refresh(self):
        self.events.append(("refresh",))

    def dump_helper(self):
        return self.helper


class FakeWorkloads(Workloads):
    """Containers (``scales=False``) or Deployments (``scales=True``) held in a dict {name: replicas or running}."""

    def __init__(self, parts, scales=False, fail=None):
        self.parts = dict(parts)
        self.scales = scales
        self.kind = "Deployment" if scales else "container"
        self.fail = dict(fail or {})
        self.calls = []

    def survey(self, names):
        states = []
        for name in names:
            if name not in self.parts:
                raise TransportError(f"{self.kind} {name!r} not found")
            value = self.parts[name]
            if self.scales:
                states.append(WorkloadState(name, value > 0, replicas=value, detail=f"{value} replicas"))
            else:
                states.append(WorkloadState(name, bool(value), detail="running" if value else "exited"))
        return states

    def _apply(self, changes):
        errors = {name: self.fail[name] for name in changes if name in self.fail}
        for name, value in changes.items():
            if name not in errors:
                self.parts[name] = value
        if errors:
            raise TransportError("; ".join(f"{name}: {text}" for name, text in sorted(errors.items())))

    def stop(self, states, timeout=None, wait=True, wait_timeout=300):
        self.calls.append(("stop", [s.name for s in states], timeout, wait, wait_timeout))
        self._apply({s.name: 0 if self.scales else False for s in states})

    def start(self, wanted, wait=True, wait_timeout=300):
        self.calls.append(("start", dict(wanted), wait, wait_timeout))
        self._apply({name: replicas if self.scales else True for name, replicas in wanted.items()})
