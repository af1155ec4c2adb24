# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus' own tools against the metrics the backup role writes (Debian packages prometheus and
prometheus-node-exporter, installed by tests/testbed/bootstrap.sh).

- ``scrape(textfile_dir)``: a real node_exporter (textfile collector only) on 127.0.0.1 reads the directory; returns
  the text of its /metrics.
- ``promtool_test(rules, series, cases, tmp)``: ``promtool test rules`` of the alert rules on the given series; returns
  (exit status, output).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request

import yaml

NODE_EXPORTER = "prometheus-node-exporter"
PROMTOOL = "promtool"


def _require(tool):
    path = shutil.which(tool)
    if not path:
        raise RuntimeError(f"{tool} is missing: tests/testbed/bootstrap.sh installs it (Debian package)")
    return path


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(textfile_dir, timeout=20):
    """The /metrics text of a node_exporter that reads only ``textfile_dir``."""
    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603
        [_require(NODE_EXPORTER), f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={textfile_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:  # noqa: S310
                    return answer.read().decode()
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node_exporter did not answer: {proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)


def humanize_duration(seconds):
    """Prometheus' humanizeDuration for whole seconds >= 60."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s"


def promtool_test(rules, series, cases, tmp, interval="1m"):
    """``promtool test rules``: ``series`` is [(series selector text, values text)], ``cases`` the alert_rule_test
    list (eval_time, alertname, exp_alerts). Returns (exit status, output)."""
    spec = {"rule_files": [str(rules)], "evaluation_interval": interval,
            "tests": [{"interval": interval,
                       "input_series": [{"series": name, "values": values} for name, values in series],
                       "alert_rule_test": cases}]}
    path = tmp / "alerts-test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run([_require(PROMTOOL), "test", "rules", str(path)], capture_output=True, text=True,  # noqa: S603
                          timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr
