#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_metrics
short_description: Write the metrics of authentik backups for node_exporter's textfile collector
version_added: 0.1.0
description:
  - Writes the state of the backups of one destination as Prometheus gauges (text exposition format) to O(path),
    a C(.prom) file in the directory node_exporter's textfile collector reads
    (C(--collector.textfile.directory)). The backup role calls it at the end of every run, successful or not.
  - The series carry the labels C(host) (O(host)), C(dest) (O(dest)) and C(prefix) (O(prefix)). One file can hold
    the series of several destinations or prefixes; a run replaces only its own series and keeps the others.
  - The last success and last failure times are kept across runs. Each is the newest of the value in the previous
    file, the destination's own reports (C(latest/report.json), C(last-failure.json), the newest complete set's
    C(manifest.json)) and this run (O(status), O(ended_at)).
  - The newest complete set, its size and file count and the number of complete and incomplete sets are read from
    O(dest) (sets of O(prefix); a set whose manifest says C(partial) counts as incomplete).
  - The file is written atomically, a temporary file in the same directory renamed over O(path) (node_exporter never
    reads half a file; the temporary name does not end in C(.prom)), under an exclusive lock of the directory so two
    runs writing the same file do not lose each other's series.
  - Metrics, all gauges, C(authentik_backup_) followed by C(last_run_timestamp_seconds), C(last_run_success) (1 or
    0), C(last_run_duration_seconds), C(last_success_timestamp_seconds), C(last_failure_timestamp_seconds) (0 when
    none is known), C(last_set_timestamp_seconds) (when the newest complete set was completed; 0 when there is
    none), C(last_set_size_bytes), C(last_set_files), C(complete_sets), C(incomplete_sets).
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
attributes:
  check_mode:
    support: full
    details:
      - Reads the destination and the previous file and returns what would be written; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - The file is rewritten on every run that changes a value (the run's time changes with every run).
options:
  path:
    description:
      - The metrics file, an absolute path ending in C(.prom), in a directory that exists.
    type: path
    required: true
  dest:
    description:
      - Directory holding the backup sets (the label C(dest)).
    type: path
    required: true
  prefix:
    description:
      - Prefix of the set names (the label C(prefix)).
    type: str
    default: authentik
  host:
    description:
      - The label C(host), usually the inventory name of the backed-up host.
    type: str
    required: true
  status:
    description:
      - Outcome of the run that calls the module. Unset writes the run metrics of the previous file (if any) and
        refreshes the rest from the destination.
    type: str
    choices: [success, failed]
  ended_at:
    description:
      - When the run ended, as C(YYYY-MM-DDThh:mm:ssZ) (UTC). Defaults to now when O(status) is set.
    type: str
  duration:
    description:
      - Seconds the run took.
    type: float
  mode:
    description:
      - Mode of the metrics file, as an octal string. node_exporter usually runs as another user, so it must be
        readable by that user; the file holds no secret (host name, destination path, times and sizes).
    type: str
    default: "0644"
seealso:
  - module: authentik_ops.backup.backup_set
"""

EXAMPLES = r"""
- name: Record a successful run
  authentik_ops.backup.backup_metrics:
    path: /var/lib/prometheus/node-exporter/authentik_backup.prom
    dest: /var/backups/authentik
    host: "{{ inventory_hostname }}"
    status: success
    duration: 41.0

- name: Refresh the set metrics only (for example from a check job)
  authentik_ops.backup.backup_metrics:
    path: /var/lib/prometheus/node-exporter/authentik_backup.prom
    dest: /var/backups/authentik
    host: "{{ inventory_hostname }}"
"""

RETURN = r"""
path:
  description: The metrics file.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/authentik_backup.prom
values:
  description: The values of this destination's series, by metric name.
  returned: always
  type: dict
  sample: {authentik_backup_last_run_success: 1, authentik_backup_complete_sets: 7,
           authentik_backup_last_set_size_bytes: 90112}
series:
  description: Number of series (host, dest, prefix) in the file, this one included.
  returned: always
  type: int
  sample: 1
"""

import datetime
import fcntl
import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import fsync_dir
from ansible_collections.authentik_ops.backup.plugins.module_utils._metrics import (
    merge,
    parse,
    previous_values,
    render,
    series_key,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import (
    LATEST,
    MANIFEST,
    REPORT,
    name_problem,
    parse_iso,
    scan,
)

FAILURE_REPORT = "last-failure.json"
JSON_LIMIT = 4 << 20
PREFIX = "authentik_backup_"


def timestamp(text):
    moment = parse_iso(text)
    return moment.timestamp() if moment else None


def read_json(path):
    """The JSON object in ``path``, or None when it is missing, too large or not an object."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(JSON_LIMIT + 1)
        value = json.loads(data.decode("utf-8")) if len(data) <= JSON_LIMIT else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def set_values(dest, prefix):
    """The set metrics of ``dest``: counts, and the newest complete (not partial) set's time, size and files."""
    values = {"complete_sets": 0, "incomplete_sets": 0, "last_set_timestamp_seconds": 0,
              "last_set_size_bytes": 0, "last_set_files": 0}
    if not os.path.isdir(dest):
        return values, None
    complete, incomplete, _leftovers = scan(dest, prefix)
    manifests = {name: read_json(os.path.join(dest, name, MANIFEST)) for name in complete}
    good = [n for n in complete if manifests[n] is not None and manifests[n].get("partial") is not True
            and isinstance(manifests[n].get("files"), list)]
    values["complete_sets"] = len(good)
    values["incomplete_sets"] = len(incomplete) + len(complete) - len(good)
    if not good:
        return values, None
    manifest = manifests[good[-1]]
    files = [f for f in manifest["files"] if isinstance(f, dict)]
    values["last_set_files"] = len(files)
    values["last_set_size_bytes"] = sum(int(f.get("size") or 0) for f in files)
    values["last_set_timestamp_seconds"] = timestamp(manifest.get("completed_at")) or 0
    return values, manifest


def report_time(path, status):
    report = read_json(path)
    if report is None or report.get("status") != status:
        return None
    return timestamp(report.get("ended_at"))


def newest(*candidates):
    known = [c for c in candidates if c]
    return max(known) if known else 0


def run_values(params, previous):
    """The run metrics: this run's when it has a status, else the previous file's."""
    if not params["status"]:
        return {k: previous[PREFIX + k] for k in ("last_run_timestamp_seconds", "last_run_success",
                                                  "last_run_duration_seconds") if PREFIX + k in previous}
    ended = timestamp(params["ended_at"]) if params["ended_at"] else None
    if ended is None:
        ended = datetime.datetime.now(datetime.timezone.utc).timestamp()
    return {"last_run_timestamp_seconds": ended, "last_run_success": 1 if params["status"] == "success" else 0,
            "last_run_duration_seconds": max(params["duration"] or 0, 0)}


def collect(params, previous):
    """This series' values {metric: value} from the previous values, the destination and the run."""
    dest = params["dest"]
    values, manifest = set_values(dest, params["prefix"])
    values.update(run_values(params, previous))
    this_run = values.get("last_run_timestamp_seconds") if params["status"] else None
    values["last_success_timestamp_seconds"] = newest(
        previous.get(PREFIX + "last_success_timestamp_seconds"),
        report_time(os.path.join(dest, LATEST, REPORT), "success"),
        timestamp((manifest or {}).get("completed_at")),
        this_run if params["status"] == "success" else None)
    values["last_failure_timestamp_seconds"] = newest(
        previous.get(PREFIX + "last_failure_timestamp_seconds"),
        report_time(os.path.join(dest, FAILURE_REPORT), "failed"),
        this_run if params["status"] == "failed" else None)
    return {PREFIX + name: value for name, value in values.items()}


def check_options(params):
    path = params["path"]
    if not os.path.isabs(path) or not path.endswith(".prom"):
        raise ConfigError(f"path: {path} must be an absolute path ending in .prom (node_exporter's textfile "
                          "collector reads only *.prom files)")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"path: the directory {os.path.dirname(path)} does not exist; create it (the directory "
                          "of node_exporter's --collector.textfile.directory) or choose another path")
    if not re.fullmatch(r"0?[0-7]{3}", params["mode"]):
        raise ConfigError(f"mode: {params['mode']!r} is not an octal file mode such as 0644")
    problem = name_problem("prefix", params["prefix"])
    if problem:
        raise ConfigError(problem)
    if params["ended_at"] and timestamp(params["ended_at"]) is None:
        raise ConfigError(f"ended_at: {params['ended_at']!r} is not a UTC time YYYY-MM-DDThh:mm:ssZ")


