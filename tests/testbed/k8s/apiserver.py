#!/usr/bin/env python
"""A small Kubernetes API server for tests, backed by real Docker containers.

Not a cluster: it serves the few endpoints the collection uses, with the shapes the real
``kubernetes`` Python client and the kubernetes.core modules expect:

- discovery: /version, /api, /api/v1, /apis, /apis/apps, /apis/apps/v1 (404 elsewhere, e.g. /openapi/v2)
- namespaces, pods (list/get, labelSelector, fieldSelector), deployments and statefulsets (list/get, PATCH of
  spec.replicas, ``scale`` subresource GET/PATCH/PUT) with ``watch=true``
- secrets: list/get, and written as the real server does for what kubernetes.core.k8s sends: POST (create; 409 when
  it exists), PUT (replace; 404 when missing, 409 on a stale resourceVersion), PATCH (merge, strategic-merge,
  json-patch, apply-patch), DELETE; ``dryRun=All``; kind, apiVersion, name and namespace checked against the URL
  (400), keys, size and the immutable ``type`` / ``immutable`` checked (422); uid and creationTimestamp kept, a new
  resourceVersion on every change
- pod exec over WebSocket (``v4.channel.k8s.io``, ``v5.channel.k8s.io``), run in the pod's Docker
  container through the Docker Engine API (exec create, hijacked stream, exec inspect)
- test-only admin endpoints under /_test/ (faults, state dump, reload)

Only the standard library is used (PyYAML is used for a YAML state file if it is importable).
Bound to 127.0.0.1 only; every request needs ``Authorization: Bearer <token>``.

Run: ``python tests/testbed/k8s/apiserver.py --state state.json --kubeconfig kubeconfig [--port 0]``
It prints one JSON line ``{"url": ..., "kubeconfig": ..., "pid": ...}`` on stdout when it is ready.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import http.client
import http.server
import json
import os
import re
import secrets as _secrets
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import uuid

DOCKER_SOCK = os.environ.get("AKBT_DOCKER_SOCK", "/var/run/docker.sock")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
READ_CHUNK = 1 << 20          # bytes per recv from the Docker exec stream
MAX_WS_FRAME = 1 << 20        # upper bound of one outgoing WebSocket frame payload
COALESCE_MIN = 64 << 10      # below this, wait up to 2 x 1 ms for more data
COALESCE = 256 << 10          # gather up to this much of what Docker already sent before forwarding
K8S_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.4-akbt", "gitCommit": "0" * 40,
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0",
    "compiler": "gc", "platform": "linux/amd64",
}


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------
# Docker Engine API over the unix socket
# ----------------------------------------------------------------------------------------------

class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class DockerError(Exception):
    def __init__(self, status, message):
        super().__init__("docker API %s: %s" % (status, message))
        self.status = status
        self.message = message


class Docker:
    def __init__(self, sock_path=DOCKER_SOCK):
        self.sock_path = sock_path

    def request(self, method, path, body=None, timeout=60):
        conn = _UnixHTTPConnection(self.sock_path, timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status >= 400:
                try:
                    msg = json.loads(raw).get("message", raw.decode("utf-8", "replace"))
                except ValueError:
                    msg = raw.decode("utf-8", "replace")
                raise DockerError(resp.status, msg)
            if raw and resp.getheader("Content-Type", "").startswith("application/json"):
                return json.loads(raw)
            return raw
        finally:
            conn.close()

    def inspect(self, container):
        return self.request("GET", "/containers/%s/json" % urllib.parse.quote(container, safe=""))

    def start(self, container):
        self.request("POST", "/containers/%s/start" % urllib.parse.quote(container, safe=""))

    def stop(self, container, timeout=10):
        self.request("POST", "/containers/%s/stop?t=%d" % (urllib.parse.quote(container, safe=""), timeout),
                     timeout=timeout + 60)

    def exec_create(self, container, cmd, user=None, stdin=False, stdout=True, stderr=True, tty=False, env=None):
        body = {"AttachStdin": bool(stdin), "AttachStdout": bool(stdout), "AttachStderr": bool(stderr),
                "Tty": bool(tty), "Cmd": list(cmd)}
        if user:
            body["User"] = str(user)
        if env:
            body["Env"] = list(env)
        return self.request("POST", "/containers/%s/exec" % urllib.parse.quote(container, safe=""), body)["Id"]

    def exec_start_hijack(self, exec_id, tty=False):
        """POST /exec/{id}/start upgraded to a raw stream; returns (socket, already-read bytes)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock_path)
        body = jdump({"Detach": False, "Tty": bool(tty)}).encode()
        req = ("POST /exec/%s/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
               "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n" % (exec_id, len(body)))
        s.sendall(req.encode() + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                raise DockerError(0, "docker closed the exec start connection")
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status not in (101, 200):
            s.close()
            raise DockerError(status, head.decode("latin-1") + rest.decode("utf-8", "replace"))
        return s, rest

    def exec_inspect(self, exec_id):
        return self.request("GET", "/exec/%s/json" % exec_id)

    def exec_resize(self, exec_id, width, height):
        self.request("POST", "/exec/%s/resize?h=%d&w=%d" % (exec_id, int(height), int(width)))


# ----------------------------------------------------------------------------------------------
# Selectors
# ----------------------------------------------------------------------------------------------

class SelectorError(ValueError):
    pass


def _split_top(expr):
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s*\(([^)]*)\)$")
_EQ_RE = re.compile(r"^([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)$")
_KEY_RE = re.compile(r"^(!?)\s*([^\s!=()]+)$")


def parse_label_selector(expr):
    """Return a list of predicates over a labels dict (Kubernetes label selector syntax)."""
    reqs = []
    for part in _split_top(expr or ""):
        m = _SET_RE.match(part)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda l, k=key, v=vals: k in l and l[k] in v)
            else:
                reqs.append(lambda l, k=key, v=vals: k not in l or l[k] not in v)
            continue
        m = _EQ_RE.match(part)
        if m:
            key, op, val = m.groups()
            if op == "!=":
                reqs.append(lambda l, k=key, v=val: l.get(k) != v)
            else:
                reqs.append(lambda l, k=key, v=val: k in l and l[k] == v)
            continue
        m = _KEY_RE.match(part)
        if m:
            neg, key = m.groups()
            if neg:
                reqs.append(lambda l, k=key: k not in l)
            else:
                reqs.append(lambda l, k=key: k in l)
            continue
        raise SelectorError("unable to parse requirement: %r" % part)
    return reqs


def match_labels(reqs, labels):
    labels = labels or {}
    return all(r(labels) for r in reqs)


def parse_field_selector(expr, allowed):
    reqs = []
    for part in _split_top(expr or ""):
        m = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError("invalid field selector: %r" % part)
        field, op, val = m.groups()
        if field not in allowed:
            raise SelectorError('field label not supported: %s' % field)
        reqs.append((field, op != "!=", val))
    return reqs


def _get_path(obj, dotted):
    for p in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def match_fields(reqs, obj):
    for field, eq, val in reqs:
        got = _get_path(obj, field)
        got = "" if got is None else str(got)
        if (got == val) != eq:
            return False
    return True


def selector_string(match_labels_dict):
    return ",".join("%s=%s" % kv for kv in sorted((match_labels_dict or {}).items()))


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------

