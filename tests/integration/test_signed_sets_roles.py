# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Signed sets through the roles and playbooks as users run them: the backup role signs with
authentik_backup_signing_key(_file), verify.yml and the restore role check with authentik_restore_verify_keys.

Each attack is what someone who can write the backup store, but has no signing key, can do to real sets of the
current test bed stack: change the manifest (and the sha256 of it the signature file records), swap the dump and
forge its sha256 in the manifest, rename an old set to look newer, point latest back at an old set, strip the
signature. With a verify key each is refused; without one the set verifies and is called unauthenticated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import zstandard

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from testbed import paths
from testbed.ansible_run import results_of, run_playbook

REPO = paths.REPO_ROOT
PG_ONLY = json.dumps({"authentik_backup_components": ["postgres"]})


def new_key(private_format):
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} backup@akbt-test"


@pytest.fixture(name="keys", scope="module")
def fixture_keys():
    # the format of `ssh-keygen -t ed25519` and of `openssl genpkey -algorithm ed25519`
    return dict(old=new_key(serialization.PrivateFormat.OpenSSH), new=new_key(serialization.PrivateFormat.PKCS8))


def explain(proc):
    return f"rc={proc.returncode}\nstdout (tail):\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-2000:]}"


def last(proc, name):
    found = [r for n, r in results_of(proc.stdout) if n == name or n.endswith(f" : {name}")]
    return found[-1] if found else None


@pytest.fixture(name="signed", scope="module")
def fixture_signed(stack_current, inventory, keys, tmp_path_factory):
    """Two sets of the current stack, both signed with the old key: the first with the key's text, the second with
    a key file. Returns (dest, [older set, newer set])."""
    dest = tmp_path_factory.mktemp("dest-signed") / "backups"
    key_file = tmp_path_factory.mktemp("signing-key") / "backup_ed25519"
    key_file.write_text(keys["old"][0])
    key_file.chmod(0o600)
    project = f"authentik_backup_compose_project={stack_current.project}"
    for how in ({"authentik_backup_signing_key": keys["old"][0]}, {"authentik_backup_signing_key_file": str(key_file)}):
        proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}", project,
                            PG_ONLY, json.dumps(how))
        assert proc.returncode == 0, explain(proc)
        assert keys["old"][0].splitlines()[1] not in proc.stdout + proc.stderr
    sets = sorted(p.name for p in dest.iterdir() if p.name.startswith("authentik-"))
    assert len(sets) == 2 and os.readlink(dest / "latest") == sets[1], sets
    return dest, sets


def copy_store(signed, tmp_path):
    dest, sets = signed
    copy = tmp_path / "store"
    copy.mkdir(mode=0o700)
    for name in sets:
        shutil.copytree(dest / name, copy / name)
    os.symlink(sets[1], copy / "latest")
    return copy, sets


def verify(inventory, dest, *extra, keys=()):
    proc = run_playbook(inventory, REPO / "playbooks" / "verify.yml", f"authentik_backup_dest={dest}",
                        json.dumps({"authentik_restore_verify_keys": list(keys)}), *extra)
    return proc, last(proc, "Verify the backup set"), last(proc, "Report")


def restore_check(inventory, stack, dest, *extra, keys=()):
    return run_playbook(inventory, REPO / "playbooks" / "restore.yml", f"authentik_backup_dest={dest}",
                        f"authentik_backup_compose_project={stack.project}",
                        json.dumps({"authentik_restore_verify_keys": list(keys)}), *extra, check=True)


def test_backup_role_signs_and_both_verifiers_accept_the_set(signed, inventory, stack_current, keys):
    dest, sets = signed
    for name in sets:
        sig = json.loads((dest / name / "manifest.sig").read_text())
        assert sig["manifest_sha256"] == hashlib.sha256((dest / name / "manifest.json").read_bytes()).hexdigest()
        assert sig["public_key"] == keys["old"][1].rsplit(" ", 1)[0]
    proc, result, report = verify(inventory, dest, keys=[keys["old"][1]])
    assert proc.returncode == 0 and result["ok"] and result["authenticated"], explain(proc)
    assert result["set"] == sets[1] and f"  authenticated: signed by {result['signature']['key']}" in report["msg"]

    # the restore test the role runs uses the discovered database's image (the stack's), not one the set names
    proc = restore_check(inventory, stack_current, dest, "authentik_restore_verify_restore=true",
                         keys=[keys["old"][1]])
    assert proc.returncode == 0, explain(proc)
    said = last(proc, "Say whether the set is authenticated")["msg"]
    assert said.startswith(f"The set {sets[1]} is authenticated: signed by SHA256:"), said
    tested = last(proc, "Restore the set's dump into a throw-away container of the deployment's database image")
    assert tested["ok"] and tested["restore_test"]["ok"], tested
    assert tested["restore_test"]["image"] == stack_current.images["postgresql"] == paths.IMAGE_POSTGRES
    assert any(said == line for line in last(proc, "Show the plan")["msg"]), last(proc, "Show the plan")


def test_key_rotation_accepts_a_set_signed_by_either_key(signed, inventory, keys):
    dest, _sets = signed
    proc, result, _report = verify(inventory, dest, keys=[keys["new"][1], keys["old"][1]])
    assert proc.returncode == 0 and result["authenticated"], explain(proc)
    proc, result, _report = verify(inventory, dest, keys=[keys["new"][1]])
    assert proc.returncode != 0 and result["signature"]["status"] == "unknown_key", explain(proc)


