#!/usr/bin/env python
"""Helm-like authentik deployments backed by real Docker containers, for the test API server.

``python tests/testbed/k8s/helm_stacks.py up --layout current|legacy --release NAME --namespace NS [--state PATH]``
creates the containers (all ``--network none``, names ``akbt-k8s-<ns>-<release>-...``) and merges the
objects the goauthentik chart (and its bitnami postgresql/redis subcharts) would create into the state
file read by apiserver.py. ``down`` removes them again.

Importable: ``up(layout, release, namespace, state_path)``, ``down(...)``, ``start_server(state)`` and
``stop_server(process)``.

Not a chart render: names and labels follow the charts (``authentik.fullname`` is the release name when it
contains "authentik", else ``<release>-authentik``; the subcharts use ``<release>-postgresql`` and
``<release>-redis-master``), images are the akbt.local stand-ins, reported with their real names.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import secrets as _secrets
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APISERVER = os.path.join(HERE, "apiserver.py")
DEFAULT_STATE = os.environ.get("AKBT_K8S_STATE", "/tmp/akbt-k8s/state.json")
DOCKER = os.environ.get("DOCKER", "docker")

LAYOUTS = {
    "current": {"version": "2026.2.2", "chart": "2026.2.2", "data_path": "/data", "redis": False},
    "legacy": {"version": "2025.2.4", "chart": "2025.2.4", "data_path": "/media", "redis": True},
}
PG_IMAGE = "akbt.local/postgres:15"
REDIS_IMAGE = "akbt.local/redis:7"
PG_REPORTED = "docker.io/bitnami/postgresql:15.4.0-debian-11-r45"
REDIS_REPORTED = "docker.io/bitnami/redis:7.2.4-debian-12-r9"
PG_SECRET_DIR = "/opt/bitnami/postgresql/secrets"

# sample data: non-UTF-8 bytes and unicode (bytes are given as hex so the SQL stays ASCII-safe)
SAMPLE_SQL = r"""
CREATE TABLE IF NOT EXISTS akbt_sample (id integer PRIMARY KEY, label text NOT NULL, blob bytea NOT NULL);
INSERT INTO akbt_sample VALUES
  (1, 'plain ascii', '\x00010203'::bytea),
  (2, convert_from('\x4772c3bc c39f 6520e29c93 20e697a5e69cace8aa9e f09f9490'::bytea, 'UTF8'), '\xff00fe80c328a0a1e28228'::bytea),
  (3, 'tab	and ''quote'' and \backslash', decode(repeat('deadbeef', 64), 'hex'))
ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS authentik_core_user (id serial PRIMARY KEY, username text UNIQUE, name text);
INSERT INTO authentik_core_user (username, name) VALUES ('akadmin', 'authentik Default Admin'), ('jürgen', 'Jürgen Ölmann ✓')
ON CONFLICT (username) DO NOTHING;
"""
SAMPLE_REDIS = [("authentik_session_1", "s\u00e9ssion-\u2713"), ("goauthentik.io/cache/x", "42"), ("akbt:counter", "7")]


def _run(args, check=True, input_=None):
    p = subprocess.run(args, input=input_, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr.decode(errors="replace")))
    return p


def docker(*args, check=True, input_=None):
    return _run([DOCKER, *args], check=check, input_=input_)


def fullname(release):
    return release if "authentik" in release else "%s-authentik" % release


def _b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _suffix(seed, n):
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    h = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    out = ""
    for _i in range(n):
        h, r = divmod(h, len(alphabet))
        out += alphabet[r]
    return out


def _names(release, namespace):
    base = "akbt-k8s-%s-%s" % (namespace, release)
    return {
        "pg": base + "-postgresql-0", "redis": base + "-redis-master-0",
        "server": base + "-server", "worker": base + "-worker",
        "vol_pg": base + "-postgresql-data", "vol_redis": base + "-redis-data",
        "vol_data": base + "-data", "vol_templates": base + "-templates",
    }


def _workdir(release, namespace):
    return os.path.join(os.path.dirname(DEFAULT_STATE) or "/tmp/akbt-k8s", "%s-%s" % (namespace, release))


def _wait(fn, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if fn():
                return
        except RuntimeError as exc:
            last = exc
        time.sleep(0.3)
    raise RuntimeError("timed out waiting for %s (%s)" % (what, last))


def _chown_volume(vol, uid, image):
    docker("run", "--rm", "--network", "none", "--name", vol + "-init", "--user", "0:0", "--entrypoint", "/bin/sh",
           "-v", "%s:/v" % vol, image, "-c", "chown %s:%s /v && chmod 0775 /v" % (uid, uid))


def _label_args(release, namespace):
    """``--label`` arguments that mark a release's containers and volumes (``down`` finds them by these)."""
    labels = {"akbt.k8s": "1", "akbt.k8s.release": release, "akbt.k8s.namespace": namespace}
    args = []
    for k, v in labels.items():
        args += ["--label", "%s=%s" % (k, v)]
    return args


