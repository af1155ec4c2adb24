#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: workload
short_description: Stop or start authentik's server and worker (Docker containers or Kubernetes Deployments)
version_added: 0.1.0
description:
  - Stops or starts the long-running parts of authentik named in O(targets), all of them at once, for example
    around a restore, so that nothing writes to the database while it is replaced.
  - With O(platform=docker) the targets are containers. O(state=stopped) stops every running one through the
    Engine API (C(SIGTERM), then C(SIGKILL) after O(stop_timeout)); O(state=started) starts every one that does
    not run and, with O(wait=true), waits until each runs and, where it has a health check, is C(healthy).
  - With O(platform=kubernetes) the targets are Deployments of O(namespace), scaled through their C(scale)
    subresource. O(state=stopped) scales every Deployment that has replicas to V(0) and, with O(wait=true), waits
    until no pod of it is left. RV(stopped) lists the replicas each had, to give back with O(state=started).
    O(state=started) scales each Deployment to its O(targets[].replicas) and, with O(wait=true), waits until they
    are ready, as C(kubernetes.core.k8s_scale) does.
  - The targets are stopped or started concurrently; a failure of one is reported after all have ended, naming
    each target that failed.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Reads the state of every target and reports in RV(targets) what would be done; nothing is stopped, started
        or scaled.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Targets already in the asked state are left alone; a second run reports no change.
