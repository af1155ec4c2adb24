"""Authentik-like Compose stacks made of real containers, created the way Docker Compose would create them.

No compose binary is needed: containers are started with ``docker run --network none`` and carry the labels,
names, volumes, bind mounts and environment Compose would give them.

CLI::

    python tests/testbed/stacks.py up   --layout current|legacy --project NAME --naming v1|v2 \\
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
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from . import paths, resp, sample_data
from ._docker import DockerError, by_label, docker, exec_ok, inspect, remove_containers, remove_volumes, wait_for

COMPOSE_VERSIONS = {"v1": "1.29.2", "v2": "2.29.7"}
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


def _service_specs(layout, env):
    """The services of authentik's compose file for ``layout``, as Compose would resolve them with ``env``."""
    pg_user = env.get("PG_USER") or "authentik"
    pg_db = env.get("PG_DB") or "authentik"
    version = paths.AUTHENTIK_VERSIONS[layout]
    ak_image = f"{paths.AUTHENTIK_IMAGE_REPO}:{version}"
    ak_env = {
        "AUTHENTIK_POSTGRESQL__HOST": "postgresql",
        "AUTHENTIK_POSTGRESQL__NAME": pg_db,
        "AUTHENTIK_POSTGRESQL__PASSWORD": env["PG_PASS"],
        "AUTHENTIK_POSTGRESQL__USER": pg_user,
        "AUTHENTIK_SECRET_KEY": env["AUTHENTIK_SECRET_KEY"],
    }
    app_dir = "./data:/data" if layout == "current" else "./media:/media"
    services = {
        "postgresql": {
            "image": paths.IMAGE_POSTGRES,
            "environment": {"POSTGRES_DB": pg_db, "POSTGRES_PASSWORD": env["PG_PASS"], "POSTGRES_USER": pg_user},
            "volumes": ["database:/var/lib/postgresql/data"],
            "healthcheck": ["pg_isready -d ${POSTGRES_DB} -U ${POSTGRES_USER}", "30s", "5s", "5", "20s"],
        },
    }
    if layout == "legacy":
        services["redis"] = {
            "image": paths.IMAGE_REDIS,
            "command": ["--save", "60", "1", "--loglevel", "warning"],
            "volumes": ["redis:/data"],
            "healthcheck": ["redis-cli ping | grep PONG", "30s", "3s", "5", "20s"],
            "no_env_file": True,
        }
        ak_env["AUTHENTIK_REDIS__HOST"] = "redis"
    services["server"] = {
        "image": ak_image,
        "command": ["server"],
        "environment": dict(ak_env),
        "volumes": [app_dir, "./custom-templates:/templates"],
    }
    services["worker"] = {
        "image": ak_image,
        "command": ["worker"],
        "user": "root",
        "environment": dict(ak_env),
        "volumes": [
            "/var/run/docker.sock:/var/run/docker.sock",
            app_dir,
            "./certs:/certs",
            "./custom-templates:/templates",
        ],
    }
    if layout == "legacy":
        services["worker"]["ulimits"] = ["nofile=10240:10240"]
    return services


def _read_env_file(path):
    env = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value.strip()
    return env