def _run_postgres(container, release, volume, sec_dir, lab_args, image):
    """Create ``volume`` when missing and run the bitnami-like PostgreSQL container of a release on it."""
    if docker("volume", "inspect", volume, check=False).returncode != 0:
        docker("volume", "create", *lab_args, volume)
        _chown_volume(volume, 1001, image)
    docker("run", "-d", "--network", "none", "--name", container, "--hostname", "%s-postgresql-0" % release,
           *lab_args, "--user", "1001:1001", "--read-only",
           "--tmpfs", "/tmp:rw,mode=1777", "--tmpfs", "/var/run/postgresql:rw,mode=1777",
           "-v", "%s:/bitnami/postgresql" % volume, "-v", "%s:%s:ro" % (sec_dir, PG_SECRET_DIR),
           "-e", "AKBT_LOCAL_AUTH=scram", "-e", "POSTGRES_USER=authentik",
           "-e", "POSTGRES_PASSWORD_FILE=%s/password" % PG_SECRET_DIR,
           "-e", "POSTGRES_POSTGRES_PASSWORD_FILE=%s/postgres-password" % PG_SECRET_DIR,
           "-e", "POSTGRES_DB=authentik", "-e", "PGDATA=/bitnami/postgresql/data",
           "-e", "BITNAMI_APP_NAME=postgresql", "-e", "POSTGRESQL_PORT_NUMBER=5432",
           "-e", "HOME=/tmp",
           image)


def _pg_ready(container, timeout=90):
    def ready():
        return docker("exec", container, "pg_isready", "-q", "-h", "/var/run/postgresql", "-U", "authentik",
                      "-d", "authentik", check=False).returncode == 0
    _wait(ready, timeout, "postgresql in %s" % container)


def set_postgres(release="authentik", namespace="authentik", state_path=DEFAULT_STATE, image=PG_IMAGE,
                 volume=None, reported=PG_REPORTED, chart_version="15.4.0"):
    """What ``helm upgrade`` (or ``helm rollback``) of the database does: the pod's container is replaced by one of
    ``image`` on ``volume`` (a new, empty one is initialised by the image with the release's credentials; the
    original volume is kept), and the pod reports ``reported``. Returns the volume. The running test API server
    must be told with POST /_test/reload."""
    n = _names(release, namespace)
    volume = volume or n["vol_pg"]
    lab_args = _label_args(release, namespace)
    # stopped as the kubelet does (SIGTERM, then a grace period): killed, PostgreSQL's crash recovery would move
    # the sequences ahead (they are logged 32 values in advance)
    docker("stop", "-t", "30", n["pg"])
    docker("rm", "-f", n["pg"])
    _run_postgres(n["pg"], release, volume, os.path.join(_workdir(release, namespace), "postgresql-secrets"),
                  lab_args, image)
    _pg_ready(n["pg"])
    state = _read_state(state_path)
    for pod in state.get("pods", []):
        for cont in pod.get("containers", []):
            if cont.get("docker") == n["pg"]:
                cont["image"] = reported
                pod["labels"]["app.kubernetes.io/version"] = chart_version
    _write_state(state_path, state)
    return volume


