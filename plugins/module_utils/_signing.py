# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""Signed backup sets: an Ed25519 signature over the exact bytes of ``manifest.json``, in ``manifest.sig``.

The manifest already records every file's name, size and sha256, the set's name and times, the platform and the
source deployment (Compose project, or namespace and release); signing its bytes binds all of them. The signature
is detached, a small JSON document written atomically next to the manifest after it::

    {"format": 1, "algorithm": "ed25519", "key": "SHA256:<OpenSSH fingerprint>",
     "public_key": "ssh-ed25519 AAAA...", "manifest_sha256": "<hex>", "signature": "<base64, 64 bytes>"}

Only the keys the verifier is given are trusted: ``key`` and ``public_key`` in the file only say which key signed,
they are never used to check the signature. Keys: an OpenSSH Ed25519 private key (``ssh-keygen -t ed25519``,
without a passphrase) or a PKCS#8 PEM one (``openssl genpkey -algorithm ed25519``); public keys as OpenSSH lines
(``ssh-ed25519 AAAA... comment``) or PEM (``-----BEGIN PUBLIC KEY-----``). Fingerprints are OpenSSH's
(``ssh-keygen -l``), whatever the key's format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import MANIFEST, SIGNATURE

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
except ImportError:  # only needed when signing or verifying
    InvalidSignature = UnsupportedAlgorithm = serialization = Ed25519PrivateKey = Ed25519PublicKey = None

ALGORITHM = "ed25519"
SIG_FORMAT = 1
MAX_SIGNATURE_BYTES = 64 * 1024

# What a check found; only VALID authenticates a set.
VALID = "valid"
UNSIGNED = "unsigned"
INVALID = "invalid"
UNKNOWN_KEY = "unknown_key"
UNCHECKED = "unchecked"


class SignatureError(BackupError):
    """A set cannot be signed (the signature file cannot be written); the message says why."""


def crypto_problem():
    """Why signatures cannot be made or checked on this host, or None."""
    if Ed25519PrivateKey is None:
        return ("signed sets need the Python package 'cryptography' on this host (pip install cryptography, or the "
                "distribution's python3-cryptography)")
    return None


def _require(origin):
    problem = crypto_problem()
    if problem:
        raise ConfigError(f"{origin}: {problem}")


# --- keys ---------------------------------------------------------------------------------------------------------

def public_line(public_key):
    """The OpenSSH line (``ssh-ed25519 AAAA...``) of an Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def fingerprint(public_key):
    """OpenSSH's fingerprint of the key (``SHA256:`` and unpadded base64 of the sha256 of its wire form)."""
    blob = base64.b64decode(public_line(public_key).split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _read_text(path, origin):
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"{origin} ({path}) cannot be read: {exc.strerror or exc}") from None


def load_signing_key(text=None, path=None):
    """The Ed25519 private key of ``text`` (the key itself) or of the file ``path``.

    Raises ConfigError with a message that never shows the key: not a key, not Ed25519, protected by a passphrase.
    """
    origin = "signing_key_file" if path else "signing_key"
    _require(origin)
    data = _read_text(path, origin) if path else (text or "").encode("utf-8")
    data = data.strip() + b"\n"
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            raise ValueError("no -----BEGIN OPENSSH PRIVATE KEY----- or -----BEGIN PRIVATE KEY----- block")
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
        # a protected key: TypeError, or ValueError("Key is password-protected.") from cryptography before 42
        if isinstance(exc, TypeError) or "password-protected" in str(exc):
            raise ConfigError(f"{origin}: the key is protected by a passphrase, which is not supported; keep an "
                              "unencrypted key in Ansible Vault or an AWX credential instead") from None
        raise ConfigError(f"{origin}: not a readable private key ({_reason(exc)}); give an Ed25519 key made with "
                          "ssh-keygen -t ed25519 or openssl genpkey -algorithm ed25519") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{origin}: a {type(key).__name__.replace('_', '')} key; signatures need an Ed25519 key "
                          "(ssh-keygen -t ed25519)")
    return key


def _reason(exc):
    text = str(exc).split("\n", maxsplit=1)[0]
    return text[:200] if "BEGIN" not in text else "not a key"


def _public_entries(text):
    """The single keys of one entry of verify_keys: a PEM block, or one or more OpenSSH lines."""
    text = (text or "").strip()
    if text.startswith("-----BEGIN"):
        return [text]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _load_public(entry, where):
    try:
        if entry.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(entry.encode("utf-8") + b"\n")
        else:
            key = serialization.load_ssh_public_key(entry.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: not a public key ({_reason(exc)}); give an OpenSSH line "
                          "(ssh-ed25519 AAAA...) or a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: not an Ed25519 key ({entry.split()[0][:40]}); sets are signed with Ed25519")
    return key


