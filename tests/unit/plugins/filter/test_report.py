# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The run report and notification filters."""

from __future__ import annotations

from ansible_collections.authentik_ops.backup.plugins.filter import report

MANIFEST = {
    "format": 1, "set": "authentik-20261130T020000Z", "started_at": "2026-11-30T02:00:01Z",
    "completed_at": "2026-11-30T02:00:09Z", "platform": "docker", "collection_version": "0.2.0",
    "authentik": {"version": "2026.2.2"}, "source": {"compose_project": "authentik"},
    "files": [
        {"part": "postgres", "name": "postgres.sql.zst", "size": 100, "sha256": "a" * 64, "compression": "zstd",
         "raw_size": 1000, "duration": 2.0, "details": {"databases": ["authentik"]}},
        {"part": "data", "name": "data.tar.zst", "size": 50, "sha256": "b" * 64, "compression": "zstd",
         "raw_size": 500, "duration": 0.0},
    ],
    "skipped": [{"part": "redis", "reason": "no redis"}],
}


def test_success_report_follows_the_manifest():
    lock = {"run_id": "r1", "waited": 1.5, "took_over": None, "record": {"host": "box"}}
    prune = {"policy": {"keep_last": 2, "keep_days": 0}, "removed": ["authentik-20261101T020000Z"],
             "kept": [{"name": "authentik-20261130T020000Z", "reasons": ["newest"]}], "latest": MANIFEST["set"],
             "incomplete": [{"name": "authentik-20261102T020000Z", "age": 999999, "stale": True, "removed": False}]}
    out = report.authentik_backup_report(MANIFEST, "success", "h1", "/b", "authentik", set_path="/b/x",
                                         started_at="2026-11-30T02:00:00Z", ended_at="2026-11-30T02:00:10Z",
                                         lock=lock, prune=prune, manifest_sha256="c" * 64)
    assert [(f["name"], f["size"], f["sha256"]) for f in out["files"]] == \
        [(f["name"], f["size"], f["sha256"]) for f in MANIFEST["files"]]
    assert out["files"][0]["throughput"] == 500.0 and out["files"][1]["throughput"] is None
    assert out["totals"] == {"files": 2, "size": 150, "raw_size": 1500, "parts_duration": 2.0, "throughput": 750.0}
    assert out["duration"] == 10.0 and out["set"] == MANIFEST["set"] and out["lock_host"] == "box"
    assert out["retention"]["removed"] == ["authentik-20261101T020000Z"]
    assert out["retention"]["kept"] == ["authentik-20261130T020000Z"]
    assert any("authentik-20261102T020000Z" in w for w in out["warnings"])
    assert out["manifest"] == {"name": "manifest.json", "sha256": "c" * 64} and out["error"] is None
    body = report.authentik_backup_notification(out)
    assert body["status"] == "success" and body["size"] == 150 and "OK" in body["text"]
    assert body["removed_sets"] == ["authentik-20261101T020000Z"]


def test_failure_report():
    out = report.authentik_backup_report(None, "failed", "h1", "/b", "authentik", set_name="authentik-x",
                                         started_at="2026-11-30T02:00:00Z", ended_at="2026-11-30T02:00:03Z",
                                         error={"task": "Dump PostgreSQL", "msg": "boom"}, platform="docker")
    assert out["status"] == "failed" and out["files"] == [] and out["manifest"] is None
    assert out["lock"] is None and out["retention"] is None and out["platform"] == "docker"
    body = report.authentik_backup_notification(out)
    assert body["text"] == "authentik backup on h1: FAILED: boom" and body["error"]["msg"] == "boom"


def test_takeover_and_unknown_version_are_warnings():
    manifest = dict(MANIFEST, authentik={"version": None})
    out = report.authentik_backup_report(manifest, "success", "h", "/b", "authentik",
                                         lock={"run_id": "r", "took_over": {"reason": "process 1 on x is gone"}})
    assert any("took over the lock" in w for w in out["warnings"])
    assert any("version is unknown" in w for w in out["warnings"])
