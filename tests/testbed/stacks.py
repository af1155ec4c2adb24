"""authentik-like Compose stacks made of real containers, brought up by the real Compose CLIs.

Each stack is authentik's own compose file (tests/testbed/compose/, copied into the stack's working directory) plus
an override beside it (``compose.override.yml`` / ``docker-compose.override.yml``: ``network_mode: none``,
``pull_policy: never``, the local images, quicker healthchecks), run with ``docker compose -f <file> -f <override>
up -d`` (Compose v2, names ``<project>-<service>-1``) or ``docker-compose`` 1.29 (v1, ``<project>_<service>_1``)
in that directory. tests/testbed/compose.sh installs both CLIs.

CLI::

    python tests/testbed/stacks.py up   --layout current|legacy --project NAME --naming v1|v2 \\
                                        [--flavour debian|alpine] [--postgres 15|17] \\
                                        [--workdir DIR] [--pg-user U] [--db-size-mb N]
    python tests/testbed/stacks.py data --project NAME [--db-size-mb N]      # reload the sample data
    python tests/testbed/stacks.py down --project NAME
    python tests/testbed/stacks.py show --project NAME                       # the stack description (JSON)

Only projects whose name starts with ``akbt`` are touched.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make the package importable (PEP 366)
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))
    __package__ = "testbed"  # pylint: disable=redefined-builtin
    import testbed  # noqa: F401  pylint: disable=unused-import

import argparse
import contextlib
import fcntl
import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import paths, resp, sample_data
from ._docker import (
    DOCKER,
    DockerError,
    by_label,
    docker,
    exec_ok,
    inspect,
    remove_containers,
    remove_volumes,
    wait_for,
)

COMPOSE_V1 = os.environ.get("AKBT_COMPOSE_V1", "docker-compose")
FLAVOURS = ("debian", "alpine")
# the tag authentik's files default to (AUTHENTIK_TAG); the stacks run paths.AUTHENTIK_VERSIONS
UPSTREAM_TAGS = {"current": "2026.2.0-rc1", "legacy": "2025.2.4"}
HEALTHCHECK_INTERVAL = "3s"
PROJECT_RE = re.compile(r"^akbt[a-z0-9_-]*$")


@dataclasses.dataclass
class Stack:  # pylint: disable=too-many-instance-attributes
    """Description of a running test bed stack (also written to tests/output/testbed/state/<project>.json)."""

    project: str
    layout: str  # current | legacy
    naming: str  # v1 | v2
    workdir: str
    compose_file: str
    env_file: str
    env: dict  # the .env values
    pg_user: str
    pg_db: str
    pg_password: str
    secret_key: str
    containers: dict  # service -> container name
    volumes: dict  # compose volume key -> docker volume name
    images: dict  # service -> image
    versions: dict  # authentik, postgres, redis (None when absent)
    mounts: dict  # service -> {container path: host path}
    databases: list = dataclasses.field(default_factory=list)  # non-template databases except postgres
    redis_password: str | None = None
    db_size_mb: int = 0
    compose_files: list = dataclasses.field(default_factory=list)  # every -f file, absolute (authentik's first)
    compose_version: str = ""  # what the Compose CLI reported
    flavour: str = "debian"  # debian (akbt.local images) | alpine (the upstream names: busybox images)

    @property
    def has_redis(self):
        return "redis" in self.containers

    @property
    def pg_container(self):
        return self.containers["postgresql"]

    @property
    def redis_container(self):
        return self.containers.get("redis")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


def container_name(project, service, naming):
    if naming == "v1":
        return f"{project}_{service}_1"
    if naming == "v2":
        return f"{project}-{service}-1"
    raise ValueError(f"naming must be v1 or v2, not {naming!r}")


def state_file(project):
    return paths.STATE_DIR / f"{project}.json"


class ProjectLocked(RuntimeError):
    """Another process holds the project's lock."""