def load_verify_keys(texts, option="verify_keys"):
    """{fingerprint: public key} of the entries of ``texts``; an empty list gives {}. Raises ConfigError naming the
    entry that is not an Ed25519 public key."""
    keys = {}
    if not texts:
        return keys
    _require(option)
    for index, text in enumerate(texts):
        entries = _public_entries(text)
        if not entries:
            raise ConfigError(f"{option}[{index}]: empty; give an OpenSSH line (ssh-ed25519 AAAA...) or a PEM key")
        for entry in entries:
            key = _load_public(entry, f"{option}[{index}]")
            keys[fingerprint(key)] = key
    return keys


# --- signing ------------------------------------------------------------------------------------------------------

def signature_document(private_key, manifest_bytes):
    """The content of ``manifest.sig`` for the exact ``manifest_bytes``."""
    public_key = private_key.public_key()
    return dict(format=SIG_FORMAT, algorithm=ALGORITHM, key=fingerprint(public_key),
                public_key=public_line(public_key), manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
                signature=base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"))


def signature_bytes(private_key, manifest_bytes):
    return (json.dumps(signature_document(private_key, manifest_bytes), indent=2) + "\n").encode("utf-8")


# --- checking -----------------------------------------------------------------------------------------------------

class Check:
    """The outcome of checking one set's signature: ``status`` (VALID, UNSIGNED, INVALID, UNKNOWN_KEY, UNCHECKED),
    the fingerprint the signature file names (``key``) and, unless VALID, the ``problem`` in words."""

    def __init__(self, status, key=None, problem=None):
        self.status = status
        self.key = key
        self.problem = problem

    @property
    def valid(self):
        return self.status == VALID

    def as_dict(self):
        out = dict(status=self.status, algorithm=ALGORITHM if self.key else None, key=self.key)
        if self.problem:
            out["problem"] = self.problem
        return out


def read_signature(set_path):
    """The parsed ``manifest.sig`` of a set, None when there is none; ValueError when it is not a signature file."""
    path = os.path.join(set_path, SIGNATURE)
    if not os.path.lexists(path):
        return None
    if os.path.islink(path) or not os.path.isfile(path):
        raise ValueError(f"{SIGNATURE} is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(MAX_SIGNATURE_BYTES + 1)
    if len(data) > MAX_SIGNATURE_BYTES:
        raise ValueError(f"{SIGNATURE} is larger than a signature file can be")
    document = json.loads(data.decode("utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{SIGNATURE} is not a JSON object")
    return document


def _decode_signature(document):
    if document.get("format") != SIG_FORMAT or document.get("algorithm") != ALGORITHM:
        raise ValueError(f"format {document.get('format')!r} / algorithm {document.get('algorithm')!r}; this "
                         f"collection writes format {SIG_FORMAT}, {ALGORITHM}")
    signature = base64.b64decode(str(document.get("signature") or ""), validate=True)
    if len(signature) != 64:
        raise ValueError("the signature is not 64 bytes long")
    return signature


def check_signature(set_path, manifest_bytes, keys):
    """Check the signature of the set at ``set_path`` over ``manifest_bytes`` against ``keys`` (load_verify_keys).

    Without keys the outcome is UNCHECKED (or UNSIGNED): nothing is authenticated.
    """
    try:
        document = read_signature(set_path)
    except (OSError, ValueError) as exc:
        return Check(INVALID, problem=f"{SIGNATURE} cannot be read: {exc}")
    if document is None:
        return Check(UNSIGNED, problem=f"the set is not signed (no {SIGNATURE})")
    named = str(document.get("key") or "")
    if not keys:
        return Check(UNCHECKED, key=named or None, problem="no verify key was given: the signature was not checked")
    try:
        signature = _decode_signature(document)
    except ValueError as exc:
        return Check(INVALID, key=named or None, problem=f"{SIGNATURE} is not a valid signature file: {exc}")
    if named not in keys:
        return Check(UNKNOWN_KEY, key=named or None,
                     problem=f"signed by the key {named or '(unnamed)'}, which is not one of the verify keys "
                             f"({', '.join(sorted(keys))})")
    try:
        keys[named].verify(signature, manifest_bytes)
    except InvalidSignature:
        return Check(INVALID, key=named,
                     problem=f"the signature by {named} does not match {MANIFEST}: the manifest was changed "
                             "after it was signed, or the signature belongs to another set")
    return Check(VALID, key=named)