def load_state_file(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    text = raw.decode("utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml  # noqa: PLC0415 - optional dependency, only for YAML state files
        return yaml.safe_load(text) or {}
    return json.loads(text)


class State:
    """In-memory cluster state (see docs in tests/testbed/k8s/README.md)."""

    def __init__(self, data, docker):
        self.lock = threading.RLock()
        self.docker = docker
        self.rv = 1000
        self.load(data)

    def next_rv(self):
        with self.lock:
            self.rv += 1
            return str(self.rv)

    def load(self, data):
        with self.lock:
            data = copy.deepcopy(data or {})
            self.token = data.get("token") or "akbt-test-token"
            self.faults = data.get("faults") or {}
            self.namespaces = {}
            for ns in data.get("namespaces") or []:
                name = ns if isinstance(ns, str) else ns["name"]
                self.namespaces[name] = {"name": name, "uid": str(uuid.uuid4()), "rv": self.next_rv(),
                                         "labels": (ns.get("labels") if isinstance(ns, dict) else None) or {},
                                         "created": now_iso()}
            self.pods = {}
            for p in data.get("pods") or []:
                p = dict(p)
                p.setdefault("namespace", "default")
                p.setdefault("labels", {})
                p["uid"] = p.get("uid") or str(uuid.uuid4())
                p["rv"] = self.next_rv()
                p["created"] = p.get("created") or now_iso()
                p["_last_running"] = None
                self.pods[(p["namespace"], p["name"])] = p
                self._ensure_ns(p["namespace"])
            self.workloads = {"Deployment": {}, "StatefulSet": {}}
            for kind, key in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
                for w in data.get(key) or []:
                    w = dict(w)
                    w.setdefault("namespace", "default")
                    w.setdefault("labels", {})
                    w.setdefault("replicas", 1)
                    w.setdefault("selector", {"matchLabels": dict(w.get("template_labels") or w["labels"])})
                    w.setdefault("template_labels", dict(w["selector"].get("matchLabels") or {}))
                    w["uid"] = w.get("uid") or str(uuid.uuid4())
                    w["generation"] = int(w.get("generation") or 1)
                    w["rv"] = self.next_rv()
                    w["created"] = w.get("created") or now_iso()
                    w["kind"] = kind
                    w.setdefault("pods", [])
                    self.workloads[kind][(w["namespace"], w["name"])] = w
                    self._ensure_ns(w["namespace"])
                    for i, pname in enumerate(w["pods"]):
                        pod = self.pods.get((w["namespace"], pname))
                        if pod is None:
                            raise ValueError("%s %s lists unknown pod %s" % (kind, w["name"], pname))
                        pod["owner"] = {"kind": kind, "name": w["name"], "index": i}
            self.secrets = {}
            for s in data.get("secrets") or []:
                s = dict(s)
                s.setdefault("namespace", "default")
                s.setdefault("labels", {})
                s.setdefault("type", "Opaque")
                d = dict(s.get("data") or {})
                for k, v in (s.pop("stringData", None) or {}).items():
                    d[k] = base64.b64encode(v.encode()).decode()
                s["data"] = d
                s.setdefault("annotations", {})
                s["uid"] = s.get("uid") or str(uuid.uuid4())
                s["rv"] = self.next_rv()
                s["created"] = s.get("created") or now_iso()
                self.secrets[(s["namespace"], s["name"])] = s
                self._ensure_ns(s["namespace"])
            self.busy = {}   # docker container -> "starting" | "stopping"

    def _ensure_ns(self, name):
        if name not in self.namespaces:
            self.namespaces[name] = {"name": name, "uid": str(uuid.uuid4()), "rv": self.next_rv(), "labels": {},
                                     "created": now_iso()}

    # -- docker state -----------------------------------------------------------------------------
    def container_state(self, ref):
        try:
            info = self.docker.inspect(ref)
        except DockerError as exc:
            return {"exists": False, "running": False, "error": exc.message}
        st = info.get("State") or {}
        return {"exists": True, "running": bool(st.get("Running")) and not st.get("Paused"),
                "id": info.get("Id"), "image": (info.get("Config") or {}).get("Image"),
                "image_id": info.get("Image"), "user": (info.get("Config") or {}).get("User") or "",
                "started": st.get("StartedAt"), "finished": st.get("FinishedAt"),
                "exit_code": st.get("ExitCode"), "status": st.get("Status")}

    # -- rendering --------------------------------------------------------------------------------
    def _owner_desired(self, pod):
        owner = pod.get("owner")
        if not owner:
            return True
        w = self.workloads[owner["kind"]].get((pod["namespace"], owner["name"]))
        return w is None or owner["index"] < int(w["replicas"])

    def pod_visible(self, pod, cstates):
        if self._owner_desired(pod):
            return True
        # scaled away: visible while its container still runs (Terminating)
        return any(cs["running"] for cs in cstates)

    def render_pod(self, pod, cstates=None):
        if cstates is None:
            cstates = [self.container_state(c["docker"]) for c in pod["containers"]]
        running_all = all(cs["running"] for cs in cstates)
        desired = self._owner_desired(pod)
        busy = any(self.busy.get(c["docker"]) for c in pod["containers"])
        if running_all != pod.get("_last_running"):
            pod["_last_running"] = running_all
            pod["rv"] = self.next_rv()
        containers, statuses = [], []
        for c, cs in zip(pod["containers"], cstates):
            spec = {"name": c["name"], "image": c.get("image") or cs.get("image") or "unknown",
                    "imagePullPolicy": "IfNotPresent", "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
            for k in ("command", "args", "env", "envFrom", "ports", "volumeMounts", "securityContext"):
                if c.get(k) is not None:
                    spec[k] = copy.deepcopy(c[k])
            containers.append(spec)
            st = {"name": c["name"], "image": spec["image"],
                  "imageID": "docker-pullable://%s@%s" % (spec["image"].split(":")[0], cs.get("image_id") or ""),
                  "ready": cs["running"], "started": cs["running"], "restartCount": 0}
            if cs.get("id"):
                st["containerID"] = "docker://" + cs["id"]
            if cs["running"]:
                st["state"] = {"running": {"startedAt": (cs.get("started") or now_iso())[:19] + "Z"}}
            elif busy or (desired and pod.get("owner") and not cs["exists"]):
                st["state"] = {"waiting": {"reason": "ContainerCreating"}}
            else:
                ec = cs.get("exit_code") or 0
                st["state"] = {"terminated": {"exitCode": ec, "reason": "Completed" if ec == 0 else "Error",
                                              "finishedAt": (cs.get("finished") or now_iso())[:19] + "Z"}}
            statuses.append(st)
        if running_all:
            phase = "Running"
        elif busy and desired:
            phase = "Pending"
        else:
            phase = "Succeeded" if all((cs.get("exit_code") or 0) == 0 for cs in cstates) and \
                all(cs["exists"] for cs in cstates) else "Failed"
        ready = "True" if running_all else "False"
        meta = {"name": pod["name"], "namespace": pod["namespace"], "uid": pod["uid"],
                "resourceVersion": pod["rv"], "creationTimestamp": pod["created"],
                "labels": dict(pod["labels"])}
        if pod.get("annotations"):
            meta["annotations"] = dict(pod["annotations"])
        owner = pod.get("owner")
        if owner:
            w = self.workloads[owner["kind"]].get((pod["namespace"], owner["name"]))
            if w is not None:
                if owner["kind"] == "Deployment":
                    rs = pod.get("replicaset") or "%s-%s" % (w["name"], hashlib.sha1(w["uid"].encode()).hexdigest()[:10])
                    meta["generateName"] = rs + "-"
                    meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                                "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, rs)),
                                                "controller": True, "blockOwnerDeletion": True}]
                else:
                    meta["generateName"] = w["name"] + "-"
                    meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": w["name"],
                                                "uid": w["uid"], "controller": True, "blockOwnerDeletion": True}]
            if not self._owner_desired(pod):
                meta["deletionTimestamp"] = now_iso()
                meta["deletionGracePeriodSeconds"] = 30
        spec = {"containers": containers, "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst", "serviceAccountName": pod.get("serviceAccountName", "default"),
                "nodeName": pod.get("nodeName", "akbt-node-1"), "schedulerName": "default-scheduler",
                "securityContext": copy.deepcopy(pod.get("securityContext") or {})}
        if pod.get("volumes") is not None:
            spec["volumes"] = copy.deepcopy(pod["volumes"])
        if pod.get("hostname"):
            spec["hostname"] = pod["hostname"]
        conds = [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": pod["created"]}
                 for t, s in (("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", ready),
                              ("ContainersReady", ready), ("PodScheduled", "True"))]
        status = {"phase": phase, "conditions": conds, "hostIP": "127.0.0.1", "podIP": pod.get("podIP", "10.42.0.%d" % (1 + hash(pod["name"]) % 250)),
                  "startTime": pod["created"], "containerStatuses": statuses, "qosClass": "BestEffort"}
        return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}

    def visible_pods(self):
        out = []
        for pod in list(self.pods.values()):
            cstates = [self.container_state(c["docker"]) for c in pod["containers"]]
            if self.pod_visible(pod, cstates):
                out.append((pod, cstates))
        return out

    def workload_pods(self, w):
        pods = [self.pods[(w["namespace"], n)] for n in w["pods"]]
        return [(p, [self.container_state(c["docker"]) for c in p["containers"]]) for p in pods]

    def render_workload(self, w):
        pods = self.workload_pods(w)
        desired = int(w["replicas"])
        running = [i for i, (p, cs) in enumerate(pods) if all(c["running"] for c in cs)]
        existing = len(running)
        ready = len([i for i in running if i < desired])
        busy = any(self.busy.get(c["docker"]) for p, _kind in pods for c in p["containers"])
        sel = w["selector"]
        meta = {"name": w["name"], "namespace": w["namespace"], "uid": w["uid"], "resourceVersion": w["rv"],
                "generation": w["generation"], "creationTimestamp": w["created"], "labels": dict(w["labels"])}
        meta["annotations"] = dict(w.get("annotations") or {})
        if w["kind"] == "Deployment":
            meta["annotations"].setdefault("deployment.kubernetes.io/revision", "1")
        template = {"metadata": {"labels": dict(w["template_labels"])},
                    "spec": {"containers": [
                        {"name": c["name"], "image": c.get("image") or "unknown"}
                        for c in (self.pods[(w["namespace"], w["pods"][0])]["containers"] if w["pods"] else [])]}}
        if w["pods"]:
            template["spec"] = self.render_pod(self.pods[(w["namespace"], w["pods"][0])])["spec"]
            for k in ("nodeName", "hostname"):
                template["spec"].pop(k, None)
        spec = {"replicas": desired, "selector": copy.deepcopy(sel), "template": template,
                "revisionHistoryLimit": 10}
        status = {"observedGeneration": w["generation"]}
        if existing:
            status["replicas"] = existing
        if w["kind"] == "Deployment":
            spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
            spec["progressDeadlineSeconds"] = 600
            if existing:
                status["updatedReplicas"] = existing
            if ready:
                status["readyReplicas"] = ready
                status["availableReplicas"] = ready
            unavailable = max(0, desired - ready)
            if unavailable:
                status["unavailableReplicas"] = unavailable
            status["conditions"] = [
                {"type": "Available", "status": "True" if ready >= desired else "False",
                 "reason": "MinimumReplicasAvailable" if ready >= desired else "MinimumReplicasUnavailable",
                 "lastUpdateTime": w["created"], "lastTransitionTime": w["created"]},
                {"type": "Progressing", "status": "True",
                 "reason": "ReplicaSetUpdated" if busy else "NewReplicaSetAvailable",
                 "lastUpdateTime": w["created"], "lastTransitionTime": w["created"]}]
        else:
            spec["serviceName"] = w.get("serviceName") or w["name"] + "-hl"
            spec["podManagementPolicy"] = "OrderedReady"
            spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
            rev = "%s-%s" % (w["name"], hashlib.sha1(w["uid"].encode()).hexdigest()[:10])
            status["currentRevision"] = rev
            status["updateRevision"] = rev
            status["collisionCount"] = 0
            # StatefulSetStatus.replicas and availableReplicas have no omitempty in the real API
            status["replicas"] = existing
            status["availableReplicas"] = ready
            if existing:
                status["currentReplicas"] = existing
                status["updatedReplicas"] = existing
            if ready:
                status["readyReplicas"] = ready
        return {"kind": w["kind"], "apiVersion": "apps/v1", "metadata": meta, "spec": spec, "status": status}

    def render_scale(self, w):
        obj = self.render_workload(w)
        st = {"replicas": obj["status"].get("replicas", 0), "selector": selector_string(w["selector"].get("matchLabels"))}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": w["name"], "namespace": w["namespace"], "uid": w["uid"],
                             "resourceVersion": w["rv"], "creationTimestamp": w["created"]},
                "spec": {"replicas": int(w["replicas"])}, "status": st}

    def render_secret(self, s):
        meta = {"name": s["name"], "namespace": s["namespace"], "uid": s["uid"], "resourceVersion": s["rv"],
                "creationTimestamp": s["created"]}
        if s["labels"]:
            meta["labels"] = dict(s["labels"])
        if s.get("annotations"):
            meta["annotations"] = dict(s["annotations"])
        for key in ("ownerReferences", "finalizers"):
            if s.get(key):
                meta[key] = copy.deepcopy(s[key])
        obj = {"kind": "Secret", "apiVersion": "v1", "metadata": meta, "type": s["type"]}
        if s["data"]:
            obj["data"] = dict(s["data"])
        if s.get("immutable") is not None:
            obj["immutable"] = s["immutable"]
        return obj

    def render_namespace(self, ns):
        labels = dict(ns["labels"])
        labels.setdefault("kubernetes.io/metadata.name", ns["name"])
        return {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": ns["name"], "uid": ns["uid"], "resourceVersion": ns["rv"],
                             "creationTimestamp": ns["created"], "labels": labels},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    # -- scaling ----------------------------------------------------------------------------------
    def set_replicas(self, w, replicas):
        with self.lock:
            replicas = int(replicas)
            if replicas < 0:
                raise ValueError("replicas must be >= 0")
            if replicas > len(w["pods"]):
                raise ValueError("this test server can run at most %d replicas of %s (one per listed pod)"
                                 % (len(w["pods"]), w["name"]))
            if replicas != int(w["replicas"]):
                w["replicas"] = replicas
                w["generation"] += 1
                w["rv"] = self.next_rv()
            w["_want"] = replicas
            threading.Thread(target=self._reconcile, args=(w,), daemon=True).start()

    def _reconcile(self, w):
        # one reconcile at a time per workload; later calls see the newest desired count
        lock = w.setdefault("_lock", threading.Lock())
        with lock:
            desired = int(w["replicas"])
            for i, pname in enumerate(w["pods"]):
                pod = self.pods[(w["namespace"], pname)]
                for c in pod["containers"]:
                    ref = c["docker"]
                    try:
                        running = self.container_state(ref)["running"]
                        if i < desired and not running:
                            self.busy[ref] = "starting"
                            self.docker.start(ref)
                        elif i >= desired and running:
                            self.busy[ref] = "stopping"
                            self.docker.stop(ref, timeout=int(w.get("stop_timeout", 10)))
                    except DockerError as exc:
                        sys.stderr.write("reconcile %s/%s: %s\n" % (w["name"], ref, exc))
                    finally:
                        self.busy.pop(ref, None)
                pod["rv"] = self.next_rv()
            w["rv"] = self.next_rv()

    # -- faults -----------------------------------------------------------------------------------
    def take_exec_fault(self, ns, pod, container, command):
        """Return a fault dict for this exec (and consume one use), or None."""
        with self.lock:
            f = self.faults.get("exec") or None
            if not f:
                return None
            if f.get("pod") and f["pod"] != pod:
                return None
            if f.get("namespace") and f["namespace"] != ns:
                return None
            if f.get("container") and f["container"] != container:
                return None
            if f.get("command_contains") and f["command_contains"] not in " ".join(command):
                return None
            times = f.get("times", 1)
            if times is not None:
                times -= 1
                if times <= 0:
                    self.faults.pop("exec", None)
                else:
                    f["times"] = times
            return dict(f)


