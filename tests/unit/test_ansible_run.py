# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The integration tests' one runner (tests/testbed/ansible_run.py) on small real playbooks: task results, facts and
failures per host from the JSON callback, ansible's text output, extra vars in order, background runs, and the
environment it gives ansible."""

from __future__ import annotations

import pytest

from testbed import ansible_run

PLAYBOOK = """
- name: Runner check
  hosts: all
  gather_facts: false
  tasks:
    - name: Remember
      ansible.builtin.set_fact:
        akbt_answer: "{{ akbt_value | default('none') }}-{{ inventory_hostname }}"
    - name: Say
      ansible.builtin.debug:
        msg: "said {{ akbt_answer }} env={{ lookup('ansible.builtin.env', 'AKBT_RUNNER_SECRET') }}"
    - name: Fail on the second host
      ansible.builtin.fail:
        msg: "{{ inventory_hostname }} fails on purpose"
      when: inventory_hostname == 'akbt-two'
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("runner")
    (base / "play.yml").write_text(PLAYBOOK)
    (base / "hosts.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n  hosts:\n    akbt-one: {}\n    akbt-two: {}\n")
    return base


@pytest.fixture(scope="module")
def json_run(files):
    return ansible_run.run_playbook(files / "hosts.yml", files / "play.yml", "akbt_value=first", {"akbt_value": "2nd"},
                                    check=True)


def test_results_per_host_and_failures(json_run):
    assert json_run.rc == json_run.returncode == 2, json_run.explain()
    assert "--check" in json_run.proc.args
    assert json_run.msg("Say", "akbt-one").startswith("said 2nd-akbt-one")
    assert json_run.fact("akbt_answer", "akbt-two") == "2nd-akbt-two"  # the later extra var wins
    assert json_run.failure("akbt-two") == "akbt-two fails on purpose"
    assert json_run.failure("akbt-one") is None
    assert json_run.failure() == "akbt-two fails on purpose"
    assert json_run.result("No such task") is None
    assert [name for name, _r in json_run.results("akbt-one")] == ["Remember", "Say", "Fail on the second host"]
    assert [name for name, _r in ansible_run.results_of(json_run.stdout)].count("Say") == 2
    assert json_run.data["stats"]["akbt-two"]["failures"] == 1


def test_text_output_background_run_and_unset_environment(files, monkeypatch):
    monkeypatch.setenv("AKBT_RUNNER_SECRET", "from-the-caller")
    wait = ansible_run.start_playbook(files / "hosts.yml", files / "play.yml", "akbt_value=bg",
                                      unset=("AKBT_RUNNER_SECRET",))
    shown = ansible_run.run_playbook(files / "hosts.yml", files / "play.yml", callback=ansible_run.TEXT)
    assert "TASK [Say]" in shown.stdout and "env=from-the-caller" in shown.stdout, shown.explain()
    with pytest.raises(AssertionError, match="text callback"):
        list(shown.results())
    background = wait(timeout=300)
    assert background.msg("Say", "akbt-one") == "said bg-akbt-one env=", background.explain()


def test_module_of_this_collection(tmp_path):
    result, run = ansible_run.run_module("backup_verify", home=tmp_path / "home", path="/nonexistent/akbt-set")
    assert run.rc != 0 and result["failed"], run.explain()
    assert result["msg"] == "/nonexistent/akbt-set is not a backup set directory"
    assert (tmp_path / "home").is_dir()  # the run's own ANSIBLE_HOME


def test_environment():
    env = ansible_run.ansible_env(home="/x", unset=("PATH",))
    assert env["ANSIBLE_STDOUT_CALLBACK"] == ansible_run.JSON and env["ANSIBLE_HOME"] == "/x"
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(":")[0] == str(ansible_run.REPO / ".collections")
    assert env["PATH"].startswith(str(ansible_run.VENV_BIN))
    assert "ANSIBLE_STDOUT_CALLBACK" not in ansible_run.ansible_env(callback=ansible_run.TEXT)
