"""Session fixtures of the integration tests: the Docker engine (and both Compose CLIs), the test bed images and the
authentik-like Compose stacks.

Environment knobs:
  AKBT_KEEP_STACKS=1   leave the stacks running after the session (for debugging)
  AKBT_PROJECT_SUFFIX=x  use projects akbt-cur<x> / akbt_legacy<x> / akbt-alpine<x> (several sessions on one machine)
  AKBT_LOCK_WAIT=s     how long to wait for another session holding a project's lock (default 1800)
  PYTEST_XDIST_WORKER  set by pytest-xdist (-n N): appended to the suffix, so parallel workers never share a name
  AKBT_REUSE_STACKS=1  reuse stacks that are already up (state file present and all containers running) instead of
                       recreating them; reused stacks are not torn down

Skips are counted and, with CI=true, fail the run unless tests/skip-allowlist.txt names them (tests/skip_policy.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

# Parallel workers (pytest-xdist, `make integration`) share the engine like sessions do: each gets its own projects,
# namespaces and names through the suffix, read when tests/testbed/paths.py is first imported (just below).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER:
    os.environ["AKBT_PROJECT_SUFFIX"] = os.environ.get("AKBT_PROJECT_SUFFIX", "") + _WORKER.replace("gw", "w")

TESTS_DIR = Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import skip_policy  # noqa: E402  pylint: disable=wrong-import-position
from testbed import ansible_run, paths, proof, stacks  # noqa: E402  pylint: disable=wrong-import-position


def pytest_configure(config):
    skip_policy.register(config)


# --- order: the longest files first, so that parallel workers (make integration) end together ----------------------
DURATIONS = Path(__file__).resolve().parent / "durations.json"
_SPENT = defaultdict(float)


def _weights():
    """Seconds per file from durations.json; files not listed weigh as much as the longest listed one."""
    try:
        known = {k: v for k, v in json.loads(DURATIONS.read_text()).items() if not k.startswith("_")}
    except (OSError, ValueError):
        known = {}
    return known, max(known.values(), default=0)


def pytest_collection_modifyitems(items):
    """Run files longest first (stable within a file); pytest-xdist keeps this order with --no-loadscope-reorder.

    Every worker collects the same order: it depends only on the file names and durations.json.
    """
    known, default = _weights()
    order = {}
    for item in items:
        order.setdefault(item.path.name, len(order))
    items.sort(key=lambda item: (-known.get(item.path.name, default), order[item.path.name]))


def pytest_runtest_logreport(report):
    if not hasattr(report, "fspath"):
        return
    _SPENT[Path(report.fspath).name] += report.duration


def pytest_sessionfinish(session):
    """With AKBT_DURATIONS_OUT=file, write the seconds each file took (summed over setup, call and teardown)."""
    out = os.environ.get("AKBT_DURATIONS_OUT")
    if not out or os.environ.get("PYTEST_XDIST_WORKER") or not _SPENT:
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({k: round(v) for k, v in sorted(_SPENT.items())}, indent=2) + "\n")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.ensure_newline()
        reporter.write_line(f"durations per file: {out}")


@pytest.fixture(scope="session")
def repo_root():
    return paths.REPO_ROOT


@pytest.fixture(scope="session")
def testbed_paths():
    """The module holding every shared path and name of the test bed (tests/testbed/paths.py)."""
    return paths


@pytest.fixture(scope="session")
def engine():
    subprocess.run(["bash", str(paths.ENGINE_SH)], check=True)


@pytest.fixture(scope="session")
def images(engine):  # pylint: disable=redefined-outer-name,unused-argument
    subprocess.run(["bash", str(paths.IMAGES_SH)], check=True)
    subprocess.run(["bash", str(paths.IMAGES_VARIANTS_SH)], check=True)
    return list(paths.IMAGES) + list(paths.IMAGES_VARIANTS)


def _stack(spec):
    project = spec["project"]
    # the lock makes a second session on this machine wait instead of destroying this session's stack
    with stacks.lock(project, wait=float(os.environ.get("AKBT_LOCK_WAIT", "1800"))):
        reuse = os.environ.get("AKBT_REUSE_STACKS") == "1" and stacks.is_up(project)
        if reuse:
            stack = stacks.load(project)
        else:
            stack = stacks.up(
                project,
                layout=spec["layout"],
                naming=spec["naming"],
                pg_user=spec["pg_user"],
                flavour=spec.get("flavour", "debian"),
                postgres=spec.get("postgres", "15"),
            )
        try:
            yield stack
        finally:
            if not reuse and os.environ.get("AKBT_KEEP_STACKS") != "1":
                stacks.down(project)


@pytest.fixture(scope="session")
def stack_current(images):  # pylint: disable=redefined-outer-name,unused-argument
    """authentik 2026.2 layout (postgresql, server, worker; /data), project akbt-cur, brought up by Compose v2."""
    yield from _stack(paths.STACK_CURRENT)


@pytest.fixture(scope="session")
def stack_legacy(images):  # pylint: disable=redefined-outer-name,unused-argument
    """authentik 2025.2 layout (adds redis; /media), project akbt_legacy, brought up by Compose v1 (1.29),
    PG_USER=ak_admin."""
    yield from _stack(paths.STACK_LEGACY)


@pytest.fixture(scope="session")
def stack_alpine(images):  # pylint: disable=redefined-outer-name,unused-argument
    """authentik 2025.2 layout run as authentik's file says (Compose v2, the images it names): busybox userland,
    PostgreSQL as uid 70, Redis as uid 999; project akbt-alpine."""
    yield from _stack(paths.STACK_ALPINE)


@pytest.fixture(scope="session", autouse=True)
def _proof_cleanup():
    """Remove the proof containers this session started (only this session's prefix)."""
    yield
    try:
        proof.cleanup_prefix(proof.SESSION_PREFIX)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        print(f"proof cleanup failed: {exc}", file=sys.stderr)


@pytest.fixture(scope="session")
def inventory(tmp_path_factory):
    """The inventory most playbook runs use: localhost in group authentik, local connection, this venv's python."""
    return ansible_run.local_inventory(tmp_path_factory.mktemp("inventory") / "hosts.yml")


@pytest.fixture
def proof_tmp(tmp_path):
    """A temp dir for dumps and archives of one test."""
    return tmp_path