# ----------------------------------------------------------------------------------------------
# Discovery documents
# ----------------------------------------------------------------------------------------------

def _res(name, singular, kind, namespaced, verbs, short=None, group=None, version=None):
    r = {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": verbs}
    if short:
        r["shortNames"] = short
    if group is not None:
        r["group"] = group
        r["version"] = version
    if "/" not in name:
        r["storageVersionHash"] = base64.b64encode(hashlib.sha256(name.encode()).digest()[:8]).decode()
    return r


RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CORE_V1 = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    _res("namespaces", "namespace", "Namespace", False, ["create", "delete", "get", "list", "patch", "update", "watch"], ["ns"]),
    _res("pods", "pod", "Pod", True, RW, ["po"]),
    _res("pods/exec", "", "PodExecOptions", True, ["create", "get"]),
    _res("pods/log", "", "Pod", True, ["get"]),
    _res("pods/status", "", "Pod", True, ["get", "patch", "update"]),
    _res("secrets", "secret", "Secret", True, RW),
]}
APPS_V1 = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
    _res("deployments", "deployment", "Deployment", True, RW, ["deploy"]),
    _res("deployments/scale", "", "Scale", True, ["get", "patch", "update"], group="autoscaling", version="v1"),
    _res("deployments/status", "", "Deployment", True, ["get", "patch", "update"]),
    _res("statefulsets", "statefulset", "StatefulSet", True, RW, ["sts"]),
    _res("statefulsets/scale", "", "Scale", True, ["get", "patch", "update"], group="autoscaling", version="v1"),
    _res("statefulsets/status", "", "StatefulSet", True, ["get", "patch", "update"]),
]}
for _r in CORE_V1["resources"]:
    if _r["name"] in ("pods", "secrets"):
        _r["categories"] = ["all"] if _r["name"] == "pods" else None
        if _r["categories"] is None:
            del _r["categories"]
