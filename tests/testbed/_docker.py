"""Thin wrapper around the docker CLI for the test bed (the collection's own Engine API client is not used here,
so the test bed does not depend on the code under test)."""

from __future__ import annotations

import json
import os
import subprocess
import time

DOCKER = os.environ.get("DOCKER", "docker")


class DockerError(RuntimeError):
    """A docker command failed."""


def docker(
    *args, input=None, check=True, env=None, timeout=600, stdin=None, stdout=None
):  # pylint: disable=redefined-builtin
    """Run ``docker *args``; returns CompletedProcess with bytes stdout/stderr. ``env`` is added to os.environ
    (use it with ``docker exec -e NAME`` so secrets travel in the environment, never in argv)."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    kwargs = {"env": full_env, "timeout": timeout}
    if stdin is not None:
        kwargs["stdin"] = stdin
    elif input is not None:
        kwargs["input"] = input
    else:
        kwargs["stdin"] = subprocess.DEVNULL
    proc = subprocess.run(
        [DOCKER, *[str(a) for a in args]],
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise DockerError(
            f"docker {' '.join(str(a) for a in args[:3])} ... failed ({proc.returncode}): "
            f"{proc.stderr.decode('utf-8', 'replace').strip()}"
        )
    return proc


def inspect(kind, name):
    """``docker <kind> inspect name`` as a dict, or None when it does not exist."""
    proc = docker(kind, "inspect", name, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def names(kind, prefix):
    """Names of containers or volumes starting with ``prefix``."""
    if kind == "container":
        out = docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={prefix}").stdout.decode()
    else:
        out = docker("volume", "ls", "--format", "{{.Name}}", "--filter", f"name={prefix}").stdout.decode()
    return sorted(n for n in out.split() if n.startswith(prefix))


def by_label(kind, label):
    """Names of containers or volumes carrying ``label`` (``key=value``)."""
    if kind == "container":
        out = docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"label={label}").stdout.decode()
    else:
        out = docker("volume", "ls", "--format", "{{.Name}}", "--filter", f"label={label}").stdout.decode()
    return sorted(out.split())


def remove_containers(container_names):
    if container_names:
        docker("rm", "-f", "-v", *container_names, check=False)


def remove_volumes(volume_names):
    if volume_names:
        docker("volume", "rm", "-f", *volume_names, check=False)


def wait_for(predicate, timeout, what, interval=0.3):
    """Poll ``predicate()`` until it returns a true value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # pylint: disable=broad-exception-caught
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}" + (f": {last_exc}" if last_exc else ""))


def exec_ok(container, *cmd, env=None, input=None, user=None):  # pylint: disable=redefined-builtin
    """True when ``docker exec container cmd`` exits 0."""
    args = ["exec", "-i"] if input is not None else ["exec"]
    if user:
        args += ["--user", user]
    for key in env or {}:
        args += ["-e", key]
    return docker(*args, container, *cmd, env=env, input=input, check=False).returncode == 0


def container_running(name):
    info = inspect("container", name)
    return bool(info and info["State"]["Running"])
