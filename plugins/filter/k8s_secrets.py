# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the Kubernetes config restore: which Secrets a restore may write, the check of a saved Secret file
of a backup set, and the object that is written.

A backup set is data, never instructions: the Secrets written are the ones the discovered release's pods reference
(plus those the user names), in the namespaces discovery found; of a saved file only its data is used, never its
kind, namespace, type, labels, annotations or owner references.

Every filter is pure. The documentation of each filter is in the YAML file of the same name next to this file.
Error texts never quote a value of a Secret's data.
"""

from __future__ import annotations

import base64
import binascii
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.yaml import HAS_YAML, yaml_load_all

# Kubernetes names: a namespace is a DNS label, a Secret's name a DNS subdomain
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# a key of a Secret's data (the API server's rule)
KEY_RE = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
# Helm's release records: kept in a set for reference, never written by a restore
HELM_RECORD_RE = re.compile(r"^sh\.helm\.release\.v1\.")
# the API server refuses a Secret whose data exceeds this many bytes
MAX_DATA_BYTES = 1024 * 1024
# a saved file larger than this is not a Secret the API server would take (base64 plus YAML overhead)
MAX_FILE_BYTES = 4 * MAX_DATA_BYTES
# metadata of the live Secret that a replace keeps (the Helm ownership labels and annotations among them)
LIVE_METADATA = ("labels", "annotations", "ownerReferences", "finalizers", "resourceVersion")


def _shown(value, limit=60):
    """A value of the set in a message, bounded (the set is untrusted; never used for data values). Only scalars are
    quoted: a list or mapping (YAML aliases can make one huge) is named by its type."""
    if not isinstance(value, (str, int, float, bool, type(None))):
        return f"a {type(value).__name__}"
    text = repr(value if not isinstance(value, str) else value[:limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ref(namespace, name):
    return f"{namespace}/{name}"


def is_helm_record(ref):
    """Whether ``ref`` (``name`` or ``namespace/name``) names a Helm release record."""
    return bool(HELM_RECORD_RE.match(str(ref).rsplit("/", 1)[-1]))


def _split_ref(ref, namespace, option):
    text = str(ref).strip()
    ns, _sep, name = text.rpartition("/")
    ns = ns or namespace
    if not ns or not NAMESPACE_RE.match(ns) or not NAME_RE.match(name):
        raise AnsibleFilterError(
            f"{option}: {_shown(ref)} is not a Secret as name or namespace/name (lower-case DNS names)")
    return ns, name


def authentik_k8s_secret_refs(deployment, extra=None, namespace=None):
    """The Secrets a Kubernetes config restore may write, as sorted ``namespace/name`` strings.

    The Secrets the discovered pods reference (envFrom, env secretKeyRef, secret volumes), each in its pod's
    namespace, and the ``extra`` ones (``name`` in ``namespace``, or ``namespace/name``). Helm release records are
    never among them.
    """
    if not isinstance(deployment, dict) or not isinstance(deployment.get("pods"), dict):
        raise AnsibleFilterError("authentik_k8s_secret_refs expects the deployment of the Kubernetes discovery")
    refs = set()
    for component, pod in deployment["pods"].items():
        if not isinstance(pod, dict):
            continue
        pod_ns = pod.get("namespace") or namespace
        for name in pod.get("secrets") or []:
            ns, name = _split_ref(name, pod_ns, f"the Secrets the {component} pod references")
            refs.add(_ref(ns, name))
    if extra is not None and not isinstance(extra, (list, tuple)):
        raise AnsibleFilterError("authentik_restore_k8s_secrets must be a list of Secret names")
    for item in extra or []:
        refs.add(_ref(*_split_ref(item, namespace, "authentik_restore_k8s_secrets")))
    return sorted(r for r in refs if not is_helm_record(r))


def _problem(ref, problem):
    return {"ref": ref, "file": f"secrets/{ref}.yaml", "problem": problem, "data": {}}


def _yaml_error(exc):
    """Where and what, without the excerpt of the offending line (it could hold a secret value)."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML ({what}{where})"


def _load(text):
    """The documents of ``text`` (PyYAML's safe loader, through ansible-core), empty ones left out."""
    return [doc for doc in yaml_load_all(text) if doc is not None]


def _decoded_data(doc):
    """(data as canonical base64 by key, problem)."""
    data, string_data = doc.get("data"), doc.get("stringData")
    if data is not None and not isinstance(data, dict):
        return None, "data is not a mapping"
    if string_data is not None and not isinstance(string_data, dict):
        return None, "stringData is not a mapping"
    raw = {}
    for key, value in (data or {}).items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            return None, f"data has the key {_shown(key)}, not a valid Secret key"
        if not isinstance(value, str):
            return None, f"data.{key} is not a string"
        try:
            raw[key] = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return None, f"data.{key} is not valid base64"
    for key, value in (string_data or {}).items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            return None, f"stringData has the key {_shown(key)}, not a valid Secret key"
        if not isinstance(value, str):
            return None, f"stringData.{key} is not a string"
        raw[key] = value.encode("utf-8")
    if sum(len(k) + len(v) for k, v in raw.items()) > MAX_DATA_BYTES:
        return None, f"its data is larger than the {MAX_DATA_BYTES} bytes the API server takes"
    return {k: base64.b64encode(v).decode("ascii") for k, v in sorted(raw.items())}, None


