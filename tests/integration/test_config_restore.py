# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Config restore from an encrypted set, through path_restore platform=local (no tar, zstd or age binary used).

- Without Docker: path_restore platform=local refuses hostile archives (a ``../`` member, an absolute symlink)
  before writing anything, plans without writing in check mode, and extract_local never follows a symlink that is
  already in the destination.
- End to end: playbooks/backup.yml of the current Compose stack encrypted with age, the stack's ``.env`` altered,
  then playbooks/restore.yml with ``authentik_restore_components=[config]`` and the identity: ``.env`` is back
  byte for byte with its mode, the altered one is kept as ``.env.bak-*``, and the identity is never printed.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from testbed import paths
from testbed.ansible_run import results_of, run_module, run_playbook

REPO = paths.REPO_ROOT


def collection_utils(name):
    if str(REPO / ".collections") not in sys.path:
        sys.path.insert(0, str(REPO / ".collections"))
    import importlib  # pylint: disable=import-outside-toplevel

    return importlib.import_module(f"ansible_collections.authentik_ops.backup.plugins.module_utils.{name}")


def write_tar(path, members):
    """A plain tar built member by member: (name, data) files, (name, None, linkname) symlinks."""
    where = dict(fileobj=path) if isinstance(path, io.BytesIO) else dict(name=path)
    with tarfile.open(mode="w", format=tarfile.PAX_FORMAT, **where) as tar:
        for entry in members:
            info = tarfile.TarInfo(entry[0])
            if entry[1] is None:
                info.type, info.linkname = tarfile.SYMTYPE, entry[2]
                tar.addfile(info)
            else:
                info.size, info.mode = len(entry[1]), 0o644
                tar.addfile(info, io.BytesIO(entry[1]))
    return path


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


# --- path_restore platform=local, no Docker -----------------------------------------------------------------------

@pytest.mark.parametrize("members, reason", [
    ([("opt/authentik/.env", b"A=1\n"), ("opt/../../akbt-lx-escaped", b"x")], "'..' component"),
    ([("opt/authentik/.env", b"A=1\n"), ("opt/authentik/link", None, "/etc/passwd")], "absolute target"),
], ids=["dotdot-member", "absolute-symlink"])
def test_local_extraction_refuses_hostile_members_and_writes_nothing(tmp_path, members, reason):
    src = write_tar(tmp_path / "config.tar", members)
    root = tmp_path / "root"
    root.mkdir()
    for check_mode in (True, False):
        result, _proc = run_module("path_restore", check_mode=check_mode, platform="local", src=str(src),
                                   local_root=str(root))
        assert result.get("failed"), result
        assert reason in result["msg"] and "nothing was written" in result["msg"], result["msg"]
    assert tree(root) == []
    assert not (tmp_path.parent / "akbt-lx-escaped").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.tar", "root"]


def test_local_extraction_check_mode_plans_and_real_run_extracts(tmp_path):
    src = write_tar(tmp_path / "config.tar", [("opt/authentik/.env", b"A=1\n"),
                                              ("secrets/authentik/authentik.yaml", b"kind: Secret\n")])
    root = tmp_path / "root"
    root.mkdir()
    result, _proc = run_module("path_restore", check_mode=True, platform="local", src=str(src), local_root=str(root))
    assert result["changed"] and not result.get("failed"), result
    assert result["plan"]["action"] == "extract" and result["plan"]["members"] == 2
    assert tree(root) == []
    result, _proc = run_module("path_restore", platform="local", src=str(src), local_root=str(root))
    assert result["changed"] and not result.get("failed"), result
    env = root / "opt" / "authentik" / ".env"
    assert env.read_bytes() == b"A=1\n" and stat.S_IMODE(env.stat().st_mode) == 0o600
    modes = {f["name"]: f["mode"] for f in result["files"]}
    assert modes == {"opt/authentik/.env": "0644", "secrets/authentik/authentik.yaml": "0644"}
    for bad in (dict(paths=["/data"]), dict(clean=True), dict(local_root=str(tmp_path / "missing"))):
        result, _proc = run_module("path_restore", platform="local", src=str(src),
                                   **{"local_root": str(root), **bad})
        assert result.get("failed"), result


