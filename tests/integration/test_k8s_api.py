"""The test Kubernetes API server (tests/testbed/k8s) against the REAL kubernetes client and kubernetes.core.

No cluster is used: apiserver.py serves the API and runs pod exec in real Docker containers created by
helm_stacks.py, on the test bed images (the session fixture ``images`` of conftest.py builds them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed", "k8s"))

import helm_stacks  # noqa: E402
from kubernetes import client as k8s_client  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402
from kubernetes.stream import stream  # noqa: E402
import websocket  # noqa: E402
from websocket import ABNF  # noqa: E402

from testbed import ansible_run  # noqa: E402

NS = "k8sapitest" + os.environ.get("AKBT_PROJECT_SUFFIX", "")  # a session's own namespace and containers
RELEASE = "authentik"
PG_POD = "authentik-postgresql-0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, images):  # pylint: disable=unused-argument
    work = tmp_path_factory.mktemp("k8sapi")
    state_path = str(work / "state.json")
    helm_stacks.up("current", RELEASE, NS, state_path)
    url, kubeconfig, proc = helm_stacks.start_server(state_path, workdir=str(work))
    state = json.load(open(state_path))
    try:
        yield {"url": url, "kubeconfig": kubeconfig, "proc": proc, "token": proc.akbt_token,
               "stack": state["stacks"]["%s/%s" % (NS, RELEASE)], "work": str(work)}
    finally:
        helm_stacks.stop_server(proc)
        helm_stacks.down(RELEASE, NS, state_path, quiet=True)


@pytest.fixture(scope="module")
def v1(cluster):
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=cluster["kubeconfig"], client_configuration=cfg)
    return k8s_client.CoreV1Api(k8s_client.ApiClient(cfg))


@pytest.fixture(scope="module")
def apps(cluster):
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=cluster["kubeconfig"], client_configuration=cfg)
    return k8s_client.AppsV1Api(k8s_client.ApiClient(cfg))


def admin(cluster, method, path, body=None):
    req = urllib.request.Request(cluster["url"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + cluster["token"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def ansible(cluster, module, **args):
    """Run a kubernetes.core module on localhost against the test API server; returns its result."""
    args.setdefault("kubeconfig", cluster["kubeconfig"])
    result, _run = ansible_run.run_module(module, home=os.path.join(cluster["work"], "ansible-home"), timeout=180,
                                          **args)
    return result


def exec_frames(v1, pod, command, container=None, ns=NS):
    """Run a command through the real client's WebSocket, frame by frame; returns (channels, frame count)."""
    kw = {"container": container} if container else {}
    resp = stream(v1.connect_get_namespaced_pod_exec, pod, ns, command=command, stderr=True, stdin=False,
                  stdout=True, tty=False, _preload_content=False, binary=True, **kw)
    chans = {1: hashlib.sha256(), 2: b"", 3: b""}
    sizes = {1: 0}
    frames = []
    try:
        while True:
            op, frame = resp.sock.recv_data_frame(True)
            if op == ABNF.OPCODE_CLOSE:
                break
            data = frame.data
            frames.append((data[:1], len(data)))
            if not data:
                continue
            ch = data[0]
            if ch == 1:
                chans[1].update(data[1:])
                sizes[1] += len(data) - 1
            elif ch in (2, 3):
                chans[ch] += data[1:]
    finally:
        resp.close()
    return {"sha256": chans[1].hexdigest(), "stdout_size": sizes[1], "stderr": chans[2], "status": chans[3],
            "frames": frames}


def server_pod(v1):
    pods = v1.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=server").items
    assert len(pods) == 1
    return pods[0].metadata.name


# --------------------------------------------------------------------------------------------------