def _image_id(image):
    info = inspect("image", image)
    if not info:
        raise DockerError(f"image {image} is missing: run tests/testbed/images.sh")
    return info["Id"]


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
):
    """Create the stack (removing an earlier one of the same project first), wait for it, load the sample data.
    Returns the Stack."""
    check_project(project)
    if layout not in paths.COMPOSE_FILES:
        raise ValueError(f"layout must be one of {sorted(paths.COMPOSE_FILES)}")
    container_name(project, "x", naming)  # validates naming
    started = time.monotonic()
    down(project, log=lambda *a: None)

    wd = Path(workdir).resolve() if workdir else default_workdir(project)
    if wd.exists() and any(wd.iterdir()):
        raise FileExistsError(f"working directory {wd} exists and is not empty")
    wd.mkdir(parents=True, exist_ok=True)
    src_name, dst_name = paths.COMPOSE_FILES[layout]
    compose_file = wd / dst_name
    shutil.copyfile(paths.COMPOSE_DIR / src_name, compose_file)

    env = {"PG_PASS": _random_secret(27), "AUTHENTIK_SECRET_KEY": _random_secret(60)}
    if pg_user:
        env["PG_USER"] = pg_user
    env_file = wd / ".env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for key, value in env.items():
            fh.write(f"{key}={value}\n")
    os.chmod(env_file, 0o600)
    env = _read_env_file(env_file)  # as compose reads it

    sample_data.write_files(wd, layout)

    services = _service_specs(layout, env)
    if redis_password and "redis" in services:
        services["redis"]["command"] += ["--requirepass", redis_password]
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
        containers={svc: container_name(project, svc, naming) for svc in services},
        volumes={},
        images={svc: spec["image"] for svc, spec in services.items()},
        versions={
            "authentik": paths.AUTHENTIK_VERSIONS[layout],
            "postgres": "15",
            "redis": "7" if "redis" in services else None,
        },
        mounts={},
        redis_password=redis_password if "redis" in services else None,
        db_size_mb=int(db_size_mb or 0),
    )
    _write_state(stack)

    compose_version = COMPOSE_VERSIONS[naming]
    volume_keys = sorted(
        {v.split(":")[0] for spec in services.values() for v in spec["volumes"] if not v.startswith(("./", "/"))}
    )
    for key in volume_keys:
        vol = f"{project}_{key}"
        docker(
            "volume",
            "create",
            "--label",
            f"com.docker.compose.project={project}",
            "--label",
            f"com.docker.compose.volume={key}",
            "--label",
            f"com.docker.compose.version={compose_version}",
            vol,
        )
        stack.volumes[key] = vol
    _write_state(stack)

    envdir = paths.STATE_DIR / "env"
    envdir.mkdir(parents=True, exist_ok=True)
    for service, spec in services.items():
        _run_service(stack, service, spec, env, compose_version, envdir)
        if service == "postgresql":
            wait_postgres(stack)
        elif service == "redis":
            wait_redis(stack)
    _write_state(stack)
    log(
        f"stacks: {project} ({layout}, names {naming}) up in {time.monotonic() - started:.1f} s: "
        + ", ".join(stack.containers.values())
    )
    if load_data:
        t0 = time.monotonic()
        load_sample_data(stack, db_size_mb=db_size_mb)
        log(f"stacks: {project}: sample data loaded in {time.monotonic() - t0:.1f} s")
    return stack


def _run_service(stack, service, spec, env, compose_version, envdir):
    wd = Path(stack.workdir)
    name = stack.containers[service]
    container_env = {} if spec.get("no_env_file") else dict(env)  # env_file first, environment overrides
    container_env.update(spec.get("environment", {}))
    env_path = envdir / f"{name}.env"
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for key, value in container_env.items():
            fh.write(f"{key}={value}\n")

    config = json.dumps(
        {"service": service, **{k: v for k, v in spec.items() if k != "environment"}, "environment": container_env},
        sort_keys=True,
    )
    labels = {
        "com.docker.compose.project": stack.project,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": "1",
        "com.docker.compose.oneoff": "False",
        "com.docker.compose.project.working_dir": str(wd),
        "com.docker.compose.project.config_files": stack.compose_file,
        "com.docker.compose.version": compose_version,
        "com.docker.compose.config-hash": hashlib.sha256(config.encode()).hexdigest(),
    }
    if stack.naming == "v2":
        labels["com.docker.compose.project.environment_file"] = stack.env_file
        labels["com.docker.compose.image"] = _image_id(spec["image"])
        labels["com.docker.compose.depends_on"] = (
            ""
            if service in ("postgresql", "redis")
            else ",".join(f"{dep}:service_healthy:false" for dep in ("postgresql", "redis") if dep in stack.containers)
        )
    args = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--restart",
        "unless-stopped",
        "--env-file",
        str(env_path),
    ]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    if spec.get("user"):
        args += ["--user", spec["user"]]
    for ulimit in spec.get("ulimits", []):
        args += ["--ulimit", ulimit]
    hc = spec.get("healthcheck")
    if hc:
        args += [
            "--health-cmd",
            hc[0],
            "--health-interval",
            hc[1],
            "--health-timeout",
            hc[2],
            "--health-retries",
            hc[3],
            "--health-start-period",
            hc[4],
        ]
    mounts = {}
    for vol in spec["volumes"]:
        src, dst = vol.split(":", 1)
        if src.startswith("./"):
            host = wd / src[2:]
            host.mkdir(parents=True, exist_ok=True)
            args += ["--mount", f"type=bind,source={host},target={dst}"]
            mounts[dst] = str(host)
        elif src.startswith("/"):
            args += ["--mount", f"type=bind,source={src},target={dst}"]
            mounts[dst] = src
        else:
            args += ["--mount", f"type=volume,source={stack.volumes[src]},target={dst}"]
            mounts[dst] = stack.volumes[src]
    stack.mounts[service] = mounts
    args.append(spec["image"])
    args += spec.get("command", [])
    docker(*args)


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
    if stack:
        for name in stack.containers.values():
            (paths.STATE_DIR / "env" / f"{name}.env").unlink(missing_ok=True)
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
