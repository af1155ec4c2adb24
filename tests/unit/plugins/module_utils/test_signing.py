# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_signing: the key formats operators have (OpenSSH from ssh-keygen, PKCS#8 PEM from openssl), OpenSSH's
fingerprints, and the check of a set's signature in each of its outcomes. The keys are made by the real tools."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _signing as signing
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError


def ssh_keygen(tmp_path, name="key", kind="ed25519", passphrase=""):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", f"akbt-{name}", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def openssl_key(tmp_path, name="pem"):
    private = tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True,
                   capture_output=True)
    public = tmp_path / f"{name}.pub.pem"
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True,
                   capture_output=True)
    return private, public


def test_openssh_key_fingerprint_is_the_one_ssh_keygen_prints(tmp_path):
    path = ssh_keygen(tmp_path)
    key = signing.load_signing_key(path.read_text())
    from_file = signing.load_signing_key(path=str(path))
    printed = subprocess.run(["ssh-keygen", "-l", "-f", str(path) + ".pub"], check=True, capture_output=True,
                             text=True).stdout.split()[1]
    assert signing.fingerprint(key.public_key()) == printed == signing.fingerprint(from_file.public_key())
    keys = signing.load_verify_keys([(tmp_path / "key.pub").read_text()])
    assert list(keys) == [printed]


def test_pem_keys_sign_and_verify_like_openssh_ones(tmp_path):
    private, public = openssl_key(tmp_path)
    key = signing.load_signing_key(path=str(private))
    keys = signing.load_verify_keys([public.read_text()])
    assert list(keys) == [signing.fingerprint(key.public_key())]
    manifest = b'{"set": "authentik-20261130T020000Z"}\n'
    document = signing.signature_document(key, manifest)
    assert document["algorithm"] == "ed25519" and document["key"] in keys
    # the signature is plain Ed25519 over the manifest's bytes: openssl verifies it with the PEM public key
    (tmp_path / "manifest.json").write_bytes(manifest)
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(document["signature"]))
    subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin", "-in",
                    str(tmp_path / "manifest.json"), "-sigfile", str(tmp_path / "sig.bin")], check=True,
                   capture_output=True)


@pytest.mark.parametrize("text, message", [
    ("not a key", "not a readable private key"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not a readable private key"),
    ("", "not a readable private key"),
])
def test_bad_signing_keys_are_refused_without_showing_them(text, message):
    with pytest.raises(ConfigError) as caught:
        signing.load_signing_key(text)
    assert message in caught.value.msg
    assert "AAAA" not in caught.value.msg


def test_rsa_and_passphrase_keys_are_refused_with_the_fix(tmp_path):
    rsa = ssh_keygen(tmp_path, "rsa", kind="rsa")
    with pytest.raises(ConfigError, match="need an Ed25519 key"):
        signing.load_signing_key(rsa.read_text())
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        signing.load_verify_keys([(tmp_path / "rsa.pub").read_text()])
    locked = ssh_keygen(tmp_path, "locked", passphrase="secret-passphrase")
    with pytest.raises(ConfigError, match="passphrase"):
        signing.load_signing_key(locked.read_text())


def test_verify_keys_entries_name_the_bad_one(tmp_path):
    good = (ssh_keygen(tmp_path).with_suffix(".pub")).read_text()
    with pytest.raises(ConfigError, match=r"verify_keys\[1\]"):
        signing.load_verify_keys([good, "ssh-ed25519 not-base64"])
    with pytest.raises(ConfigError, match=r"verify_keys\[0\]: empty"):
        signing.load_verify_keys(["  "])
    assert signing.load_verify_keys([]) == {}


def test_one_entry_may_hold_several_openssh_lines(tmp_path):
    one = ssh_keygen(tmp_path, "one").with_suffix(".pub").read_text()
    two = ssh_keygen(tmp_path, "two").with_suffix(".pub").read_text()
    keys = signing.load_verify_keys([f"# keys of the backup\n{one}\n{two}"])
    assert len(keys) == 2


def signed_set(tmp_path, key, manifest=b'{"files": []}\n'):
    path = tmp_path / "set"
    path.mkdir(exist_ok=True)
    (path / "manifest.json").write_bytes(manifest)
    (path / "manifest.sig").write_bytes(signing.signature_bytes(key, manifest))
    return path, manifest


def test_check_signature_outcomes(tmp_path):
    key = signing.load_signing_key(ssh_keygen(tmp_path, "signer").read_text())
    other = signing.load_signing_key(ssh_keygen(tmp_path, "other").read_text())
    keys = {signing.fingerprint(key.public_key()): key.public_key()}
    path, manifest = signed_set(tmp_path, key)

    assert signing.check_signature(path, manifest, keys).status == signing.VALID
    changed = signing.check_signature(path, manifest.replace(b"[]", b"[ ]"), keys)
    assert changed.status == signing.INVALID and "changed after it was signed" in changed.problem
    assert signing.check_signature(path, manifest, {}).status == signing.UNCHECKED

    signed_set(tmp_path, other)
    unknown = signing.check_signature(path, manifest, keys)
    assert unknown.status == signing.UNKNOWN_KEY and signing.fingerprint(other.public_key()) in unknown.problem

    # a signature file that claims the trusted key but carries another key's signature
    document = json.loads((path / "manifest.sig").read_text())
    document["key"] = signing.fingerprint(key.public_key())
    (path / "manifest.sig").write_text(json.dumps(document))
    assert signing.check_signature(path, manifest, keys).status == signing.INVALID

    (path / "manifest.sig").write_text("{not json")
    assert signing.check_signature(path, manifest, keys).status == signing.INVALID
    (path / "manifest.sig").unlink()
    assert signing.check_signature(path, manifest, keys).status == signing.UNSIGNED
    (path / "manifest.sig").symlink_to(tmp_path / "elsewhere")
    assert signing.check_signature(path, manifest, keys).status == signing.INVALID
