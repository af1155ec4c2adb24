# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node_exporter textfile metrics the backup role writes after every run (authentik_backup_metrics_file).

Real runs of playbooks/backup.yml against the test bed's current stack (database only, to stay quick): a success,
then a failure (a database role that does not exist), then a check-mode run whose metrics directory is missing.
The file is read with prometheus_client's parser, the reference parser of the text exposition format, then by a real
node_exporter (textfile collector), and the alert rules of docs/prometheus/ are evaluated on its series by promtool.
"""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testbed import ansible_run, paths, prom

PLAYBOOK = paths.REPO_ROOT / "playbooks" / "backup.yml"
PG_ONLY = '{"authentik_backup_components": ["postgres"]}'
OTHER = 'authentik_backup_complete_sets{host="akbt-b5-other",dest="/srv/other",prefix="authentik"} 4\n'
RULES = paths.REPO_ROOT / "docs" / "prometheus" / "authentik-backup.rules.yml"
SET_AT = 600  # promtool's clock starts at 0: the set is made 10 minutes in


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


def exported(textfile_dir, dest):
    """What a real node_exporter exports from the directory: the series of ``dest`` (text lines) and its mtime line."""
    text = prom.scrape(textfile_dir)
    assert "node_textfile_scrape_error 0" in text.splitlines(), text
    mine = [line for line in text.splitlines() if line.startswith("authentik_backup_") and f'dest="{dest}"' in line]
    mtime = [line for line in text.splitlines() if line.startswith("node_textfile_mtime_seconds{")]
    assert mine and len(mtime) == 1, text
    return mine, mtime[0]


def alert_series(lines, mtime_line):
    """promtool input series from node_exporter's lines; the set's time is moved to SET_AT on promtool's clock."""
    series = []
    for line in lines + [mtime_line]:
        selector, value = line.rsplit(" ", 1)
        if selector.startswith("authentik_backup_last_set_timestamp_seconds"):
            value = SET_AT
        series.append((selector, f"{float(value):g}+0x1800"))  # constant for 30 hours of 1-minute samples
    return series


def expected_alerts(labels, success):
    """The alert_rule_test cases for a set made at SET_AT by a run that succeeded or not (labels of its series)."""
    host, dest = labels["host"], labels["dest"]
    too_old = [{"exp_labels": dict(labels, severity="critical"),
                "exp_annotations": {"summary": f"No complete authentik backup of {host} in 26 h",
                                    "description": f"The newest complete set in {dest} ({labels['prefix']}) is "
                                                   f"{prom.humanize_duration(27 * 3600 - SET_AT)} old."}}]
    failed = [{"exp_labels": dict(labels, severity="warning"),
               "exp_annotations": {"summary": f"The last authentik backup run of {host} failed",
                                   "description": f"See {dest}/last-failure.json on {host}."}}]
    return [{"eval_time": "1h", "alertname": "AuthentikBackupTooOld", "exp_alerts": []},
            {"eval_time": "27h", "alertname": "AuthentikBackupTooOld", "exp_alerts": too_old},
            {"eval_time": "1h", "alertname": "AuthentikBackupFailed", "exp_alerts": [] if success else failed},
            {"eval_time": "2h", "alertname": "AuthentikBackupMetricsMissing", "exp_alerts": []}]


def assert_alerts(textfile_dir, dest, success, tmp):
    lines, mtime = exported(textfile_dir, dest)
    labels = {"host": "localhost", "dest": str(dest), "prefix": "authentik"}
    status, output = prom.promtool_test(RULES, alert_series(lines, mtime), expected_alerts(labels, success), tmp)
    assert status == 0, output


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
    assert_alerts(textfile_dir, dest, True, tmp_path)

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
    assert_alerts(textfile_dir, dest, False, tmp_path)


def test_alert_rules_see_a_missing_metrics_file(tmp_path):
    """Without the file (or with node_exporter failing to read it) only AuthentikBackupMetricsMissing fires."""
    empty = tmp_path / "textfile"
    empty.mkdir()
    assert "node_textfile_mtime_seconds{" not in prom.scrape(empty)
    cases = [{"eval_time": "30m", "alertname": "AuthentikBackupMetricsMissing", "exp_alerts": []},
             {"eval_time": "2h", "alertname": "AuthentikBackupMetricsMissing",
              "exp_alerts": [{"exp_labels": {"severity": "warning"},
                              "exp_annotations": {"summary": "node_exporter does not read the authentik backup metrics"}}]}]
    status, output = prom.promtool_test(RULES, [("node_textfile_scrape_error", "0+0x200")], cases, tmp_path)
    assert status == 0, output
    broken = [("node_textfile_scrape_error", "1+0x200"),
              ('node_textfile_mtime_seconds{file="/x/authentik_backup.prom"}', "1+0x200")]
    cases[1]["exp_alerts"][0]["exp_labels"] = {"severity": "warning"}
    status, output = prom.promtool_test(RULES, broken, cases, tmp_path)
    assert status == 0, output


def test_unwritable_metrics_file_is_a_warning_not_a_failed_backup(stack_current, inventory, tmp_path):
    missing = tmp_path / "no-such-dir" / "authentik_backup.prom"
    run = ansible_run.run_playbook(inventory, PLAYBOOK, f"authentik_backup_dest={tmp_path / 'backups'}",
                                   f"authentik_backup_compose_project={stack_current.project}", PG_ONLY,
                                   f"authentik_backup_metrics_file={missing}", check=True)
    assert run.rc == 0, run.explain()
    warning = run.msg("Warn that the metrics file was not written")
    assert warning and f"the directory {missing.parent} does not exist" in warning, run.explain()
    assert not Path(missing.parent).exists()