def write_atomically(path, text, mode):
    """Write ``text`` to a temporary file beside ``path``, fsync, chmod, rename over ``path``, fsync the directory."""
    directory = os.path.dirname(path)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def update(module):
    params = module.params
    check_options(params)
    path = params["path"]
    key = (params["host"], params["dest"], params["prefix"])
    directory = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        if not module.check_mode:
            fcntl.flock(directory, fcntl.LOCK_EX)
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as handle:
                old_text = handle.read()
        except FileNotFoundError:
            old_text = ""
        samples = parse(old_text)
        values = collect(params, previous_values(samples, key))
        merged = merge(samples, key, values)
        text = render(merged)
        changed = text != old_text
        if changed and not module.check_mode:
            write_atomically(path, text, int(params["mode"], 8))
    except OSError as exc:
        raise BackupError(f"writing the metrics file {path} failed: {exc}", path=path) from exc
    finally:
        os.close(directory)
    return dict(changed=changed, path=path, values=values, series=len({series_key(s[1]) for s in merged}))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            prefix=dict(type="str", default="authentik"),
            host=dict(type="str", required=True),
            status=dict(type="str", choices=["success", "failed"]),
            ended_at=dict(type="str"),
            duration=dict(type="float"),
            mode=dict(type="str", default="0644"),
        ),
        supports_check_mode=True,
    )
    run_module(module, update)


if __name__ == "__main__":
    main()
