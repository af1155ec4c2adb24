# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A test suite that cannot skip quietly: every pytest run counts its skips; in CI an unlisted skip fails the run.

tests/unit/conftest.py and tests/integration/conftest.py register this plugin (``register(config)``). Every run
prints one line with its skip count. With ``CI=true`` (as .ci/run sets it) a skipped test that
tests/skip-allowlist.txt does not name fails the run, even when every other test passed: a prerequisite that
.ci/run installs is never a reason to skip. The allowlist holds one test id per line (relative to the repository
root, as ``pytest`` prints it from there), then `` # `` and why that skip is right; for example a parametrised case
that does not apply to a layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
ALLOWLIST = TESTS_DIR / "skip-allowlist.txt"
PLUGIN_NAME = "authentik-ops-skip-policy"


def in_ci(environ=None) -> bool:
    """True where the environment says CI (CI=true, as .ci/run and most CI services set it)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in ("true", "1", "yes")


def load_allowlist(path: Path) -> dict[str, str]:
    """{test id: reason} of the allowlist; an entry without a reason is a usage error."""
    if not path.is_file():
        raise pytest.UsageError(f"skip allowlist {path} is missing")
    entries = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        test_id, sep, reason = text.partition(" # ")
        if not sep or not reason.strip() or not test_id.strip():
            raise pytest.UsageError(f"{path}:{number}: an entry is '<test id> # <why the skip is right>', got {text!r}")
        entries[test_id.strip()] = reason.strip()
    return entries


def _reason(report) -> str:
    """The skip message of a report ("Skipped: why" in a (path, line, message) tuple)."""
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return message.removeprefix("Skipped: ")


class SkipPolicy:
    """Collects the skips of a run; decides and reports at its end."""

    def __init__(self, rootpath: Path, allowlist: Path, root: Path, ci: bool):
        self.rootpath = rootpath
        self.allowlist_path = allowlist
        self.allowed = load_allowlist(allowlist)
        self.root = root
        self.ci = ci
        self.skips: list[tuple[str, str]] = []

    def test_id(self, nodeid: str) -> str:
        """A node id relative to the repository root, whatever directory pytest took as its rootdir."""
        path, sep, rest = nodeid.partition("::")
        absolute = Path(os.path.normpath(self.rootpath / path))
        try:
            path = absolute.relative_to(self.root).as_posix()
        except ValueError:
            path = absolute.as_posix()
        return f"{path}{sep}{rest}"

    def unlisted(self) -> list[tuple[str, str]]:
        return [(test_id, reason) for test_id, reason in self.skips if test_id not in self.allowed]

    def _record(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append((self.test_id(report.nodeid), _reason(report)))

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def pytest_collectreport(self, report) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session) -> None:
        if self.ci and self.unlisted() and session.exitstatus in (pytest.ExitCode.OK,
                                                                  pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        unlisted = self.unlisted()
        listed = len(self.skips) - len(unlisted)
        where = os.path.relpath(self.allowlist_path, self.root) if self.allowlist_path.is_relative_to(self.root) \
            else str(self.allowlist_path)
        line = f"skips: {len(self.skips)} ({listed} listed in {where}, {len(unlisted)} not listed)"
        if unlisted and self.ci:
            terminalreporter.write_line(f"{line}: CI=true, so the run FAILS on these:", red=True, bold=True)
        elif unlisted:
            terminalreporter.write_line(f"{line}; with CI=true the run would fail on these:", yellow=True)
        else:
            terminalreporter.write_line(line)
        for test_id, reason in unlisted:
            terminalreporter.write_line(f"  {test_id}: {reason}")


def register(config, allowlist: Path = ALLOWLIST, root: Path = REPO_ROOT, ci: bool | None = None) -> None:
    """Register the policy once per pytest run (both conftest files call this from pytest_configure)."""
    if config.pluginmanager.has_plugin(PLUGIN_NAME):
        return
    policy = SkipPolicy(Path(config.rootpath), allowlist, root, in_ci() if ci is None else ci)
    config.pluginmanager.register(policy, PLUGIN_NAME)