@contextlib.contextmanager
def lock(project, wait=1800.0, log=print):
    """Hold the project's lock (an flock on tests/output/testbed/state/<project>.lock) for the block, so two
    sessions on one machine never create or remove each other's stack. Waits up to ``wait`` seconds."""
    check_project(project)
    paths.STATE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.STATE_DIR / f"{project}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise ProjectLocked(f"project {project} is in use by another process (lock held)") from exc
                if not told:
                    log(f"stacks: {project} is in use by another process; waiting up to {wait:.0f} s")
                    told = True
                time.sleep(1)
        yield
    finally:
        os.close(fd)


def default_workdir(project):
    return paths.OUTPUT_DIR / project


def check_project(project):
    if not PROJECT_RE.match(project or ""):
        raise ValueError(f"refusing project {project!r}: test bed projects must match {PROJECT_RE.pattern}")


def _random_secret(nbytes):
    return base64.b64encode(os.urandom(nbytes)).decode().replace("/", "_").replace("+", "-")


def _read_env_file(path):
    env = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value.strip()
    return env


def compose_command(naming):
    """The Compose CLI of a naming: v2 is ``docker compose`` (the CLI plugin), v1 is ``docker-compose`` 1.x."""
    if naming == "v2":
        return [DOCKER, "compose"]
    if naming == "v1":
        return [COMPOSE_V1]
    raise ValueError(f"naming must be v1 or v2, not {naming!r}")


def compose_version(naming):
    """The version the Compose CLI of ``naming`` reports (``2.26.1``, ``1.29.2``); DockerError when it is missing."""
    try:
        proc = subprocess.run(
            compose_command(naming) + ["version", "--short"], capture_output=True, check=False, timeout=60
        )
    except FileNotFoundError:
        proc = None
    version = proc.stdout.decode().strip().lstrip("v") if proc and proc.returncode == 0 else ""
    if not version.startswith("2." if naming == "v2" else "1."):
        raise DockerError(
            f"Compose {naming} is missing ({' '.join(compose_command(naming))} version: {version or 'no answer'}): "
            f"run tests/testbed/compose.sh as root"
        )
    return version


def _images(layout, flavour, postgres):
    """{service: image} the override sets; the services it leaves out run the image authentik's file names."""
    version = paths.AUTHENTIK_VERSIONS[layout]
    if flavour == "alpine":
        images = {}
        if UPSTREAM_TAGS[layout] != version:
            images["server"] = images["worker"] = f"{paths.UPSTREAM_AUTHENTIK_REPO}:{version}"
        return images
    images = {
        "postgresql": paths.POSTGRES_IMAGES[postgres],
        "server": f"{paths.AUTHENTIK_IMAGE_REPO}:{version}",
        "worker": f"{paths.AUTHENTIK_IMAGE_REPO}:{version}",
    }
    if layout == "legacy":
        images["redis"] = paths.IMAGE_REDIS
    return images


def override(layout, flavour="debian", postgres="15", redis_password=None):
    """The override Compose gets after authentik's own file: no network for any service (Compose would otherwise
    create a bridge network), never pull, local images where the flavour says so, quicker healthchecks (the
    files' 30 s interval would hold ``up`` for 30 s). The published ports stay: the engine ignores them with
    ``network_mode: none``, and Compose v1 cannot reset them."""
    services = ["postgresql"] + (["redis"] if layout == "legacy" else []) + ["server", "worker"]
    images = _images(layout, flavour, postgres)
    spec = {}
    for service in services:
        entry = {"network_mode": "none", "pull_policy": "never"}
        if service in images:
            entry["image"] = images[service]
        if service in ("postgresql", "redis"):
            entry["healthcheck"] = {"interval": HEALTHCHECK_INTERVAL}
        spec[service] = entry
    if redis_password and "redis" in spec:
        spec["redis"]["command"] = ["--save", "60", "1", "--loglevel", "warning", "--requirepass", redis_password]
    return {"services": spec}


