# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The playbooks users run as they are: the report of backup.yml when the only host fails (the cron or timer run on
one host), and verify.yml on an age-encrypted set with and without the identity.

Every run is a real `ansible-playbook` of this checkout against localhost and the current test bed stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import zstandard

from testbed import paths
from testbed.ansible_run import results_of, run_playbook

REPO = paths.REPO_ROOT
PG_ONLY = json.dumps({"authentik_backup_components": ["postgres"]})


def parsed(proc):
    """(stats, [(task name, host result)]) of a run with the json callback."""
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    return data["stats"], list(results_of(proc.stdout))


def last(results, name):
    found = [r for n, r in results if n == name or n.endswith(f" : {name}")]
    return found[-1] if found else None


def explain(proc):
    return f"rc={proc.returncode}\nstdout (tail):\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-2000:]}"


# --- backup.yml: the report of every host also when every host failed -----------------------------------------

def test_report_of_every_host_when_the_only_host_fails(stack_current, inventory, tmp_path):
    dest = tmp_path / "backups"
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}",
                        f"authentik_backup_compose_project={stack_current.project}", PG_ONLY,
                        "authentik_backup_postgres_user=akbt_no_such_role")
    assert proc.returncode == 2, explain(proc)
    stats, results = parsed(proc)
    assert stats["localhost"]["failures"] == 1, stats
    report = last(results, "Results of the backup on every host")
    assert report is not None, explain(proc)
    text = "\n".join(report["msg"])
    assert text.startswith("localhost: FAILED") and "failed in part postgres" in text, text
    failed = last(results, "Fail the hosts whose backup failed")
    assert failed.get("failed") and "failed in part postgres" in failed["msg"], failed
    # the role did its part before: no set, a failure report
    assert not any(p.is_dir() for p in dest.iterdir())
    assert json.loads((dest / "last-failure.json").read_text())["status"] == "failed"


def test_report_of_a_host_that_fails_before_the_backup_starts(inventory, tmp_path):
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={tmp_path / 'b'}",
                        "authentik_backup_compression=lz4")
    assert proc.returncode == 2, explain(proc)
    stats, results = parsed(proc)
    assert stats["localhost"]["failures"] == 1, stats
    text = "\n".join(last(results, "Results of the backup on every host")["msg"])
    assert text.startswith("localhost: FAILED before the backup started:") and "authentik_backup_compression" in text
    assert not (tmp_path / "b").exists()


def test_a_good_run_reports_ok_and_fails_nothing(stack_current, inventory, tmp_path):
    dest = tmp_path / "backups"
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}",
                        f"authentik_backup_compose_project={stack_current.project}", PG_ONLY)
    assert proc.returncode == 0, explain(proc)
    stats, results = parsed(proc)
    assert stats["localhost"]["failures"] == 0 and stats["localhost"]["rescued"] == 0, stats
    text = "\n".join(last(results, "Results of the backup on every host")["msg"])
    assert text.startswith(f"localhost: OK {os.path.realpath(dest / 'latest')}"), text
    assert last(results, "Fail the hosts whose backup failed").get("skipped")


# --- verify.yml: encrypted sets are decrypted and checked with the identity --------------------------------------

@pytest.fixture(scope="module")
def age_keys():
    if str(REPO / ".collections") not in sys.path:
        sys.path.insert(0, str(REPO / ".collections"))
    from ansible_collections.authentik_ops.backup.plugins.module_utils import _age  # pylint: disable=import-outside-toplevel

    identity, recipient = _age.generate_identity()
    return dict(identity=identity, recipient=recipient, age=_age)


@pytest.fixture(scope="module")
def encrypted_dest(stack_current, inventory, age_keys, tmp_path_factory):
    dest = tmp_path_factory.mktemp("dest-pb") / "backups"
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}",
                        f"authentik_backup_compose_project={stack_current.project}", PG_ONLY,
                        json.dumps({"authentik_backup_encrypt_recipients": [age_keys["recipient"]]}))
    assert proc.returncode == 0, explain(proc)
    return dest


def verify(inventory, dest, *extra):
    proc = run_playbook(inventory, REPO / "playbooks" / "verify.yml", f"authentik_backup_dest={dest}", *extra)
    _stats, results = parsed(proc)
    return proc, last(results, "Verify the backup set")