def test_requests_without_token_get_401(cluster):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        req = urllib.request.Request(cluster["url"] + "/api/v1/namespaces/%s/pods" % NS, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req)
        assert exc.value.code == 401
        assert json.loads(exc.value.read())["reason"] == "Unauthorized"
    cfg = k8s_client.Configuration(host=cluster["url"])
    with pytest.raises(k8s_client.ApiException) as exc:
        k8s_client.CoreV1Api(k8s_client.ApiClient(cfg)).list_namespaced_pod(NS)
    assert exc.value.status == 401
    # the exec WebSocket too
    with pytest.raises(websocket.WebSocketBadStatusException) as wexc:
        websocket.create_connection(cluster["url"].replace("http", "ws") + "/api/v1/namespaces/%s/pods/%s/exec?"
                                    "command=true&stdout=true" % (NS, PG_POD), subprotocols=["v4.channel.k8s.io"])
    assert wexc.value.status_code == 401


def test_discovery_with_dynamic_client(cluster, v1):
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=cluster["kubeconfig"], client_configuration=cfg)
    dyn = DynamicClient(k8s_client.ApiClient(cfg))
    assert dyn.version["kubernetes"]["major"] == "1"
    for kind, api_version in (("Pod", "v1"), ("Secret", "v1"), ("Namespace", "v1"),
                              ("Deployment", "apps/v1"), ("StatefulSet", "apps/v1")):
        res = dyn.resources.get(kind=kind, api_version=api_version)
        assert res.kind == kind
    deploy = dyn.resources.get(kind="Deployment", api_version="apps/v1")
    assert deploy.subresources["scale"].kind == "Scale"
    pods = dyn.resources.get(kind="Pod", api_version="v1")
    assert "exec" in pods.subresources
    names = [p.metadata.name for p in pods.get(namespace=NS).items]
    assert PG_POD in names and len(names) == 3
    # a path the server does not serve: 404 like a real server
    req = urllib.request.Request(cluster["url"] + "/openapi/v2", headers={"Authorization": "Bearer " + cluster["token"]})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    assert exc.value.code == 404


def test_pod_objects_and_label_selectors(v1):
    pg = v1.read_namespaced_pod(PG_POD, NS)
    assert pg.status.phase == "Running"
    assert pg.metadata.labels["app.kubernetes.io/component"] == "primary"
    assert pg.spec.containers[0].name == "postgresql"
    assert pg.spec.containers[0].security_context.run_as_user == 1001
    assert pg.status.container_statuses[0].ready is True
    assert pg.status.container_statuses[0].container_id.startswith("docker://")

    def names(**kw):
        return sorted(p.metadata.name for p in v1.list_namespaced_pod(NS, **kw).items)

    sel = "app.kubernetes.io/instance=%s,app.kubernetes.io/name=postgresql,app.kubernetes.io/component=primary" % RELEASE
    assert names(label_selector=sel) == [PG_POD]
    assert len(names(label_selector="app.kubernetes.io/component in (server, worker)")) == 2
    assert names(label_selector="app.kubernetes.io/name!=authentik") == [PG_POD]
    assert names(label_selector="statefulset.kubernetes.io/pod-name") == [PG_POD]
    assert len(names(label_selector="!statefulset.kubernetes.io/pod-name")) == 2
    assert names(label_selector="app.kubernetes.io/component notin (server,worker)") == [PG_POD]
    assert names(field_selector="metadata.name=%s" % PG_POD) == [PG_POD]
    assert len(names(field_selector="status.phase=Running")) == 3
    assert names(field_selector="status.phase=Pending") == []
    everywhere = v1.list_pod_for_all_namespaces(label_selector=sel).items
    assert [p.metadata.namespace for p in everywhere] == [NS]
    with pytest.raises(k8s_client.ApiException) as exc:
        v1.read_namespaced_pod("nope", NS)
    assert exc.value.status == 404
    with pytest.raises(k8s_client.ApiException) as exc:
        v1.list_namespaced_pod(NS, label_selector="a in (b")
    assert exc.value.status == 400


