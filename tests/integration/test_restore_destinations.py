# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A set is data, never instructions: on Docker the restore writes only where the discovered deployment says.

A real set of the current Compose stack (playbooks/backup.yml), then its manifest forged the way someone who can
write the backup store would (no signing key is configured here, so only the destination rules stand in the way):
- a config part that lists another host file (``/etc/...``) next to ``.env``: refused by the plan, naming it,
  before anything is stopped or written;
- a directory part that claims to hold ``/etc``: refused, nothing is written there;
- a config archive whose ``.env`` member carries mode 4755 and whose archive holds an extra member: the restore
  writes ``.env`` with the mode the current file has (never setuid), and the extra member nowhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from testbed import paths
from testbed.ansible_run import results_of, run_playbook

REPO = paths.REPO_ROOT
FOREIGN = "/etc/akbt-b1-foreign.conf"


def explain(proc):
    return f"rc={proc.returncode}\nstdout (tail):\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-2000:]}"


def last(proc, name):
    found = [r for n, r in results_of(proc.stdout) if n == name or n.endswith(f" : {name}")]
    return found[-1] if found else None


@pytest.fixture(name="made", scope="module")
def fixture_made(stack_current, inventory, tmp_path_factory):
    """(dest, set name) of a set with postgres and config of the current stack."""
    dest = tmp_path_factory.mktemp("dest-dest") / "backups"
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}",
                        f"authentik_backup_compose_project={stack_current.project}",
                        json.dumps({"authentik_backup_components": ["postgres", "config"]}))
    assert proc.returncode == 0, explain(proc)
    return dest, os.readlink(dest / "latest")


def forged_copy(made, tmp_path, change):
    dest, name = made
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    shutil.copytree(dest / name, store / name)
    os.symlink(name, store / "latest")
    manifest_path = store / name / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    change(store / name, manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return store


def restore(inventory, stack, store, components, check=True):
    return run_playbook(inventory, REPO / "playbooks" / "restore.yml", f"authentik_backup_dest={store}",
                        f"authentik_backup_compose_project={stack.project}", "authentik_restore_confirm=true",
                        json.dumps({"authentik_restore_components": components}), check=check, timeout=600)


def test_config_path_outside_the_discovered_files_is_refused(made, inventory, stack_current, tmp_path):
    def add_foreign(_set_dir, manifest):
        entry = next(f for f in manifest["files"] if f["part"] == "config")
        entry["details"]["archived"].append(FOREIGN)
    store = forged_copy(made, tmp_path, add_foreign)
    for check in (True, False):
        proc = restore(inventory, stack_current, store, ["config"], check=check)
        assert proc.returncode != 0, explain(proc)
        refusal = last(proc, "Fail when the plan has problems")
        assert refusal and FOREIGN in refusal["msg"], explain(proc)
        assert "not a configuration file of the discovered deployment" in refusal["msg"]
        assert "Nothing was stopped or changed" in refusal["msg"]
        assert last(proc, "Stop authentik's server and worker") is None
    assert not os.path.exists(FOREIGN)


def test_directory_part_naming_etc_writes_nothing_there(made, inventory, stack_current, tmp_path):
    marker = Path("/etc/akbt-b1-marker")

    def claim_etc(set_dir, manifest):
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("etc/akbt-b1-marker")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
        raw = zstandard.ZstdCompressor().compress(data.getvalue())
        (set_dir / "etc.tar.zst").write_bytes(raw)
        manifest["files"].append(dict(part="etc", name="etc.tar.zst", size=len(raw),
                                      sha256=hashlib.sha256(raw).hexdigest(), compression="zstd",
                                      details={"archived": ["/etc"]}))
    store = forged_copy(made, tmp_path, claim_etc)
    proc = restore(inventory, stack_current, store, ["files"], check=False)
    assert proc.returncode != 0, explain(proc)
    refusal = last(proc, "Fail when the plan has problems")
    assert refusal and "/etc is not mounted in the server or worker" in refusal["msg"], explain(proc)
    assert not marker.exists()


def test_config_restore_keeps_the_current_mode_and_writes_only_discovered_files(
        made, inventory, stack_current, tmp_path):
    env_file = Path(stack_current.env_file)
    extra = env_file.parent / "akbt-b1-extra.conf"
    original, original_mode = env_file.read_bytes(), stat.S_IMODE(env_file.stat().st_mode)

    def setuid_env(set_dir, manifest):
        entry = next(f for f in manifest["files"] if f["part"] == "config")
        raw = zstandard.ZstdDecompressor().decompressobj().decompress((set_dir / entry["name"]).read_bytes())
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r") as src, \
                tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
            for member in src.getmembers():
                data = src.extractfile(member).read() if member.isfile() else None
                if member.name.endswith("/.env"):
                    member.mode = 0o4755
                dst.addfile(member, io.BytesIO(data) if data is not None else None)
            info = tarfile.TarInfo(str(extra).lstrip("/"))
            info.size, info.mode = 6, 0o644
            dst.addfile(info, io.BytesIO(b"extra\n"))
        packed = zstandard.ZstdCompressor().compress(out.getvalue())
        (set_dir / entry["name"]).write_bytes(packed)
        entry.update(size=len(packed), sha256=hashlib.sha256(packed).hexdigest())
    store = forged_copy(made, tmp_path, setuid_env)
    before = set(env_file.parent.iterdir())
    try:
        env_file.write_bytes(original + b"AKBT_B1_ALTERED=1\n")
        os.chmod(env_file, 0o640)
        proc = restore(inventory, stack_current, store, ["config"], check=False)
        assert proc.returncode == 0, explain(proc)
        assert env_file.read_bytes() == original
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
        assert not extra.exists()
        ignored = last(proc, "Say which members of the config archive are not written")
        assert ignored and str(extra) in ignored["msg"], explain(proc)
    finally:
        env_file.write_bytes(original)
        os.chmod(env_file, original_mode)
        for path in set(env_file.parent.iterdir()) - before:
            if ".bak-" in path.name or path == extra:
                path.unlink()