def up(layout="current", release="authentik", namespace="authentik", state_path=DEFAULT_STATE, load_data=True):
    """Create the deployment's containers and merge its objects into the state file; returns the state."""
    spec = LAYOUTS[layout]
    fn = fullname(release)
    n = _names(release, namespace)
    down(release, namespace, state_path, quiet=True)
    work = _workdir(release, namespace)
    os.makedirs(work, exist_ok=True)
    secret_key = _secrets.token_urlsafe(48)
    pg_password = _secrets.token_urlsafe(24)
    pg_admin_password = _secrets.token_urlsafe(24)
    sec_dir = os.path.join(work, "postgresql-secrets")
    os.makedirs(sec_dir, exist_ok=True)
    for key, val in (("password", pg_password), ("postgres-password", pg_admin_password)):
        with open(os.path.join(sec_dir, key), "w") as fh:
            fh.write(val)
        os.chmod(os.path.join(sec_dir, key), 0o644)
    lab_args = _label_args(release, namespace)

    # -- postgresql (bitnami subchart: StatefulSet <release>-postgresql, pod -0, uid 1001, read-only root)
    _run_postgres(n["pg"], release, n["vol_pg"], sec_dir, lab_args, PG_IMAGE)

    # -- redis (legacy only: bitnami subchart, <release>-redis-master-0)
    if spec["redis"]:
        docker("volume", "create", *lab_args, n["vol_redis"])
        _chown_volume(n["vol_redis"], 1001, REDIS_IMAGE)
        docker("run", "-d", "--network", "none", "--name", n["redis"], "--hostname", "%s-redis-master-0" % release,
               *lab_args, "--user", "1001:1001", "--read-only", "--tmpfs", "/tmp:rw,mode=1777",
               "-v", "%s:/data:nocopy" % n["vol_redis"], "-w", "/data",  # nocopy: keep the chown to 1001
               "-e", "ALLOW_EMPTY_PASSWORD=yes", "-e", "REDIS_REPLICATION_MODE=master", "-e", "HOME=/tmp",
               REDIS_IMAGE, "redis-server", "--dir", "/data", "--appendonly", "no", "--save", "")

    # -- authentik server and worker (Deployments), sharing the data/media and templates volumes
    ak_image = "akbt.local/goauthentik/server:%s" % spec["version"]
    docker("volume", "create", *lab_args, n["vol_data"])
    docker("volume", "create", *lab_args, n["vol_templates"])
    # the base image's /data belongs to redis: without nocopy, Docker's copy-up would give the volume that owner
    _chown_volume(n["vol_data"], 1000, ak_image)
    env = {
        "AUTHENTIK_SECRET_KEY": secret_key,
        "AUTHENTIK_POSTGRESQL__HOST": "%s-postgresql" % release,
        "AUTHENTIK_POSTGRESQL__NAME": "authentik",
        "AUTHENTIK_POSTGRESQL__USER": "authentik",
        "AUTHENTIK_POSTGRESQL__PORT": "5432",
        "AUTHENTIK_POSTGRESQL__PASSWORD": pg_password,
        "AUTHENTIK_ERROR_REPORTING__ENABLED": "false",
        "AUTHENTIK_LOG_LEVEL": "info",
    }
    if spec["redis"]:
        env["AUTHENTIK_REDIS__HOST"] = "%s-redis-master" % release
    for comp in ("server", "worker"):
        env_args = []
        for k, v in env.items():
            env_args += ["-e", "%s=%s" % (k, v)]
        docker("run", "-d", "--network", "none", "--name", n[comp], *lab_args,
               "-v", "%s:%s:nocopy" % (n["vol_data"], spec["data_path"]), "-v", "%s:/templates" % n["vol_templates"],
               *env_args, ak_image, comp)

    # -- wait and load sample data
    _pg_ready(n["pg"])
    if load_data:
        docker("exec", "-i", "-e", "PGPASSWORD=" + pg_password, n["pg"], "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
               "-h", "/var/run/postgresql", "-U", "authentik", "-d", "authentik", input_=SAMPLE_SQL.encode())
        files = ("mkdir -p {d}/public {d}/media/public/flow-backgrounds 2>/dev/null; "
                 "printf 'akbt icon\\n' > {d}/public/icon.txt; "
                 "head -c 65536 /dev/urandom > {d}/public/blob.bin; "
                 "printf '<html>{{%% block title %%}}Gr\\303\\274\\303\\237e{{%% endblock %%}}</html>\\n' > /templates/custom.html")
        docker("exec", n["server"], "sh", "-c", files.format(d=spec["data_path"]))
        if spec["redis"]:
            def redis_ready():
                return docker("exec", n["redis"], "redis-cli", "ping", check=False).stdout.strip() == b"PONG"
            _wait(redis_ready, 30, "redis")
            for k, v in SAMPLE_REDIS:
                docker("exec", n["redis"], "redis-cli", "set", k, v)

    # -- objects
    chart_labels = {"helm.sh/chart": "authentik-%s" % spec["chart"], "app.kubernetes.io/name": "authentik",
                    "app.kubernetes.io/instance": release, "app.kubernetes.io/version": spec["version"],
                    "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "authentik"}
    pods, deployments, statefulsets = [], [], []

    def sts(name, podname, plabels, cont):
        pods.append({"name": podname, "namespace": namespace, "labels": dict(plabels, **{
            "statefulset.kubernetes.io/pod-name": podname, "apps.kubernetes.io/pod-index": "0",
            "controller-revision-hash": "%s-%s" % (name, _suffix(name, 10))}), "hostname": podname,
            "containers": [cont["c"]], "volumes": cont["volumes"],
            "securityContext": {"fsGroup": 1001, "fsGroupChangePolicy": "Always"}})
        statefulsets.append({"name": name, "namespace": namespace, "labels": dict(plabels), "replicas": 1,
                             "selector": {"matchLabels": {k: plabels[k] for k in (
                                 "app.kubernetes.io/instance", "app.kubernetes.io/name", "app.kubernetes.io/component")}},
                             "template_labels": dict(plabels), "pods": [podname], "serviceName": name + "-hl",
                             "stop_timeout": 10})

    pg_labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/managed-by": "Helm",
                 "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/component": "primary",
                 "app.kubernetes.io/version": "15.4.0", "helm.sh/chart": "postgresql-12.12.10"}
    csc = {"runAsUser": 1001, "runAsGroup": 1001, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
           "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    sts("%s-postgresql" % release, "%s-postgresql-0" % release, pg_labels, {
        "c": {"name": "postgresql", "docker": n["pg"], "image": PG_REPORTED, "securityContext": csc,
              "env": [{"name": "BITNAMI_DEBUG", "value": "false"}, {"name": "POSTGRESQL_PORT_NUMBER", "value": "5432"},
                      {"name": "PGDATA", "value": "/bitnami/postgresql/data"},
                      {"name": "POSTGRES_USER", "value": "authentik"},
                      {"name": "POSTGRES_PASSWORD_FILE", "value": PG_SECRET_DIR + "/password"},
                      {"name": "POSTGRES_POSTGRES_PASSWORD_FILE", "value": PG_SECRET_DIR + "/postgres-password"},
                      {"name": "POSTGRES_DATABASE", "value": "authentik"}, {"name": "POSTGRES_DB", "value": "authentik"}],
              "ports": [{"name": "tcp-postgresql", "containerPort": 5432, "protocol": "TCP"}],
              "volumeMounts": [{"name": "postgresql-password", "mountPath": PG_SECRET_DIR},
                               {"name": "empty-dir", "mountPath": "/tmp", "subPath": "tmp-dir"},
                               {"name": "empty-dir", "mountPath": "/opt/bitnami/postgresql/tmp", "subPath": "app-tmp-dir"},
                               {"name": "dshm", "mountPath": "/dev/shm"},
                               {"name": "data", "mountPath": "/bitnami/postgresql"}]},
        "volumes": [{"name": "postgresql-password", "secret": {"secretName": "%s-postgresql" % release, "defaultMode": 420}},
                    {"name": "empty-dir", "emptyDir": {}}, {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-%s-postgresql-0" % release}}]})
    if spec["redis"]:
        redis_labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/managed-by": "Helm",
                        "app.kubernetes.io/name": "redis", "app.kubernetes.io/component": "master",
                        "app.kubernetes.io/version": "7.2.4", "helm.sh/chart": "redis-18.6.1"}
        sts("%s-redis-master" % release, "%s-redis-master-0" % release, redis_labels, {
            "c": {"name": "redis", "docker": n["redis"], "image": REDIS_REPORTED, "securityContext": csc,
                  "command": ["/bin/bash"], "args": ["-c", "/opt/bitnami/scripts/start-scripts/start-master.sh"],
                  "env": [{"name": "REDIS_REPLICATION_MODE", "value": "master"},
                          {"name": "ALLOW_EMPTY_PASSWORD", "value": "yes"}, {"name": "REDIS_TLS_ENABLED", "value": "no"},
                          {"name": "REDIS_PORT", "value": "6379"}],
                  "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
                  "volumeMounts": [{"name": "redis-data", "mountPath": "/data"},
                                   {"name": "empty-dir", "mountPath": "/tmp", "subPath": "tmp-dir"}]},
            "volumes": [{"name": "empty-dir", "emptyDir": {}},
                        {"name": "redis-data", "persistentVolumeClaim": {"claimName": "redis-data-%s-redis-master-0" % release}}]})

    data_vol = "media" if layout == "legacy" else "data"
    for comp in ("server", "worker"):
        dname = "%s-%s" % (fn, comp)
        plabels = dict(chart_labels, **{"app.kubernetes.io/component": comp})
        rs_hash = _suffix(dname + spec["version"], 10)
        pname = "%s-%s-%s" % (dname, rs_hash, _suffix(dname + namespace, 5))
        pods.append({"name": pname, "namespace": namespace, "replicaset": "%s-%s" % (dname, rs_hash),
                     "labels": dict(plabels, **{"pod-template-hash": rs_hash}),
                     "annotations": {"checksum/secret": hashlib.sha256(secret_key.encode()).hexdigest()},
                     "serviceAccountName": "%s" % fn if comp == "worker" else "default",
                     "containers": [{
                         "name": comp, "docker": n[comp], "image": "ghcr.io/goauthentik/server:%s" % spec["version"],
                         "args": [comp],
                         "env": [{"name": "AUTHENTIK_LISTEN__HTTP", "value": "0.0.0.0:9000"}] if comp == "server" else [],
                         "envFrom": [{"secretRef": {"name": fn}}],
                         "volumeMounts": [{"name": data_vol, "mountPath": spec["data_path"]},
                                          {"name": "custom-templates", "mountPath": "/templates"}]}],
                     "volumes": [{"name": data_vol, "persistentVolumeClaim": {"claimName": "%s-%s" % (fn, data_vol)}},
                                 {"name": "custom-templates", "persistentVolumeClaim": {"claimName": "%s-templates" % fn}}]})
        deployments.append({"name": dname, "namespace": namespace, "labels": plabels, "replicas": 1,
                            "selector": {"matchLabels": {"app.kubernetes.io/name": "authentik",
                                                         "app.kubernetes.io/instance": release,
                                                         "app.kubernetes.io/component": comp}},
                            "template_labels": plabels, "pods": [pname], "stop_timeout": 3})

    release_doc = {"name": release, "namespace": namespace, "version": 1,
                   "info": {"status": "deployed", "description": "Install complete"},
                   "chart": {"metadata": {"name": "authentik", "version": spec["chart"], "appVersion": spec["version"]}},
                   "config": {"authentik": {"secret_key": "<redacted>"}}}
    helm_blob = base64.b64encode(gzip.compress(json.dumps(release_doc).encode())).decode()
    secrets_ = [
        {"name": fn, "namespace": namespace, "labels": dict(chart_labels),
         "data": {k: _b64(v) for k, v in env.items()}},
        {"name": "%s-postgresql" % release, "namespace": namespace,
         "labels": {k: pg_labels[k] for k in (
             "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
             "app.kubernetes.io/name", "app.kubernetes.io/version", "helm.sh/chart")},
         "data": {"password": _b64(pg_password), "postgres-password": _b64(pg_admin_password)}},
        {"name": "sh.helm.release.v1.%s.v1" % release, "namespace": namespace, "type": "helm.sh/release.v1",
         "labels": {"name": release, "owner": "helm", "status": "deployed", "version": "1"},
         "data": {"release": _b64(helm_blob)}},
    ]
    state = _read_state(state_path)
    state.setdefault("token", _secrets.token_urlsafe(24))
    if namespace not in state.setdefault("namespaces", []):
        state["namespaces"].append(namespace)
    state.setdefault("pods", []).extend(pods)
    state.setdefault("deployments", []).extend(deployments)
    state.setdefault("statefulsets", []).extend(statefulsets)
    state.setdefault("secrets", []).extend(secrets_)
    state.setdefault("stacks", {})["%s/%s" % (namespace, release)] = {
        "layout": layout, "release": release, "namespace": namespace, "version": spec["version"],
        "containers": {k: v for k, v in n.items() if not k.startswith("vol_") and (k != "redis" or spec["redis"])},
        "volumes": {k: v for k, v in n.items() if k.startswith("vol_") and (k != "vol_redis" or spec["redis"])},
        "postgres_password": pg_password, "secret_key": secret_key, "data_path": spec["data_path"]}
    _write_state(state_path, state)
    return state


def down(release="authentik", namespace="authentik", state_path=DEFAULT_STATE, quiet=False):
    """Remove the release's containers and volumes and drop its objects from the state file."""
    ids = docker("ps", "-aq", "--filter", "label=akbt.k8s.release=%s" % release,
                 "--filter", "label=akbt.k8s.namespace=%s" % namespace).stdout.decode().split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    vols = docker("volume", "ls", "-q", "--filter", "label=akbt.k8s.release=%s" % release,
                  "--filter", "label=akbt.k8s.namespace=%s" % namespace).stdout.decode().split()
    if vols:
        docker("volume", "rm", "-f", *vols)
    if os.path.exists(state_path):
        state = _read_state(state_path)
        stack = (state.get("stacks") or {}).pop("%s/%s" % (namespace, release), None)
        if stack:
            dockers = set(stack["containers"].values())
            pods = [p for p in state.get("pods", []) if p.get("namespace") == namespace and
                    any(c.get("docker") in dockers for c in p.get("containers", []))]
            pnames = {p["name"] for p in pods}
            state["pods"] = [p for p in state.get("pods", []) if p not in pods]
            for key in ("deployments", "statefulsets"):
                state[key] = [w for w in state.get(key, [])
                              if not (w.get("namespace") == namespace and set(w.get("pods", [])) & pnames)]
            fn = fullname(release)
            names = {fn, "%s-postgresql" % release, "sh.helm.release.v1.%s.v1" % release}
            state["secrets"] = [s for s in state.get("secrets", [])
                                if not (s.get("namespace") == namespace and s.get("name") in names)]
            _write_state(state_path, state)
    if not quiet:
        print("removed %d containers, %d volumes" % (len(ids), len(vols)))


def _read_state(path):
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh)


def _write_state(path, state):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, path)