def authentik_k8s_secret_check(content, ref):
    """Check the saved file of the Secret ``ref`` (``namespace/name``); ``content`` is its text in base64 (as
    ``ansible.builtin.slurp`` returns it).

    Returns ``{ref, file, problem, data}``: ``problem`` is None when the file is exactly one YAML document with
    ``apiVersion: v1``, ``kind: Secret``, ``metadata.namespace`` and ``metadata.name`` equal to ``ref`` and data
    values in base64 (or ``stringData`` strings, merged over ``data`` as the API server does); ``data`` is then the
    Secret's data in canonical base64. Anything else in the file is ignored.
    """
    if not HAS_YAML:  # pragma: no cover - PyYAML is a requirement of ansible-core
        raise AnsibleFilterError("authentik_k8s_secret_check needs PyYAML")
    namespace, _sep, name = str(ref).partition("/")
    if not NAMESPACE_RE.match(namespace) or not NAME_RE.match(name):
        raise AnsibleFilterError(f"authentik_k8s_secret_check: {_shown(ref)} is not namespace/name")
    try:
        raw = base64.b64decode(content or "", validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise AnsibleFilterError("authentik_k8s_secret_check expects the file's content in base64") from exc
    if len(raw) > MAX_FILE_BYTES:
        return _problem(ref, f"the file has {len(raw)} bytes, more than a Secret can hold ({MAX_FILE_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _problem(ref, "the file is not UTF-8 text")
    try:
        docs = _load(text)  # any error of the parser refuses the file
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return _problem(ref, _yaml_error(exc))
    if len(docs) != 1:
        return _problem(ref, f"the file holds {len(docs)} YAML documents, not exactly one")
    doc = docs[0]
    if not isinstance(doc, dict):
        return _problem(ref, "the document is not a mapping")
    if doc.get("apiVersion") != "v1" or doc.get("kind") != "Secret":
        return _problem(ref, f"the document is apiVersion {_shown(doc.get('apiVersion'))} kind "
                             f"{_shown(doc.get('kind'))}, not apiVersion 'v1' kind 'Secret'")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return _problem(ref, "the document has no metadata mapping")
    if meta.get("namespace") != namespace:
        return _problem(ref, f"metadata.namespace is {_shown(meta.get('namespace'))}, not {namespace!r} "
                             "(the discovered one)")
    if meta.get("name") != name:
        return _problem(ref, f"metadata.name is {_shown(meta.get('name'))}, not {name!r} (the discovered one)")
    data, problem = _decoded_data(doc)
    if problem:
        return _problem(ref, problem)
    return {"ref": ref, "file": f"secrets/{ref}.yaml", "problem": None, "data": data}


def authentik_k8s_secret_definition(checked, live=None):
    """The Secret a restore writes (whole, with ``kubernetes.core.k8s`` ``force: true``): name and namespace of
    ``checked.ref`` (the discovered ones), the data of the checked file, and from ``live`` (the Secret as the API
    server has it now, or none) its type, labels, annotations, owner references, finalizers, ``immutable`` and
    resourceVersion (so a change in between is a conflict, not overwritten). Without a live Secret: type Opaque
    and no labels or annotations.
    """
    if not isinstance(checked, dict) or checked.get("problem") or "/" not in str(checked.get("ref", "")):
        raise AnsibleFilterError("authentik_k8s_secret_definition expects a result of authentik_k8s_secret_check "
                                 "without a problem")
    namespace, _sep, name = checked["ref"].partition("/")
    metadata = {"name": name, "namespace": namespace}
    definition = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
                  "data": dict(checked.get("data") or {})}
    if live:
        if not isinstance(live, dict):
            raise AnsibleFilterError("authentik_k8s_secret_definition: the live Secret must be a mapping")
        live_meta = live.get("metadata") or {}
        if (live.get("kind", "Secret") != "Secret" or live_meta.get("name") != name
                or live_meta.get("namespace") != namespace):
            raise AnsibleFilterError(f"authentik_k8s_secret_definition: the live object is not the Secret {checked['ref']}")
        for key in LIVE_METADATA:
            if live_meta.get(key):
                metadata[key] = live_meta[key]
        definition["type"] = live.get("type") or "Opaque"
        if live.get("immutable") is not None:
            definition["immutable"] = live["immutable"]
    return definition


class FilterModule:
    """authentik_ops.backup filters for the Kubernetes config restore."""

    def filters(self):
        return {
            "authentik_k8s_secret_refs": authentik_k8s_secret_refs,
            "authentik_k8s_secret_check": authentik_k8s_secret_check,
            "authentik_k8s_secret_definition": authentik_k8s_secret_definition,
        }