def test_secrets(cluster, v1):
    stack = cluster["stack"]
    s = v1.read_namespaced_secret(RELEASE, NS)
    assert base64.b64decode(s.data["AUTHENTIK_SECRET_KEY"]).decode() == stack["secret_key"]
    assert base64.b64decode(s.data["AUTHENTIK_POSTGRESQL__PASSWORD"]).decode() == stack["postgres_password"]
    pg = v1.read_namespaced_secret("%s-postgresql" % RELEASE, NS)
    assert set(pg.data) == {"password", "postgres-password"}
    listed = v1.list_namespaced_secret(NS, label_selector="app.kubernetes.io/instance=%s,app.kubernetes.io/name=authentik"
                                       % RELEASE).items
    assert [x.metadata.name for x in listed] == [RELEASE]
    helm = v1.list_namespaced_secret(NS, label_selector="owner=helm,name=%s" % RELEASE).items
    assert helm[0].type == "helm.sh/release.v1"
    res = ansible(cluster, "kubernetes.core.k8s_info", kind="Secret", namespace=NS,
                  label_selectors=["app.kubernetes.io/name=postgresql"])
    assert not res.get("failed"), res
    assert [r["metadata"]["name"] for r in res["resources"]] == ["%s-postgresql" % RELEASE]


def _status(call, *args, **kwargs):
    """(HTTP status, Status message) of a call the server must refuse."""
    with pytest.raises(k8s_client.ApiException) as exc:
        call(*args, **kwargs)
    return exc.value.status, json.loads(exc.value.body)["message"]


def test_secret_writes_like_a_real_api_server(v1):
    name = "akbt-writes"
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": {"a": "1"}},
            "data": {"K": base64.b64encode(b"one").decode()}, "stringData": {"S": "plain"}}
    created = v1.create_namespaced_secret(NS, body)
    assert created.data == {"K": base64.b64encode(b"one").decode(), "S": base64.b64encode(b"plain").decode()}
    assert created.type == "Opaque" and created.metadata.uid and created.metadata.creation_timestamp
    assert _status(v1.create_namespaced_secret, NS, body)[0] == 409
    assert _status(v1.create_namespaced_secret, "akbt-no-such-namespace", body)[0] == 404

    # PUT: the whole object; a stale resourceVersion is a conflict, uid and creationTimestamp stay
    replaced = v1.replace_namespaced_secret(name, NS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS,
                                                           "resourceVersion": created.metadata.resource_version},
        "data": {"N": base64.b64encode(b"two").decode()}})
    assert replaced.data == {"N": base64.b64encode(b"two").decode()} and not replaced.metadata.labels
    assert replaced.metadata.uid == created.metadata.uid
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    stale = {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": name, "resourceVersion": created.metadata.resource_version}}
    assert _status(v1.replace_namespaced_secret, name, NS, stale)[0] == 409
    missing = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "akbt-missing"}}
    assert _status(v1.replace_namespaced_secret, "akbt-missing", NS, missing)[0] == 404
    for change, code, text in (
            ({"kind": "ConfigMap"}, 400, "kind ConfigMap"),
            ({"apiVersion": "rbac.authorization.k8s.io/v1"}, 400, "API version"),
            ({"metadata": {"name": "other"}}, 400, "does not match the name on the URL"),
            ({"metadata": {"name": name, "namespace": "kube-system"}}, 400, "namespace of the provided object"),
            ({"data": {"bad key": "eA=="}}, 422, "valid config key"),
            ({"data": {"K": "not base64"}}, 400, "base64"),
            ({"type": "kubernetes.io/service-account-token"}, 422, "field is immutable")):
        bad = dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}, **change)
        got, message = _status(v1.replace_namespaced_secret, name, NS, bad)
        assert got == code and text in message, (change, got, message)

    # PATCH: strategic merge (the client's default for a dict), JSON merge, JSON patch
    patched = v1.patch_namespaced_secret(name, NS, {"metadata": {"annotations": {"x": "y"}},
                                                    "data": {"N": None, "P": "cA=="}})
    assert patched.data == {"P": "cA=="} and patched.metadata.annotations == {"x": "y"}
    patched = v1.patch_namespaced_secret(name, NS, {"metadata": {"annotations": None, "labels": {"b": "2"}}},
                                         _content_type="application/merge-patch+json")
    assert patched.metadata.labels == {"b": "2"} and not patched.metadata.annotations
    patched = v1.patch_namespaced_secret(name, NS, [{"op": "add", "path": "/data/Q", "value": "cQ=="}])
    assert patched.data == {"P": "cA==", "Q": "cQ=="}
    assert v1.read_namespaced_secret(name, NS).data == patched.data

    # immutable: the data can no longer change; DELETE
    v1.patch_namespaced_secret(name, NS, {"immutable": True})
    assert _status(v1.patch_namespaced_secret, name, NS, {"data": {"P": "eA=="}})[0] == 422
    v1.delete_namespaced_secret(name, NS)
    assert _status(v1.read_namespaced_secret, name, NS)[0] == 404
    assert _status(v1.delete_namespaced_secret, name, NS)[0] == 404


