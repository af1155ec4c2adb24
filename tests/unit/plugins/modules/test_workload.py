# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""workload's main(): what it stops and starts, check mode, idempotence, and failures naming the target."""

from __future__ import annotations

from fake_transport import FakeWorkloads, run_main

from ansible_collections.authentik_ops.backup.plugins.modules import workload


def targets(*names, **replicas):
    return [dict(name=n, replicas=replicas.get(n.replace("-", "_"))) for n in names]


def test_docker_stop_then_start(monkeypatch):
    parts = FakeWorkloads({"server": True, "worker": True, "other": False})
    result, failed = run_main(monkeypatch, workload, dict(state="stopped", targets=targets("server", "worker", "other"),
                                                          stop_timeout=5), workloads=parts)
    assert not failed and result["changed"]
    assert parts.calls == [("stop", ["server", "worker"], 5, True, 300)]
    assert result["stopped"] == [dict(name="server", replicas=None), dict(name="worker", replicas=None)]
    assert [t["action"] for t in result["targets"]] == ["stop", "stop", "none"]
    result, failed = run_main(monkeypatch, workload, dict(state="started", targets=targets("server", "worker"),
                                                          wait_timeout=9), workloads=parts)
    assert not failed and result["changed"] and parts.calls[-1] == ("start", {"server": None, "worker": None}, True, 9)
    assert parts.parts == {"server": True, "worker": True, "other": False}


def test_idempotent_and_check_mode(monkeypatch):
    parts = FakeWorkloads({"server": True})
    result, failed = run_main(monkeypatch, workload, dict(state="started", targets=targets("server")), workloads=parts)
    assert not failed and not result["changed"] and parts.calls == []
    result, failed = run_main(monkeypatch, workload, dict(state="stopped", targets=targets("server")), check_mode=True,
                              workloads=parts)
    assert not failed and result["changed"] and result["targets"][0]["action"] == "stop" and parts.calls == []
    assert parts.parts == {"server": True}


def test_kubernetes_replicas_are_given_back(monkeypatch):
    parts = FakeWorkloads({"ak-server": 2, "ak-worker": 1}, scales=True)
    args = dict(platform="kubernetes", namespace="authentik")
    result, failed = run_main(monkeypatch, workload, dict(args, state="stopped", targets=targets("ak-server", "ak-worker")),
                              workloads=parts)
    assert not failed and result["stopped"] == [dict(name="ak-server", replicas=2), dict(name="ak-worker", replicas=1)]
    assert parts.parts == {"ak-server": 0, "ak-worker": 0}
    result, failed = run_main(monkeypatch, workload, dict(args, state="started", targets=result["stopped"]),
                              workloads=parts)
    assert not failed and parts.parts == {"ak-server": 2, "ak-worker": 1}
    assert [t["action"] for t in result["targets"]] == ["scale to 2", "scale to 1"]
    # a Deployment that had 0 replicas stays at 0 when that is what it is given back
    again = dict(args, state="started", targets=targets("ak-server", ak_server=2))
    result, failed = run_main(monkeypatch, workload, again, workloads=parts)
    assert not failed and not result["changed"]


def test_kubernetes_start_without_replicas_of_a_scaled_down_deployment(monkeypatch):
    parts = FakeWorkloads({"ak-server": 0}, scales=True)
    result, failed = run_main(monkeypatch, workload, dict(platform="kubernetes", namespace="authentik",
                                                          state="started", targets=targets("ak-server")),
                              workloads=parts)
    assert failed and "has 0 replicas; give the replicas" in result["msg"] and parts.calls == []


def test_a_failure_names_the_target_and_the_others_still_act(monkeypatch):
    parts = FakeWorkloads({"server": True, "worker": True}, fail={"worker": "permission denied"})
    result, failed = run_main(monkeypatch, workload, dict(state="stopped", targets=targets("server", "worker")),
                              workloads=parts)
    assert failed and "worker: permission denied" in result["msg"]
    assert parts.parts["server"] is False  # stopped although the worker failed
    assert result["stopped"] == [dict(name="server", replicas=None), dict(name="worker", replicas=None)]


def test_unknown_target_and_duplicates(monkeypatch):
    parts = FakeWorkloads({"server": True})
    result, failed = run_main(monkeypatch, workload, dict(state="stopped", targets=targets("nope")), workloads=parts)
    assert failed and "'nope' not found" in result["msg"]
    result, failed = run_main(monkeypatch, workload, dict(state="stopped", targets=targets("server", "server")),
                              workloads=parts)
    assert failed and "give each container or Deployment once" in result["msg"]
