# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The metrics of the backups of a destination, in the Prometheus text exposition format (version 0.0.4), for
node_exporter's textfile collector.

One file can hold the series of several destinations (host, dest, prefix): a run replaces its own series and keeps
the others'. Pure functions: parsing, merging and rendering; backup_metrics reads the destination and writes.
"""

from __future__ import annotations

import math
import re

# (name, help); every metric is a gauge labelled host, dest, prefix
METRICS = (
    ("authentik_backup_last_run_timestamp_seconds", "Unix time the last backup run ended, successful or not."),
    ("authentik_backup_last_run_success", "1 if the last backup run succeeded, 0 if it failed."),
    ("authentik_backup_last_run_duration_seconds", "Seconds the last backup run took."),
    ("authentik_backup_last_success_timestamp_seconds",
     "Unix time the last successful backup run ended (0: none known)."),
    ("authentik_backup_last_failure_timestamp_seconds", "Unix time the last failed backup run ended (0: none known)."),
    ("authentik_backup_last_set_timestamp_seconds",
     "Unix time the newest complete backup set was completed (0: there is none)."),
    ("authentik_backup_last_set_size_bytes", "Bytes of the files of the newest complete backup set."),
    ("authentik_backup_last_set_files", "Files (parts) of the newest complete backup set."),
    ("authentik_backup_complete_sets", "Complete backup sets in the destination."),
    ("authentik_backup_incomplete_sets", "Incomplete or partial backup sets in the destination (never a backup)."),
)
NAMES = {name for name, _help in METRICS}
LABELS = ("host", "dest", "prefix")
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def escape(value):
    """A label value as the exposition format writes it (backslash, double quote and line feed escaped)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def unescape(value):
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], value)


def parse_labels(text):
    """{name: value} of the inside of a sample's braces; None when it cannot be read."""
    labels, pos = {}, 0
    text = text or ""
    while pos < len(text.rstrip()):
        match = _LABEL.match(text, pos)
        if not match:
            return None
        labels[match.group(1)] = unescape(match.group(2))
        pos = match.end()
    return labels


def parse(text):
    """[(name, labels, value)] of the samples of this collection's metrics in an exposition text; comments, other
    metrics and lines that cannot be read are left out."""
    samples = []
    for line in (text or "").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if not match or match.group(1) not in NAMES:
            continue
        labels = parse_labels(match.group(2))
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if labels is not None and not math.isnan(value):
            samples.append((match.group(1), labels, value))
    return samples


def series_key(labels):
    return tuple(str(labels.get(name, "")) for name in LABELS)


def previous_values(samples, key):
    """{metric name: value} of one series (host, dest, prefix) among parsed samples."""
    return {name: value for name, labels, value in samples if series_key(labels) == key}


def _number(value):
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(samples):
    """The exposition text of ``samples`` [(name, labels, value)]: each metric's HELP and TYPE once, then its
    samples sorted by their labels, metrics in the order of METRICS; the text ends with a line feed."""
    lines = []
    for name, text in METRICS:
        mine = sorted((s for s in samples if s[0] == name), key=lambda s: series_key(s[1]))
        if not mine:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for _name, labels, value in mine:
            inside = ",".join(f'{label}="{escape(labels.get(label, ""))}"' for label in LABELS)
            lines.append(f"{name}{{{inside}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def merge(previous, key, values):
    """The samples of ``previous`` with the series ``key`` replaced by ``values`` ({name: value})."""
    labels = dict(zip(LABELS, key))
    kept = [s for s in previous if series_key(s[1]) != key]
    return kept + [(name, labels, value) for name, value in values.items()]