def test_k8s_module_replaces_and_creates_secrets(cluster, v1):
    """kubernetes.core.k8s with force: true (GET, then PUT of the whole object, or POST when missing), in check
    mode a dry run that stores nothing."""
    name = "akbt-k8s-module"
    definition = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                  "type": "Opaque", "data": {"K": base64.b64encode(b"one").decode()}}
    res = ansible(cluster, "kubernetes.core.k8s", state="present", force=True, definition=definition)
    assert not res.get("failed") and res["method"] == "create", res
    definition["data"] = {"N": base64.b64encode(b"two").decode()}
    res = ansible(cluster, "kubernetes.core.k8s", state="present", force=True, definition=definition)
    assert not res.get("failed") and res["method"] == "replace" and res["changed"], res
    assert v1.read_namespaced_secret(name, NS).data == definition["data"]
    res, _run = ansible_run.run_module("kubernetes.core.k8s", check_mode=True, kubeconfig=cluster["kubeconfig"],
                                       home=os.path.join(cluster["work"], "ansible-home"), state="present",
                                       force=True, definition=dict(definition, data={}))
    assert not res.get("failed") and res["changed"], res
    assert v1.read_namespaced_secret(name, NS).data == definition["data"]
    requests = admin(cluster, "GET", "/_test/requests")
    assert ["PUT", f"/api/v1/namespaces/{NS}/secrets/{name}", "dryRun=All"] in requests
    v1.delete_namespaced_secret(name, NS)


def test_k8s_info_pods_by_labels(cluster):
    res = ansible(cluster, "kubernetes.core.k8s_info", kind="Pod", namespace=NS,
                  label_selectors=["app.kubernetes.io/instance=%s" % RELEASE, "app.kubernetes.io/name=postgresql",
                                   "app.kubernetes.io/component=primary"], field_selectors=["status.phase=Running"])
    assert not res.get("failed"), res
    assert [r["metadata"]["name"] for r in res["resources"]] == [PG_POD]
    res = ansible(cluster, "kubernetes.core.k8s_info", kind="Deployment", api_version="apps/v1", namespace=NS,
                  label_selectors=["app.kubernetes.io/name=authentik"])
    assert sorted(r["metadata"]["name"] for r in res["resources"]) == ["authentik-server", "authentik-worker"]
    images = {r["spec"]["template"]["spec"]["containers"][0]["image"] for r in res["resources"]}
    assert images == {"ghcr.io/goauthentik/server:2026.2.2"}


def _running(container):
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip() == "true"


