# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run this checkout's playbooks and modules from tests, with JSON output parsed into task results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from testbed import paths

REPO = paths.REPO_ROOT
VENV_BIN = Path(sys.executable).parent


def ansible_env():
    """The environment of an ansible run: this checkout's collection, the venv's collections, JSON output."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": f"{REPO / '.collections'}:{VENV_BIN.parent}/lib/"
                                    f"python{sys.version_info[0]}.{sys.version_info[1]}/site-packages",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
    })
    return env


def results_of(stdout):
    """(task name, host result) of every task in the JSON callback's output."""
    data = json.loads(stdout[stdout.index("{"):])
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for result in task.get("hosts", {}).values():
                yield task["task"]["name"], result


def run_playbook(inventory, playbook, *extra, timeout=300, env=None):
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    for item in extra:
        argv += ["-e", item]
    return subprocess.run(argv, cwd=REPO, env=env or ansible_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_module(module, check_mode=False, env=None, **args):
    """Run one of the collection's modules on localhost; returns (its result, the process)."""
    argv = [str(VENV_BIN / "ansible"), "localhost", "-m", f"authentik_ops.backup.{module}", "-a", json.dumps(args),
            "-e", f"ansible_python_interpreter={sys.executable}"]
    if check_mode:
        argv.append("--check")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or ansible_env(), check=False, cwd=REPO)
    return [r for _n, r in results_of(proc.stdout)][0], proc
