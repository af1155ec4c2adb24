# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one runner of the integration tests: this checkout's playbooks and modules as real ansible subprocesses.

Every run uses the venv that runs pytest (its ``ansible-playbook`` / ``ansible``), this checkout's collection
(``.collections``, see ``make collections-link``) and the venv's collections (community.docker, kubernetes.core).

- ``run_playbook(inventory, playbook, *extra_vars, ...)`` -> ``Run``; ``start_playbook`` starts one in the background.
- ``run_module(module, check_mode=False, **args)`` -> (its result, ``Run``): one module on localhost.
- ``local_inventory(path)`` writes the inventory most tests use (localhost in group ``authentik``, local connection);
  ``player(base)`` returns ``play(playbook, *extra_vars, check=False, timeout=900) -> Run`` on it, with ansible's
  text output and its own ANSIBLE_HOME under ``base``.

With the JSON callback (the default, ``callback=JSON``) a ``Run`` holds the task results; ``callback=TEXT`` keeps
ansible's default output, for tests that read what a user sees (folded messages, ``-vvv``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from testbed import paths

REPO = paths.REPO_ROOT
VENV_BIN = Path(sys.executable).parent
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
JSON = "ansible.builtin.json"
TEXT = None  # ansible's default callback


def ansible_env(callback=JSON, home=None, unset=()):
    """The environment of an ansible run: this checkout's ansible.cfg and collection, the venv, quiet warnings.

    ``home`` gives the run its own ANSIBLE_HOME; ``unset`` names variables of the caller's environment to leave out
    (e.g. credentials that must come from the test only).
    """
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": f"{REPO / '.collections'}:{SITE_PACKAGES}",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
    })
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    if callback:
        env.update(ANSIBLE_STDOUT_CALLBACK=callback, ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    if home:
        env["ANSIBLE_HOME"] = str(home)
    return env


def _parse(stdout):
    """The JSON callback's document in ``stdout`` (anything printed before it is skipped)."""
    return json.loads(stdout[stdout.index("{"):])


def results_of(stdout):
    """(task name, host result) of every task in the JSON callback's output."""
    yield from ((name, result) for name, _host, result in _results(_parse(stdout)))


def _results(data):
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                yield task["task"]["name"], host, result


class Run:
    """One finished ansible or ansible-playbook run: its exit status and output, and with JSON its task results.

    Role tasks are named "<role> : <name>"; ``result(name)`` finds them by either name.
    """

    def __init__(self, proc, callback=JSON):
        self.proc = proc
        self.rc = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        self.data = None
        if callback == JSON:
            try:
                self.data = _parse(proc.stdout)
            except ValueError:
                self.data = {"plays": [], "stats": {}}

    @property
    def returncode(self):
        """As subprocess.CompletedProcess names it."""
        return self.rc

    def results(self, host=None):
        """(task name, result) of every task, of one host or of all."""
        if self.data is None:
            raise AssertionError("a run with the text callback has no task results: use callback=JSON")
        for name, where, result in _results(self.data):
            if host is None or where == host:
                yield name, result

    def result(self, name, host=None):
        """The last result of the task called ``name``, or None."""
        found = [r for n, r in self.results(host) if n == name or n.endswith(f" : {name}")]
        return found[-1] if found else None

    def msg(self, name, host=None):
        """The ``msg`` of the last result of the task called ``name``, or None."""
        result = self.result(name, host)
        return result["msg"] if result else None

    def failure(self, host=None):
        """The message of the last failed task, or None."""
        msgs = [r.get("msg", "") for _n, r in self.results(host) if r.get("failed") and not r.get("skipped")]
        return msgs[-1] if msgs else None

    def fact(self, name, host=None):
        """The last value the run gave the fact ``name`` (set_fact), or None."""
        for _n, result in reversed(list(self.results(host))):
            if name in result.get("ansible_facts", {}):
                return result["ansible_facts"][name]
        return None

    def explain(self, tail=8000):
        """Exit status and the end of the output, for an assertion message."""
        return f"rc={self.rc}\nstdout (tail):\n{self.stdout[-tail:]}\nstderr:\n{self.stderr[-3000:]}"


def _extra_args(extra):
    """-e arguments: a string as it is (key=value or JSON), a dict as JSON."""
    argv = []
    for item in extra:
        argv += ["-e", json.dumps(item) if isinstance(item, dict) else str(item)]
    return argv


def playbook_argv(inventory, playbook, *extra, check=False, verbose=False, args=()):
    """The ansible-playbook command line; ``inventory=None`` leaves only the implicit localhost; ``args`` are more
    options as they are (``--tags``, ...)."""
    argv = [str(VENV_BIN / "ansible-playbook")]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    argv += [str(playbook), *_extra_args(extra), *args]
    if check:
        argv.append("--check")
    if verbose:
        argv.append("-vvv")
    return argv


def run_playbook(inventory, playbook, *extra, check=False, verbose=False, callback=JSON, home=None, unset=(),
                 timeout=300, args=()):
    """Run a playbook to its end; ``extra`` are extra vars (``key=value``, JSON text or dicts), in order."""
    argv = playbook_argv(inventory, playbook, *extra, check=check, verbose=verbose, args=args)
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(callback, home, unset), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return Run(proc, callback)


def start_playbook(inventory, playbook, *extra, callback=JSON, home=None, unset=()):
    """Start a playbook in the background (as run_playbook); returns ``wait(timeout=300) -> Run``."""
    argv = playbook_argv(inventory, playbook, *extra)
    proc = subprocess.Popen(argv, cwd=REPO, env=ansible_env(callback, home, unset),  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(timeout=300):
        out, err = proc.communicate(timeout=timeout)
        return Run(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), callback)

    return wait


def run_module(module, check_mode=False, home=None, unset=(), timeout=600, **args):
    """Run one module on localhost (``ansible localhost -m``); returns (its result, the Run).

    ``module`` is a name of this collection (``postgres_dump``) or a fully qualified one.
    """
    name = module if "." in module else f"authentik_ops.backup.{module}"
    argv = [str(VENV_BIN / "ansible"), "localhost", "-m", name, "-a", json.dumps(args),
            "-e", f"ansible_python_interpreter={sys.executable}"]
    if check_mode:
        argv.append("--check")
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(JSON, home, unset), capture_output=True, text=True,
                          timeout=timeout, check=False)
    run = Run(proc)
    results = [result for _name, result in run.results("localhost")]
    if not results:
        raise AssertionError(f"no result of {name} in ansible's output: {run.explain()}")
    return results[0], run