def test_k8s_scale_stops_and_starts_containers(cluster, v1, apps):
    worker = cluster["stack"]["containers"]["worker"]
    assert _running(worker)
    res = ansible(cluster, "kubernetes.core.k8s_scale", kind="Deployment", api_version="apps/v1", namespace=NS,
                  name="authentik-worker", replicas=0, wait=True, wait_timeout=60, wait_sleep=1)
    assert res.get("changed") and not res.get("failed"), res
    assert not _running(worker)
    assert v1.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=worker").items == []
    d = apps.read_namespaced_deployment("authentik-worker", NS)
    assert d.spec.replicas == 0 and not d.status.replicas and not d.status.ready_replicas
    res = ansible(cluster, "kubernetes.core.k8s_scale", kind="Deployment", api_version="apps/v1", namespace=NS,
                  name="authentik-worker", replicas=1, wait=True, wait_timeout=60, wait_sleep=1)
    assert res.get("changed") and not res.get("failed"), res
    assert res["result"]["status"]["readyReplicas"] == 1
    assert _running(worker)
    pods = v1.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=worker").items
    assert [p.status.phase for p in pods] == ["Running"]
    # unchanged scale: not changed
    res = ansible(cluster, "kubernetes.core.k8s_scale", kind="Deployment", api_version="apps/v1", namespace=NS,
                  name="authentik-worker", replicas=1)
    assert res.get("changed") is False, res
    # the scale subresource through the typed client (strategic merge patch) and PUT
    sc = apps.read_namespaced_deployment_scale("authentik-worker", NS)
    assert sc.spec.replicas == 1 and sc.status.selector
    apps.patch_namespaced_deployment_scale("authentik-worker", NS, {"spec": {"replicas": 1}})