def _compose(stack, *args, timeout=600):
    """Run the stack's Compose CLI in its working directory on its files (relative names, as a user would)."""
    argv = compose_command(stack.naming) + ["-p", stack.project]
    for path in stack.compose_files:
        argv += ["-f", os.path.relpath(path, stack.workdir)]
    argv += list(args)
    proc = subprocess.run(argv, cwd=stack.workdir, capture_output=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
        raise DockerError(f"{' '.join(argv[:2])} {' '.join(args)} failed ({proc.returncode}): {out[-3000:]}")
    return proc


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _prepare_workdir(project, layout, workdir, pg_user, override_spec, extra_env=None):
    """The working directory as a user keeps it: authentik's compose file, the override, .env, the sample files.
    Returns (workdir, compose_file, override_file, env_file, env)."""
    wd = Path(workdir).resolve() if workdir else default_workdir(project)
    if wd.exists() and any(wd.iterdir()):
        raise FileExistsError(f"working directory {wd} exists and is not empty")
    wd.mkdir(parents=True, exist_ok=True)
    src_name, dst_name = paths.COMPOSE_FILES[layout]
    compose_file = wd / dst_name
    shutil.copyfile(paths.COMPOSE_DIR / src_name, compose_file)
    override_file = wd / dst_name.replace(".yml", ".override.yml")
    override_file.write_text(
        "# akbt test bed: what running authentik's compose file offline needs (tests/testbed/stacks.py)\n"
        + yaml.safe_dump(override_spec, sort_keys=False),
        encoding="utf-8",
    )
    env = {"PG_PASS": _random_secret(27), "AUTHENTIK_SECRET_KEY": _random_secret(60)}
    if pg_user:
        env["PG_USER"] = pg_user
    env.update(extra_env or {})
    env_file = wd / ".env"
    _write_private(env_file, "".join(f"{key}={value}\n" for key, value in env.items()))
    sample_data.write_files(wd, layout)
    return wd, compose_file, override_file, env_file, _read_env_file(env_file)


def _discover(stack):
    """Fill containers, volumes, images and mounts of ``stack`` from what Compose created (by its labels)."""
    label = f"com.docker.compose.project={stack.project}"
    stack.containers, stack.images, stack.mounts = {}, {}, {}
    for name in by_label("container", label):
        info = inspect("container", name)
        labels = info["Config"]["Labels"] or {}
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        service = labels["com.docker.compose.service"]
        stack.containers[service] = name
        stack.images[service] = info["Config"]["Image"]
        stack.mounts[service] = {
            m["Destination"]: m["Source"] if m["Type"] == "bind" else m["Name"] for m in info["Mounts"]
        }
    stack.volumes = {}
    for name in by_label("volume", label):
        labels = (inspect("volume", name) or {}).get("Labels") or {}
        stack.volumes[labels.get("com.docker.compose.volume", name)] = name
    order = ["postgresql", "redis", "server", "worker"]
    stack.containers = dict(sorted(stack.containers.items(), key=lambda kv: order.index(kv[0])))


def up(
    project,
    layout="current",
    naming="v2",
    workdir=None,
    pg_user=None,
    db_size_mb=0,
    redis_password=None,
    load_data=True,
    log=print,
    flavour="debian",
    postgres="15",
    extra_env=None,
):
    """Bring the stack up with the real Compose CLI of ``naming`` on authentik's compose file of ``layout`` and an
    override (removing an earlier stack of the same project first), wait for it, load the sample data.
    ``flavour`` debian runs the akbt.local images (PostgreSQL ``postgres``: 15 or 17); alpine runs the names
    authentik's file uses, which are the busybox images of the test bed. ``extra_env`` adds settings to ``.env``
    (server and worker read it, for example ``AUTHENTIK_STORAGE__BACKEND``). Returns the Stack."""
    check_project(project)
    if layout not in paths.COMPOSE_FILES:
        raise ValueError(f"layout must be one of {sorted(paths.COMPOSE_FILES)}")
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    if postgres not in paths.POSTGRES_IMAGES or (flavour == "alpine" and postgres != "15"):
        raise ValueError(f"postgres must be one of {sorted(paths.POSTGRES_IMAGES)} (15 with the alpine flavour)")
    version = compose_version(naming)
    started = time.monotonic()
    down(project, log=lambda *a: None)

    spec = override(layout, flavour, postgres, redis_password)
    wd, compose_file, override_file, env_file, env = _prepare_workdir(
        project, layout, workdir, pg_user, spec, extra_env)
    stack = Stack(
        project=project,
        layout=layout,
        naming=naming,
        workdir=str(wd),
        compose_file=str(compose_file),
        env_file=str(env_file),
        env=env,
        pg_user=env.get("PG_USER") or "authentik",
        pg_db=env.get("PG_DB") or "authentik",
        pg_password=env["PG_PASS"],
        secret_key=env["AUTHENTIK_SECRET_KEY"],
        containers={},
        volumes={},
        images={},
        versions={
            "authentik": paths.AUTHENTIK_VERSIONS[layout],
            "postgres": postgres,
            "redis": "7" if layout == "legacy" else None,
        },
        mounts={},
        redis_password=redis_password if layout == "legacy" else None,
        db_size_mb=int(db_size_mb or 0),
        compose_files=[str(compose_file), str(override_file)],
        compose_version=version,
        flavour=flavour,
    )
    _write_state(stack)
    _compose(stack, "up", "-d")
    _discover(stack)
    expected = set(spec["services"])
    if set(stack.containers) != expected:
        raise DockerError(f"Compose started {sorted(stack.containers)} for {project}, expected {sorted(expected)}")
    _write_state(stack)
    wait_postgres(stack)
    if stack.has_redis:
        wait_redis(stack)
    log(
        f"stacks: {project} ({layout}, {flavour}, Compose {version}) up in {time.monotonic() - started:.1f} s: "
        + ", ".join(stack.containers.values())
    )
    if load_data:
        t0 = time.monotonic()
        load_sample_data(stack, db_size_mb=db_size_mb)
        log(f"stacks: {project}: sample data loaded in {time.monotonic() - t0:.1f} s")
    return stack


def _pg_env(stack):
    return {"PGPASSWORD": stack.pg_password}


def wait_postgres(stack, timeout=90):
    c = stack.pg_container

    def ready():
        if not inspect("container", c)["State"]["Running"]:
            logs = docker("logs", "--tail", "30", c, check=False)
            raise DockerError(f"{c} stopped: {logs.stderr.decode('utf-8', 'replace')}")
        return exec_ok(
            c, "psql", "-X", "-q", "-U", stack.pg_user, "-d", stack.pg_db, "-c", "SELECT 1", env=_pg_env(stack)
        )

    wait_for(ready, timeout, f"PostgreSQL in {c}")


def wait_redis(stack, timeout=60):
    c = stack.redis_container

    def ready():
        return resp.pipeline(c, [("PING",)], password=stack.redis_password) == ["PONG"]

    wait_for(ready, timeout, f"Redis in {c}")


def psql(stack, sql, db="postgres", extra=()):
    """Run ``sql`` through psql in the stack's database container as the stack's superuser; returns stdout."""
    args = [
        "exec",
        "-i",
        "-e",
        "PGPASSWORD",
        stack.pg_container,
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        stack.pg_user,
        "-d",
        db,
        *extra,
    ]
    return docker(*args, input=sql.encode("utf-8"), env=_pg_env(stack)).stdout.decode("utf-8")


def load_sample_data(stack, db_size_mb=0):
    """(Re)load the hostile sample data into PostgreSQL (and Redis where the layout has it)."""
    psql(stack, sample_data.postgres_sql(stack.pg_user, stack.pg_db, db_size_mb=db_size_mb))
    psql(stack, "CHECKPOINT; VACUUM ANALYZE;", db=stack.pg_db)
    stack.db_size_mb = int(db_size_mb or 0)
    out = psql(
        stack,
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn "
        "AND datname <> 'postgres' ORDER BY 1;",
    )
    stack.databases = [line for line in out.splitlines() if line]
    if stack.has_redis:
        resp.pipeline(stack.redis_container, sample_data.redis_commands(), password=stack.redis_password)
        # make sure the RDB on the volume is current (BGSAVE, wait for it)
        before = resp.pipeline(stack.redis_container, [("LASTSAVE",)], password=stack.redis_password)[0]
        time.sleep(1.05)  # LASTSAVE has a one-second resolution
        resp.pipeline(stack.redis_container, [("BGSAVE",)], password=stack.redis_password)
        wait_for(
            lambda: resp.pipeline(stack.redis_container, [("LASTSAVE",)], password=stack.redis_password)[0] > before,
            60,
            "Redis BGSAVE",
        )
    _write_state(stack)
    return stack


def _write_state(stack):
    paths.STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = state_file(stack.project)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(stack.to_dict(), fh, indent=2, ensure_ascii=False)


def load(project):
    """The Stack of a project brought up earlier (from its state file)."""
    check_project(project)
    return Stack.from_dict(json.loads(state_file(project).read_text(encoding="utf-8")))


def is_up(project):
    """True when the project's state file exists and all its containers are running."""
    try:
        stack = load(project)
    except (FileNotFoundError, ValueError):
        return False
    for name in stack.containers.values():
        info = inspect("container", name)
        if not info or not info["State"]["Running"]:
            return False
    return True


def down(project, log=print):
    """Remove the project's containers, named volumes, working directory and state file."""
    check_project(project)
    stack = None
    try:
        stack = load(project)
    except (FileNotFoundError, ValueError):
        pass
    containers = set(by_label("container", f"com.docker.compose.project={project}"))
    volumes = set(by_label("volume", f"com.docker.compose.project={project}"))
    if stack:
        containers |= {c for c in stack.containers.values() if inspect("container", c)}
        volumes |= {v for v in stack.volumes.values() if inspect("volume", v)}
    remove_containers(sorted(containers))
    remove_volumes(sorted(volumes))
    workdirs = {default_workdir(project)}
    if stack:
        workdirs.add(Path(stack.workdir))
    for wd in workdirs:
        if wd.exists():
            shutil.rmtree(wd)
    state_file(project).unlink(missing_ok=True)
    log(f"stacks: {project} down (removed {len(containers)} containers, {len(volumes)} volumes)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "data", "show"])
    parser.add_argument("--project", required=True)
    parser.add_argument("--layout", choices=sorted(paths.COMPOSE_FILES), default="current")
    parser.add_argument("--naming", choices=["v1", "v2"], default="v2")
    parser.add_argument("--workdir")
    parser.add_argument("--pg-user")
    parser.add_argument("--db-size-mb", type=int, default=0)
    parser.add_argument("--redis-password")
    parser.add_argument("--flavour", choices=FLAVOURS, default="debian")
    parser.add_argument("--postgres", choices=sorted(paths.POSTGRES_IMAGES), default="15")
    args = parser.parse_args(argv)
    try:
        if args.action == "show":
            print(json.dumps(load(args.project).to_dict(), indent=2, ensure_ascii=False))
            return 0
        with lock(args.project, wait=0):
            if args.action == "up":
                stack = up(
                    args.project,
                    layout=args.layout,
                    naming=args.naming,
                    workdir=args.workdir,
                    pg_user=args.pg_user,
                    db_size_mb=args.db_size_mb,
                    redis_password=args.redis_password,
                    flavour=args.flavour,
                    postgres=args.postgres,
                )
                print(json.dumps(stack.to_dict(), indent=2, ensure_ascii=False))
            elif args.action == "data":
                stack = load_sample_data(load(args.project), db_size_mb=args.db_size_mb)
                print(json.dumps(stack.to_dict(), indent=2, ensure_ascii=False))
            else:
                down(args.project)
    except (ValueError, DockerError, TimeoutError, FileNotFoundError, FileExistsError, ProjectLocked) as exc:
        print(f"stacks.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