def local_inventory(path, group="authentik", host_vars=None, extra=""):
    """Write an inventory of ``localhost`` (local connection, this venv's python) in ``group``; returns ``path``.

    ``host_vars`` (a dict) are added to localhost; ``extra`` is YAML text appended as it is (more groups).
    """
    path = Path(path)
    lines = [f"{group}:", "  hosts:", "    localhost:", "      ansible_connection: local",
             f"      ansible_python_interpreter: {sys.executable}"]
    lines += [f"      {key}: {json.dumps(value)}" for key, value in (host_vars or {}).items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def player(base, callback=TEXT, inventory=None, timeout=900):
    """A playbook runner on ``local_inventory`` (or ``inventory``) with its own ANSIBLE_HOME, under dir ``base``."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    inventory = inventory or local_inventory(base / "hosts.yml")

    def play(playbook, *extra, check=False, timeout=timeout, verbose=False, unset=(), args=()):
        return run_playbook(inventory, playbook, *extra, check=check, verbose=verbose, callback=callback,
                            home=base / "ansible-home", unset=unset, timeout=timeout, args=args)

    play.inventory = inventory
    return play


def one_line(text):
    """Ansible's text output folds long messages and quotes them: compare on single spaces, without quotes."""
    return " ".join(text.replace("'", " ").replace('"', " ").split())
