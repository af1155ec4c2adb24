# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The skip policy (tests/skip_policy.py), run on small test suites of its own (pytester): every run prints its
skip count; with CI=true a skip the allowlist does not name fails the run, a listed one does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import skip_policy

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_passes():
    pass

def test_needs_something_missing():
    pytest.skip("something is not installed")

@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_per_layout(layout):
    if layout == "current":
        pytest.skip("the current layout has no such part")

@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_failure():
    raise AssertionError
"""

LISTED = "test_suite.py::test_per_layout[current] # does not apply to the current layout\n"


CONFTEST = f"""
import sys
from pathlib import Path

sys.path.insert(0, {str(skip_policy.TESTS_DIR)!r})
import skip_policy


def pytest_configure(config):
    root = Path(__file__).parents[@UP@]
    skip_policy.register(config, allowlist=root / "allow.txt", root=root)
"""


@pytest.fixture
def suite(pytester):
    """A suite with one unlisted skip, one listed skip, an xfail and passing tests; its conftest registers the policy
    with the allowlist ``allow.txt`` beside it."""
    pytester.makeconftest(CONFTEST.replace("@UP@", "0"))
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "allow.txt").write_text("# reviewed skips\n\n" + LISTED)
    return pytester


def run(pytester, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_unlisted_skip_fails_the_run_in_ci(suite, monkeypatch):
    result = run(suite, monkeypatch, "true")
    result.assert_outcomes(passed=2, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "skips: 2 (1 listed in allow.txt, 1 not listed): CI=true, so the run FAILS on these:",
        "  test_suite.py::test_needs_something_missing: something is not installed",
    ])
    assert "test_per_layout[current]:" not in result.stdout.str()


def test_outside_ci_the_run_passes_and_still_counts(suite, monkeypatch):
    for ci in (None, "false"):
        result = run(suite, monkeypatch, ci)
        result.assert_outcomes(passed=2, skipped=2, xfailed=1)
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines([
            "skips: 2 (1 listed in allow.txt, 1 not listed); with CI=true the run would fail on these:",
            "  test_suite.py::test_needs_something_missing: something is not installed",
        ])


def test_listed_skips_pass_in_ci(suite, monkeypatch):
    (suite.path / "allow.txt").write_text(LISTED + "test_suite.py::test_needs_something_missing # optional here\n")
    result = run(suite, monkeypatch, "true")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["skips: 2 (2 listed in allow.txt, 0 not listed)"])


def test_a_skipped_module_counts(suite, monkeypatch):
    (suite.path / "allow.txt").write_text(LISTED + "test_suite.py::test_needs_something_missing # optional here\n")
    suite.makepyfile(test_optional="""
import pytest
pytest.importorskip("akbt_no_such_module")

def test_never_collected():
    pass
""")
    result = run(suite, monkeypatch, "true")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["skips: 3 (2 listed in allow.txt, 1 not listed)*",
                                 "  test_optional.py: could not import 'akbt_no_such_module'*"])


def test_a_failing_run_stays_failed(suite, monkeypatch):
    suite.makepyfile(test_fails="def test_fails():\n    assert False\n")
    result = run(suite, monkeypatch, "true")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, skipped=2, xfailed=1, failed=1)


def test_ids_are_relative_to_the_root_whatever_the_rootdir(suite, monkeypatch):
    sub = suite.path / "sub"
    sub.mkdir()
    (sub / "conftest.py").write_text(CONFTEST.replace("@UP@", "1"))
    (sub / "test_deep.py").write_text("import pytest\n\ndef test_deep():\n    pytest.skip('deep')\n")
    (suite.path / "allow.txt").write_text(LISTED + "sub/test_deep.py::test_deep # listed by its id from the root\n")
    monkeypatch.setenv("CI", "true")
    # pytest takes sub/ as its rootdir here: the policy still names the test from the allowlist's root
    result = suite.runpytest("-p", "no:cacheprovider", "--rootdir", str(sub), str(sub / "test_deep.py"))
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["skips: 1 (1 listed in allow.txt, 0 not listed)"])


@pytest.mark.parametrize("entry", ["test_suite.py::test_passes\n", "test_suite.py::test_passes #   \n",
                                   "test_suite.py::test_passes# why\n"])
def test_an_entry_without_its_reason_is_a_usage_error(suite, monkeypatch, entry):
    (suite.path / "allow.txt").write_text(entry)
    result = run(suite, monkeypatch, "true")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "allow.txt:1: an entry is '<test id> # <why the skip is right>'" in result.stderr.str()


def test_the_allowlist_names_existing_tests_with_reasons():
    entries = skip_policy.load_allowlist(skip_policy.ALLOWLIST)
    assert entries, "the allowlist is empty: keep its header, or remove the file and this test"
    for test_id, reason in entries.items():
        path, _sep, rest = test_id.partition("::")
        source = skip_policy.REPO_ROOT / path
        assert source.is_file(), f"{test_id}: no such file"
        name = re.sub(r"\[.*\]$", "", rest)
        assert re.search(rf"^def {re.escape(name)}\(", source.read_text(), re.M), f"{test_id}: no such test"
        assert len(reason) > 10, f"{test_id}: say why the skip is right"


def test_ci_detection():
    assert skip_policy.in_ci({"CI": "true"}) and skip_policy.in_ci({"CI": "1"}) and skip_policy.in_ci({"CI": "TRUE"})
    assert not skip_policy.in_ci({}) and not skip_policy.in_ci({"CI": "false"}) and not skip_policy.in_ci({"CI": ""})
    assert Path(skip_policy.ALLOWLIST).parent == skip_policy.TESTS_DIR
