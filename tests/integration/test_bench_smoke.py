"""A tiny run of benchmarks/run.py (``make bench-smoke``), so the benchmark does not rot.

Only that it runs and writes its figures is checked: timings are never asserted (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_smoke_runs_and_writes_figures(tmp_path, images):  # pylint: disable=unused-argument
    output = tmp_path / "bench.json"
    project = "akbt-bench-smoke" + os.environ.get("AKBT_PROJECT_SUFFIX", "")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--project", project,
                           "--output", str(output)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(output.read_text())
    for section in ("dump", "codecs", "k8s", "role", "restore", "rss", "upgrade"):
        assert section in report, section
    # the upgrade ran (15 -> 17) and its downtime was read from Docker's events
    assert report["upgrade"]["downtime"] > 0 and report["upgrade"]["raw_copy"]["seconds"] > 0, report["upgrade"]
    assert report["dump"]["median"]["ours_none"]["bytes_written_inside"] == 0
    assert report["dump"]["median"]["ours_zstd"]["raw_size"] > 0
    assert report["dump"]["median"]["ours_exec_none"]["bytes_written_inside"] == 0
    assert {r["method"] for r in report["dump"]["rounds"]["ours_none"]} == {"helper"}
    assert {r["method"] for r in report["dump"]["rounds"]["ours_exec_zstd"]} == {"exec"}
    assert {row["name"] for row in report["ratios"]} >= {"kubernetes exec transport throughput / docker exec transport"}
    assert "raw pipe" in proc.stdout
