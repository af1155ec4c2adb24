# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""path_archive's and path_restore's main() against scripted targets, and against this host (platform=local)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from fake_transport import FakeTransport, Reply, run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import TransportError
from ansible_collections.authentik_ops.backup.plugins.modules import path_archive, path_restore


def tar(*members, end=True):
    """A tar stream of (name, data or None for a directory) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw if end else raw[:-(len(raw) - raw.rindex(data or b"x") - 100)]


def members_of(path):
    with tarfile.open(path) as archive:
        return {m.name: (archive.extractfile(m).read() if m.isfile() else None) for m in archive.getmembers()}


DATA = tar(("data", None), ("data/icon.png", b"png"))
TEMPLATES = tar(("templates", None), ("templates/a.html", b"<a>"))


def archive_args(tmp_path, **more):
    return dict(dict(container="server", dest=str(tmp_path / "files.tar"), compression="none"), **more)


# --- path_archive -------------------------------------------------------------------------------------------------

def test_archive_of_mounted_paths_with_the_unmounted_skipped(monkeypatch, tmp_path):
    fake = FakeTransport(archives={"/data": DATA, "/templates": TEMPLATES}, mounts=["/data", "/templates"])
    paths = ["/data", "/templates", "/blueprints"]
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=paths), transport=fake)
    assert not failed, result
    assert result["archived"] == ["/data", "/templates"] and result["members"] == 4
    assert result["skipped_paths"] == [{"path": "/blueprints", "reason": "not mounted in the container"}]
    assert members_of(tmp_path / "files.tar") == {"data": None, "data/icon.png": b"png", "templates": None,
                                                  "templates/a.html": b"<a>"}


def test_required_path_that_is_not_mounted_fails_before_reading(monkeypatch, tmp_path):
    fake = FakeTransport(archives={"/data": DATA}, mounts=["/data"])
    fake.read_archive = lambda path, on_data: pytest.fail("nothing may be read")
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=["/data", "/certs"],
                                                                      required=True), transport=fake)
    assert failed and result["msg"] == "required paths are missing: /certs not mounted in the container"
    assert result["skipped_paths"] == [{"path": "/certs", "reason": "not mounted in the container"}]
    assert list(tmp_path.iterdir()) == []


def test_path_vanishing_after_the_plan(monkeypatch, tmp_path):
    # mounted when planned, gone when read: skipped without required ...
    fake = FakeTransport(archives={"/data": DATA}, mounts=["/data", "/templates"])
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=["/data", "/templates"]),
                              transport=fake)
    assert not failed and result["archived"] == ["/data"]
    assert result["skipped_paths"] == [{"path": "/templates", "reason": "does not exist in the target"}]
    # ... and a failure with it, leaving no file
    (tmp_path / "files.tar").unlink()
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=["/data", "/templates"],
                                                                      required=True), transport=fake)
    assert failed and "required path /templates does not exist" in result["msg"]
    assert list(tmp_path.iterdir()) == []


def test_every_path_vanishing_writes_nothing(monkeypatch, tmp_path):
    fake = FakeTransport(archives={}, mounts=["/data"])
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=["/data"]), transport=fake)
    assert not failed and result["changed"] is False and result["dest"] is None
    assert list(tmp_path.iterdir()) == []


def test_truncated_archive_stream_fails(monkeypatch, tmp_path):
    fake = FakeTransport(archives={"/data": DATA[:1024]}, mounts=["/data"])
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=["/data"]), transport=fake)
    assert failed and "end-of-archive marker" in result["msg"]
    assert list(tmp_path.iterdir()) == []


def test_only_mounted_false_asks_whether_the_path_exists(monkeypatch, tmp_path):
    fake = FakeTransport(archives={"/data": DATA}, mounts=[])
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, paths=["/data", "/x"],
                                                                      only_mounted=False), transport=fake)
    assert not failed and result["archived"] == ["/data"]
    assert result["skipped_paths"] == [{"path": "/x", "reason": "does not exist in the target"}]


def test_content_needs_platform_local(monkeypatch, tmp_path):
    fake = FakeTransport()
    result, failed = run_main(monkeypatch, path_archive, archive_args(tmp_path, content=[{"name": "a", "content": "b"}]),
                              transport=fake)
    assert failed and result["msg"].startswith("content: only with platform=local")


def test_local_paths_and_content(monkeypatch, tmp_path):
    """platform=local through the real LocalTransport: full host paths as member names, then the content."""
    env = tmp_path / "opt" / ".env"
    env.parent.mkdir()
    env.write_text("PG_PASS=x\n")
    out = tmp_path / "out"
    out.mkdir()
    result, failed = run_main(monkeypatch, path_archive, dict(
        platform="local", paths=[str(env), str(tmp_path / "missing")], dest=str(out / "config.tar"),
        compression="none", content=[{"name": "secrets/s.yaml", "content": "secret: 1\n"}]))
    assert not failed, result
    names = members_of(out / "config.tar")
    assert names[str(env).lstrip("/")] == b"PG_PASS=x\n" and names["secrets/s.yaml"] == b"secret: 1\n"
    assert result["skipped_paths"] == [{"path": str(tmp_path / "missing"), "reason": "does not exist on the host"}]
    assert result["members"] == 2 and result["target"]["platform"] == "local"


# --- path_restore -------------------------------------------------------------------------------------------------

def restore_args(tmp_path, data=DATA, **more):
    src = tmp_path / "data.tar"
    src.write_bytes(data)
    return dict(dict(container="server", src=str(src), paths=["/data"]), **more)


def test_restore_sends_the_checked_members(monkeypatch, tmp_path):
    fake = FakeTransport(paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path), transport=fake)
    assert not failed, result
    sent = fake.written["/"][0]
    with tarfile.open(fileobj=io.BytesIO(sent)) as archive:
        assert [m.name for m in archive.getmembers()] == ["data/icon.png"]  # the top dir is left out here
    assert result["raw_size"] == len(sent)


def test_restore_keeps_top_dirs_where_the_transport_extracts_as_root(monkeypatch, tmp_path):
    fake = FakeTransport(paths=["/data"], mounts=["/data"], extracts_top_dirs=True)
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path), transport=fake)
    assert not failed
    with tarfile.open(fileobj=io.BytesIO(fake.written["/"][0])) as archive:
        assert [m.name for m in archive.getmembers()] == ["data", "data/icon.png"]


def test_hostile_archive_is_refused_before_the_target_is_touched(monkeypatch, tmp_path):
    fake = FakeTransport(paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, tar(("data/../etc/x", b"x"))),
                              transport=fake)
    assert failed and "refused, nothing was written" in result["msg"] and fake.written == {} and fake.calls == []


def test_missing_target_directory_fails_and_unmounted_warns(monkeypatch, tmp_path):
    fake = FakeTransport(paths=[], mounts=[])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path), transport=fake)
    assert failed and "do(es) not exist in the fake target" in result["msg"] and fake.written == {}
    fake = FakeTransport(paths=["/data"], mounts=[])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path), transport=fake)
    assert not failed and any("is not a mount" in w for w in result.get("warnings", []))


def test_stage_failure_stops_before_extracting(monkeypatch, tmp_path):
    fake = FakeTransport(lambda call: Reply(stderr=b"mkdir: Permission denied", exit_code=1)
                         if "mkdir" in call.text else Reply(), paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, clean=True), transport=fake)
    assert failed and "preparing /data/.akb-restore-" in result["msg"] and "nothing was changed" in result["msg"]
    assert fake.written == {} and result["cleaned"] == []
    # every operator path comes after "--" (or as "./<name>" for find, which has no "--")
    assert fake.calls[-1].argv[-2] == "/data" and 'cd -- "$1"' in fake.calls[-1].argv[2]


def _stage_of(fake):
    return next(call.argv[-1] for call in fake.calls if call.argv[2] == path_restore.STAGE_SH)


def test_clean_extracts_into_a_stage_then_swaps(monkeypatch, tmp_path):
    fake = FakeTransport(paths=["/data"], mounts=["/data"], extracts_top_dirs=True)
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, clean=True), transport=fake)
    assert not failed and result["cleaned"] == ["/data"], result
    stage = _stage_of(fake)
    assert stage.startswith(".akb-restore-")
    with tarfile.open(fileobj=io.BytesIO(fake.written["/data"][0])) as archive:
        assert [m.name for m in archive.getmembers()] == [f"{stage}/icon.png"]  # into the stage, inside /data
    swap = [call for call in fake.calls if call.argv[2] == path_restore.SWAP_SH]
    assert [call.argv[4:] for call in swap] == [["/data", stage, stage.replace("restore", "previous")]]
    # the swap comes after the extraction; then the top directory's owner and mode, alone
    prepared = next(c for c in fake.calls if c.argv[2] == path_restore.STAGE_SH)
    assert fake.calls.index(swap[0]) > fake.calls.index(prepared)
    with tarfile.open(fileobj=io.BytesIO(fake.written["/"][0])) as archive:
        assert [m.name for m in archive.getmembers()] == ["data"]


def test_a_cut_extraction_drops_the_stage_and_changes_nothing(monkeypatch, tmp_path):
    class Cut(FakeTransport):
        def write_archive(self, path, source):
            next(iter(source()))
            raise TransportError("the archive stream broke off after 512 bytes (No space left on device)")

    fake = Cut(paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, clean=True), transport=fake)
    assert failed and "No space left on device" in result["msg"], result
    assert "nothing was changed: every directory keeps its previous contents" in result["msg"]
    stage = _stage_of(fake)
    assert [call.argv[2:] for call in fake.calls if call.argv[2] == path_restore.DROP_SH] == \
        [[path_restore.DROP_SH, "sh", "/data", stage]]
    assert not any(call.argv[2] == path_restore.SWAP_SH for call in fake.calls)


@pytest.mark.parametrize("code, says, dropped", [
    (2, "/data keeps its previous contents", True),
    (3, "/data is half swapped: its previous entries are in /data/.akb-previous-", False),
])
def test_a_failed_swap_says_what_state_the_directory_is_in(monkeypatch, tmp_path, code, says, dropped):
    fake = FakeTransport(lambda call: Reply(stderr=b"mv: Device or resource busy", exit_code=code)
                         if call.argv[2] == path_restore.SWAP_SH else Reply(), paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, clean=True), transport=fake)
    assert failed and says in result["msg"] and "Device or resource busy" in result["msg"], result
    assert any(call.argv[2] == path_restore.DROP_SH for call in fake.calls) is dropped


def test_a_swap_that_cannot_remove_the_previous_contents_warns(monkeypatch, tmp_path):
    fake = FakeTransport(lambda call: Reply(stderr=b"rm: busy", exit_code=4)
                         if call.argv[2] == path_restore.SWAP_SH else Reply(), paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, clean=True), transport=fake)
    assert not failed and any("could not be removed" in w for w in result.get("warnings", [])), result


def _listing(links=b"", dirs=b"./data\0"):
    """A target answering the directory and symlink listing of path_restore (find -type d / -type l)."""
    return lambda call: Reply(stdout=links if call.argv[-1] == "l" else dirs) if "-type" in call.text else Reply()


@pytest.mark.parametrize("data, links, dirs, clean, refused", [
    (tar(("data", None), ("data/sub", None), ("data/sub/x", b"x")), b"./data/sub\0", b"./data\0", False,
     "'data/sub' is a symlink in the target and a directory in the archive"),
    (tar(("data", None), ("data/sub", None), ("data/sub/x", b"x")), b"./data/sub\0", b"./data\0", True,
     None),  # clean: the symlink goes first
    (tar(("data", None), ("data/d", b"now a file")), b"", b"./data\0./data/d\0", False,
     "'data/d' is a directory in the target and a file in the archive"),
    (tar(("data", None), ("data/x", b"x")), b"./data\0", b"", True,
     "'data' is a symlink in the target and a directory in the archive"),
    (tar(("data", None), ("data/x", b"x")), b"./data/x\0", b"./data\0./data/other\0", False, None),
])
def test_kind_swaps_are_refused_before_anything_is_written(monkeypatch, tmp_path, data, links, dirs, clean,
                                                           refused):
    fake = FakeTransport(_listing(links, dirs), paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, data, clean=clean), transport=fake)
    if refused is None:
        assert not failed and fake.written, result
        return
    assert failed and refused in result["msg"] and "nothing was written" in result["msg"], result
    assert fake.written == {} and not any("rm -rf" in call.text for call in fake.calls)
    assert all(call.argv[:4] == ["sh", "-c", path_restore.KINDS_SH, "sh"] for call in fake.calls)


def test_listing_failure_writes_nothing(monkeypatch, tmp_path):
    fake = FakeTransport(lambda call: Reply(stderr=b"find: boom", exit_code=1), paths=["/data"], mounts=["/data"])
    result, failed = run_main(monkeypatch, path_restore, restore_args(tmp_path, clean=True), transport=fake)
    assert failed and "listing /data" in result["msg"] and "nothing was written" in result["msg"]
    assert fake.written == {} and len(fake.calls) == 1


def test_local_root_extracts_on_this_host(monkeypatch, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    src = tmp_path / "config.tar"
    src.write_bytes(tar(("opt/authentik/.env", b"A=1\n")))
    result, failed = run_main(monkeypatch, path_restore, dict(platform="local", src=str(src), local_root=str(root)))
    assert not failed, result
    assert (root / "opt" / "authentik" / ".env").read_bytes() == b"A=1\n"
    assert result["files"][0]["name"] == "opt/authentik/.env" and result["raw_size"] == 4
    assert oct(os.stat(root / "opt" / "authentik" / ".env").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("more, message", [
    (dict(platform="local", local_root="/", paths=["/data"]), "paths: not used with platform=local"),
    (dict(platform="local", local_root="/", clean=True), "clean: not supported with platform=local"),
    (dict(local_root="/tmp", paths=["/data"]), "local_root: only with platform=local"),
])
def test_platform_options(monkeypatch, tmp_path, more, message):
    args = restore_args(tmp_path)
    args.pop("paths")
    args.pop("container") if more.get("platform") == "local" else None
    result, failed = run_main(monkeypatch, path_restore, dict(args, **more))
    assert failed and message in result["msg"]
