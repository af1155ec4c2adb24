"""K8sTransport (plugins/module_utils/_k8s_exec.py) and the data modules with platform=kubernetes.

Against the test API server of tests/testbed/k8s (real kubernetes Python client, real WebSocket pod exec protocol
v4 framing, real PostgreSQL and Redis in containers). NOT a real cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import tracemalloc

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

pytest.register_assert_rewrite("conftest_k8s")
from conftest_k8s import REPO, run_module  # noqa: E402  pylint: disable=wrong-import-position

pytest_plugins = ["conftest_k8s"]

sys.path.insert(0, os.path.join(REPO, ".collections"))

from kubernetes import client as k8s_client  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402

from ansible_collections.authentik_ops.backup.plugins.module_utils._k8s_exec import (  # noqa: E402
    K8sTransport,
    parse_status,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import TransportError  # noqa: E402
from testbed import proof  # noqa: E402
from testbed._docker import docker  # noqa: E402


@pytest.fixture(scope="module")
def api_client(k8s):
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=k8s.kubeconfig, client_configuration=cfg)
    return k8s_client.ApiClient(cfg)


def transport(k8s, api_client, stack, component, container=None):
    return K8sTransport(api_client, k8s.stacks[stack]["namespace"], k8s.pod(stack, component), container)


@pytest.fixture
def dest_dir(tmp_path):
    path = tmp_path / "set"
    path.mkdir(mode=0o700)
    return path


def pod_args(k8s, stack, component, **more):
    return dict(platform="kubernetes", namespace=k8s.stacks[stack]["namespace"], pod=k8s.pod(stack, component),
                **more)


# --- the transport itself --------------------------------------------------------------------------------------

def test_256mib_random_binary_is_byte_identical_in_constant_memory(k8s, api_client):
    server = k8s.container("current", "server")
    size = 256 << 20
    want = docker("exec", server, "sh", "-c", f"head -c {size} /dev/urandom > /tmp/akbt-k8s-blob && "
                  "sha256sum /tmp/akbt-k8s-blob").stdout.split()[0].decode()
    try:
        tr = transport(k8s, api_client, "current", "server")
        sha = hashlib.sha256()
        count = [0, 0]

        def take(data):
            sha.update(data)
            count[0] += len(data)
            count[1] += 1

        tracemalloc.start()
        try:
            result = tr.exec_stream(["cat", "/tmp/akbt-k8s-blob"], take)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        docker("exec", server, "rm", "-f", "/tmp/akbt-k8s-blob")
    assert result.ok and result.exit_code == 0, result.problem
    assert count[0] == size and result.stdout_bytes == size
    assert sha.hexdigest() == want
    assert count[1] > 64                      # it streamed in many frames ...
    assert peak < 24 << 20, f"peak {peak} bytes"  # ... and never held more than a few of them


def test_exit_code_and_stderr_from_channel_3(k8s, api_client):
    tr = transport(k8s, api_client, "current", "postgresql")
    result = tr.exec_capture(["sh", "-c", "echo partial; echo 'it went wrong' >&2; exit 3"])
    assert result.complete and not result.ok
    assert result.exit_code == 3
    assert result.stdout == b"partial\n"
    assert result.stderr == b"it went wrong\n"
    ok = tr.exec_capture(["id", "-u"])
    assert ok.ok and ok.stdout == b"1001\n"           # the Bitnami-like database container is non-root


def test_parse_status_variants():
    assert parse_status(b'{"metadata":{},"status":"Success"}') == (0, None)
    code, problem = parse_status(json.dumps({"status": "Failure", "reason": "NonZeroExitCode", "details": {
        "causes": [{"reason": "ExitCode", "message": "42"}]}}).encode())
    assert (code, problem) == (42, None)
    assert parse_status(b"")[0] is None and "cut short" in parse_status(b"")[1]
    assert parse_status(b"{nope")[0] is None
    assert parse_status(b'{"status":"Failure","message":"boom"}') == (None, "exec failed: boom")


def test_secret_env_is_sent_on_stdin_not_in_the_command(k8s, api_client):
    tr = transport(k8s, api_client, "current", "postgresql")
    secret = "akbt-k8s-Secret-" + os.urandom(8).hex()
    result = tr.exec_capture(["sh", "-c", 'printf %s "$AKBT_SECRET" | sha256sum'], secret_env={"AKBT_SECRET": secret})
    assert result.ok, result.problem
    assert result.stdout.split()[0].decode() == hashlib.sha256(secret.encode()).hexdigest()
    # the server logs an exec once its session has ended, which may be just after the client saw the status
    deadline = time.monotonic() + 10
    while True:
        entries = k8s.exec_log()
        ours = [entry for entry in entries if "AKBT_SECRET" in json.dumps(entry.get("command"))]
        if ours or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ours, "the exec with the secret was not logged"
    leaked = [entry for entry in entries if secret in json.dumps(entry)]
    assert not leaked, f"the secret appears in logged execs: {leaked}"
    with pytest.raises(TransportError):
        tr.exec_capture(["true"], secret_env={"AKBT_SECRET": "two\nlines"})


def test_cut_stream_is_detected(k8s, api_client):
    tr = transport(k8s, api_client, "current", "server")
    k8s.fault(cut_after_bytes=100_000, pod=tr.pod, command_contains="akbt-cut", times=1)
    got = []
    result = tr.exec_stream(["sh", "-c", "head -c 5000000 /dev/zero # akbt-cut"], lambda d: got.append(len(d)))
    assert not result.complete and not result.ok
    assert result.exit_code is None
    assert sum(got) == 100_000
    assert "status" in result.problem


def test_missing_pod_and_container_fail_clearly(k8s, api_client):
    with pytest.raises(TransportError, match="not found"):
        K8sTransport(api_client, k8s.stacks["current"]["namespace"], "no-such-pod").inspect()
    with pytest.raises(TransportError, match="has no container 'nope'"):
        transport(k8s, api_client, "current", "postgresql", container="nope").inspect()


# --- postgres_dump ---------------------------------------------------------------------------------------------

def test_postgres_dump_reads_credentials_inside_the_pod_and_restores_identically(k8s, dest_dir):
    stack = k8s.stacks["current"]
    check = run_module(k8s, "postgres_dump", check=True,
                       **pod_args(k8s, "current", "postgresql", dest=str(dest_dir / "postgres.sql.zst")))
    assert not check.get("failed"), check
    assert check["plan"]["databases"] == ["authentik"]
    assert os.listdir(dest_dir) == []

    res = run_module(k8s, "postgres_dump", **pod_args(k8s, "current", "postgresql",
                                                      dest=str(dest_dir / "postgres.sql.zst")))
    assert not res.get("failed"), res
    assert res["target"]["image"].startswith("docker.io/bitnami/postgresql:")
    path = dest_dir / "postgres.sql.zst"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == res["sha256"]
    fresh = proof.restore_dump_into_fresh(str(path))
    try:
        want = proof.table_checksums(k8s.container("current", "postgresql"), "authentik",
                                     password=stack["postgres_password"])
        assert proof.table_checksums(fresh, proof.PROOF_SUPERUSER) == want
        assert "public.akbt_sample" in want["authentik"]
    finally:
        proof.cleanup(fresh)
    # no secret crossed the API as an argument
    logged = json.dumps(k8s.exec_log())
    assert stack["postgres_password"] not in logged and stack["secret_key"] not in logged


def test_postgres_dump_password_option_travels_on_stdin(k8s, dest_dir):
    stack = k8s.stacks["legacy"]
    res = run_module(k8s, "postgres_dump", **pod_args(k8s, "legacy", "postgresql", dest=str(dest_dir / "pg.sql"),
                                                      compression="none", user="authentik",
                                                      password=stack["postgres_password"]))
    assert not res.get("failed"), res
    assert res["user"] == "authentik" and res["superuser"] is True
    assert (dest_dir / "pg.sql").read_bytes().rstrip().endswith(b"-- PostgreSQL database cluster dump complete\n--")
    assert stack["postgres_password"] not in json.dumps(res)
    entries = [e for e in k8s.exec_log() if e["pod"] == k8s.pod("legacy", "postgresql")]
    assert entries and stack["postgres_password"] not in json.dumps(entries)
    assert any("PGPASSWORD" in " ".join(e["command"]) for e in entries)   # the name, read by the wrapper
    # a wrong password is a failed task with psql's message, not a traceback
    bad = run_module(k8s, "postgres_dump", **pod_args(k8s, "legacy", "postgresql", dest=str(dest_dir / "bad.sql"),
                                                      user="authentik", password="wrong-" + os.urandom(4).hex()))
    assert bad.get("failed") and bad["rc"] == 2 and "password authentication failed" in bad["msg"]
    assert sorted(os.listdir(dest_dir)) == ["pg.sql"]


def test_postgres_dump_cut_by_the_server_leaves_no_file(k8s, dest_dir):
    pod = k8s.pod("current", "postgresql")
    k8s.fault(cut_after_bytes=2000, pod=pod, command_contains="pg_dumpall", times=1)
    try:
        res = run_module(k8s, "postgres_dump", **pod_args(k8s, "current", "postgresql",
                                                          dest=str(dest_dir / "postgres.sql.zst")))
    finally:
        k8s.clear_faults()
    assert res.get("failed"), res
    assert "broke off" in res["msg"] and "2000 bytes received" in res["msg"], res["msg"]
    assert os.listdir(dest_dir) == []                        # no file, no .partial


def test_module_failure_carries_exit_code_and_stderr(k8s, dest_dir):
    res = run_module(k8s, "postgres_dump", **pod_args(k8s, "current", "postgresql", dest=str(dest_dir / "x.sql"),
                                                      user="akbt_no_such_role"))
    assert res.get("failed") and res["rc"] == 2
    assert "akbt_no_such_role" in res["stderr_excerpt"] and "status 2" in res["msg"]
    res = run_module(k8s, "redis_dump", **pod_args(k8s, "legacy", "redis", dest=str(dest_dir / "r.rdb"),
                                                   save_mode="none", rdb_path="/data/akbt-missing.rdb"))
    assert res.get("failed") and res["rc"] == 1 and "No such file" in res["msg"], res
    assert os.listdir(dest_dir) == []


# --- path_archive ----------------------------------------------------------------------------------------------

def test_path_archive_from_the_server_pod(k8s, dest_dir, tmp_path):
    server = k8s.container("current", "server")
    args = pod_args(k8s, "current", "server", paths=["/data", "/templates", "/blueprints"],
                    dest=str(dest_dir / "files.tar.zst"))
    check = run_module(k8s, "path_archive", check=True, **args)
    assert check["plan"]["paths"] == ["/data", "/templates"], check
    assert os.listdir(dest_dir) == []
    res = run_module(k8s, "path_archive", **args)
    assert not res.get("failed"), res
    assert res["archived"] == ["/data", "/templates"]
    # (the module's "skipped" list is turned into skipped=true by ansible-core: a result key it owns; the plan of
    # the check-mode run above says which path was left out and why)
    assert check["plan"]["skipped_paths"] == [{"path": "/blueprints", "reason": "not mounted in the container"}]
    archive = dest_dir / "files.tar.zst"
    for path in ("data", "templates"):
        copy = tmp_path / f"src-{path}"
        docker("cp", f"{server}:/{path}", str(copy))
        want = proof.tree_state(copy)
        assert want, f"/{path} of the pod is empty"
        got = {k.split("/", 1)[1]: v for k, v in proof.tar_state(archive).items() if k.startswith(path + "/")}
        assert got == want
    required = run_module(k8s, "path_archive", **{**args, "required": True, "dest": str(dest_dir / "req.tar")})
    assert required.get("failed") and "/blueprints" in required["msg"]
    # only_mounted=false looks at the pod's filesystem (the image has a /blueprints, hence only_mounted=true by
    # default); a path that does not exist there is skipped
    absent = run_module(k8s, "path_archive", **{**args, "only_mounted": False, "paths": ["/akbt-absent"],
                                                "dest": str(dest_dir / "none.tar")})
    assert absent["dest"] is None
    assert absent["plan"]["skipped_paths"][0]["reason"] == "does not exist in the target"
    assert sorted(os.listdir(dest_dir)) == ["files.tar.zst"]


# --- redis_dump ------------------------------------------------------------------------------------------------

def test_redis_dump_from_the_legacy_master_pod(k8s, dest_dir):
    args = pod_args(k8s, "legacy", "redis", dest=str(dest_dir / "redis.rdb"))
    check = run_module(k8s, "redis_dump", check=True, **args)
    assert not check.get("failed") and check["keys"] == 3, check
    assert os.listdir(dest_dir) == []
    res = run_module(k8s, "redis_dump", **args)
    assert not res.get("failed"), res
    assert res["rdb_check"] == "RDB header, EOF opcode and CRC64 checked"
    fresh = proof.load_rdb_into_fresh(str(dest_dir / "redis.rdb"))
    try:
        want = proof.redis_state(k8s.container("legacy", "redis"))
        assert want and proof.redis_state(fresh) == want
    finally:
        proof.cleanup(fresh)