def test_exec_exit_code_on_channel_3(v1):
    out = exec_frames(v1, PG_POD, ["sh", "-c", "echo out; echo err >&2; exit 2"])
    assert out["stdout_size"] == 4
    assert out["stderr"] == b"err\n"
    status = json.loads(out["status"])
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "2"}]}
    assert status["message"].startswith("command terminated with non-zero exit code")
    assert out["frames"][0] == (b"\x01", 1)       # the kubelet's initial empty frame
    ok = exec_frames(v1, PG_POD, ["true"])
    assert ok["status"] == b'{"metadata":{},"status":"Success"}'
    # the usual update()/returncode path of the client
    resp = stream(v1.connect_get_namespaced_pod_exec, PG_POD, NS, command=["sh", "-c", "printf abc; exit 7"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    out = ""
    while resp.is_open():
        resp.update(timeout=5)
        out += resp.read_stdout(timeout=0) or ""
    assert out == "abc"
    assert resp.returncode == 7


def test_exec_runs_as_container_user_with_its_env(v1):
    out = stream(v1.connect_get_namespaced_pod_exec, PG_POD, NS, container="postgresql",
                 command=["sh", "-c", 'id -u; echo "$POSTGRES_USER"; PGPASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")" '
                          'pg_dumpall -h /var/run/postgresql -U "$POSTGRES_USER" --clean --if-exists '
                          '--exclude-database=template0 --exclude-database=template1 | tail -n 3'],
                 stderr=True, stdin=False, stdout=True, tty=False)
    lines = out.splitlines()
    assert lines[:2] == ["1001", "authentik"]
    assert "-- PostgreSQL database cluster dump complete" in out


def test_exec_256mib_binary_is_byte_identical(v1, capsys):
    pod = server_pod(v1)
    size = 256 << 20
    prep = stream(v1.connect_get_namespaced_pod_exec, pod, NS,
                  command=["sh", "-c", "head -c %d /dev/urandom > /tmp/akbt-blob && sha256sum /tmp/akbt-blob" % size],
                  stderr=True, stdin=False, stdout=True, tty=False)
    want = prep.split()[0]
    try:
        t0 = time.time()
        out = exec_frames(v1, pod, ["cat", "/tmp/akbt-blob"])
        dt = time.time() - t0
        assert out["stdout_size"] == size
        assert out["sha256"] == want
        assert json.loads(out["status"])["status"] == "Success"
        with capsys.disabled():
            print("\n[k8s exec] 256 MiB in %.2f s = %.0f MiB/s, %d frames" % (dt, size / dt / 2**20, len(out["frames"])))
    finally:
        stream(v1.connect_get_namespaced_pod_exec, pod, NS, command=["rm", "-f", "/tmp/akbt-blob"],
               stderr=True, stdin=False, stdout=True, tty=False)


def test_exec_stdin_v4_arrives_intact(v1):
    data = os.urandom(8 << 20) + bytes(range(256)) * 16
    resp = stream(v1.connect_get_namespaced_pod_exec, PG_POD, NS, command=["sh", "-c", "head -c %d | sha256sum" % len(data)],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False, binary=True)
    for i in range(0, len(data), 1 << 20):
        resp.write_stdin(data[i:i + (1 << 20)])
    resp.run_forever(timeout=60)
    rc = resp.returncode
    assert resp.read_all().split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert rc == 0


def _ws(cluster, pod, query, protocols):
    url = cluster["url"].replace("http://", "ws://") + "/api/v1/namespaces/%s/pods/%s/exec?%s" % (NS, pod, query)
    return websocket.create_connection(url, header=["Authorization: Bearer " + cluster["token"]], subprotocols=protocols)


def _drain(ws):
    out, status, frames = b"", None, 0
    while True:
        op, fr = ws.recv_data_frame(True)
        if op == ABNF.OPCODE_CLOSE:
            return out, status, frames
        frames += 1
        if fr.data[:1] == b"\x01":
            out += fr.data[1:]
        elif fr.data[:1] == b"\x03":
            status = fr.data[1:]


def test_exec_stdin_v5_close_and_text_frames(cluster):
    data = os.urandom(3 << 20)
    ws = _ws(cluster, PG_POD, "command=sh&command=-c&command=cat%20%7C%20sha256sum&stdin=true&stdout=true&stderr=true",
             ["v5.channel.k8s.io", "v4.channel.k8s.io"])
    assert ws.getsubprotocol() == "v5.channel.k8s.io"
    ws.send_binary(b"\x00" + data[:1000])
    ws.ping(b"x")
    ws.send_binary(b"\x00" + data[1000:])
    ws.send_binary(b"\xff\x00")      # v5: close stdin
    out, status, _err = _drain(ws)
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert status == b'{"metadata":{},"status":"Success"}'
    # v4, stdin as a TEXT frame
    ws = _ws(cluster, PG_POD, "command=head&command=-c&command=5&stdin=true&stdout=true&stderr=true",
             ["v4.channel.k8s.io"])
    assert ws.getsubprotocol() == "v4.channel.k8s.io"
    ws.send("\x00hello", opcode=ABNF.OPCODE_TEXT)
    out, status, _err = _drain(ws)
    assert out == b"hello" and status == b'{"metadata":{},"status":"Success"}'
    # unsupported protocol: refused
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        _ws(cluster, PG_POD, "command=true&stdout=true", ["channel.k8s.io"])
    assert exc.value.status_code == 400


def test_fault_knob_truncates_the_stream(cluster, v1):
    cut = 3_000_001
    admin(cluster, "POST", "/_test/faults", {"exec": {"cut_after_bytes": cut, "pod": PG_POD, "times": 1}})
    resp = stream(v1.connect_get_namespaced_pod_exec, PG_POD, NS, command=["sh", "-c", "head -c 50000000 /dev/zero"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False, binary=True)
    got, status = 0, None
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        while True:
            op, fr = resp.sock.recv_data_frame(True)
            if op == ABNF.OPCODE_CLOSE:
                status = "close frame"
                break
            if fr.data[:1] == b"\x01":
                got += len(fr.data) - 1
            elif fr.data[:1] == b"\x03":
                status = fr.data
    assert got == cut and status is None
    assert admin(cluster, "GET", "/_test/faults") == {}
    # the next exec is whole again
    assert exec_frames(v1, PG_POD, ["sh", "-c", "head -c 5000000 /dev/zero"])["stdout_size"] == 5_000_000


def test_exec_errors(v1):
    with pytest.raises(k8s_client.ApiException):
        stream(v1.connect_get_namespaced_pod_exec, PG_POD, NS, container="nope", command=["true"],
               stderr=True, stdin=False, stdout=True, tty=False)
    # a command that does not exist: non-zero exit code (126/127 from the runtime) on channel 3
    out = exec_frames(v1, PG_POD, ["/no/such/binary"])
    assert json.loads(out["status"])["status"] == "Failure"
