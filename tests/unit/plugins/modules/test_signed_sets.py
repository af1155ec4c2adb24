# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Signed sets end to end through the modules' main(): backup_set signs, backup_verify checks, on real
directories. Each attack is what someone who can write the backup store (but has no signing key) can do: change the
manifest, swap a file and forge its sha256, rename an old set, point latest at an old set, strip or replace the
signature. With verify keys each is refused; without them the set verifies as before and is called unauthenticated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fake_transport import run_main

from ansible_collections.authentik_ops.backup.plugins.modules import backup_set, backup_verify

DUMP = (b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE TABLE t ();\n"
        b"--\n-- PostgreSQL database cluster dump complete\n--\n\n")
OLD, NEW = "authentik-20261130T020000Z", "authentik-20261201T020000Z"
SOURCE = {"compose_project": "authentik", "containers": {"postgresql": {"image": "postgres:16"}}}


def new_key():
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public + " akbt-test"


@pytest.fixture(name="keys", scope="module")
def fixture_keys():
    return dict(one=new_key(), two=new_key())


def make_set(monkeypatch, dest, name, private=None, dump=DUMP, **metadata):
    """A complete set made by backup_set (signed with ``private`` when given); returns its path."""
    path = dest / name
    path.mkdir(parents=True)
    (path / "postgres.sql").write_bytes(dump)
    part = dict(part="postgres", dest=str(path / "postgres.sql"), size=len(dump),
                sha256=hashlib.sha256(dump).hexdigest(), compression="none")
    args = dict(state="complete", dest=str(dest), name=name, parts=[part],
                metadata=dict(dict(platform="docker", source=SOURCE), **metadata))
    if private:
        args["signing_key"] = private
    result, failed = run_main(monkeypatch, backup_set, args)
    assert not failed, result
    return path


def verify(monkeypatch, keys=(), **args):
    args.setdefault("fail_on_error", False)
    result, failed = run_main(monkeypatch, backup_verify, dict(args, verify_keys=list(keys)))
    assert not failed, result
    return result


def rewrite_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def test_backup_set_signs_the_manifest_it_writes(monkeypatch, tmp_path, keys):
    path = make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    sig = json.loads((path / "manifest.sig").read_text())
    assert sig["algorithm"] == "ed25519" and sig["public_key"] == keys["one"][1].rsplit(" ", 1)[0]
    assert sig["manifest_sha256"] == hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    assert oct((path / "manifest.sig").stat().st_mode & 0o777) == "0o600"
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))
    assert result["ok"] and result["authenticated"], result
    assert result["signature"]["status"] == "valid" and result["signature"]["key"] == sig["key"]
    assert result["source"] == "Compose project authentik"
    assert not any("manifest.sig" in w for w in result["warnings_found"])


def test_forged_manifest_is_refused(monkeypatch, tmp_path, keys):
    path = make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    # one changed byte in the manifest; whatever records the manifest's own sha256 is forged along with it
    rewrite_manifest(path, lambda m: m.update(platform="kubernetes"))
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))
    assert not result["ok"] and not result["authenticated"]
    assert any("does not match manifest.json" in p for p in result["problems"]), result["problems"]


def test_swapped_file_with_a_forged_sha256_is_refused(monkeypatch, tmp_path, keys):
    path = make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    forged = DUMP.replace(b"CREATE TABLE t ();", b"CREATE ROLE attacker SUPERUSER;")
    (path / "postgres.sql").write_bytes(forged)

    def forge(manifest):
        manifest["files"][0].update(size=len(forged), sha256=hashlib.sha256(forged).hexdigest())
    rewrite_manifest(path, forge)
    # without a key the forgery is a consistent set: only a signature can tell
    unkeyed = verify(monkeypatch, dest=str(tmp_path))
    assert unkeyed["ok"] and not unkeyed["authenticated"]
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))
    assert not result["ok"] and result["signature"]["status"] == "invalid"


def test_renamed_old_signed_set_is_refused(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    shutil.copytree(tmp_path / OLD, tmp_path / NEW)
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path), name=NEW)
    assert not result["ok"] and result["signature"]["status"] == "valid"
    assert any(f"names the set '{OLD}'" in p and f"its directory is '{NEW}'" in p for p in result["problems"])
    # by its path, too (a copy outside the destination)
    shutil.copytree(tmp_path / OLD, tmp_path / "elsewhere" / NEW)
    result = verify(monkeypatch, [keys["one"][1]], path=str(tmp_path / "elsewhere" / NEW))
    assert not result["ok"]


def test_old_signed_set_as_latest_is_refused(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    make_set(monkeypatch, tmp_path, NEW, keys["one"][0])
    assert os.readlink(tmp_path / "latest") == NEW
    assert verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))["ok"]
    os.unlink(tmp_path / "latest")
    os.symlink(OLD, tmp_path / "latest")
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))
    assert not result["ok"]
    assert any(f"latest points at {OLD}, but {NEW} is a newer validly signed set" in p for p in result["problems"])
    # named explicitly, the old set is what the operator asked for
    assert verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path), name=OLD)["ok"]


def test_latest_ignores_newer_sets_of_another_source_or_unsigned(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    make_set(monkeypatch, tmp_path, "authentik-20261201T030000Z", keys["one"][0],
             source={"compose_project": "staging"})
    make_set(monkeypatch, tmp_path, NEW)  # unsigned: nobody vouches for it
    os.unlink(tmp_path / "latest")
    os.symlink(OLD, tmp_path / "latest")
    assert verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))["ok"]