API_VERSIONS = {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
APPS_GROUP = {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
              "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}
API_GROUP_LIST = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [APPS_GROUP]}


def status_obj(code, reason, message, details=None):
    obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}
    if details:
        obj["details"] = details
    return obj


# ----------------------------------------------------------------------------------------------
# WebSocket helpers (RFC 6455, server side)
# ----------------------------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_header(opcode, length):
    b0 = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", b0, length)
    if length < 65536:
        return struct.pack("!BBH", b0, 126, length)
    return struct.pack("!BBQ", b0, 127, length)


def unmask(payload, mask):
    n = len(payload)
    if not n:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(m, "little")).to_bytes(n, "little")


class WSClosed(Exception):
    pass


class WSConn:
    """Server side of a WebSocket on an accepted socket (reads through the handler's buffered rfile)."""

    def __init__(self, sock, rfile):
        self.sock = sock
        self.rfile = rfile
        self.send_lock = threading.Lock()
        self.close_sent = False

    def _read_exact(self, n):
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise WSClosed("peer closed the connection")
        return data

    def recv_frame(self):
        """Return (opcode, fin, payload) of one frame."""
        b0, b1 = self._read_exact(2)
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        masked, length = b1 & 0x80, b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        mask = self._read_exact(4) if masked else None
        payload = self._read_exact(length) if length else b""
        if mask:
            payload = unmask(payload, mask)
        return opcode, fin, payload

    def recv_message(self):
        """Return (opcode, payload) of one message; control frames are returned as they come."""
        opcode, fin, payload = self.recv_frame()
        if opcode >= 0x8 or fin:
            return opcode, payload
        parts = [payload]
        while True:
            op2, fin2, p2 = self.recv_frame()
            if op2 >= 0x8:
                # control frame interleaved with a fragmented message: handle it inline
                if op2 == OP_PING:
                    self.send(OP_PONG, p2)
                    continue
                if op2 == OP_CLOSE:
                    return op2, p2
                continue
            parts.append(p2)
            if fin2:
                return opcode, b"".join(parts)

    def send(self, opcode, *payload_parts):
        length = sum(len(p) for p in payload_parts)
        data = b"".join((ws_header(opcode, length),) + payload_parts)
        with self.send_lock:
            if self.close_sent and opcode != OP_CLOSE:
                raise WSClosed("close already sent")
            self.sock.sendall(data)

    def send_close(self, code=1000, reason=b""):
        with self.send_lock:
            if self.close_sent:
                return
            self.close_sent = True
            payload = struct.pack("!H", code) + reason
            try:
                self.sock.sendall(ws_header(OP_CLOSE, len(payload)) + payload)
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------
# Exec session
# ----------------------------------------------------------------------------------------------

