# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of plugins/filter/k8s_secrets.py: which Secrets a Kubernetes config restore may write, the check of a
saved Secret file, and the object written (data from the set, everything else from discovery and the live Secret)."""

from __future__ import annotations

import base64

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.filter import k8s_secrets as k

SECRET_VALUE = "s3cr3t-value-never-in-a-message"
REF = "authentik/authentik"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def content(doc_or_text):
    """The file as slurp returns it: its text in base64."""
    text = doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text)
    return base64.b64encode(text.encode()).decode()


def saved(**over):
    doc = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": "authentik", "namespace": "authentik", "labels": {"from": "set"},
                        "annotations": {"from": "set"}},
           "data": {"AUTHENTIK_SECRET_KEY": b64(SECRET_VALUE), "AUTHENTIK_EMAIL__PORT": b64("25")}}
    for key, value in over.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


DEPLOYMENT = {"pods": {
    "server": {"namespace": "authentik", "secrets": ["authentik"]},
    "worker": {"namespace": "authentik", "secrets": ["authentik", "authentik-worker-extra"]},
    "postgresql": {"namespace": "databases", "secrets": ["authentik-postgresql"]},
    "redis": {"namespace": "authentik", "secrets": []},
}}


def test_filters_are_registered():
    expected = {"authentik_k8s_secret_refs", "authentik_k8s_secret_check", "authentik_k8s_secret_definition"}
    assert set(k.FilterModule().filters()) == expected


# --- the Secrets a restore may write --------------------------------------------------------------------------------

def test_refs_are_the_pods_secrets_in_their_namespaces():
    assert k.authentik_k8s_secret_refs(DEPLOYMENT, [], "authentik") == [
        "authentik/authentik", "authentik/authentik-worker-extra", "databases/authentik-postgresql"]


@pytest.mark.parametrize("extra, added", [
    (["smtp"], "authentik/smtp"),
    (["other/smtp"], "other/smtp"),
    ([" smtp "], "authentik/smtp"),
])
def test_refs_add_the_extra_names(extra, added):
    refs = k.authentik_k8s_secret_refs(DEPLOYMENT, extra, "authentik")
    assert added in refs and refs == sorted(refs)


def test_refs_never_hold_helm_release_records():
    deployment = {"pods": {"server": {"namespace": "authentik", "secrets": ["sh.helm.release.v1.authentik.v3"]}}}
    assert not k.authentik_k8s_secret_refs(deployment, ["sh.helm.release.v1.authentik.v4"], "authentik")


@pytest.mark.parametrize("extra", [["Upper"], ["a/b/c"], ["../x"], ["-x"], ["ns_1/x"], [""]])
def test_refs_refuse_a_bad_extra_name(extra):
    with pytest.raises(AnsibleFilterError, match="authentik_restore_k8s_secrets"):
        k.authentik_k8s_secret_refs(DEPLOYMENT, extra, "authentik")


def test_refs_need_the_kubernetes_deployment():
    with pytest.raises(AnsibleFilterError, match="Kubernetes discovery"):
        k.authentik_k8s_secret_refs({"containers": {}}, [], "authentik")


# --- the check of a saved file --------------------------------------------------------------------------------------

def test_check_takes_only_the_data():
    checked = k.authentik_k8s_secret_check(content(saved()), REF)
    assert checked == {"ref": REF, "file": "secrets/authentik/authentik.yaml", "problem": None,
                       "data": {"AUTHENTIK_EMAIL__PORT": b64("25"), "AUTHENTIK_SECRET_KEY": b64(SECRET_VALUE)}}


def test_check_merges_string_data_over_data():
    doc = saved(stringData={"AUTHENTIK_EMAIL__PORT": "587", "NEW": "x"})
    data = k.authentik_k8s_secret_check(content(doc), REF)["data"]
    assert data["AUTHENTIK_EMAIL__PORT"] == b64("587") and data["NEW"] == b64("x")


def test_check_accepts_a_secret_without_data_and_a_folded_value():
    assert k.authentik_k8s_secret_check(content(saved(data=None)), REF)["data"] == {}
    wrapped = ("apiVersion: v1\nkind: Secret\nmetadata: {name: authentik, namespace: authentik}\n"
               "data:\n  K: |\n    " + b64("25")[:2] + "\n    " + b64("25")[2:] + "\n")
    assert k.authentik_k8s_secret_check(content(wrapped), REF)["data"] == {"K": b64("25")}


@pytest.mark.parametrize("doc, problem", [
    (saved(kind="ConfigMap"), "kind 'ConfigMap', not apiVersion 'v1' kind 'Secret'"),
    (saved(kind="ClusterRoleBinding", apiVersion="rbac.authorization.k8s.io/v1"), "kind 'ClusterRoleBinding'"),
    (saved(apiVersion="v2"), "apiVersion 'v2'"),
    (saved(kind=None), "kind None"),
    (saved(metadata={"name": "authentik", "namespace": "kube-system"}),
     "metadata.namespace is 'kube-system', not 'authentik'"),
    (saved(metadata={"name": "authentik"}), "metadata.namespace is None"),
    (saved(metadata={"name": "other", "namespace": "authentik"}), "metadata.name is 'other', not 'authentik'"),
    (saved(metadata="authentik"), "no metadata mapping"),
    (saved(data={"K": "not base64!"}), "data.K is not valid base64"),
    (saved(data={"K": 12}), "data.K is not a string"),
    (saved(data={"bad key": b64("x")}), "data has the key 'bad key'"),
    (saved(data=["x"]), "data is not a mapping"),
    (saved(stringData={"K": 1}), "stringData.K is not a string"),
    (saved(stringData="x"), "stringData is not a mapping"),
    (["a", "list"], "not a mapping"),
    ("", "holds 0 YAML documents"),
    (yaml.safe_dump(saved()) + "---\n" + yaml.safe_dump(saved(kind="ConfigMap")), "holds 2 YAML documents"),
    ("kind: Secret\ndata: {K: " + SECRET_VALUE + "\n  x: [", "not valid YAML"),
    (saved(data={"K": b64("x" * (k.MAX_DATA_BYTES + 1))}), "larger than the"),
])
def test_check_refuses_what_is_not_the_discovered_secret(doc, problem):
    checked = k.authentik_k8s_secret_check(content(doc), REF)
    assert problem in checked["problem"]
    assert checked["data"] == {}
    assert SECRET_VALUE not in checked["problem"] and b64(SECRET_VALUE) not in checked["problem"]


def test_check_refuses_binary_and_huge_files():
    assert "not UTF-8" in k.authentik_k8s_secret_check(base64.b64encode(b"\xff\xfe").decode(), REF)["problem"]
    huge = base64.b64encode(b"#" * (k.MAX_FILE_BYTES + 1)).decode()
    assert "more than a Secret can hold" in k.authentik_k8s_secret_check(huge, REF)["problem"]


def test_check_bounds_what_it_quotes_of_the_set():
    problem = k.authentik_k8s_secret_check(content(saved(kind="K" * 500)), REF)["problem"]
    assert len(problem) < 200
    # aliases that would make a huge text: named by type only
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for n in "bcdefghi":
        laughs += f"{n}: &{n} [" + ", ".join([f"*{chr(ord(n) - 1)}"] * 10) + "]\n"
    laughs += "apiVersion: v1\nkind: *i\n"
    problem = k.authentik_k8s_secret_check(content(laughs), REF)["problem"]
    assert "kind a list, not apiVersion 'v1' kind 'Secret'" in problem


@pytest.mark.parametrize("ref", ["authentik", "a/b/c", "Authentik/x", "../x"])
def test_check_needs_a_discovered_ref(ref):
    with pytest.raises(AnsibleFilterError, match="namespace/name"):
        k.authentik_k8s_secret_check(content(saved()), ref)


def test_check_needs_base64_content():
    with pytest.raises(AnsibleFilterError, match="base64"):
        k.authentik_k8s_secret_check("not base64!", REF)


# --- the object written --------------------------------------------------------------------------------------------

LIVE = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "authentik", "namespace": "authentik", "uid": "u-1", "resourceVersion": "42",
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "authentik"},
                     "ownerReferences": [{"kind": "X", "name": "y", "uid": "z", "apiVersion": "v1"}],
                     "managedFields": [{"manager": "helm"}]},
        "data": {"AUTHENTIK_SECRET_KEY": b64("live"), "LIVE_ONLY": b64("x")}}


def test_definition_takes_metadata_and_type_from_the_live_secret():
    forged = saved(type="kubernetes.io/service-account-token",
                   metadata={"name": "authentik", "namespace": "authentik",
                             "annotations": {"kubernetes.io/service-account.name": "default"},
                             "labels": {"forged": "1"}, "ownerReferences": [{"kind": "Evil"}]})
    checked = k.authentik_k8s_secret_check(content(forged), REF)
    definition = k.authentik_k8s_secret_definition(checked, LIVE)
    assert definition == {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "authentik", "namespace": "authentik", "resourceVersion": "42",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "authentik"},
                     "ownerReferences": [{"kind": "X", "name": "y", "uid": "z", "apiVersion": "v1"}]},
        "data": checked["data"]}


def test_definition_without_a_live_secret_is_a_plain_opaque_one():
    checked = k.authentik_k8s_secret_check(content(saved(type="kubernetes.io/tls")), REF)
    assert k.authentik_k8s_secret_definition(checked, None) == {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "authentik", "namespace": "authentik"}, "data": checked["data"]}


def test_definition_keeps_the_live_type_and_immutable():
    checked = k.authentik_k8s_secret_check(content(saved()), REF)
    live = dict(LIVE, type="kubernetes.io/basic-auth", immutable=False)
    definition = k.authentik_k8s_secret_definition(checked, live)
    assert definition["type"] == "kubernetes.io/basic-auth" and definition["immutable"] is False


@pytest.mark.parametrize("checked, live, match", [
    ({"ref": REF, "problem": "bad", "data": {}}, None, "without a problem"),
    ({"ref": "nothing", "problem": None, "data": {}}, None, "without a problem"),
    ({"ref": REF, "problem": None, "data": {}}, dict(LIVE, metadata={"name": "x", "namespace": "authentik"}),
     "not the Secret"),
    ({"ref": REF, "problem": None, "data": {}}, dict(LIVE, kind="ConfigMap"), "not the Secret"),
])
def test_definition_refuses_mismatches(checked, live, match):
    with pytest.raises(AnsibleFilterError, match=match):
        k.authentik_k8s_secret_definition(checked, live)