def test_latest_outside_the_destination_is_refused(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path / "other", OLD, keys["one"][0])
    (tmp_path / "dest").mkdir()
    os.symlink(tmp_path / "other" / OLD, tmp_path / "dest" / "latest")
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path / "dest"))
    assert not result["ok"] and any("which is not a set of" in p for p in result["problems"])


def test_unsigned_set_with_a_key_is_refused(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD)
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))
    assert not result["ok"] and result["signature"]["status"] == "unsigned"
    assert any("not signed" in p for p in result["problems"])


def test_set_signed_by_another_key_is_refused(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD, keys["two"][0])
    result = verify(monkeypatch, [keys["one"][1]], dest=str(tmp_path))
    assert not result["ok"] and result["signature"]["status"] == "unknown_key"


def test_key_rotation_accepts_either_key(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    make_set(monkeypatch, tmp_path, NEW, keys["two"][0])
    both = [keys["one"][1], keys["two"][1]]
    assert verify(monkeypatch, both, dest=str(tmp_path))["ok"]
    assert verify(monkeypatch, both, dest=str(tmp_path), name=OLD)["ok"]
    # after the rotation the old key is dropped: sets it signed are no longer accepted
    assert not verify(monkeypatch, [keys["two"][1]], dest=str(tmp_path), name=OLD)["ok"]
    # and an old set of the retired key cannot stand in for latest while the new key vouches for a newer one
    os.unlink(tmp_path / "latest")
    os.symlink(OLD, tmp_path / "latest")
    assert not verify(monkeypatch, both, dest=str(tmp_path))["ok"]


def test_unsigned_old_set_without_a_key_still_verifies_and_says_so(monkeypatch, tmp_path):
    path = tmp_path / OLD
    path.mkdir()
    (path / "postgres.sql").write_bytes(DUMP)
    entry = dict(part="postgres", name="postgres.sql", size=len(DUMP), sha256=hashlib.sha256(DUMP).hexdigest(),
                 compression="none")
    (path / "manifest.json").write_text(json.dumps({"format": 1, "set": OLD, "files": [entry]}))
    os.symlink(OLD, tmp_path / "latest")
    result = verify(monkeypatch, dest=str(tmp_path))
    assert result["ok"] and not result["authenticated"] and result["signature"]["status"] == "unsigned"
    assert any("the set is unauthenticated" in w for w in result["warnings_found"])
    assert any("the set is unauthenticated" in w for w in result["warnings"])


def test_partial_set_is_never_signed(monkeypatch, tmp_path, keys):
    path = make_set(monkeypatch, tmp_path, OLD, keys["one"][0], partial=True)
    assert not (path / "manifest.sig").exists()


def test_bad_signing_key_fails_before_the_set_exists(monkeypatch, tmp_path):
    result, failed = run_main(monkeypatch, backup_set, dict(dest=str(tmp_path / "d"), signing_key="garbage-signing-material"))
    assert failed and "signing_key: not a readable private key" in result["msg"]
    assert not (tmp_path / "d").exists()
    assert "garbage-signing-material" not in json.dumps({k: v for k, v in result.items() if k != "exception"})


def test_failed_signature_leaves_the_set_incomplete(monkeypatch, tmp_path, keys):
    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(backup_set, "signature_bytes", disk_full)
    path = tmp_path / OLD
    path.mkdir()
    (path / "postgres.sql").write_bytes(DUMP)
    part = dict(part="postgres", dest=str(path / "postgres.sql"))
    result, failed = run_main(monkeypatch, backup_set, dict(state="complete", dest=str(tmp_path), name=OLD,
                                                            parts=[part], signing_key=keys["one"][0]))
    assert failed and "manifest.sig cannot be written" in result["msg"]
    assert sorted(p.name for p in path.iterdir()) == ["postgres.sql"]
    assert not (tmp_path / "latest").exists()


def test_bad_verify_key_fails_the_task(monkeypatch, tmp_path, keys):
    make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    result, failed = run_main(monkeypatch, backup_verify, dict(dest=str(tmp_path), verify_keys=["ssh-rsa AAAA"],
                                                               fail_on_error=False))
    assert failed and "verify_keys[0]" in result["msg"]


def test_upload_copies_the_signature_before_the_manifest_and_checks_it(monkeypatch, tmp_path, keys):
    from ansible_collections.authentik_ops.backup.plugins.modules import backup_upload
    path = make_set(monkeypatch, tmp_path, OLD, keys["one"][0])
    names = [name for name, _size, _sha in backup_upload.set_files(str(path))]
    assert names == ["postgres.sql", "manifest.sig", "manifest.json"]
    assert backup_upload.check_authentic(str(path), [keys["one"][1]]) is True
    assert backup_upload.check_authentic(str(path), []) is False
    rewrite_manifest(path, lambda m: m.update(platform="kubernetes"))
    with pytest.raises(backup_upload.UploadError, match="not copied or vouched for"):
        backup_upload.check_authentic(str(path), [keys["one"][1]])
    with pytest.raises(backup_upload.UploadError, match="not copied or vouched for"):
        backup_upload.check_authentic(str(make_set(monkeypatch, tmp_path, NEW, keys["two"][0])), [keys["one"][1]])
