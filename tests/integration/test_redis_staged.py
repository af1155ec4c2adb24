# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""redis_replace stages the snapshot beside dump.rdb and swaps it in by rename, on Docker and Kubernetes.

Real Redis containers (a GNU and a busybox userland): a data directory that cannot take the staged file leaves
dump.rdb, the keys, the save setting and the Redis process as they were; a successful replace loads the snapshot,
also into a container whose restart policy does not restart it (the module starts it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from testbed import ansible_run, paths

REPO = str(paths.REPO_ROOT)
PREFIX = f"akbt-rds-it{paths.PROJECT_SUFFIX}-"
NS = f"akbtrds{paths.PROJECT_SUFFIX}"
USERLANDS = {"gnu": paths.IMAGE_REDIS, "busybox": paths.IMAGE_REDIS_BUSYBOX}


def docker(*args, check=True, stdin=None):
    proc = subprocess.run(["docker", *args], capture_output=True, check=False, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc


def cli(name, *args):
    return docker("exec", name, "redis-cli", "--raw", *args).stdout.decode().strip()


def wait_pong(name):
    for _attempt in range(120):
        if docker("exec", name, "redis-cli", "PING", check=False).stdout.strip() == b"PONG":
            return
        time.sleep(0.25)
    raise AssertionError(f"{name} did not answer")


def run_module(module, check_mode=False, **args):
    result, _run = ansible_run.run_module(module, check_mode=check_mode, **args)
    return result


@pytest.fixture(scope="module")
def redises(images):  # pylint: disable=unused-argument
    """One Redis per userland without a restart policy (Docker), one with --restart always (the kubelet's part)."""
    names = {}
    for userland, image in USERLANDS.items():
        for role, restart in (("docker", "no"), ("k8s", "always")):
            name = names[(userland, role)] = f"{PREFIX}{userland}-{role}"
            docker("rm", "-f", "-v", name, check=False)
            docker("run", "-d", "--name", name, "--network", "none", "--restart", restart, image,
                   "redis-server", "--save", "3600", "1")
    for name in names.values():
        wait_pong(name)
    try:
        yield names
    finally:
        for name in names.values():
            docker("rm", "-f", "-v", name, check=False)


@pytest.fixture(scope="module")
def k8s(redises, tmp_path_factory):
    sys.path.insert(0, os.path.join(REPO, "tests", "testbed", "k8s"))
    import helm_stacks  # noqa: PLC0415 - test bed helper, only for these cases

    pods = [{"name": f"redis-{userland}", "namespace": NS, "labels": {"app": userland},
             "containers": [{"name": "redis", "docker": redises[(userland, "k8s")], "image": "stand-in",
                             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
             "volumes": [{"name": "data", "emptyDir": {}}]} for userland in USERLANDS]
    state = {"token": "akbt-rds-token", "namespaces": [NS], "deployments": [], "statefulsets": [], "secrets": [],
             "stacks": {}, "pods": pods}
    url, kubeconfig, proc = helm_stacks.start_server(state, workdir=str(tmp_path_factory.mktemp("k8s")))
    try:
        assert url
        yield dict(platform="kubernetes", namespace=NS, kubeconfig=kubeconfig)
    finally:
        helm_stacks.stop_server(proc)


def target(platform, userland, k8s_args):
    return dict(pod=f"redis-{userland}", **k8s_args) if platform == "kubernetes" else {}


def state(name):
    """What must not change when a replace fails: the file, the keys, the save setting, the process."""
    return dict(rdb=docker("exec", name, "sha256sum", "/data/dump.rdb").stdout.split()[0],
                keys={key: cli(name, "GET", key) for key in ("kept", "added")}, dbsize=cli(name, "DBSIZE"),
                save=cli(name, "CONFIG", "GET", "save"), run_id=cli(name, "INFO", "server").split("run_id:")[1][:40],
                files=docker("exec", name, "ls", "-A", "/data").stdout.decode().split())


@pytest.mark.parametrize("platform", ["docker", "kubernetes"])
@pytest.mark.parametrize("userland", list(USERLANDS))
def test_replace_failing_half_way_leaves_the_previous_data(redises, k8s, tmp_path, platform, userland):
    """...and a good replace afterwards loads the snapshot."""
    name = redises[(userland, "k8s" if platform == "kubernetes" else "docker")]
    args = dict(target(platform, userland, k8s)) or dict(container=name)
    cli(name, "FLUSHALL")
    cli(name, "SET", "kept", "välue")
    rdb = str(tmp_path / "redis.rdb")
    dumped = run_module("redis_dump", dest=rdb, **args)
    assert not dumped.get("failed"), dumped
    cli(name, "SET", "added", "after the backup")
    cli(name, "DEL", "kept")
    cli(name, "SAVE")  # dump.rdb now holds the state after the backup

    # the data directory cannot take the staged file: a directory stands where it goes
    docker("exec", name, "mkdir", "/data/dump.rdb.restore-tmp/")
    before = state(name)
    failed = run_module("redis_restore", src=rdb, wait_timeout=60, **args)
    assert failed.get("failed") and "nothing was changed" in failed["msg"], failed
    assert state(name) == before and before["keys"] == {"kept": "", "added": "after the backup"}
    docker("exec", name, "rmdir", "/data/dump.rdb.restore-tmp")

    restored = run_module("redis_restore", src=rdb, wait_timeout=60, **args)
    assert restored.get("changed") and not restored.get("failed"), restored
    after = state(name)
    assert after["keys"] == {"kept": "välue", "added": ""} and after["run_id"] != before["run_id"]
    assert after["files"] == ["dump.rdb"] and after["save"] == before["save"]  # the configured setting again
    running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
    assert running == b"true"  # started by the module (Docker, no restart policy) or by the restart policy
