# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Kubernetes config restore writes the discovered release's Secrets, with data from the set and nothing else.

One real set (playbooks/backup.yml, component config) of the Helm-like current stack behind the test API server
(tests/testbed/k8s/apiserver.py, NOT a real cluster; Secrets are written through it as kubernetes.core.k8s writes
them to a real one), reused by every case; forged copies are made as someone who can write the backup store would
(archive rebuilt, manifest re-checksummed; no signing key here):
- the live Secrets changed after the backup (the authentik one: AUTHENTIK_SECRET_KEY altered, a key added, labels
  and annotations of its own), the set's file of the database Secret forged with type
  kubernetes.io/service-account-token and labels, annotations and ownerReferences of its own, a Secret allowed
  through authentik_restore_k8s_secrets that the set lacks: check mode notes that one as skipped and changes
  nothing; the restore makes both Secrets' data equal to the set's (the added key removed) while type, labels,
  annotations and uid stay the live ones, and server and worker are scaled to 0 and back;
- a manifest listing a Secret the release does not reference and one in another namespace: refused by the plan;
- a Secret file of kind ConfigMap, one whose metadata.namespace is another namespace, a ClusterRoleBinding in the
  file of a Secret allowed through authentik_restore_k8s_secrets and a file of no planned Secret: refused by the
  check of the files, all named in one message.
Each refusal comes before anything is scaled: every Deployment's generation and every live Secret's resourceVersion
stay unchanged.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.error

import pytest
import yaml
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

pytest_plugins = ["conftest_k8s"]

from testbed import ansible_run  # noqa: E402  pylint: disable=wrong-import-position
from test_restore_roundtrip import (  # noqa: E402  pylint: disable=wrong-import-position
    BACKUP, NOT_CHANGED, RESTORE, k8s_vars)

STACK = "current"


# --- the API, as the tests read and write it ----------------------------------------------------------------------

def secret_path(ns, name=None):
    return f"/api/v1/namespaces/{ns}/secrets" + (f"/{name}" if name else "")


def get_secret(k8s, ns, name):
    return k8s.admin("GET", secret_path(ns, name))


def put_secret(k8s, obj):
    meta = obj["metadata"]
    return k8s.admin("PUT", secret_path(meta["namespace"], meta["name"]), obj)


def secrets_versions(k8s, ns):
    return {s["metadata"]["name"]: s["metadata"]["resourceVersion"]
            for s in k8s.admin("GET", secret_path(ns))["items"]}


def deployments(k8s, ns):
    """name -> (generation, spec.replicas) of the Deployments: a scale to 0 and back raises the generation."""
    return {d["metadata"]["name"]: (d["metadata"]["generation"], d["spec"]["replicas"])
            for d in k8s.admin("GET", f"/apis/apps/v1/namespaces/{ns}/deployments")["items"]}


def decoded(secret):
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


# --- the set --------------------------------------------------------------------------------------------------------

@pytest.fixture(name="play", scope="module")
def fixture_play(inventory, tmp_path_factory):
    player = ansible_run.player(tmp_path_factory.mktemp("k8s-config-ansible"), callback=ansible_run.JSON,
                                inventory=inventory, timeout=600)
    return player


@pytest.fixture(name="made", scope="module")
def fixture_made(k8s, play, tmp_path_factory):
    """(dest, set name, the Secrets as the set holds them: archive member -> document) of a config-only set."""
    dest = tmp_path_factory.mktemp("k8s-config-dest") / "backups"
    run = play(BACKUP, k8s_vars(k8s, STACK, dest, authentik_backup_components=["config"]))
    assert run.rc == 0, run.explain()
    name = os.readlink(dest / "latest")
    return dest, name, read_config(dest / name)


def config_entry(set_dir):
    manifest = json.loads((set_dir / "manifest.json").read_text())
    return manifest, next(f for f in manifest["files"] if f["part"] == "config")