class ExecSession:
    def __init__(self, server_state, ws, protocol, container_ref, cmd, user, stdin, stdout, stderr, tty, fault):
        self.state = server_state
        self.docker = server_state.docker
        self.ws = ws
        self.protocol = protocol
        self.container_ref = container_ref
        self.cmd = cmd
        self.user = user
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty
        self.fault = fault
        self.dsock = None
        self.exec_id = None
        self.aborted = threading.Event()
        self.client_closed = threading.Event()
        self.stdin_closed = False
        self.stdin_lock = threading.Lock()
        self.stdout_sent = 0
        self.stats = {"stdout": 0, "stderr": 0, "stdin": 0, "frames": 0}

    # client -> server
    def reader(self):
        try:
            while not self.aborted.is_set():
                opcode, payload = self.ws.recv_message()
                if opcode in (OP_BIN, OP_TEXT):
                    if not payload:
                        continue
                    ch, data = payload[0], payload[1:]
                    if ch == 0:
                        if data and self.stdin:
                            self._write_stdin(data)
                    elif ch == 4:
                        self._resize(data)
                    elif ch == 255 and self.protocol == "v5.channel.k8s.io":
                        if data[:1] == b"\x00":
                            self._close_stdin()
                elif opcode == OP_PING:
                    try:
                        self.ws.send(OP_PONG, payload)
                    except (OSError, WSClosed):
                        pass
                elif opcode == OP_CLOSE:
                    # like the kubelet (wsstream): a client Close ends the session; stdin is closed and
                    # no further output is delivered
                    self.client_closed.set()
                    self._close_stdin()
                    self.ws.send_close(1000)
                    self.aborted.set()
                    self._shutdown_docker()
                    return
        except (WSClosed, OSError, ValueError):
            self.client_closed.set()
            if not self.ws.close_sent:
                # the client went away abruptly: stop streaming
                self.aborted.set()
                self._shutdown_docker()

    def _write_stdin(self, data):
        with self.stdin_lock:
            if self.stdin_closed or self.dsock is None:
                return
            try:
                self.dsock.sendall(data)
                self.stats["stdin"] += len(data)
            except OSError:
                self.stdin_closed = True

    def _close_stdin(self):
        with self.stdin_lock:
            if self.stdin_closed:
                return
            self.stdin_closed = True
            if self.dsock is not None and self.stdin:
                try:
                    self.dsock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _resize(self, data):
        try:
            size = json.loads(data)
            if self.exec_id and self.tty:
                self.docker.exec_resize(self.exec_id, size.get("Width", 80), size.get("Height", 24))
        except (ValueError, DockerError, AttributeError):
            pass

    def _shutdown_docker(self):
        if self.dsock is not None:
            try:
                self.dsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # server -> client
    def _emit(self, channel, segments):
        if not segments:
            return
        if channel == 1 and self.fault and self.fault.get("cut_after_bytes") is not None:
            limit = int(self.fault["cut_after_bytes"])
            total = sum(len(s) for s in segments)
            if self.stdout_sent + total >= limit:
                keep = limit - self.stdout_sent
                out, acc = [], 0
                for s in segments:
                    if acc >= keep:
                        break
                    out.append(s[: keep - acc])
                    acc += len(out[-1])
                if acc:
                    self.ws.send(OP_BIN, bytes([channel]), *out)
                    self.stdout_sent += acc
                raise _Cut()
        # split into frames of at most MAX_WS_FRAME
        batch, size = [], 0
        for s in segments:
            while len(s):
                room = MAX_WS_FRAME - size
                piece, s = s[:room], s[room:]
                batch.append(piece)
                size += len(piece)
                if size >= MAX_WS_FRAME:
                    self.ws.send(OP_BIN, bytes([channel]), *batch)
                    self.stats["frames"] += 1
                    batch, size = [], 0
        if batch:
            self.ws.send(OP_BIN, bytes([channel]), *batch)
            self.stats["frames"] += 1
        n = sum(len(s) for s in segments)
        if channel == 1:
            self.stdout_sent += n
            self.stats["stdout"] += n
        elif channel == 2:
            self.stats["stderr"] += n

    def run(self):
        """Run the exec; returns after the WebSocket is finished."""
        # initial empty frame on the lowest writable channel, like the kubelet
        first = 1 if self.stdout else (2 if self.stderr else 3)
        self.ws.send(OP_BIN, bytes([first]))
        try:
            self.exec_id = self.docker.exec_create(self.container_ref, self.cmd, user=self.user, stdin=self.stdin,
                                                   stdout=self.stdout, stderr=self.stderr, tty=self.tty)
            self.dsock, rest = self.docker.exec_start_hijack(self.exec_id, tty=self.tty)
        except DockerError as exc:
            self._send_status(status_internal(exc.message))
            return self._finish()
        rt = threading.Thread(target=self.reader, daemon=True)
        rt.start()
        cut = False
        try:
            self._pump(rest)
        except _Cut:
            cut = True
        except (OSError, WSClosed):
            self.aborted.set()
        if cut:
            # fault injection: drop the connection without a status frame or a Close frame
            self.aborted.set()
            self._shutdown_docker()
            try:
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.ws.sock.close()
            return
        if self.aborted.is_set():
            self._cleanup()
            return
        code = self._exit_code()
        if code is None:
            self._send_status(status_internal("could not read the exit code of exec %s" % self.exec_id))
        elif code == 0:
            self._send_status({"metadata": {}, "status": "Success"})
        else:
            self._send_status(status_exit(self.cmd, code))
        self._finish(rt)

    def _pump(self, rest):
        buf = bytearray(READ_CHUNK + 8)
        mv = memoryview(buf)
        sock = self.dsock
        if self.tty:
            if rest:
                self._emit(1, [bytes(rest)])
            while not self.aborted.is_set():
                n = sock.recv_into(mv, READ_CHUNK)
                if not n:
                    return
                self._emit(1, [mv[:n]])
            return
        cur_stream, cur_left = None, 0      # frame being forwarded
        hdr = bytearray(rest)               # bytes of a pending header, or initial leftovers
        end = 0
        if hdr:
            buf[: len(hdr)] = hdr
            end = len(hdr)
        pending = end > 0
        eof = False
        while not self.aborted.is_set():
            if not pending:
                n = sock.recv_into(mv[end:], READ_CHUNK)
                if not n:
                    return
                end += n
                eof = False
                # coalesce what is already available (Docker writes small frames) without waiting
                waits = 0
                while end < COALESCE:
                    try:
                        n = sock.recv_into(mv[end:], READ_CHUNK - end, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        # a busy stream: wait a moment for more (bigger frames are much cheaper for clients)
                        if end >= COALESCE_MIN or waits >= 2 or not select.select([sock], [], [], 0.001)[0]:
                            break
                        waits += 1
                        continue
                    if not n:
                        eof = True
                        break
                    end += n
            pending = False
            pos = 0
            segs = []   # (channel, memoryview)
            while pos < end:
                if cur_left == 0:
                    if end - pos < 8:
                        break
                    cur_stream = buf[pos]
                    cur_left = int.from_bytes(buf[pos + 4: pos + 8], "big")
                    pos += 8
                    continue
                take = min(cur_left, end - pos)
                ch = 2 if cur_stream == 2 else 1
                segs.append((ch, mv[pos: pos + take]))
                cur_left -= take
                pos += take
            # merge consecutive segments of one channel into frames
            group_ch, group = None, []
            for ch, s in segs:
                if ch != group_ch and group:
                    self._emit(group_ch, group)
                    group = []
                group_ch = ch
                group.append(s)
            if group:
                self._emit(group_ch, group)
            del segs, group
            # keep a partial header
            leftover = end - pos
            if leftover:
                buf[:leftover] = buf[pos:end]
            end = leftover
            if eof:
                return

    def _exit_code(self):
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                info = self.docker.exec_inspect(self.exec_id)
            except DockerError:
                return None
            if not info.get("Running"):
                return info.get("ExitCode")
            time.sleep(0.02)
        return None

    def _send_status(self, obj):
        try:
            self.ws.send(OP_BIN, b"\x03", jdump(obj).encode())
        except (OSError, WSClosed):
            pass

    def _finish(self, rt=None):
        self.ws.send_close(1000)
        if rt is not None:
            rt.join(timeout=5)
        self._cleanup()

    def _cleanup(self):
        if self.dsock is not None:
            try:
                self.dsock.close()
            except OSError:
                pass


class _Cut(Exception):
    pass


def status_exit(cmd, code):
    return {"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command [%s], exit code %d"
                       % (" ".join(cmd), code),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def status_internal(message):
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
            "details": {"causes": [{"message": message}]}, "code": 500}


# ----------------------------------------------------------------------------------------------
# HTTP handler
# ----------------------------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def not_found(kind, name, group=""):
    return ApiError(404, "NotFound", '%s "%s" not found' % (kind + ("." + group if group else ""), name),
                    {"name": name, "group": group, "kind": kind})


PLURAL = {"pods": "Pod", "secrets": "Secret", "namespaces": "Namespace", "deployments": "Deployment",
          "statefulsets": "StatefulSet"}


# -- writing Secrets ----------------------------------------------------------------------------------------------

SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_SECRET_BYTES = 1 << 20
MERGE_PATCH = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def invalid(kind, name, causes):
    """422 Invalid, as the API server reports failed validation: ``causes`` are (field, message)."""
    text = ", ".join("%s: %s" % c for c in causes)
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (kind, name, text),
                    {"name": name, "kind": kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]})


