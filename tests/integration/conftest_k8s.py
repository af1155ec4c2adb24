"""Fixtures of the Kubernetes integration tests: both Helm-like stacks behind one test API server.

Loaded with ``pytest_plugins = ["conftest_k8s"]`` by test_k8s_transport.py, test_k8s_backup.py and
test_restore_roundtrip.py, so the stacks and the server are created once per session. No cluster is used: tests/testbed/k8s/apiserver.py serves the API and
runs pod exec in the real containers that helm_stacks.py starts (names ``akbt-k8s-<ns>-<release>-*``,
``--network none``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed", "k8s"))

import helm_stacks  # noqa: E402  pylint: disable=wrong-import-position
from testbed import ansible_run  # noqa: E402  pylint: disable=wrong-import-position

# AKBT_PROJECT_SUFFIX gives a session its own namespaces (and so its own containers), as for the Compose stacks.
_SUFFIX = os.environ.get("AKBT_PROJECT_SUFFIX", "")
STACKS = {
    "current": {"layout": "current", "release": "authentik", "namespace": f"akbt-k8s-cur{_SUFFIX}"},
    "legacy": {"layout": "legacy", "release": "legacy", "namespace": f"akbt-k8s-leg{_SUFFIX}"},
}


class Cluster:
    """The test API server with both stacks; ``stacks[name]`` is the stack entry of the state file."""

    def __init__(self, work):
        self.work = work
        self.state_path = os.path.join(work, "state.json")
        for spec in STACKS.values():
            helm_stacks.up(spec["layout"], spec["release"], spec["namespace"], self.state_path)
        self.url, self.kubeconfig, self.proc = helm_stacks.start_server(self.state_path, workdir=work)
        self.token = self.proc.akbt_token
        state = json.load(open(self.state_path, encoding="utf-8"))
        self.state = state
        self.stacks = {name: dict(state["stacks"][f"{spec['namespace']}/{spec['release']}"], **spec)
                       for name, spec in STACKS.items()}

    def close(self):
        helm_stacks.stop_server(self.proc)
        for spec in STACKS.values():
            helm_stacks.down(spec["release"], spec["namespace"], self.state_path, quiet=True)

    # -- admin endpoints of the test server -----------------------------------------------------------------
    def admin(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + self.token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    def exec_log(self):
        return self.admin("GET", "/_test/exec-log")

    def fault(self, **exec_fault):
        return self.admin("POST", "/_test/faults", {"exec": exec_fault})

    def clear_faults(self):
        return self.admin("DELETE", "/_test/faults")

    # -- pods -----------------------------------------------------------------------------------------------
    def pod(self, stack, component):
        spec = self.stacks[stack]
        release = spec["release"]
        if component == "postgresql":
            return f"{release}-postgresql-0"
        if component == "redis":
            return f"{release}-redis-master-0"
        prefix = f"{helm_stacks.fullname(release)}-{component}-"
        return next(p["name"] for p in self.state["pods"]
                    if p["namespace"] == spec["namespace"] and p["name"].startswith(prefix))

    def container(self, stack, component):
        """The Docker container behind a component of a stack."""
        key = {"postgresql": "pg"}.get(component, component)
        return self.stacks[stack]["containers"][key]


@pytest.fixture(scope="session")
def k8s(tmp_path_factory, images):  # pylint: disable=unused-argument
    """Both Helm-like stacks behind the test API server (the test bed images are built first)."""
    cluster = Cluster(str(tmp_path_factory.mktemp("akbt-k8s")))
    try:
        yield cluster
    finally:
        cluster.close()


def run_module(cluster, module, check=False, **args):
    """Run one module of the collection on localhost against the test API server; returns its result dict."""
    args.setdefault("kubeconfig", cluster.kubeconfig)
    result, _run = ansible_run.run_module(module, check_mode=check, home=os.path.join(cluster.work, "ansible-home"),
                                          **args)
    return result