def read_config(set_dir):
    _manifest, entry = config_entry(set_dir)
    raw = zstandard.ZstdDecompressor().decompressobj().decompress((set_dir / entry["name"]).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r") as tar:
        return {m.name: yaml.safe_load(tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()}


def forged_copy(made, tmp_path, members=None, manifest_change=None):
    """A copy of the set in a store of its own whose config archive holds ``members`` (name -> document or text;
    the set's own when None), with the manifest's size and sha256 made to match, and ``manifest_change`` applied."""
    dest, name, original = made
    store = tmp_path / "store"
    store.mkdir(mode=0o700, parents=True)
    shutil.copytree(dest / name, store / name)
    os.symlink(name, store / "latest")
    set_dir = store / name
    manifest, entry = config_entry(set_dir)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, doc in (original if members is None else members).items():
            data = (doc if isinstance(doc, str) else yaml.safe_dump(doc)).encode()
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    packed = zstandard.ZstdCompressor().compress(out.getvalue())
    (set_dir / entry["name"]).write_bytes(packed)
    entry.update(size=len(packed), sha256=hashlib.sha256(packed).hexdigest())
    if manifest_change:
        manifest_change(manifest)
    (set_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return store


def restore(k8s, play, store, check=False, **more):
    return play(RESTORE, k8s_vars(k8s, STACK, store, authentik_restore_confirm=True,
                                  authentik_restore_components=["config"], **more), check=check)


@pytest.fixture(name="live")
def fixture_live(k8s):
    """The release's two Secrets changed after the backup the way an operator or Helm would: the authentik one with
    its secret key altered, a key added, a label and annotations of its own; the database one with annotations of
    its own. Both put back as they were afterwards."""
    spec = k8s.stacks[STACK]
    ns, release = spec["namespace"], spec["release"]
    names = (release, f"{release}-postgresql")
    before = {n: get_secret(k8s, ns, n) for n in names}
    helm = {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns}
    for name in names:
        changed = copy.deepcopy(before[name])
        changed["metadata"].pop("resourceVersion")
        changed["metadata"]["annotations"] = dict(helm, **{"akbt/live": name})
        if name == release:
            changed["metadata"]["labels"] = dict(changed["metadata"].get("labels") or {}, **{"akbt/live": "kept"})
            changed["data"]["AUTHENTIK_SECRET_KEY"] = base64.b64encode(b"changed-after-the-backup").decode()
            changed["data"]["AKBT_ADDED_AFTER"] = base64.b64encode(b"not in the set").decode()
        put_secret(k8s, changed)
    try:
        yield ns, {n: get_secret(k8s, ns, n) for n in names}
    finally:
        for obj in before.values():
            obj = copy.deepcopy(obj)
            obj["metadata"].pop("resourceVersion")
            try:
                put_secret(k8s, obj)
            except urllib.error.HTTPError:  # pragma: no cover - only after a broken restore
                pass


def assert_refused(k8s, run, expected, before):
    """The run failed with all of ``expected`` in one message and neither scaled nor wrote anything."""
    ns = k8s.stacks[STACK]["namespace"]
    assert run.rc != 0, run.explain()
    msg = run.failure() or ""
    for text in expected + [NOT_CHANGED]:
        assert text in msg, f"{text!r} not in the refusal: {msg}\n{run.explain()}"
    assert run.result("Stop authentik's server and worker (scale their Deployments to 0)") is None
    assert (deployments(k8s, ns), secrets_versions(k8s, ns)) == before, "a Deployment was scaled or a Secret written"


# --- the restore ----------------------------------------------------------------------------------------------------

def test_restore_replaces_the_data_and_keeps_the_live_metadata(k8s, play, made, live, tmp_path):
    """The authentik Secret's file as the backup wrote it; the database Secret's file forged with another type,
    labels, annotations and owner references (its data as backed up): only data of the set is applied."""
    ns, changed = live
    spec = k8s.stacks[STACK]
    release = spec["release"]
    _dest, _set, saved = made
    own, pg = f"secrets/{ns}/{release}.yaml", f"secrets/{ns}/{release}-postgresql.yaml"
    assert decoded(saved[own])["AUTHENTIK_SECRET_KEY"] == spec["secret_key"]
    forged = copy.deepcopy(saved[pg])
    forged["type"] = "kubernetes.io/service-account-token"
    forged["metadata"].update(annotations={"kubernetes.io/service-account.name": "default"},
                              labels={"akbt/forged": "1"},
                              ownerReferences=[{"apiVersion": "v1", "kind": "ServiceAccount", "name": "default",
                                                "uid": "00000000-0000-0000-0000-000000000000"}])
    store = forged_copy(made, tmp_path, members=dict(saved, **{pg: forged}))
    untouched = (deployments(k8s, ns), secrets_versions(k8s, ns))

    # a Secret the restore may write (authentik_restore_k8s_secrets) that the set does not hold: a note, left alone
    more = {"authentik_restore_k8s_secrets": ["akbt-not-in-the-set"]}

    # check mode: the plan and the check of every saved Secret run; nothing is scaled or written
    run = restore(k8s, play, store, check=True, **more)
    assert run.rc == 0, run.explain()
    plan = " ".join(run.msg("Show the plan"))
    assert f"replaces the data of the Secrets {ns}/{release}, {ns}/{release}-postgresql with the data saved" in plan
    assert f"skips config: the Secret {ns}/akbt-not-in-the-set of the release is not in the set" in plan
    assert "sh.helm.release" not in plan
    assert run.result("Check each saved Secret and keep only its data") is not None
    assert (deployments(k8s, ns), secrets_versions(k8s, ns)) == untouched

    run = restore(k8s, play, store, **more)
    assert run.rc == 0, run.explain()
    assert "akbt-not-in-the-set" not in secrets_versions(k8s, ns)
    for name, member in ((release, own), (f"{release}-postgresql", pg)):
        now = get_secret(k8s, ns, name)
        # authentik: AUTHENTIK_SECRET_KEY back, AKBT_ADDED_AFTER removed; the database Secret as saved
        assert decoded(now) == decoded(saved[member]), name
        for key in ("labels", "annotations"):
            assert now["metadata"].get(key) == changed[name]["metadata"].get(key), (name, key)
        assert "ownerReferences" not in now["metadata"], name
        assert (now["type"], now["metadata"]["uid"]) == ("Opaque", changed[name]["metadata"]["uid"]), name
    assert get_secret(k8s, ns, release)["metadata"]["resourceVersion"] != untouched[1][release]
    # the Helm release record is never applied; server and worker were scaled to 0 and back
    helm = f"sh.helm.release.v1.{release}.v1"
    assert secrets_versions(k8s, ns)[helm] == untouched[1][helm]
    after = deployments(k8s, ns)
    assert {d: r for d, (_g, r) in after.items()} == {d: r for d, (_g, r) in untouched[0].items()}
    assert all(after[d][0] > untouched[0][d][0] for d in after)
    # no value of a Secret in anything ansible printed
    output = run.stdout + run.stderr
    for value in (spec["secret_key"], saved[own]["data"]["AUTHENTIK_SECRET_KEY"], spec["postgres_password"]):
        assert value not in output


def test_a_set_listing_secrets_of_no_pod_is_refused_by_the_plan(k8s, play, made, tmp_path):
    """The manifest lists a Secret no pod of the release references, and the release's own name in another
    namespace (check mode: the plan refuses before anything is read of the archive)."""
    spec = k8s.stacks[STACK]
    ns, release = spec["namespace"], spec["release"]
    _dest, _set, saved = made
    unreferenced = f"{ns}/akbt-not-referenced"
    doc = dict(copy.deepcopy(saved[f"secrets/{ns}/{release}.yaml"]),
               metadata={"name": "akbt-not-referenced", "namespace": ns})

    def list_more(manifest):
        manifest["source"]["secrets"] += [unreferenced, f"kube-system/{release}"]
    store = forged_copy(made, tmp_path, members=dict(saved, **{f"secrets/{unreferenced}.yaml": doc}),
                        manifest_change=list_more)
    before = (deployments(k8s, ns), secrets_versions(k8s, ns))
    run = restore(k8s, play, store, check=True)
    assert_refused(k8s, run, [f"the Secret(s) {unreferenced}, kube-system/{release} in the set are not referenced "
                              "by the pods of the discovered release", "authentik_restore_k8s_secrets",
                              "the set is refused"], before)
    assert run.result("Fail when the plan has problems")["failed"]
    assert run.result("Read the saved Secrets") is None


def test_forged_secret_files_are_refused_before_anything_is_scaled(k8s, play, made, tmp_path):
    """One forged set with a problem in every planned file, and a file of no planned Secret: the check names each
    file and cause, with authentik_restore_confirm=true, before anything is scaled."""
    spec = k8s.stacks[STACK]
    ns, release = spec["namespace"], spec["release"]
    _dest, _set, saved = made
    own, pg = f"secrets/{ns}/{release}.yaml", f"secrets/{ns}/{release}-postgresql.yaml"
    # a Secret the user allows (authentik_restore_k8s_secrets), whose file is a ClusterRoleBinding
    allowed = "akbt-allowed"
    members = dict(saved)
    members[own] = dict(copy.deepcopy(saved[own]), kind="ConfigMap")
    members[pg] = dict(copy.deepcopy(saved[pg]), metadata={"name": f"{release}-postgresql", "namespace": "kube-system"})
    members[f"secrets/{ns}/{allowed}.yaml"] = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": allowed, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}
    members[f"secrets/kube-system/{release}.yaml"] = copy.deepcopy(saved[own])

    def list_allowed(manifest):
        manifest["source"]["secrets"].append(f"{ns}/{allowed}")
    store = forged_copy(made, tmp_path, members=members, manifest_change=list_allowed)
    before = (deployments(k8s, ns), secrets_versions(k8s, ns))
    run = play(RESTORE, k8s_vars(k8s, STACK, store, authentik_restore_confirm=True,
                                 authentik_restore_components=["config"], authentik_restore_k8s_secrets=[allowed]))
    assert_refused(k8s, run, [
        f"{own}: the document is apiVersion 'v1' kind 'ConfigMap', not apiVersion 'v1' kind 'Secret'",
        f"{pg}: metadata.namespace is 'kube-system', not '{ns}' (the discovered one)",
        f"secrets/{ns}/{allowed}.yaml: the document is apiVersion 'rbac.authorization.k8s.io/v1' kind "
        "'ClusterRoleBinding'",
        f"secrets/kube-system/{release}.yaml: in the config archive but not a planned Secret of the discovered release",
        "The set is refused"], before)
    assert "akbt-allowed" not in secrets_versions(k8s, ns)