def test_verify_playbook_decrypts_with_the_identity(encrypted_dest, inventory, age_keys, tmp_path):
    proc, result = verify(inventory, encrypted_dest)
    assert proc.returncode == 0, explain(proc)
    assert result["ok"] and [f["content_checked"] for f in result["files"]] == [False], result

    proc, result = verify(inventory, encrypted_dest, f"authentik_restore_decrypt_identity={age_keys['identity']}")
    assert proc.returncode == 0, explain(proc)
    assert result["ok"] and [(f["content_checked"], f["format"]) for f in result["files"]] == [(True, "pg_dumpall")]
    assert age_keys["identity"] not in proc.stdout + proc.stderr

    key_file = tmp_path / "identity.txt"
    key_file.write_text(age_keys["identity"] + "\n")
    proc, result = verify(inventory, encrypted_dest, f"authentik_restore_decrypt_identity_file={key_file}")
    assert proc.returncode == 0, explain(proc)
    assert [f["content_checked"] for f in result["files"]] == [True], result


def test_verify_playbook_finds_a_damaged_dump_only_with_the_identity(encrypted_dest, inventory, age_keys, tmp_path):
    """A dump cut before its trailer, encrypted again, with the manifest's size and sha256 made to match."""
    set_dir = Path(os.path.realpath(encrypted_dest / "latest"))
    damaged = tmp_path / "damaged"
    damaged.mkdir(mode=0o700)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    (entry,) = manifest["files"]
    cut = zstandard.ZstdCompressor().compress(b"--\n-- PostgreSQL database cluster dump\n--\n\nSET default_transaction")
    data = age_keys["age"].encrypt_bytes(cut, [age_keys["recipient"]])
    (damaged / entry["name"]).write_bytes(data)
    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (damaged / "manifest.json").write_text(json.dumps(manifest))

    proc, result = verify(inventory, encrypted_dest, f"authentik_restore_from={damaged}")
    assert proc.returncode == 0 and result["ok"], explain(proc)

    proc, result = verify(inventory, encrypted_dest, f"authentik_restore_from={damaged}",
                          f"authentik_restore_decrypt_identity={age_keys['identity']}")
    assert proc.returncode != 0 and not result["ok"], explain(proc)
    assert any(entry["name"] in problem for problem in result["problems"]), result
    assert age_keys["identity"] not in proc.stdout + proc.stderr


# --- module_defaults with the two action groups ---------------------------------------------------------------------

def test_module_defaults_of_both_action_groups(stack_current, inventory, tmp_path):
    """Each group's defaults reach every module of the group, and only options they all accept are needed."""
    dest = tmp_path / "backups"
    playbook = tmp_path / "groups.yml"
    playbook.write_text(f"""
- hosts: authentik
  gather_facts: false
  module_defaults:
    group/authentik_ops.backup.sets:
      dest: {dest}
    group/authentik_ops.backup.transport:
      docker_host: unix:///var/run/docker.sock
      api_timeout: 30
  tasks:
    - name: Lock
      authentik_ops.backup.backup_lock:
        run_id: akbtgroups
    - name: Prune
      authentik_ops.backup.backup_prune:
        keep_last: 1
        run_id: akbtgroups
    - name: Dump
      authentik_ops.backup.postgres_dump:
        container: {stack_current.pg_container}
        dest: {dest}/postgres.sql
        compression: none
      check_mode: true
    - name: Unlock
      authentik_ops.backup.backup_lock:
        state: absent
        run_id: akbtgroups
""")
    proc = run_playbook(inventory, playbook)
    assert proc.returncode == 0, explain(proc)
    _stats, results = parsed(proc)
    assert last(results, "Lock")["path"] == str(dest / ".lock")
    assert last(results, "Prune")["removed"] == []
    assert last(results, "Dump")["changed"] and not (dest / "postgres.sql").exists()
    assert last(results, "Unlock")["changed"] and not (dest / ".lock").exists()


# --- restore.yml: the backup variables it reads are validated before anything runs --------------------------------

def test_restore_refuses_an_unknown_k8s_auth_key_before_anything(inventory, tmp_path):
    proc = run_playbook(inventory, REPO / "playbooks" / "restore.yml", f"authentik_backup_dest={tmp_path}",
                        json.dumps({"authentik_backup_k8s_auth": {"kubeconfig": "/nowhere", "kubconfig": "/x"}}),
                        "authentik_restore_confirm=true")
    assert proc.returncode == 2, explain(proc)
    _stats, results = parsed(proc)
    failed = [r for _n, r in results if r.get("failed")]
    assert len(failed) == 1 and "Validation of arguments failed" in failed[0]["msg"], failed
    assert "kubconfig" in failed[0]["msg"]
    # the role stopped at its argument validation: no task of the role ran
    assert [n for n, _r in results] == [n for n, r in results if r.get("failed")], [n for n, _r in results]
