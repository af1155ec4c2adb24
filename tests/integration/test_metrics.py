# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node_exporter textfile metrics the backup role writes after every run (authentik_backup_metrics_file).

Real runs of playbooks/backup.yml against the test bed's current stack (database only, to stay quick): a success,
then a failure (a database role that does not exist), then a check-mode run whose metrics directory is missing.
The file is read with prometheus_client's parser, the reference parser of the text exposition format.
"""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testbed import ansible_run, paths

PLAYBOOK = paths.REPO_ROOT / "playbooks" / "backup.yml"
PG_ONLY = '{"authentik_backup_components": ["postgres"]}'
OTHER = 'authentik_backup_complete_sets{host="akbt-b5-other",dest="/srv/other",prefix="authentik"} 4\n'


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).timestamp()


def read_metrics(path):
    """{(metric, host, dest, prefix): value} of every sample, through prometheus_client's parser."""
    values = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family
        assert family.documentation, family.name
        for sample in family.samples:
            labels = sample.labels
            assert set(labels) == {"host", "dest", "prefix"}, sample
            values[(sample.name, labels["host"], labels["dest"], labels["prefix"])] = sample.value
    return values


def series(values, dest):
    return {name: value for (name, host, where, prefix), value in values.items()
            if host == "localhost" and where == str(dest) and prefix == "authentik"}


def test_metrics_after_success_then_failure(stack_current, inventory, tmp_path):
    dest = tmp_path / "backups"
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    metrics = textfile_dir / "authentik_backup.prom"
    metrics.write_text(f"# HELP authentik_backup_complete_sets other host\n# TYPE authentik_backup_complete_sets gauge\n"
                       f"{OTHER}")
    common = [f"authentik_backup_dest={dest}", f"authentik_backup_compose_project={stack_current.project}", PG_ONLY,
              f"authentik_backup_metrics_file={metrics}"]

    started = now()
    good = ansible_run.run_playbook(inventory, PLAYBOOK, *common)
    assert good.rc == 0, good.explain()
    ended = now() + 1
    values = read_metrics(metrics)
    mine = series(values, dest)
    assert mine["authentik_backup_last_run_success"] == 1
    assert started <= mine["authentik_backup_last_run_timestamp_seconds"] <= ended
    assert mine["authentik_backup_last_success_timestamp_seconds"] == mine["authentik_backup_last_run_timestamp_seconds"]
    assert mine["authentik_backup_last_failure_timestamp_seconds"] == 0
    assert 0 < mine["authentik_backup_last_run_duration_seconds"] <= ended - started
    manifest = json.loads((dest / "latest" / "manifest.json").read_text())
    assert mine["authentik_backup_complete_sets"] == 1 and mine["authentik_backup_incomplete_sets"] == 0
    assert mine["authentik_backup_last_set_files"] == len(manifest["files"]) == 1
    assert mine["authentik_backup_last_set_size_bytes"] == sum(f["size"] for f in manifest["files"]) > 0
    assert started <= mine["authentik_backup_last_set_timestamp_seconds"] <= ended
    # the series of another destination in the same file is kept
    assert values[("authentik_backup_complete_sets", "akbt-b5-other", "/srv/other", "authentik")] == 4
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["authentik_backup.prom"]  # no temporary file left
    success_at = mine["authentik_backup_last_success_timestamp_seconds"]

    started = now()
    bad = ansible_run.run_playbook(inventory, PLAYBOOK, *common, "authentik_backup_postgres_user=akbt_no_such_role")
    assert bad.rc != 0 and "failed in part postgres" in bad.failure(), bad.explain()
    ended = now() + 1
    values = read_metrics(metrics)
    mine = series(values, dest)
    assert mine["authentik_backup_last_run_success"] == 0
    assert started <= mine["authentik_backup_last_failure_timestamp_seconds"] <= ended
    assert mine["authentik_backup_last_failure_timestamp_seconds"] == mine["authentik_backup_last_run_timestamp_seconds"]
    assert mine["authentik_backup_last_success_timestamp_seconds"] == success_at  # kept across the failed run
    assert mine["authentik_backup_complete_sets"] == 1 and mine["authentik_backup_incomplete_sets"] == 0
    assert values[("authentik_backup_complete_sets", "akbt-b5-other", "/srv/other", "authentik")] == 4
    failure = json.loads((dest / "last-failure.json").read_text())
    assert failure["status"] == "failed"
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["authentik_backup.prom"]


def test_unwritable_metrics_file_is_a_warning_not_a_failed_backup(stack_current, inventory, tmp_path):
    missing = tmp_path / "no-such-dir" / "authentik_backup.prom"
    run = ansible_run.run_playbook(inventory, PLAYBOOK, f"authentik_backup_dest={tmp_path / 'backups'}",
                                   f"authentik_backup_compose_project={stack_current.project}", PG_ONLY,
                                   f"authentik_backup_metrics_file={missing}", check=True)
    assert run.rc == 0, run.explain()
    warning = run.msg("Warn that the metrics file was not written")
    assert warning and f"the directory {missing.parent} does not exist" in warning, run.explain()
    assert not Path(missing.parent).exists()
