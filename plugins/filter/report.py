# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that build the run report (report.json, last-failure.json) and the notification of a backup run.

Both are pure: they only look at their arguments (the manifest written by backup_set and the results of the lock
and prune modules). The documentation of each filter is in the YAML file of the same name next to this file.
"""

from __future__ import annotations

import datetime

REPORT_FORMAT = 1
FILE_KEYS = ("part", "name", "size", "sha256", "compression", "raw_size", "duration")


def _parse(text):
    try:
        return datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def _rate(size, seconds):
    return round(size / seconds, 1) if size is not None and seconds else None


def authentik_backup_report(manifest, status, host, dest, prefix, set_name=None, set_path=None, started_at=None,
                            ended_at=None, lock=None, prune=None, error=None, warnings=None, manifest_sha256=None,
                            platform=None):
    """The report of one run; see authentik_backup_report.yml."""
    manifest = manifest or {}
    files = []
    for entry in manifest.get("files") or []:
        record = {key: entry.get(key) for key in FILE_KEYS}
        record["throughput"] = _rate(entry.get("raw_size", entry.get("size")), entry.get("duration"))
        files.append(record)
    size = sum(f["size"] or 0 for f in files)
    raw_size = sum((f["raw_size"] if f["raw_size"] is not None else f["size"]) or 0 for f in files)
    parts_duration = round(sum(f["duration"] or 0 for f in files), 3)
    started = started_at or manifest.get("started_at")
    begin, end = _parse(started), _parse(ended_at)
    duration = (end - begin).total_seconds() if begin and end else None
    warnings = list(warnings or [])
    lock = lock or {}
    prune = prune or {}
    if lock.get("took_over"):
        warnings.append(f"took over the lock left by a dead run: {lock['took_over'].get('reason')}")
    for info in prune.get("incomplete") or []:
        if info.get("stale") and not info.get("removed"):
            warnings.append(f"incomplete set {info['name']} untouched for {info['age']} s (left by a run that died?)")
    authentik = manifest.get("authentik") or {}
    if manifest and not authentik.get("version"):
        warnings.append("the authentik version is unknown; a restore needs the same version")
    report = {
        "format": REPORT_FORMAT,
        "status": status,
        "host": host,
        "lock_host": (lock.get("record") or {}).get("host"),
        "dest": dest,
        "prefix": prefix,
        "set": manifest.get("set") or set_name,
        "path": set_path,
        "platform": manifest.get("platform") or platform,
        "authentik": authentik or None,
        "source": manifest.get("source"),
        "collection_version": manifest.get("collection_version"),
        "started_at": started,
        "completed_at": manifest.get("completed_at"),
        "ended_at": ended_at,
        "duration": duration,
        "manifest": {"name": "manifest.json", "sha256": manifest_sha256} if manifest else None,
        "files": files,
        "totals": {"files": len(files), "size": size, "raw_size": raw_size, "parts_duration": parts_duration,
                   "throughput": _rate(raw_size, parts_duration)},
        "skipped": manifest.get("skipped") or [],
        "warnings": warnings,
        "lock": {"run_id": lock.get("run_id"), "waited": lock.get("waited"), "took_over": lock.get("took_over")}
        if lock.get("run_id") else None,
        "retention": {"policy": prune.get("policy"), "removed": prune.get("removed") or [],
                      "kept": [k.get("name") for k in prune.get("kept") or []], "latest": prune.get("latest"),
                      "incomplete": prune.get("incomplete") or []} if prune.get("policy") else None,
        "error": error,
    }
    return report


def _human(size):
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"  # pragma: no cover


def authentik_backup_notification(report):
    """The JSON body POSTed to the notification URL; see authentik_backup_notification.yml."""
    if report.get("status") == "success":
        text = (f"authentik backup on {report.get('host')}: OK, set {report.get('set')} "
                f"({report['totals']['files']} files, {_human(report['totals']['size'])}"
                f"{', %s s' % round(report['duration']) if report.get('duration') is not None else ''})")
    else:
        error = (report.get("error") or {}).get("msg") or "unknown error"
        text = f"authentik backup on {report.get('host')}: FAILED: {error}"
    if report.get("warnings"):
        text += f"; {len(report['warnings'])} warning(s): " + "; ".join(report["warnings"])
    return {
        "text": text,
        "status": report.get("status"),
        "host": report.get("host"),
        "dest": report.get("dest"),
        "set": report.get("set"),
        "path": report.get("path"),
        "started_at": report.get("started_at"),
        "ended_at": report.get("ended_at"),
        "duration": report.get("duration"),
        "size": (report.get("totals") or {}).get("size"),
        "files": (report.get("totals") or {}).get("files"),
        "removed_sets": (report.get("retention") or {}).get("removed", []),
        "warnings": report.get("warnings") or [],
        "error": report.get("error"),
    }


class FilterModule:
    """Report filters of authentik_ops.backup."""

    def filters(self):
        return {
            "authentik_backup_report": authentik_backup_report,
            "authentik_backup_notification": authentik_backup_notification,
        }
