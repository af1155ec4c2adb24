"""Self-tests of the test bed: the stacks are what they claim to be, and the proof helpers can fail."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from testbed import paths, proof, resp, stacks
from testbed._docker import docker, inspect

COMPOSE_LABELS = (
    "com.docker.compose.project",
    "com.docker.compose.service",
    "com.docker.compose.container-number",
    "com.docker.compose.oneoff",
    "com.docker.compose.project.working_dir",
    "com.docker.compose.project.config_files",
    "com.docker.compose.version",
    "com.docker.compose.config-hash",
)


def _mounts(container):
    return {m["Destination"]: m for m in inspect("container", container)["Mounts"]}


def _env(container):
    return dict(item.split("=", 1) for item in inspect("container", container)["Config"]["Env"])


def test_images_carry_labels(images):
    for image in images:
        labels = inspect("image", image)["Config"]["Labels"]
        assert labels.get("akbt.build-hash"), image
    assert inspect("image", paths.IMAGE_POSTGRES)["Config"]["Labels"]["org.opencontainers.image.version"] == "15"
    for version in paths.AUTHENTIK_VERSIONS.values():
        labels = inspect("image", f"{paths.AUTHENTIK_IMAGE_REPO}:{version}")["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == version
        assert labels["org.opencontainers.image.source"] == "https://github.com/goauthentik/authentik"


@pytest.mark.parametrize("which", ["stack_current", "stack_legacy", "stack_alpine"])
def test_compose_labels_names_and_network(request, which):
    stack = request.getfixturevalue(which)
    expected_services = {"postgresql", "server", "worker"} | ({"redis"} if stack.layout == "legacy" else set())
    assert set(stack.containers) == expected_services
    sep = "-" if stack.naming == "v2" else "_"
    for service, name in stack.containers.items():
        assert name == sep.join([stack.project, service, "1"])
        info = inspect("container", name)
        assert info["State"]["Running"], name
        assert info["HostConfig"]["NetworkMode"] == "none"
        labels = info["Config"]["Labels"]
        for label in COMPOSE_LABELS:
            assert label in labels, (name, label)
        assert labels["com.docker.compose.project"] == stack.project
        assert labels["com.docker.compose.service"] == service
        assert labels["com.docker.compose.oneoff"] == "False"
        assert labels["com.docker.compose.container-number"] == "1"
        assert labels["com.docker.compose.project.working_dir"] == stack.workdir
        # v2 records absolute paths, v1 the names it was given (relative to the working directory)
        config_files = labels["com.docker.compose.project.config_files"].split(",")
        assert all(os.path.isabs(f) == (stack.naming == "v2") for f in config_files), config_files
        assert [os.path.join(stack.workdir, f) for f in config_files] == stack.compose_files
        assert all(os.path.isfile(f) for f in stack.compose_files)
        int(labels["com.docker.compose.config-hash"], 16)
        assert labels["com.docker.compose.version"].startswith("2." if stack.naming == "v2" else "1.")
        assert stack.compose_version.startswith(labels["com.docker.compose.version"])
    # what the collection finds by labels is exactly the stack
    found = (
        docker("ps", "--filter", f"label=com.docker.compose.project={stack.project}", "--format", "{{.Names}}")
        .stdout.decode()
        .split()
    )
    assert sorted(found) == sorted(stack.containers.values())
    config = os.path.basename(stack.compose_file)
    assert config == ("compose.yml" if stack.layout == "current" else "docker-compose.yml")
    # authentik's own file, unchanged, and Compose's override beside it
    source = paths.COMPOSE_FILES[stack.layout][0]
    assert open(stack.compose_file, "rb").read() == (paths.COMPOSE_DIR / source).read_bytes()
    assert stack.compose_files == [stack.compose_file, stack.compose_file.replace(".yml", ".override.yml")]


def test_current_layout_mounts_env_and_versions(stack_current):
    stack = stack_current
    assert (
        stack.project == paths.STACK_CURRENT["project"] and stack.pg_user == "authentik" and stack.pg_db == "authentik"
    )
    pg = _mounts(stack.pg_container)
    assert pg["/var/lib/postgresql/data"]["Type"] == "volume"
    assert pg["/var/lib/postgresql/data"]["Name"] == f"{stack.project}_database"
    server, worker = _mounts(stack.containers["server"]), _mounts(stack.containers["worker"])
    assert set(server) == {"/data", "/templates"}
    assert {"/data", "/certs", "/templates"} <= set(worker)
    assert "/blueprints" not in worker and "/media" not in worker
    assert worker["/data"]["Source"] == os.path.join(stack.workdir, "data")
    assert inspect("container", stack.containers["worker"])["Config"]["User"] == "root"
    image = inspect("container", stack.containers["server"])["Config"]["Image"]
    assert image == f"{paths.AUTHENTIK_IMAGE_REPO}:2026.2.2" and stack.versions["authentik"] == "2026.2.2"
    env_file = os.path.join(stack.workdir, ".env")
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    dotenv = dict(line.split("=", 1) for line in open(env_file, encoding="utf-8").read().splitlines() if line)
    assert set(dotenv) == {"PG_PASS", "AUTHENTIK_SECRET_KEY"}
    env = _env(stack.pg_container)
    assert env["POSTGRES_USER"] == "authentik" and env["POSTGRES_PASSWORD"] == dotenv["PG_PASS"]
    assert _env(stack.containers["worker"])["AUTHENTIK_SECRET_KEY"] == dotenv["AUTHENTIK_SECRET_KEY"]


def test_legacy_layout_mounts_env_and_versions(stack_legacy):
    stack = stack_legacy
    assert stack.project == paths.STACK_LEGACY["project"] and stack.pg_user == "ak_admin"
    assert _mounts(stack.redis_container)["/data"]["Name"] == f"{stack.project}_redis"
    worker = _mounts(stack.containers["worker"])
    assert {"/media", "/certs", "/templates"} <= set(worker) and "/data" not in worker
    assert _env(stack.pg_container)["POSTGRES_USER"] == "ak_admin"
    assert _env(stack.containers["server"])["AUTHENTIK_REDIS__HOST"] == "redis"
    assert inspect("container", stack.containers["server"])["Config"]["Image"].endswith(":2025.2.4")
    assert "PG_USER=ak_admin" in open(stack.env_file, encoding="utf-8").read().splitlines()
    cmd = inspect("container", stack.redis_container)["Config"]["Cmd"]
    assert cmd == ["--save", "60", "1", "--loglevel", "warning"]


def test_postgres_reachable_as_configured_user_only(stack_legacy):
    stack = stack_legacy
    out = docker(
        "exec",
        stack.pg_container,
        "psql",
        "-X",
        "-At",
        "-U",
        stack.pg_user,
        "-d",
        stack.pg_db,
        "-c",
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user",
    ).stdout
    assert out.decode().strip() == "ak_admin|t"
    # the trap of the design note: there is no role postgres when POSTGRES_USER is set
    bad = docker("exec", stack.pg_container, "psql", "-X", "-U", "postgres", "-c", "SELECT 1", check=False)
    assert bad.returncode != 0 and b'role "postgres" does not exist' in bad.stderr
    # pg_dumpall resolves through PATH in docker exec
    assert docker("exec", stack.pg_container, "sh", "-c", "command -v pg_dumpall").stdout.strip()
    assert set(proof.databases(stack.pg_container, stack.pg_user, stack.pg_password)) >= {
        "authentik",
        "akbt_extra",
        "données ünï-表",
    }


def _dump(stack, dest):
    """A plain pg_dumpall of the stack into ``dest`` (.sql.gz)."""
    with gzip.open(dest, "wb") as out:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [
                "docker",
                "exec",
                "-e",
                "PGPASSWORD",
                stack.pg_container,
                "pg_dumpall",
                "-U",
                stack.pg_user,
                "--clean",
                "--if-exists",
                "--exclude-database=postgres",
                "--exclude-database=template*",
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "PGPASSWORD": stack.pg_password},
        )
        shutil.copyfileobj(proc.stdout, out)
        assert proc.wait() == 0


def test_postgres_proof_roundtrip_and_detects_a_changed_row(stack_current, proof_tmp):
    stack = stack_current
    before = proof.table_checksums(stack.pg_container, stack.pg_user, stack.pg_password)
    assert before["authentik"]["public.akbt_blobs"][0] == 8
    assert "ünïcødé_表.tåble ✓ Ω" in before["authentik"]
    dump = proof_tmp / "pg.sql.gz"
    _dump(stack, dump)
    restored = proof.restore_dump_into_fresh(dump)
    try:
        assert restored.startswith(proof.SESSION_PREFIX)
        assert proof.table_checksums(restored, proof.PROOF_SUPERUSER) == before
        assert proof.role_state(restored, proof.PROOF_SUPERUSER) == proof.role_state(
            stack.pg_container, stack.pg_user, stack.pg_password
        )
        # one changed byte in one bytea value must show
        docker(
            "exec",
            restored,
            "psql",
            "-X",
            "-q",
            "-U",
            proof.PROOF_SUPERUSER,
            "-d",
            "authentik",
            "-c",
            "UPDATE public.akbt_blobs SET data = set_byte(data, 200, 0) WHERE id = 1",
        )
        after = proof.table_checksums(restored, proof.PROOF_SUPERUSER)
        assert after != before
        assert after["authentik"]["public.akbt_blobs"] != before["authentik"]["public.akbt_blobs"]
        assert {k: v for k, v in after["authentik"].items() if k != "public.akbt_blobs"} == {
            k: v for k, v in before["authentik"].items() if k != "public.akbt_blobs"
        }
    finally:
        proof.cleanup(restored)
    assert not inspect("container", restored)


def test_restore_of_a_truncated_dump_raises(stack_current, proof_tmp):
    dump = proof_tmp / "pg.sql"
    dump.write_text(
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nSELECT * FROM no_such_table;\n", encoding="utf-8"
    )
    with pytest.raises(RuntimeError, match="no_such_table"):
        proof.restore_dump_into_fresh(dump)
    proof.cleanup_prefix(proof.SESSION_PREFIX)


def test_redis_proof_roundtrip_and_detects_a_changed_value(stack_legacy, proof_tmp):
    stack = stack_legacy
    c = stack.redis_container
    state = proof.redis_state(c)
    assert len(state) >= 300
    assert state[b"binary:all-bytes"] == ("string", bytes(range(256)), False)
    assert state["ünïcødé key 表".encode()][0] == "string"
    assert {v[0] for v in state.values()} == {"string", "hash", "list", "set", "zset"}
    assert any(v[2] for v in state.values())  # keys with a TTL
    assert b"db1:db1:key" in state
    resp.pipeline(c, [("SAVE",)])
    rdb = proof_tmp / "dump.rdb"
    with open(rdb, "wb") as out:
        data = docker("exec", c, "cat", "/data/dump.rdb").stdout
        out.write(data)
    assert data[:5] == b"REDIS"
    fresh = proof.load_rdb_into_fresh(rdb)
    try:
        assert proof.redis_state(fresh) == state
        resp.pipeline(fresh, [("SETRANGE", "binary:all-bytes", "17", b"\x00")])
        changed = proof.redis_state(fresh)
        assert changed != state
        assert changed[b"binary:all-bytes"] != state[b"binary:all-bytes"]
        resp.pipeline(
            fresh, [("SETRANGE", "binary:all-bytes", "17", b"\x11"), ("ZINCRBY", "zset:0", "0.5", "member-0")]
        )
        assert proof.redis_state(fresh) != state
    finally:
        proof.cleanup(fresh)


def _container_tar(container, path, dest):
    with open(dest, "wb") as out:
        docker("cp", f"{container}:{path}", "-", stdout=out)


def test_tree_and_tar_state_agree_and_detect_changes(stack_current, proof_tmp):
    stack = stack_current
    host = os.path.join(stack.workdir, "data")
    tree = proof.tree_state(host)
    kinds = {v[0] for v in tree.values()}
    assert kinds == {"file", "link", "dir"}
    assert any(" " in k for k in tree) and any("表" in k for k in tree)
    assert tree["media/zero-length"][0] == "file" and tree["media/empty-dir"] == ("dir",)
    # the archive Docker makes of the container path /data equals the host folder
    archive = proof_tmp / "data.tar"
    _container_tar(stack.containers["worker"], "/data", archive)
    assert proof.tar_state(archive, "data") == tree
    # the same in .tar.gz and .tar.zst, with another prefix
    for suffix in (".tar.gz", ".tar.zst"):
        dest = proof_tmp / f"again{suffix}"
        if suffix == ".tar.gz":
            with tarfile.open(dest, "w:gz") as tar:
                tar.add(host, arcname="./data")
        else:
            plain = proof_tmp / "again.tar"
            with tarfile.open(plain, "w") as tar:
                tar.add(host, arcname="./data")
            subprocess.run(["zstd", "-q", "-f", str(plain), "-o", str(dest)], check=True)
        assert proof.tar_state(dest, "data") == tree, suffix
    # changes of content, mode and link target all show
    copy = proof_tmp / "copy"
    shutil.copytree(host, copy, symlinks=True)
    assert proof.tree_state(copy) == tree
    big = copy / "media" / "big-random.bin"
    content = bytearray(big.read_bytes())
    content[len(content) // 2] ^= 1
    big.write_bytes(bytes(content))
    assert proof.tree_state(copy) != tree
    content[len(content) // 2] ^= 1
    big.write_bytes(bytes(content))
    assert proof.tree_state(copy) == tree
    os.chmod(big, 0o600)
    assert proof.tree_state(copy) != tree
    os.chmod(big, stat.S_IMODE(os.stat(os.path.join(host, "media", "big-random.bin")).st_mode))
    link = copy / "media" / "link to icon"
    link.unlink()
    link.symlink_to("elsewhere")
    assert proof.tree_state(copy) != tree


def test_blueprints_not_mounted_and_certs_only_on_worker(stack_current):
    stack = stack_current
    assert "/certs" not in _mounts(stack.containers["server"])
    pem = os.path.join(stack.workdir, "certs", "akbt.example.org.pem")
    assert open(pem, encoding="ascii").read().startswith("-----BEGIN CERTIFICATE-----")
    for name in stack.containers.values():
        assert "/blueprints" not in _mounts(name)


def test_helm_like_postgres_non_root_read_only_with_local_password():
    """The image also models the Helm database: non-root uid, read-only root fs, password on the local socket."""
    name = f"{proof.SESSION_PREFIX}helm-{int(time.time())}"
    volume = f"{name}-data"
    docker("volume", "create", volume)
    try:
        docker(
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "chown",
            "-v",
            f"{volume}:/bitnami/postgresql",
            paths.IMAGE_POSTGRES,
            "1001:1001",
            "/bitnami/postgresql",
        )
        docker(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--user",
            "1001:1001",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/run/postgresql:uid=1001,gid=1001",
            "-v",
            f"{volume}:/bitnami/postgresql",
            "-e",
            "PGDATA=/bitnami/postgresql/data",
            "-e",
            "POSTGRES_PASSWORD",
            "-e",
            "AKBT_LOCAL_AUTH=scram",
            paths.IMAGE_POSTGRES,
            env={"POSTGRES_PASSWORD": "helm-pw"},
        )

        def ready():
            return (
                docker(
                    "exec",
                    "-e",
                    "PGPASSWORD",
                    name,
                    "psql",
                    "-X",
                    "-U",
                    "postgres",
                    "-c",
                    "SELECT 1",
                    env={"PGPASSWORD": "helm-pw"},
                    check=False,
                ).returncode
                == 0
            )

        from testbed._docker import wait_for  # pylint: disable=import-outside-toplevel

        wait_for(ready, 60, "helm-like postgres")
        assert inspect("container", name)["HostConfig"]["ReadonlyRootfs"]
        no_pw = docker("exec", name, "psql", "-X", "-U", "postgres", "-c", "SELECT 1", check=False)
        assert no_pw.returncode != 0 and b"password" in no_pw.stderr
        assert docker("exec", name, "id", "-u").stdout.strip() == b"1001"
    finally:
        docker("rm", "-f", "-v", name, check=False)
        docker("volume", "rm", "-f", volume, check=False)


def test_redis_image_honours_requirepass(images):  # pylint: disable=unused-argument
    name = f"{proof.SESSION_PREFIX}redispw-{int(time.time())}"
    docker("run", "-d", "--name", name, "--network", "none", paths.IMAGE_REDIS, "--requirepass", "s3cret ü")
    try:
        from testbed._docker import wait_for  # pylint: disable=import-outside-toplevel

        wait_for(lambda: resp.pipeline(name, [("PING",)], password="s3cret ü") == ["PONG"], 30, "redis")
        assert isinstance(resp.pipeline(name, [("PING",)], check=False)[0], resp.RespError)
        assert docker("exec", name, "pwd").stdout.strip() == b"/data"
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_stacks_cli_show_and_refuse_foreign_projects(stack_current, repo_root):
    script = os.path.join(repo_root, "tests", "testbed", "stacks.py")
    shown = subprocess.run(
        [sys.executable, script, "show", "--project", stack_current.project], capture_output=True, check=True
    )
    assert json.loads(shown.stdout)["containers"] == stack_current.containers
    refused = subprocess.run(
        [sys.executable, script, "down", "--project", "authentik"], capture_output=True, check=False
    )
    assert refused.returncode == 1 and b"refusing" in refused.stderr
    # the session holds the project's lock: a concurrent "down" must not remove the stack under it
    busy = subprocess.run(
        [sys.executable, script, "down", "--project", stack_current.project], capture_output=True, check=False
    )
    assert busy.returncode == 1 and b"in use" in busy.stderr
    assert inspect("container", stack_current.pg_container)["State"]["Running"]
    with pytest.raises(ValueError):
        proof.cleanup_prefix("ak")
    assert stacks.default_workdir("akbt-x") == paths.REPO_ROOT / "tests" / "output" / "testbed" / "akbt-x"
