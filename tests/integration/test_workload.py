# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""authentik_ops.backup.workload against the real Docker engine and against the test API server's Deployments.

Docker: two stand-in containers (one with a health check) of this test run (``akbt-<suffix>-wl-*``), stopped and
started through the Engine API. Kubernetes: the server and worker Deployments of the test bed's current Helm-like
stack, scaled to 0 and back (NOT a real cluster: tests/testbed/k8s/apiserver.py stops and starts the containers).
Each case also in check mode and repeated (idempotence).
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

pytest.register_assert_rewrite("conftest_k8s")
from conftest_k8s import helm_stacks, run_module as run_k8s_module  # noqa: E402  pylint: disable=wrong-import-position

pytest_plugins = ["conftest_k8s"]

from testbed._docker import docker, inspect  # noqa: E402  pylint: disable=wrong-import-position
from testbed.ansible_run import run_module  # noqa: E402  pylint: disable=wrong-import-position

PREFIX = f"akbt-{os.environ.get('AKBT_PROJECT_SUFFIX', '')}-wl-"
IMAGE = "akbt.local/goauthentik/server:2026.2.2"


def running(name):
    state = inspect("container", name)["State"]
    return state["Running"], (state.get("Health") or {}).get("Status")


@pytest.fixture
def containers(images):  # pylint: disable=unused-argument
    names = [PREFIX + "server", PREFIX + "worker"]
    docker("rm", "-f", *names, check=False)
    docker("run", "-d", "--network", "none", "--name", names[0], "--health-cmd", "true", "--health-interval", "1s",
           IMAGE, "server")
    docker("run", "-d", "--network", "none", "--name", names[1], IMAGE, "worker")
    try:
        yield names
    finally:
        docker("rm", "-f", *names, check=False)


def test_docker_stop_and_start(containers):
    targets = [{"name": name} for name in containers]
    result, _proc = run_module("workload", check_mode=True, state="stopped", targets=targets)
    assert result["changed"] and [t["action"] for t in result["targets"]] == ["stop", "stop"]
    assert all(running(name)[0] for name in containers)

    result, _proc = run_module("workload", state="stopped", targets=targets, stop_timeout=5)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] and [s["name"] for s in result["stopped"]] == containers
    assert not any(running(name)[0] for name in containers)
    result, _proc = run_module("workload", state="stopped", targets=targets)
    assert not result["changed"] and result["stopped"] == []

    result, _proc = run_module("workload", check_mode=True, state="started", targets=targets)
    assert result["changed"] and not any(running(name)[0] for name in containers)
    result, _proc = run_module("workload", state="started", targets=targets, wait_timeout=60)
    assert not result.get("failed"), result.get("msg")
    assert running(containers[0]) == (True, "healthy")  # it waited for the health check
    assert running(containers[1]) == (True, None)
    result, _proc = run_module("workload", state="started", targets=targets)
    assert not result["changed"]


def test_docker_unknown_container_fails_naming_it(containers):
    result, _proc = run_module("workload", state="stopped", targets=[{"name": containers[0]},
                                                                     {"name": PREFIX + "nope"}])
    assert result.get("failed") and f"{PREFIX}nope" in result["msg"]
    assert running(containers[0])[0]  # nothing was stopped


def test_kubernetes_scale_to_zero_and_back(k8s):
    spec = k8s.stacks["current"]
    names = [f"{helm_stacks.fullname(spec['release'])}-{component}" for component in ("server", "worker")]
    where = dict(platform="kubernetes", namespace=spec["namespace"])
    stop = dict(where, state="stopped", targets=[{"name": n} for n in names])
    backing = [k8s.container("current", "server"), k8s.container("current", "worker")]

    result = run_k8s_module(k8s, "workload", check=True, **stop)
    assert result["changed"] and all(running(c)[0] for c in backing)

    result = run_k8s_module(k8s, "workload", wait_timeout=120, **stop)
    assert not result.get("failed"), result.get("msg")
    stopped = result["stopped"]
    assert [s["name"] for s in stopped] == names and all(s["replicas"] >= 1 for s in stopped)
    assert not any(running(c)[0] for c in backing)  # waited until the pods were gone
    assert not run_k8s_module(k8s, "workload", **stop)["changed"]

    start = dict(where, state="started", targets=stopped)
    result = run_k8s_module(k8s, "workload", check=True, **start)
    assert result["changed"] and not any(running(c)[0] for c in backing)
    result = run_k8s_module(k8s, "workload", wait_timeout=120, **start)
    assert not result.get("failed"), result.get("msg")
    assert all(running(c)[0] for c in backing)
    assert not run_k8s_module(k8s, "workload", **start)["changed"]


def test_kubernetes_unknown_deployment_fails_naming_it(k8s):
    spec = k8s.stacks["current"]
    result = run_k8s_module(k8s, "workload", platform="kubernetes", namespace=spec["namespace"], state="started",
                            targets=[{"name": "no-such-deployment", "replicas": 1}])
    assert result.get("failed") and "no-such-deployment not found" in result["msg"]