options:
  state:
    description:
      - V(stopped) stops the targets (containers stopped, Deployments scaled to 0).
      - V(started) starts them (containers started, Deployments scaled to their O(targets[].replicas)).
    type: str
    choices: [stopped, started]
    required: true
  targets:
    description:
      - The containers (Docker) or Deployments (Kubernetes) to stop or start.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name or ID of the container, or name of the Deployment.
        type: str
        required: true
      replicas:
        description:
          - Kubernetes, with O(state=started), the replicas to scale the Deployment to, usually those RV(stopped)
            reported. V(0) leaves it scaled down.
          - Not needed for a Deployment that already has replicas; required for one scaled to 0.
          - Ignored for Docker containers.
        type: int
  platform:
    description:
      - Where the targets run. V(docker) talks to the Docker Engine API over the daemon socket of the host the
        module runs on; V(kubernetes) to the Kubernetes API with the C(kubernetes.core) authentication options.
    type: str
    choices: [docker, kubernetes]
    default: docker
  docker_host:
    description:
      - The Docker daemon socket, as V(unix:///path).
      - If not set, the value of the E(DOCKER_HOST) environment variable is used, else V(unix:///var/run/docker.sock).
    type: str
    default: unix:///var/run/docker.sock
  api_timeout:
    description:
      - Timeout in seconds for a single Docker API call.
    type: int
    default: 60
  namespace:
    description:
      - Namespace of the Deployments. Required with O(platform=kubernetes).
    type: str
  stop_timeout:
    description:
      - Docker, with O(state=stopped), seconds a container has to stop after C(SIGTERM) before it is killed.
      - Defaults to the container's own stop timeout (C(StopTimeout), else 10 seconds). On Kubernetes the pods'
        termination grace period applies.
    type: int
  wait:
    description:
      - Wait until the targets are down (no process, no pod left) or up (running and healthy, replicas ready).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait with O(wait=true) before failing.
    type: int
    default: 300
requirements:
  - For O(platform=kubernetes), the Python C(kubernetes) client and the C(kubernetes.core) collection.
seealso:
  - module: authentik_ops.backup.postgres_restore
  - module: community.docker.docker_container
  - module: kubernetes.core.k8s_scale
"""

EXAMPLES = r"""
- name: Stop authentik's server and worker of a Compose deployment
  authentik_ops.backup.workload:
    state: stopped
    targets:
      - name: authentik-server-1
      - name: authentik-worker-1

- name: Scale the server and worker Deployments of a Helm release to 0
  authentik_ops.backup.workload:
    platform: kubernetes
    namespace: authentik
    state: stopped
    targets:
      - name: authentik-server
      - name: authentik-worker
  register: authentik_stopped

- name: Give them back the replicas they had
  authentik_ops.backup.workload:
    platform: kubernetes
    namespace: authentik
    state: started
    targets: "{{ authentik_stopped.stopped }}"
"""

RETURN = r"""
targets:
  description: Every target with what it was like before the task and what the task did (or would do).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: authentik-server, running: true, replicas: 2, state: "2 of 2 replicas", action: scale to 0}
  contains:
    name:
      description: The container or Deployment.
      type: str
      sample: authentik-server
    running:
      description: Whether it ran (Docker) or had replicas (Kubernetes) before the task.
      type: bool
      sample: true
    replicas:
      description: Desired replicas before the task (Kubernetes; V(null) for Docker containers).
      type: int
      sample: 2
    state:
      description: Its state before the task, as the platform words it.
      type: str
      sample: running (healthy)
    action:
      description: What the task did (or in check mode would do), or V(none).
      type: str
      sample: stop
stopped:
  description: The targets this task stopped, each with its replicas before (Kubernetes), to pass to O(state=started).
  returned: O(state=stopped)
  type: list
  elements: dict
  sample: [{name: authentik-server, replicas: 2}, {name: authentik-worker, replicas: 1}]
duration:
  description: Seconds the stop or start took, waiting included.
  returned: success and not check mode
  type: float
  sample: 4.2
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DEFAULT_DOCKER_HOST,
    Stopwatch,
    k8s_auth_spec,
    run_module,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, ConfigError


def plan_stop(workloads, states):
    """The targets to stop, and the action each gets."""
    todo = [state for state in states if state.running]
    for state in states:
        state.action = ("scale to 0" if workloads.scales else "stop") if state.running else "none"
    return todo


def plan_start(workloads, states, targets):
    """{name: replicas} of the targets to start, and the action each gets."""
    wanted = {}
    for state, target in zip(states, targets):
        state.action = "none"
        if not workloads.scales:
            if not state.running:
                wanted[state.name], state.action = None, "start"
            continue
        replicas = target["replicas"]
        if replicas is None:
            if not state.replicas:
                raise ConfigError(f"targets: {workloads.kind} {state.name} has 0 replicas; give the replicas to "
                                  "scale it to (the stopped result of state=stopped has them)")
            replicas = state.replicas
        if replicas < 0:
            raise ConfigError(f"targets: replicas of {state.name} must be 0 or more")
        if replicas != state.replicas:
            wanted[state.name], state.action = replicas, f"scale to {replicas}"
    return wanted


def run(module):
    params = module.params
    names = [target["name"] for target in params["targets"]]
    if not names or len(set(names)) != len(names):
        raise ConfigError("targets: give each container or Deployment once")
    workloads = factory.open_workloads(params)
    states = workloads.survey(names)
    if params["state"] == "stopped":
        todo = plan_stop(workloads, states)
        result = dict(stopped=[dict(name=s.name, replicas=s.replicas) for s in todo])
    else:
        wanted = plan_start(workloads, states, params["targets"])
        result = {}
    result.update(changed=any(s.action != "none" for s in states),
                  targets=[dict(s.as_dict(), action=s.action) for s in states])
    if module.check_mode or not result["changed"]:
        return result
    watch = Stopwatch()
    try:
        if params["state"] == "stopped":
            workloads.stop(todo, timeout=params["stop_timeout"], wait=params["wait"],
                           wait_timeout=params["wait_timeout"])
        else:
            workloads.start(wanted, wait=params["wait"], wait_timeout=params["wait_timeout"])
    except BackupError as exc:
        raise exc.add_fields(**result)
    result["duration"] = watch.elapsed
    return result


def main():
    argument_spec = dict(
        state=dict(type="str", required=True, choices=["stopped", "started"]),
        targets=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            replicas=dict(type="int"),
        )),
        platform=dict(type="str", default="docker", choices=["docker", "kubernetes"]),
        docker_host=dict(type="str", default=DEFAULT_DOCKER_HOST, fallback=(env_fallback, ["DOCKER_HOST"])),
        api_timeout=dict(type="int", default=60),
        namespace=dict(type="str"),
        stop_timeout=dict(type="int"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
    )
    for name, option in k8s_auth_spec().items():
        argument_spec.setdefault(name, option)
    module = AnsibleModule(argument_spec=argument_spec, required_if=[("platform", "kubernetes", ("namespace",))],
                           supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
