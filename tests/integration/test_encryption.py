# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Encryption at rest: playbooks/backup.yml with authentik_backup_encrypt_recipients against the current stack.

While the backup runs, a thread watches the destination and reads every file that appears in a set directory:
each one (finished or .partial) must be an age file from its first byte on. Then the set is restored into the
stack's own PostgreSQL with the right identity (tables identical to before) after the wrong identity was refused
with nothing touched, and backup_verify checks it with, without and with a wrong identity.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed import paths, proof
from testbed.ansible_run import results_of, run_module, run_playbook

REPO = paths.REPO_ROOT
AGE_HEADER = b"age-encryption.org/v1\n"
METADATA = {"manifest.json", "report.json"}  # descriptions of the set, written by the role, no data


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """(identity file, identity, recipient) of the right key and a wrong identity file (made by our own _age)."""
    if str(REPO / ".collections") not in sys.path:
        sys.path.insert(0, str(REPO / ".collections"))
    from ansible_collections.authentik_ops.backup.plugins.module_utils import _age  # pylint: disable=import-outside-toplevel

    base = tmp_path_factory.mktemp("keys-en")
    identity, recipient = _age.generate_identity()
    right = base / "right.txt"
    right.write_text(f"# public key: {recipient}\n{identity}\n")
    wrong_identity, _wrong_recipient = _age.generate_identity()
    wrong = base / "wrong.txt"
    wrong.write_text(wrong_identity + "\n")
    return dict(right=right, identity=identity, recipient=recipient, wrong=wrong, wrong_identity=wrong_identity)


def final_name(name):
    """The name a sink's partial file ``.<name>.<random>.partial`` will get; other names as they are."""
    if name.startswith(".") and name.endswith(".partial"):
        return name[1:-len(".partial")].rsplit(".", 1)[0]
    return name


class Watcher(threading.Thread):
    """Reads every file that appears in a set directory under ``dest`` while the backup runs."""

    def __init__(self, dest):
        super().__init__(daemon=True)
        self.dest = Path(dest)
        self.stop = threading.Event()
        self.seen = {}  # name -> largest size read
        self.plaintext = []

    def check(self, path):
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(AGE_HEADER))
        except (FileNotFoundError, IsADirectoryError):
            return  # renamed or removed between listing and reading
        if head != AGE_HEADER[:len(head)]:
            self.plaintext.append((path.name, head))
        self.seen[path.name] = max(self.seen.get(path.name, 0), len(head))

    def run(self):
        while not self.stop.is_set():
            if self.dest.is_dir():
                for set_dir in list(self.dest.iterdir()):
                    if set_dir.is_dir() and not set_dir.is_symlink():
                        for entry in list(set_dir.iterdir()):
                            if final_name(entry.name) not in METADATA and not entry.is_dir():
                                self.check(entry)
            time.sleep(0.002)


@pytest.fixture(scope="module")
def encrypted_set(stack_current, inventory, keys, tmp_path_factory):
    stack = stack_current
    # The in-place restore below drops and recreates the dump's roles: a database that an all-or-nothing restore
    # of another test kept on this shared stack (owned by such a role, and not in a backup) would stop it half-way.
    proof.drop_kept_restore_databases(stack.pg_container, stack.pg_user, stack.pg_password)
    before = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
    dest = tmp_path_factory.mktemp("dest-en") / "backups"
    watcher = Watcher(dest)
    watcher.start()
    try:
        proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}",
                            f"authentik_backup_compose_project={stack.project}",
                            json.dumps({"authentik_backup_encrypt_recipients": [keys["recipient"]]}))
    finally:
        watcher.stop.set()
        watcher.join()
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    set_dir = Path(os.path.realpath(dest / "latest"))
    return dict(stack=stack, dest=dest, set_dir=set_dir, watcher=watcher, before=before)


def test_no_plaintext_file_ever_appears(encrypted_set):
    watcher = encrypted_set["watcher"]
    assert watcher.plaintext == []
    partials = [name for name in watcher.seen if name.endswith(".partial")]
    assert partials, f"the watcher saw no partial file: {sorted(watcher.seen)}"
    assert any(size == len(AGE_HEADER) for name, size in watcher.seen.items() if name.endswith(".partial"))


def test_set_files_are_age_and_manifest_records_it(encrypted_set, keys):
    set_dir = encrypted_set["set_dir"]
    manifest = json.loads((set_dir / "manifest.json").read_text())
    names = [entry["name"] for entry in manifest["files"]]
    assert "postgres.sql.zst.age" in names and "config.tar.zst.age" in names
    assert sorted(p.name for p in set_dir.iterdir() if p.name not in METADATA) == sorted(names)
    for entry in manifest["files"]:
        assert entry["name"].endswith(".age")
        assert entry["encryption"] == {"scheme": "age", "recipients": [keys["recipient"]]}
        assert (set_dir / entry["name"]).read_bytes()[:len(AGE_HEADER)] == AGE_HEADER
    assert keys["identity"] not in (set_dir / "manifest.json").read_text()