def start_server(state, port=0, workdir=None, timeout=20, python=None, verbose=False):
    """Start apiserver.py in a subprocess. ``state`` is a state dict or the path of a state file.

    Returns ``(url, kubeconfig_path, process)``; the process has ``.akbt_token``.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="akbt-k8s-api-")
    if isinstance(state, dict):
        path = os.path.join(workdir, "state.json")
        _write_state(path, state)
    else:
        path = state
    kubeconfig = os.path.join(workdir, "kubeconfig")
    ready = os.path.join(workdir, "ready.json")
    if os.path.exists(ready):
        os.unlink(ready)
    cmd = [python or sys.executable, APISERVER, "--state", path, "--port", str(port), "--kubeconfig", kubeconfig,
           "--ready-file", ready]
    if verbose:
        cmd.append("-v")
    log = open(os.path.join(workdir, "apiserver.log"), "ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, close_fds=True)
    log.close()
    deadline = time.time() + timeout
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise RuntimeError("apiserver exited with %s; see %s" % (proc.returncode, os.path.join(workdir, "apiserver.log")))
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("apiserver did not become ready")
        time.sleep(0.05)
    with open(ready) as fh:
        info = json.load(fh)
    with open(kubeconfig) as fh:
        proc.akbt_token = json.load(fh)["users"][0]["user"]["token"]
    proc.akbt_workdir = workdir
    return info["url"], kubeconfig, proc


def stop_server(proc, timeout=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Helm-like authentik stacks for the test Kubernetes API server")
    ap.add_argument("action", choices=("up", "down", "serve"))
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="current")
    ap.add_argument("--release", default="authentik")
    ap.add_argument("--namespace", default="authentik")
    ap.add_argument("--state", default=DEFAULT_STATE)
    ap.add_argument("--no-data", action="store_true", help="do not load sample data")
    args = ap.parse_args(argv)
    if args.action == "up":
        st = up(args.layout, args.release, args.namespace, args.state, load_data=not args.no_data)
        print(json.dumps({"state": args.state, "stack": st["stacks"]["%s/%s" % (args.namespace, args.release)]},
                         indent=1))
    elif args.action == "down":
        down(args.release, args.namespace, args.state)
    else:
        url, kc, proc = start_server(args.state)
        print(json.dumps({"url": url, "kubeconfig": kc, "pid": proc.pid}), flush=True)
        try:
            proc.wait()
        except KeyboardInterrupt:
            stop_server(proc)


if __name__ == "__main__":
    main()