def test_extract_local_never_follows_a_symlink_in_the_destination(tmp_path):
    tarsafe = collection_utils("_tarsafe")
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "opt").symlink_to(outside)  # planted: opt -> a directory outside the root
    data = io.BytesIO()
    write_tar(data, [("opt/authentik/.env", b"A=1\n")])
    data.seek(0)
    with pytest.raises(tarsafe.TarSafetyError):
        tarsafe.extract_local(data, str(root))
    assert list(outside.iterdir()) == []
    # a symlink where the archive has a file is replaced, not written through
    (root / "opt").unlink()
    (root / "opt" / "authentik").mkdir(parents=True)
    target = outside / "victim"
    target.write_bytes(b"keep")
    (root / "opt" / "authentik" / ".env").symlink_to(target)
    data = io.BytesIO()
    write_tar(data, [("opt/authentik/.env", b"A=1\n")])
    data.seek(0)
    if getattr(tarfile, "data_filter", None) is None:
        tarsafe.extract_local(data, str(root))
        assert (root / "opt" / "authentik" / ".env").read_bytes() == b"A=1\n"
    else:  # tarfile's data filter already refuses the member (its real path is outside)
        with pytest.raises(tarsafe.TarSafetyError):
            tarsafe.extract_local(data, str(root))
    assert target.read_bytes() == b"keep"


# --- end to end: encrypted backup of the current stack, config restore -------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    age = collection_utils("_age")
    identity, recipient = age.generate_identity()
    path = tmp_path_factory.mktemp("keys-cr") / "identity.txt"
    path.write_text(f"# public key: {recipient}\n{identity}\n")
    path.chmod(0o600)
    return dict(identity=identity, recipient=recipient, file=path)


def test_encrypted_config_restore_brings_env_back(stack_current, inventory, keys, tmp_path):
    stack = stack_current
    env_file = Path(stack.env_file)
    original, original_mode = env_file.read_bytes(), stat.S_IMODE(env_file.stat().st_mode)
    before = set(env_file.parent.iterdir())
    dest = tmp_path / "backups"
    proc = run_playbook(inventory, REPO / "playbooks" / "backup.yml", f"authentik_backup_dest={dest}",
                        f"authentik_backup_compose_project={stack.project}",
                        json.dumps({"authentik_backup_encrypt_recipients": [keys["recipient"]]}))
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    set_dir = Path(os.path.realpath(dest / "latest"))
    assert (set_dir / "config.tar.zst.age").is_file() and not (set_dir / "config.tar.zst").exists()
    try:
        altered = original + b"AKBT_LX_ALTERED=after-the-backup\n"
        env_file.write_bytes(altered)
        proc = run_playbook(inventory, REPO / "playbooks" / "restore.yml", f"authentik_backup_dest={dest}",
                            f"authentik_backup_compose_project={stack.project}", "authentik_restore_confirm=true",
                            json.dumps({"authentik_restore_components": ["config"],
                                        "authentik_restore_decrypt_identity": keys["identity"]}), timeout=600)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        assert keys["identity"] not in proc.stdout + proc.stderr
        names = [name for name, _r in results_of(proc.stdout)]
        assert any(name.endswith(" : Extract the config archive") for name in names), names
        assert env_file.read_bytes() == original
        assert stat.S_IMODE(env_file.stat().st_mode) == original_mode
        backups = sorted(env_file.parent.glob(".env.bak-*"))
        assert backups, sorted(p.name for p in env_file.parent.iterdir())
        assert backups[-1].read_bytes() == altered
    finally:
        env_file.write_bytes(original)
        os.chmod(env_file, original_mode)
        for path in set(env_file.parent.iterdir()) - before:
            if ".bak-" in path.name:
                path.unlink()
