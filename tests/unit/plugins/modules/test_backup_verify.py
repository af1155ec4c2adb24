# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""backup_verify's per-file checks on files built here (no Docker)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest

from ansible_collections.authentik_ops.backup.plugins.modules import backup_verify
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import crc64

DUMP = (b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE x;\n\\connect a\n"
        b"--\n-- PostgreSQL database cluster dump complete\n--\n\n")


def _entry(path, part, **extra):
    data = path.read_bytes()
    entry = dict(part=part, name=path.name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    entry.update(extra)
    return entry


def _tar(*names, link=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            tar.addfile(info)
    return buf.getvalue()


def _rdb():
    data = b"REDIS0011\xfe\x00\xfb\x01\x00\x00\x01k\x01v\xff"
    return data + crc64(data).to_bytes(8, "little")


def test_good_files(tmp_path):
    (tmp_path / "postgres.sql.gz").write_bytes(gzip.compress(DUMP))
    (tmp_path / "redis.rdb").write_bytes(_rdb())
    (tmp_path / "data.tar").write_bytes(_tar("data/a", "data/b"))
    entries = [_entry(tmp_path / "postgres.sql.gz", "postgres", compression="gzip"),
               _entry(tmp_path / "redis.rdb", "redis"),
               _entry(tmp_path / "data.tar", "data", compression="none", details={"archived": ["/data"]})]
    for entry in entries:
        record = backup_verify.verify_file(str(tmp_path), entry, True)
        assert record["ok"], record["problems"]
    assert backup_verify.verify_file(str(tmp_path), entries[2], True)["details"]["members"] == 2


@pytest.mark.parametrize("mutate, problem", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"X"), "sha256"),
    (lambda p: p.unlink(), "missing"),
    (lambda p: p.write_bytes(gzip.compress(DUMP[:-20])), "truncated"),
])
def test_problems_are_reported(tmp_path, mutate, problem):
    path = tmp_path / "postgres.sql.gz"
    path.write_bytes(gzip.compress(DUMP))
    entry = _entry(path, "postgres", compression="gzip")
    mutate(path)
    record = backup_verify.verify_file(str(tmp_path), entry, True)
    assert not record["ok"]
    assert any(problem in text for text in record["problems"]), record["problems"]


def test_tar_safety_applies(tmp_path):
    path = tmp_path / "data.tar"
    path.write_bytes(_tar("data/a", link=("data/l", "/etc/passwd")))
    record = backup_verify.verify_file(str(tmp_path), _entry(path, "data", details={"archived": ["/data"]}), True)
    assert not record["ok"] and "absolute target" in record["problems"][0]
    path.write_bytes(_tar("data/a", "templates/b"))
    record = backup_verify.verify_file(str(tmp_path), _entry(path, "data", details={"archived": ["/data"]}), True)
    assert "outside the expected top-level" in record["problems"][0]


@pytest.mark.parametrize("name", ["../etc/passwd", "manifest.json", "", "a/b"])
def test_hostile_manifest_names(tmp_path, name):
    record = backup_verify.verify_file(str(tmp_path), {"name": name, "part": "x"}, True)
    assert not record["ok"] and "no valid file name" in record["problems"][0]


def test_allowed_tops():
    assert backup_verify.allowed_tops({"details": {"archived": ["/data", "/templates/"]}}) == {"data", "templates"}
    assert backup_verify.allowed_tops({"details": {"archived": ["/opt/authentik/.env"],
                                                   "target": {"platform": "local"}}}) == {"opt"}
    assert backup_verify.allowed_tops({}) is None
