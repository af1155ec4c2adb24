# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Member-safety rules of restored archives, with hostile archives built by tarfile."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._tarsafe import (
    TarSafetyError,
    check_local_kinds,
    extract_local,
    kind_conflict,
    rebuild,
    validate_stream,
)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def archive(*members, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


GOOD = archive(_dir("data"), _dir("data/sub"), _dir("data/sub/empty"), _file("data/a.txt", b"hello"),
               _file("data/ünï cödé.bin", bytes(range(256)) * 10), _link("data/sub/link", "../a.txt"),
               _link("data/sub/here", "."), _link("data/sub/chain", "here/../a.txt"),
               _link("data/hard", "data/a.txt", tarfile.LNKTYPE), _dir("templates"),
               _file("templates/login.html", b"<html/>"))


def check(data, tops=("data", "templates")):
    return validate_stream(io.BytesIO(data), allowed_tops=tops)


def test_good_archive_passes():
    summary = check(GOOD)
    assert summary.members == 11
    assert summary.tops == ["data", "templates"]
    assert (summary.files, summary.dirs, summary.symlinks, summary.hardlinks) == (3, 4, 3, 1)


@pytest.mark.parametrize("members, member, reason", [
    ((_dir("data"), _file("data/../evil")), "data/../evil", "'..'"),
    ((_file("../evil"),), "../evil", "'..'"),
    ((_file("/etc/passwd"),), "/etc/passwd", "absolute"),
    ((_dir("data"), _link("data/l", "/etc/passwd")), "data/l", "absolute target"),
    ((_dir("data"), _link("data/l", "../../etc/passwd")), "data/l", "outside"),
    ((_dir("data"), _link("data/l", "..")), "data/l", "outside"),
    ((_dir("data"), _link("data/l", "../templates/x")), "data/l", "outside"),
    ((_dir("data"), _link("data/d", "."), _link("data/e", "d/..")), "data/e", "outside"),
    ((_dir("data"), _link("data/d", "sub"), _link("data/sub", ".."), _link("data/e", "d/x")), "data/", "outside"),
    ((_dir("data"), _link("data/l", "sub"), _file("data/l/passwd")), "data/l/passwd", "symlink"),
    ((_file("data/a"), _link("data/h", "templates/x", tarfile.LNKTYPE)), "data/h", "outside"),
    ((_file("data/a"), _link("data/h", "/etc/shadow", tarfile.LNKTYPE)), "data/h", "absolute"),
    ((_file("data/a"), _link("data/h", "data/../../etc/shadow", tarfile.LNKTYPE)), "data/h", "'..'"),
    ((_file("data/a"), _link("data/h", "data/missing", tarfile.LNKTYPE)), "data/h", "not an earlier"),
    ((_dir("data"), _special("data/null", tarfile.CHRTYPE)), "data/null", "character device"),
    ((_dir("data"), _special("data/sda", tarfile.BLKTYPE)), "data/sda", "block device"),
    ((_dir("data"), _special("data/fifo", tarfile.FIFOTYPE)), "data/fifo", "fifo"),
    ((_dir("data"), _file("etc/passwd")), "etc/passwd", "outside the expected top-level"),
    ((_file("datax/a"),), "datax/a", "outside the expected top-level"),
])
def test_hostile_archives_are_refused(members, member, reason):
    with pytest.raises(TarSafetyError) as err:
        check(archive(*members))
    assert repr(member)[:-1] in str(err.value) or member in str(err.value)
    assert reason in str(err.value)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_rules_hold_in_other_formats(fmt):
    with pytest.raises(TarSafetyError, match="absolute"):
        check(archive(_dir("data"), _link("data/l", "/etc"), fmt=fmt))


def test_long_names_through_pax_are_checked():
    long_evil = "data/" + "a/" * 80 + "../" * 90 + "evil"
    with pytest.raises(TarSafetyError, match=r"'\.\.'"):
        check(archive(_file(long_evil)))


def test_any_top_level_when_not_restricted():
    assert validate_stream(io.BytesIO(archive(_file("opt/authentik/.env"))), allowed_tops=None).members == 1


def test_truncated_archive_is_refused():
    with pytest.raises(TarSafetyError, match="truncated|damaged"):
        check(GOOD[:len(GOOD) // 2])
    # cut exactly after a member: no end-of-archive marker
    one = archive(_file("data/a", b"x" * 512))
    with pytest.raises(TarSafetyError, match="truncated"):
        check(one[:1024])


def test_not_a_tar():
    with pytest.raises(TarSafetyError):
        check(b"hello world" * 100)


def test_rebuild_round_trips_and_filters():
    data = b"".join(rebuild(io.BytesIO(GOOD)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert "data/ünï cödé.bin" in names
        assert tar.extractfile("data/ünï cödé.bin").read() == bytes(range(256)) * 10
        assert tar.getmember("data/sub/link").linkname == "../a.txt"
        assert tar.getmember("data/hard").islnk()
    only_templates = b"".join(rebuild(io.BytesIO(GOOD), tops={"templates"}))
    with tarfile.open(fileobj=io.BytesIO(only_templates)) as tar:
        assert tar.getnames() == ["templates", "templates/login.html"]
    renamed = b"".join(rebuild(io.BytesIO(GOOD), tops={"data"},
                               rename=lambda parts: "/".join(["x"] + parts[1:]) if len(parts) > 1 else None))
    with tarfile.open(fileobj=io.BytesIO(renamed)) as tar:
        assert "data" not in tar.getnames() and "x/a.txt" in tar.getnames()
        assert tar.getmember("x/hard").linkname == "x/a.txt"  # hardlink targets follow the renaming
    # deterministic: the counting pass and the sending pass yield the same bytes
    assert b"".join(rebuild(io.BytesIO(GOOD))) == data


# --- the member policy of both restore paths ------------------------------------------------------------------


def _owned(info, mode, uid=4242, gid=4343, uname="nobody", gname="nogroup"):
    info.mode, info.uid, info.gid, info.uname, info.gname = mode, uid, gid, uname, gname
    return info


def test_the_same_path_cannot_change_kind_inside_the_archive():
    for members, reason in (((_dir("data"), _link("data/x", "sub"), _dir("data/x")), "both a symlink and a dir"),
                            ((_dir("data"), _dir("data/x"), _link("data/x", "sub")), "both a directory and a sym"),
                            ((_dir("data"), _file("data/x"), _dir("data/x")), "both a file and a directory"),
                            ((_dir("data"), _file("data/x"), _file("data/x/y")), "which the archive makes a file")):
        with pytest.raises(TarSafetyError, match=reason):
            check(archive(*members))
    # the same kind again (an appended newer copy) is fine, and a later file may replace a symlink
    assert check(archive(_dir("data"), _file("data/x", b"1"), _file("data/x", b"2"), _link("data/l", "x"),
                         _file("data/l"))).members == 5


def test_entries_list_every_path_with_implied_parents_first():
    summary = validate_stream(io.BytesIO(archive(_file("data/a/b/c.txt", b"abc"), _dir("data/a"),
                                                 _link("data/h", "data/a/b/c.txt", tarfile.LNKTYPE),
                                                 _link("data/l", "a"))), keep_entries=True)
    assert list(summary.entries.items()) == [("data", ("d", 0)), ("data/a", ("d", 0)), ("data/a/b", ("d", 0)),
                                             ("data/a/b/c.txt", ("f", 3)), ("data/h", ("h", 3)), ("data/l", ("l", 0))]
    assert check(GOOD).entries is None  # only when asked


def test_rebuild_clears_special_bits_and_names_and_sizes_of_non_files():
    link = _owned(_link("data/l", "a")[0], 0o777)
    link.size = 700  # a size on a symlink: no data follows it for Python, GNU tar would skip 700 bytes
    members = (_owned(_dir("data")[0], 0o1777), None), (_owned(_file("data/a", b"run")[0], 0o6755), b"run"), \
        (link, None), (_owned(_dir("data/d")[0], 0o2750, uid=0, gid=0), None)
    raw = archive(*members)
    with tarfile.open(fileobj=io.BytesIO(b"".join(rebuild(io.BytesIO(raw))))) as tar:
        got = {m.name: (oct(m.mode), m.uid, m.gid, m.uname, m.gname, m.size) for m in tar.getmembers()}
    assert got == {"data": ("0o777", 4242, 4343, "", "", 0), "data/a": ("0o755", 4242, 4343, "", "", 3),
                   "data/l": ("0o777", 4242, 4343, "", "", 0), "data/d": ("0o750", 0, 0, "", "", 0)}


def test_non_files_with_a_size_reach_the_target_as_python_read_them(tmp_path):
    """A symlink with a size swallows the next header for GNU tar but not for Python's tarfile (nor busybox): the
    rebuilt stream gives it size 0, so GNU tar extracts exactly the members that were checked."""
    def header(name, kind, size=0, linkname=""):
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname = kind, size, linkname
        return info.tobuf(format=tarfile.USTAR_FORMAT)

    hidden = header("data/hidden", tarfile.REGTYPE, 4) + b"evil".ljust(512, b"\0")
    raw = (header("data", tarfile.DIRTYPE) + header("data/l", tarfile.SYMTYPE, len(hidden), "x") + hidden
           + header("data/after", tarfile.REGTYPE, 2) + b"ok".ljust(512, b"\0") + bytes(1024))
    assert check(raw).members == 4  # data, data/l, data/hidden, data/after: hidden was checked as a member
    import subprocess  # noqa: PLC0415 - GNU tar is the other reader here

    listed = subprocess.run(["tar", "-tf", "-"], input=b"".join(rebuild(io.BytesIO(raw))), capture_output=True,
                            check=True).stdout.decode().split()
    assert listed == ["data/", "data/l", "data/hidden", "data/after"]
    assert "data/hidden" not in subprocess.run(["tar", "-tf", "-"], input=raw, capture_output=True,
                                               check=True).stdout.decode()  # what it would have missed


@pytest.mark.parametrize("kind, current, keep, refused", [
    ("d", "l", False, "is a symlink in the target and a directory in the archive"),
    ("l", "d", False, "is a directory in the target and a symlink in the archive"),
    ("f", "d", True, "is a directory in the target and a file in the archive"),
    ("h", "d", True, "a hardlink in the archive"),
    ("f", "d", False, None),  # clean: the directory goes with everything else
    ("d", "f", True, None),  # a file is replaced by the directory
    ("f", "l", True, None),
    ("d", "d", True, None),
    ("l", None, True, None),
])
def test_kind_conflicts(kind, current, keep, refused):
    problem = kind_conflict("x", kind, current, keep)
    assert (problem is None) if refused is None else (refused in problem)


def test_local_extraction_policy(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    raw = archive((_owned(_dir("opt")[0], 0o1777), None), (_owned(_file("opt/run", b"#!")[0], 0o4755), b"#!"),
                  (_owned(_file("opt/.env", b"A=1")[0], 0o2640), b"A=1"))
    done = extract_local(io.BytesIO(b"".join(rebuild(io.BytesIO(raw)))), str(root))
    assert {f["name"]: f["mode"] for f in done.files} == {"opt/run": "0755", "opt/.env": "0640"}
    modes = {p.name: oct(p.stat().st_mode & 0o7777) for p in (root / "opt").iterdir()}
    assert modes == {"run": "0o600", ".env": "0o600"} and oct((root / "opt").stat().st_mode & 0o7777) == "0o700"
    owner = os.getuid()
    assert {p.stat().st_uid for p in (root / "opt").iterdir()} == {owner}  # never the archived 4242


def test_local_symlink_and_directory_swaps_are_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "opt").symlink_to("real")
    (root / "keep" / "sub").mkdir(parents=True)
    for raw in (archive(_file("first", b"1"), _dir("opt"), _file("opt/x", b"x")),
                archive(_file("first", b"1"), _link("keep/sub", "."))):
        summary = validate_stream(io.BytesIO(raw), keep_entries=True)
        with pytest.raises(TarSafetyError, match="nothing was written"):
            check_local_kinds(str(root), summary.entries)
        assert not (root / "first").exists() and not (root / "real" / "x").exists()
        # extract_local refuses it too (when the target changed after the check), never following the link
        with pytest.raises(TarSafetyError, match="symlink|directory in the target"):
            extract_local(io.BytesIO(raw), str(root))
        assert not (root / "real" / "x").exists() and (root / "opt").is_symlink() and (root / "keep" / "sub").is_dir()
        (root / "first").unlink()  # written before the swap was met: what check_local_kinds spares a restore