def test_forged_manifest_is_refused(signed, inventory, keys, tmp_path):
    store, sets = copy_store(signed, tmp_path)
    manifest_path = store / sets[1] / "manifest.json"
    data = manifest_path.read_bytes().replace(b'"platform": "docker"', b'"platform": "dockeR"', 1)
    assert data != manifest_path.read_bytes()
    manifest_path.write_bytes(data)
    # the sha256 of the manifest the signature file records is forged along with it
    sig_path = store / sets[1] / "manifest.sig"
    sig = json.loads(sig_path.read_text())
    sig_path.write_text(json.dumps(dict(sig, manifest_sha256=hashlib.sha256(data).hexdigest())))
    proc, result, _report = verify(inventory, store, keys=[keys["old"][1]])
    assert proc.returncode != 0 and not result["ok"], explain(proc)
    assert result["signature"]["status"] == "invalid" and not result["authenticated"], result


def test_swapped_dump_with_a_forged_sha256_is_refused(signed, inventory, keys, tmp_path):
    store, sets = copy_store(signed, tmp_path)
    set_dir = store / sets[1]
    manifest = json.loads((set_dir / "manifest.json").read_text())
    (entry,) = manifest["files"]
    genuine = zstandard.ZstdDecompressor().decompressobj().decompress((set_dir / entry["name"]).read_bytes())
    swapped = zstandard.ZstdCompressor().compress(genuine + b"\nCREATE ROLE intruder SUPERUSER LOGIN;\n")
    (set_dir / entry["name"]).write_bytes(swapped)
    entry.update(size=len(swapped), sha256=hashlib.sha256(swapped).hexdigest())
    (set_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    proc, result, _report = verify(inventory, store, keys=[keys["old"][1]])
    assert proc.returncode != 0 and result["signature"]["status"] == "invalid", explain(proc)
    assert any(p.startswith("signature:") for p in result["problems"]), result["problems"]


def test_renamed_old_signed_set_and_old_set_as_latest_are_refused(signed, inventory, keys, tmp_path):
    store, sets = copy_store(signed, tmp_path)
    renamed = "authentik-20991231T235959Z"
    shutil.copytree(store / sets[0], store / renamed)
    os.unlink(store / "latest")
    os.symlink(renamed, store / "latest")
    proc, result, _report = verify(inventory, store, keys=[keys["old"][1]])
    assert proc.returncode != 0 and result["signature"]["status"] == "valid", explain(proc)
    assert any(f"names the set '{sets[0]}'" in p and f"its directory is '{renamed}'" in p
               for p in result["problems"]), result["problems"]

    shutil.rmtree(store / renamed)
    os.unlink(store / "latest")
    os.symlink(sets[0], store / "latest")
    proc, result, _report = verify(inventory, store, keys=[keys["old"][1]])
    assert proc.returncode != 0, explain(proc)
    assert any(f"{sets[1]} is a newer validly signed set" in p for p in result["problems"]), result["problems"]


def test_unsigned_set_is_refused_with_a_key_and_unauthenticated_without(
        signed, inventory, stack_current, keys, tmp_path):
    store, sets = copy_store(signed, tmp_path)
    for name in sets:
        os.unlink(store / name / "manifest.sig")
    proc, result, _report = verify(inventory, store, keys=[keys["old"][1]])
    assert proc.returncode != 0 and result["signature"]["status"] == "unsigned", explain(proc)

    proc = restore_check(inventory, stack_current, store, keys=[keys["old"][1]])
    assert proc.returncode != 0, explain(proc)
    refusal = last(proc, "Refuse a set that failed verification")
    assert refusal["failed"] and "signature:" in refusal["msg"] and "Nothing was stopped or changed" in refusal["msg"]
    assert last(proc, "Discover the deployment") is None  # refused before the deployment was even looked at

    proc, result, report = verify(inventory, store)
    assert proc.returncode == 0 and result["ok"] and not result["authenticated"], explain(proc)
    assert "  unauthenticated: nothing proves who wrote the set (no authentik_restore_verify_keys)" in report["msg"]
    proc = restore_check(inventory, stack_current, store)
    assert proc.returncode == 0, explain(proc)
    said = last(proc, "Say whether the set is authenticated")["msg"]
    assert said.startswith(f"The set {sets[1]} is unauthenticated: authentik_restore_verify_keys is empty"), said


def test_verify_playbook_restore_test_runs_only_the_image_it_is_given(signed, inventory, tmp_path):
    store, sets = copy_store(signed, tmp_path)
    manifest_path = Path(store / sets[1] / "manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["source"]["containers"]["postgresql"]["image"] = "akbt.local/not-a-database:never"
    manifest_path.write_text(json.dumps(manifest))
    proc, _result, _report = verify(inventory, store, "authentik_backup_verify_restore=true")
    assert proc.returncode != 0 and "give image" in proc.stdout, explain(proc)
    proc, result, _report = verify(inventory, store, "authentik_backup_verify_restore=true",
                                   f"authentik_backup_verify_image={paths.IMAGE_POSTGRES}")
    assert proc.returncode == 0 and result["restore_test"]["ok"], explain(proc)
    assert result["restore_test"]["image"] == paths.IMAGE_POSTGRES
