# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Member-safety rules of restored archives, with hostile archives built by tarfile."""

from __future__ import annotations

import io
import tarfile

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._tarsafe import (
    TarSafetyError,
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
    no_top = b"".join(rebuild(io.BytesIO(GOOD), tops={"templates"}, skip_top_dirs=True))
    with tarfile.open(fileobj=io.BytesIO(no_top)) as tar:
        assert tar.getnames() == ["templates/login.html"]
    # deterministic: the counting pass and the sending pass yield the same bytes
    assert b"".join(rebuild(io.BytesIO(GOOD))) == data