def test_reference_age_decrypts_the_dump(encrypted_set, keys):
    age = shutil.which("age")
    assert age, "the reference age binary is not installed: run sudo tests/testbed/bootstrap.sh (Debian package age)"
    set_dir = encrypted_set["set_dir"]
    plain = subprocess.run([age, "-d", "-i", str(keys["right"]), str(set_dir / "postgres.sql.zst.age")],
                           capture_output=True, check=True).stdout
    dump = subprocess.run(["zstd", "-dc"], input=plain, capture_output=True, check=True).stdout
    assert b"-- PostgreSQL database cluster dump complete" in dump[-4096:]


def test_restore_refuses_wrong_or_missing_identity_and_touches_nothing(encrypted_set, keys):
    stack, set_dir = encrypted_set["stack"], encrypted_set["set_dir"]
    proof._psql(stack.pg_container, stack.pg_user, "create table akbt_en_marker (x int);",  # pylint: disable=protected-access
                db="authentik", password=stack.pg_password)
    src = str(set_dir / "postgres.sql.zst.age")
    for args, expected in ((dict(decrypt_identity_file=str(keys["wrong"])), "none of the identities"),
                           (dict(decrypt_identity=keys["wrong_identity"]), "none of the identities"),
                           ({}, "give the identity")):
        result, proc = run_module("postgres_restore", container=stack.pg_container, src=src, **args)
        assert result.get("failed"), result
        assert expected in result["msg"] and "Nothing was touched" in result["msg"], result["msg"]
        assert keys["wrong_identity"] not in proc.stdout + proc.stderr
    tables = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
    assert "public.akbt_en_marker" in tables["authentik"]


def test_restore_with_the_right_identity_gives_identical_tables(encrypted_set, keys):
    stack, set_dir = encrypted_set["stack"], encrypted_set["set_dir"]
    result, proc = run_module("postgres_restore", container=stack.pg_container,
                              src=str(set_dir / "postgres.sql.zst.age"), decrypt_identity=keys["identity"])
    assert not result.get("failed"), result.get("msg")
    assert keys["identity"] not in proc.stdout + proc.stderr  # no_log: never in the output
    after = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
    assert after == encrypted_set["before"]  # the marker table made after the backup is gone too


def test_backup_verify_with_without_and_with_wrong_identity(encrypted_set, keys):
    set_dir = str(encrypted_set["set_dir"])
    result, _proc = run_module("backup_verify", path=set_dir, decrypt_identity_file=str(keys["right"]))
    assert result["ok"] and not result.get("failed"), result
    assert all(f["content_checked"] and f["encryption"] == "age" for f in result["files"])
    assert {f["format"] for f in result["files"]} >= {"pg_dumpall", "tar"}

    result, _proc = run_module("backup_verify", path=set_dir)
    assert result["ok"] and not result.get("failed"), result
    assert all(f["content_checked"] is False for f in result["files"])
    assert any("compression and format were not" in w for w in result["warnings_found"])

    result, _proc = run_module("backup_verify", path=set_dir, decrypt_identity_file=str(keys["wrong"]))
    assert result.get("failed") and not result["ok"]
    assert "none of the identities" in result["msg"]


def test_tampered_encrypted_file_fails_verification(encrypted_set, keys, tmp_path):
    copy = tmp_path / encrypted_set["set_dir"].name
    shutil.copytree(encrypted_set["set_dir"], copy)
    target = copy / "config.tar.zst.age"
    data = bytearray(target.read_bytes())
    data[-40] ^= 0x01
    target.write_bytes(bytes(data))
    result, _proc = run_module("backup_verify", path=str(copy), decrypt_identity_file=str(keys["right"]))
    assert result.get("failed")
    assert any("config.tar.zst.age" in p and "authentication" in p for p in result["problems"]), result["problems"]


def restore_role(inventory, encrypted_set, *extra):
    stack = encrypted_set["stack"]
    return run_playbook(inventory, REPO / "playbooks" / "restore.yml", f"authentik_backup_dest={encrypted_set['dest']}",
                        f"authentik_backup_compose_project={stack.project}", "authentik_restore_confirm=true",
                        json.dumps({"authentik_restore_components": ["postgres", "files"]}), *extra)


def test_restore_role_refuses_encrypted_set_without_identity(encrypted_set, inventory):
    proc = restore_role(inventory, encrypted_set)
    assert proc.returncode != 0
    failures = [r.get("msg", "") for _n, r in results_of(proc.stdout) if r.get("failed")]
    assert any("encrypted with age" in m and "Nothing was stopped" in m for m in failures), failures


def test_restore_role_with_identity_file(encrypted_set, inventory, keys):
    stack = encrypted_set["stack"]
    proof._psql(stack.pg_container, stack.pg_user, "create table akbt_en_marker2 (x int);",  # pylint: disable=protected-access
                db="authentik", password=stack.pg_password)
    proc = restore_role(inventory, encrypted_set, f"authentik_restore_decrypt_identity_file={keys['right']}")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password) == encrypted_set["before"]