def merge_patch(target, patch, strategic=False):
    """RFC 7386 JSON merge patch; ``strategic`` also honours ``$patch: replace|delete`` in maps and drops the other
    ``$`` directives (a Secret has no lists with merge keys that matter here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic:
        directive = patch.get("$patch")
        if directive == "delete":
            return None
        if directive == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
            continue
        merged = merge_patch(out.get(key), value, strategic)
        if merged is None:
            out.pop(key, None)
        else:
            out[key] = merged
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", "json patch path %r is not a JSON pointer" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, test, copy, move)."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a json patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def parent(path):
        parts = _pointer(path)
        if not parts:
            raise ApiError(422, "Invalid", "json patch: the whole document cannot be the target")
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.get(part) if isinstance(node, dict) else None
            if node is None:
                raise ApiError(422, "Invalid", "json patch: path %s does not exist" % path)
        return node, parts[-1]

    def get(path):
        node, key = parent(path)
        try:
            return node[int(key)] if isinstance(node, list) else node[key]
        except (KeyError, IndexError, ValueError) as exc:
            raise ApiError(422, "Invalid", "json patch: path %s does not exist" % path) from exc

    def remove(path):
        node, key = parent(path)
        get(path)
        if isinstance(node, list):
            del node[int(key)]
        else:
            del node[key]

    def add(path, value):
        node, key = parent(path)
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else int(key), value)
        elif isinstance(node, dict):
            node[key] = value
        else:
            raise ApiError(422, "Invalid", "json patch: path %s does not exist" % path)

    for op in ops:
        kind, path = (op or {}).get("op"), (op or {}).get("path", "")
        if kind == "add":
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            get(path)
            remove(path)
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "test":
            if get(path) != op.get("value"):
                raise ApiError(422, "Invalid", "json patch: test of %s failed" % path)
        elif kind in ("copy", "move"):
            value = copy.deepcopy(get(op.get("from", "")))
            if kind == "move":
                remove(op.get("from", ""))
            add(path, value)
        else:
            raise ApiError(400, "BadRequest", "json patch: unknown operation %r" % (kind,))
    return doc


def _string_map(obj, field):
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise ApiError(400, "BadRequest", "%s: expected a map of strings to strings" % field)
    return dict(obj)


def secret_from_object(obj, ns, url_name, existing, generate=False):
    """The stored form of the Secret ``obj`` of a request to namespace ``ns`` (and ``url_name`` for PUT/PATCH),
    validated as the API server does: 400 for what it cannot decode or what contradicts the URL, 422 for what it
    decodes but refuses, 409 for a stale resourceVersion. Nothing is stored here."""
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body of the request is not a JSON object")
    for field, shown in (("kind", "Kind"), ("apiVersion", "apiVersion")):
        if not obj.get(field):
            raise ApiError(400, "BadRequest", "Object '%s' is missing in the request body" % shown)
    if obj["apiVersion"] != "v1":
        raise ApiError(400, "BadRequest", "the API version in the data (%s) does not match the expected API "
                       "version (v1)" % obj["apiVersion"])
    if obj["kind"] != "Secret":
        raise ApiError(400, "BadRequest", "the object provided is of kind %s, not Secret (the kind of the URL)"
                       % obj["kind"])
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ApiError(400, "BadRequest", "metadata: expected an object")
    name = meta.get("name") or ""
    if not name and generate and meta.get("generateName"):
        name = str(meta["generateName"]) + uuid.uuid4().hex[:5]
    if url_name is not None and name != url_name:
        raise ApiError(400, "BadRequest", "the name of the object (%s) does not match the name on the URL (%s)"
                       % (name, url_name))
    name = name or url_name or ""
    if meta.get("namespace") and meta["namespace"] != ns:
        raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent "
                       "on the request")
    if not name:
        raise invalid("Secret", "", [("metadata.name", "Required value: name or generateName is required")])
    if len(name) > 253 or not DNS_SUBDOMAIN_RE.match(name):
        raise invalid("Secret", name, [("metadata.name", "Invalid value: %r: a lowercase RFC 1123 subdomain" % name)])
    data = {}
    raw_data = obj.get("data")
    if raw_data is not None and not isinstance(raw_data, dict):
        raise ApiError(400, "BadRequest", "data: expected a map")
    decoded = 0
    for key, value in (raw_data or {}).items():
        if not isinstance(value, str):
            raise ApiError(400, "BadRequest", "data[%s]: expected a base64 string" % key)
        try:
            decoded_value = base64.b64decode(value, validate=True)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "BadRequest", "Secret in version \"v1\" cannot be handled as a Secret: illegal "
                           "base64 data in data[%s]" % key) from exc
        data[key] = base64.b64encode(decoded_value).decode()
        decoded += len(key) + len(decoded_value)
    for key, value in _string_map(obj.get("stringData"), "stringData").items():
        data[key] = base64.b64encode(value.encode()).decode()
        decoded += len(key) + len(value.encode())
    bad = [k for k in data if not SECRET_KEY_RE.match(k) or len(k) > 253]
    if bad:
        raise invalid("Secret", name, [("data[%s]" % k, "Invalid value: %r: a valid config key must consist of "
                                        "alphanumeric characters, '-', '_' or '.'" % k) for k in bad])
    if decoded > MAX_SECRET_BYTES:
        raise invalid("Secret", name, [("data", "Too long: must have at most %d bytes" % MAX_SECRET_BYTES)])
    stype = obj.get("type") or "Opaque"
    if not isinstance(stype, str):
        raise ApiError(400, "BadRequest", "type: expected a string")
    immutable = obj.get("immutable")
    if immutable is not None and not isinstance(immutable, bool):
        raise ApiError(400, "BadRequest", "immutable: expected a boolean")
    if existing is not None:
        rv = meta.get("resourceVersion")
        if rv and str(rv) != existing["rv"]:
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on secrets "%s": the object has been '
                           "modified; please apply your changes to the latest version and try again" % name,
                           {"name": name, "kind": "secrets"})
        if meta.get("uid") and meta["uid"] != existing["uid"]:
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on secrets "%s": Precondition failed: '
                           "UID in precondition: %s, UID in object meta: %s" % (name, meta["uid"], existing["uid"]))
        causes = []
        if stype != existing["type"]:
            causes.append(("type", "Invalid value: %r: field is immutable" % stype))
        if existing.get("immutable"):
            if data != existing["data"]:
                causes.append(("data", "Forbidden: field is immutable when `immutable` is set"))
            if not immutable:
                causes.append(("immutable", "Forbidden: field is immutable when `immutable` is set"))
        if causes:
            raise invalid("Secret", name, causes)
    for field in ("ownerReferences", "finalizers"):
        if meta.get(field) is not None and not isinstance(meta[field], list):
            raise ApiError(400, "BadRequest", "metadata.%s: expected a list" % field)
    return {"name": name, "namespace": ns, "labels": _string_map(meta.get("labels"), "metadata.labels"),
            "annotations": _string_map(meta.get("annotations"), "metadata.annotations"),
            "ownerReferences": copy.deepcopy(meta.get("ownerReferences") or []),
            "finalizers": list(meta.get("finalizers") or []), "type": stype, "data": data, "immutable": immutable,
            "uid": existing["uid"] if existing else str(uuid.uuid4()),
            "created": existing["created"] if existing else now_iso()}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "akbt-k8s-apiserver/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (now_iso(), fmt % args))

    # -- plumbing ---------------------------------------------------------------------------------
    def _send_json(self, code, obj, extra_headers=None):
        body = jdump(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, exc):
        self._send_json(exc.code, status_obj(exc.code, exc.reason, exc.message, exc.details))

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _auth_ok(self):
        want = "Bearer " + self.server.state.token
        got = self.headers.get("Authorization", "")
        return _secrets.compare_digest(got.strip().encode(), want.encode())

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        self.server.counters[method] = self.server.counters.get(method, 0) + 1
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        path = parsed.path.rstrip("/") or "/"
        self.server.request_log.append((method, parsed.path, parsed.query))
        if len(self.server.request_log) > 2000:
            del self.server.request_log[:1000]
        try:
            body = self._body() if method in ("POST", "PATCH", "PUT", "DELETE") and not self._is_upgrade() else b""
            if not self._auth_ok():
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(method, path, query, body)
        except ApiError as exc:
            self._error(exc)
        except SelectorError as exc:
            self._error(ApiError(400, "BadRequest", str(exc)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _is_upgrade(self):
        return "upgrade" in self.headers.get("Connection", "").lower()

    # -- routing ----------------------------------------------------------------------------------
    def _route(self, method, path, query, body):
        st = self.server.state
        if path.startswith("/_test"):
            return self._admin(method, path, body)
        if method == "GET":
            if path == "/version":
                return self._send_json(200, K8S_VERSION)
            if path == "/api":
                return self._send_json(200, API_VERSIONS)
            if path == "/apis":
                return self._send_json(200, API_GROUP_LIST)
            if path == "/api/v1":
                return self._send_json(200, CORE_V1)
            if path == "/apis/apps":
                return self._send_json(200, dict(APPS_GROUP, kind="APIGroup", apiVersion="v1"))
            if path == "/apis/apps/v1":
                return self._send_json(200, APPS_V1)
            if path in ("/healthz", "/readyz", "/livez"):
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(body)
                return None
        parts = path.strip("/").split("/")
        # /api/v1/... or /apis/apps/v1/...
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:3] == ["apis", "apps", "v1"]:
            group, rest = "apps", parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = None
        if len(rest) >= 2 and rest[0] == "namespaces" and (len(rest) > 2 or group == "apps"):
            ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        allowed = {"": ("pods", "secrets", "namespaces"), "apps": ("deployments", "statefulsets")}[group]
        if resource not in allowed or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if ns is not None and resource != "namespaces" and ns not in st.namespaces and method == "GET" and name:
            raise not_found(PLURAL[resource], name, group)
        if resource == "namespaces":
            return self._namespaces(method, name, query)
        if resource == "pods":
            if sub == "exec":
                return self._exec(method, ns, name, query)
            if sub is not None and sub != "status":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._pods(method, ns, name, query)
        if resource == "secrets":
            if sub is not None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._secrets(method, ns, name, query, body)
        kind = PLURAL[resource]
        return self._workloads(method, kind, ns, name, sub, query, body)

    def _require_get(self, method):
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _list(self, kind, items, query, render, field_allowed):
        labels = parse_label_selector((query.get("labelSelector") or [""])[0])
        fields = parse_field_selector((query.get("fieldSelector") or [""])[0], field_allowed)
        out = []
        for it in items:
            obj = render(it)
            if match_labels(labels, obj["metadata"].get("labels")) and match_fields(fields, obj):
                obj.pop("kind", None)
                obj.pop("apiVersion", None)
                out.append(obj)
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        api_version = "apps/v1" if kind in ("Deployment", "StatefulSet") else "v1"
        return {"kind": kind + "List", "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self.server.state.rv)}, "items": out}

    def _maybe_watch(self, query, kind, lister):
        if (query.get("watch") or ["false"])[0].lower() not in ("true", "1"):
            return False
        timeout = float((query.get("timeoutSeconds") or ["30"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True

        def chunk(obj):
            data = (jdump(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        seen = {}
        deadline = time.time() + timeout
        first = True
        try:
            while True:
                with self.server.state.lock:
                    current = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in lister()}
                for key, obj in current.items():
                    obj = dict(obj, kind=kind, apiVersion="apps/v1" if kind in ("Deployment", "StatefulSet") else "v1")
                    if key not in seen:
                        chunk({"type": "ADDED", "object": obj})
                    elif seen[key] != obj["metadata"]["resourceVersion"]:
                        chunk({"type": "MODIFIED", "object": obj})
                    seen[key] = obj["metadata"]["resourceVersion"]
                for key in [k for k in seen if k not in current]:
                    chunk({"type": "DELETED", "object": {"kind": kind, "metadata": {"namespace": key[0], "name": key[1]}}})
                    del seen[key]
                first = False
                if time.time() >= deadline:
                    break
                time.sleep(0.25)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        del first
        return True

    def _namespaces(self, method, name, query):
        self._require_get(method)
        st = self.server.state
        with st.lock:
            if name:
                ns = st.namespaces.get(name)
                if ns is None:
                    raise not_found("namespaces", name)
                return self._send_json(200, st.render_namespace(ns))
            return self._send_json(200, self._list("Namespace", list(st.namespaces.values()), query,
                                                   st.render_namespace, ("metadata.name",)))

    def _pods(self, method, ns, name, query):
        self._require_get(method)
        st = self.server.state
        fields = ("metadata.name", "metadata.namespace", "status.phase", "spec.nodeName")
        if name:
            with st.lock:
                pod = st.pods.get((ns, name))
                cst = [st.container_state(c["docker"]) for c in pod["containers"]] if pod else None
                if pod is None or not st.pod_visible(pod, cst):
                    raise not_found("pods", name)
                return self._send_json(200, st.render_pod(pod, cst))

        def lister():
            items = [st.render_pod(p, cs) for p, cs in st.visible_pods() if ns is None or p["namespace"] == ns]
            return self._list("Pod", items, query, copy.deepcopy, fields)["items"]

        if self._maybe_watch(query, "Pod", lister):
            return None
        with st.lock:
            items = [(p, cs) for p, cs in st.visible_pods() if ns is None or p["namespace"] == ns]
            return self._send_json(200, self._list("Pod", items, query, lambda pc: st.render_pod(*pc), fields))

    def _secrets(self, method, ns, name, query, body):
        st = self.server.state
        if method == "GET":
            with st.lock:
                if name:
                    s = st.secrets.get((ns, name))
                    if s is None:
                        raise not_found("secrets", name)
                    return self._send_json(200, st.render_secret(s))
                items = [s for s in st.secrets.values() if ns is None or s["namespace"] == ns]
                return self._send_json(200, self._list("Secret", items, query, st.render_secret,
                                                       ("metadata.name", "metadata.namespace", "type")))
        if ns is None or (method == "POST") == bool(name) or method not in ("POST", "PUT", "PATCH", "DELETE"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        dry_run = "All" in (query.get("dryRun") or [])
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        with st.lock:
            if ns not in st.namespaces:
                raise not_found("namespaces", ns)
            existing = st.secrets.get((ns, name)) if name else None
            if method == "DELETE":
                return self._delete_secret(ns, name, existing, body, dry_run)
            doc = self._secret_body(method, ctype, body, query)
            code = 200
            if method == "POST":
                new = secret_from_object(doc, ns, None, None, generate=True)
                if (ns, new["name"]) in st.secrets:
                    raise ApiError(409, "AlreadyExists", 'secrets "%s" already exists' % new["name"],
                                   {"name": new["name"], "kind": "secrets"})
                code = 201
            elif existing is None:
                if method == "PATCH" and ctype == APPLY_PATCH:
                    new, code = secret_from_object(doc, ns, name, None), 201
                else:
                    raise not_found("secrets", name)
            elif method == "PUT":
                new = secret_from_object(doc, ns, name, existing)
            else:
                current = st.render_secret(existing)
                if ctype == JSON_PATCH:
                    patched = json_patch(current, doc)
                else:
                    patched = merge_patch(current, doc, strategic=ctype != MERGE_PATCH[0])
                # a resourceVersion in the patch is a precondition; the current one is not
                if not ((doc.get("metadata") or {}).get("resourceVersion") if isinstance(doc, dict) else None):
                    (patched.get("metadata") or {}).pop("resourceVersion", None)
                new = secret_from_object(patched, ns, name, existing)
            if existing is not None and new["data"] == existing["data"] and all(
                    (new[k] or None) == (existing.get(k) or None)
                    for k in ("labels", "annotations", "ownerReferences", "finalizers", "type", "immutable")):
                new["rv"] = existing["rv"]  # no change: no new resourceVersion, as the real server
            else:
                new["rv"] = existing["rv"] if dry_run and existing else st.next_rv()
            if not dry_run:
                st.secrets[(ns, new["name"])] = new
            return self._send_json(code, st.render_secret(new))

    def _secret_body(self, method, ctype, body, query):
        """The JSON (or, for apply-patch, YAML) document of a write, with the media types the server accepts."""
        if method == "PATCH" and ctype not in MERGE_PATCH + (JSON_PATCH, APPLY_PATCH):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml")
        if method != "PATCH" and ctype not in ("application/json", "*/*"):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json, application/yaml")
        if ctype == APPLY_PATCH and not (query.get("fieldManager") or [""])[0]:
            raise ApiError(400, "BadRequest", "PATCH /apply requires fieldManager to be set")
        try:
            text = body.decode("utf-8")
            if ctype == APPLY_PATCH:
                try:
                    return json.loads(text)
                except ValueError:
                    import yaml  # noqa: PLC0415 - optional dependency, only for apply patches in YAML
                    return yaml.safe_load(text)
            return json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "BadRequest", "invalid body: %s" % exc) from exc

    def _delete_secret(self, ns, name, existing, body, dry_run):
        st = self.server.state
        if existing is None:
            raise not_found("secrets", name)
        try:
            options = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "BadRequest", "invalid body: %s" % exc) from exc
        pre = (options or {}).get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != existing["uid"]) or (
                pre.get("resourceVersion") and str(pre["resourceVersion"]) != existing["rv"]):
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on secrets "%s": Precondition failed'
                           % name, {"name": name, "kind": "secrets"})
        if not dry_run:
            del st.secrets[(ns, name)]
        return self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                     "details": {"name": name, "kind": "secrets", "uid": existing["uid"]}})

    def _workloads(self, method, kind, ns, name, sub, query, body):
        st = self.server.state
        plural = kind.lower() + "s"
        fields = ("metadata.name", "metadata.namespace")
        if not name:
            self._require_get(method)

            def lister():
                items = [w for w in st.workloads[kind].values() if ns is None or w["namespace"] == ns]
                return self._list(kind, items, query, st.render_workload, fields)["items"]

            if self._maybe_watch(query, kind, lister):
                return None
            with st.lock:
                items = [w for w in st.workloads[kind].values() if ns is None or w["namespace"] == ns]
                return self._send_json(200, self._list(kind, items, query, st.render_workload, fields))
        with st.lock:
            w = st.workloads[kind].get((ns, name))
            if w is None:
                raise not_found(plural, name, "apps")
            if sub not in (None, "scale", "status"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if method == "GET":
                return self._send_json(200, st.render_scale(w) if sub == "scale" else st.render_workload(w))
            if sub == "status":
                raise ApiError(405, "MethodNotAllowed", "status updates are not supported by this test server")
            if method not in ("PATCH", "PUT"):
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            replicas = self._replicas_from_body(method, body, int(w["replicas"]))
            try:
                st.set_replicas(w, replicas)
            except ValueError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
            return self._send_json(200, st.render_scale(w) if sub == "scale" else st.render_workload(w))

    def _replicas_from_body(self, method, body, current):
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        try:
            text = body.decode("utf-8")
            if ctype == "application/apply-patch+yaml":
                try:
                    doc = json.loads(text)
                except ValueError:
                    import yaml  # noqa: PLC0415
                    doc = yaml.safe_load(text)
            else:
                doc = json.loads(text) if text.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "BadRequest", "invalid body: %s" % exc) from exc
        if method == "PATCH" and ctype == "application/json-patch+json":
            replicas = current
            for op in doc if isinstance(doc, list) else []:
                if op.get("path") == "/spec/replicas" and op.get("op") in ("replace", "add"):
                    replicas = op.get("value")
            return self._check_replicas(replicas)
        if method == "PATCH" and ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                                               "application/apply-patch+yaml"):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml")
        spec = (doc or {}).get("spec") if isinstance(doc, dict) else None
        if not isinstance(spec, dict) or "replicas" not in spec:
            if method == "PUT":
                raise ApiError(422, "Invalid", "spec.replicas: Required value")
            return current
        return self._check_replicas(spec["replicas"])

    @staticmethod
    def _check_replicas(value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ApiError(422, "Invalid", "spec.replicas: Invalid value: %r: must be a non-negative integer" % (value,))
        return value

    # -- exec -------------------------------------------------------------------------------------
    def _exec(self, method, ns, name, query):
        st = self.server.state
        if method not in ("GET", "POST"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

        def flag(k):
            return (query.get(k) or ["false"])[-1].lower() in ("true", "1")

        cmd = query.get("command") or []
        stdin, stdout, stderr, tty = flag("stdin"), flag("stdout"), flag("stderr"), flag("tty")
        with st.lock:
            pod = st.pods.get((ns, name))
            cst = [st.container_state(c["docker"]) for c in pod["containers"]] if pod else None
            if pod is None or not st.pod_visible(pod, cst):
                raise not_found("pods", name)
            cname = (query.get("container") or [""])[-1]
            names = [c["name"] for c in pod["containers"]]
            if not cname:
                if len(names) != 1:
                    raise ApiError(400, "BadRequest", "a container name must be specified for pod %s, choose one of: [%s]"
                                   % (name, " ".join(names)))
                cname = names[0]
            if cname not in names:
                raise ApiError(400, "BadRequest", "container %s is not valid for pod %s" % (cname, name))
            idx = names.index(cname)
            c = pod["containers"][idx]
            if not cst[idx]["running"]:
                raise ApiError(400, "BadRequest", "container %s is not running in pod %s" % (cname, name))
        if not cmd:
            raise ApiError(400, "BadRequest", "you must specify at least 1 command")
        if not (stdin or stdout or stderr):
            raise ApiError(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
        if tty and stderr:
            stderr = False   # like the kubelet: with a TTY stderr is merged into stdout
        if not (self.headers.get("Upgrade", "").lower() == "websocket" and self._is_upgrade()):
            raise ApiError(400, "BadRequest", "Upgrade request required")
        offered = [p.strip() for p in ",".join(self.headers.get_all("Sec-WebSocket-Protocol") or []).split(",") if p.strip()]
        protocol = next((p for p in offered if p in SUPPORTED_WS_PROTOCOLS), None)
        if protocol is None:
            raise ApiError(400, "BadRequest", "requested protocol(s) are not supported: %s; supports %s"
                           % (offered, list(SUPPORTED_WS_PROTOCOLS)))
        key = self.headers.get("Sec-WebSocket-Key", "")
        if not key:
            raise ApiError(400, "BadRequest", "missing Sec-WebSocket-Key")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        fault = st.take_exec_fault(ns, name, cname, cmd)
        self.send_response_only(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        sock = self.connection
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ws = WSConn(sock, self.rfile)
        sess = ExecSession(st, ws, protocol, c["docker"], cmd, c.get("user"), stdin, stdout, stderr, tty, fault)
        t0 = time.time()
        try:
            sess.run()
        except (OSError, WSClosed):
            pass
        self.server.exec_log.append({"pod": name, "namespace": ns, "container": cname, "command": cmd,
                                     "protocol": protocol, "seconds": round(time.time() - t0, 3),
                                     "fault": bool(fault), **sess.stats})
        return None

    # -- admin ------------------------------------------------------------------------------------
    def _admin(self, method, path, body):
        st = self.server.state
        if path == "/_test/faults":
            if method == "GET":
                return self._send_json(200, st.faults)
            if method in ("POST", "PUT"):
                with st.lock:
                    st.faults = json.loads(body or b"{}")
                return self._send_json(200, st.faults)
            if method == "DELETE":
                with st.lock:
                    st.faults = {}
                return self._send_json(200, {})
        if path == "/_test/exec-log" and method == "GET":
            return self._send_json(200, list(self.server.exec_log))
        if path == "/_test/requests" and method == "GET":
            return self._send_json(200, [list(r) for r in self.server.request_log])
        if path == "/_test/reload" and method == "POST":
            st.load(load_state_file(self.server.state_path))
            return self._send_json(200, {"reloaded": True})
        raise ApiError(404, "NotFound", "unknown admin endpoint")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def make_server(state_data, port=0, state_path=None, verbose=False, docker_sock=DOCKER_SOCK):
    srv = Server(("127.0.0.1", port), Handler)
    srv.state = State(state_data, Docker(docker_sock))
    srv.state_path = state_path
    srv.verbose = verbose
    srv.counters = {}
    srv.request_log = []
    srv.exec_log = []
    return srv


def kubeconfig_text(url, token, namespace="default", name="akbt"):
    cfg = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name + "-user", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name + "-user", "namespace": namespace}}],
        "current-context": name,
    }
    return json.dumps(cfg, indent=2) + "\n"   # JSON is valid YAML


def write_kubeconfig(path, url, token, namespace="default"):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(kubeconfig_text(url, token, namespace))
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--state", required=True, help="state file (JSON, or YAML with .yaml/.yml)")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: ephemeral)")
    ap.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    ap.add_argument("--namespace", help="default namespace of the kubeconfig context")
    ap.add_argument("--ready-file", help="write the ready JSON line to this file too")
    ap.add_argument("--docker-sock", default=DOCKER_SOCK)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    data = load_state_file(args.state)
    srv = make_server(data, args.port, args.state, args.verbose, args.docker_sock)
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    ns = args.namespace or data.get("default_namespace") or next(iter(srv.state.namespaces), "default")
    if args.kubeconfig:
        write_kubeconfig(args.kubeconfig, url, srv.state.token, ns)
    info = jdump({"url": url, "kubeconfig": args.kubeconfig, "pid": os.getpid()})
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as fh:
            fh.write(info + "\n")
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(info, flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
