# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""postgres_restore, redis_restore, path_restore and backup_verify against real containers.

The containers (akbt-rst-it<AKBT_PROJECT_SUFFIX>-*, no network) are created here and removed at the end. Every
module runs through real ansible-core (`ansible localhost -m ...`, tests/testbed/ansible_run.py), with its JSON result
parsed. The Docker engine and the test bed images come from the session fixtures (tests/integration/conftest.py).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from testbed import ansible_run, paths

REPO = str(paths.REPO_ROOT)
# AKBT_PROJECT_SUFFIX gives a session its own containers, as for the test bed stacks
PREFIX = f"akbt-rst-it{paths.PROJECT_SUFFIX}-"
PG_IMAGE = paths.IMAGE_POSTGRES
REDIS_IMAGE = paths.IMAGE_REDIS
PG, REDIS, FILES, VOLUME = PREFIX + "pg", PREFIX + "redis", PREFIX + "files", PREFIX + "vol"


def docker(*args, check=True, stdin=None):
    proc = subprocess.run(["docker", *args], capture_output=True, check=False, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc


def sh(container, script, *args):
    return docker("exec", container, "sh", "-c", script, "sh", *args).stdout.decode("utf-8", "surrogateescape")


def psql(sql, db="authentik"):
    return docker("exec", PG, "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-U", "authentik", "-d", db,
                  "-c", sql).stdout.decode().strip()


def run_module(module, check_mode=False, **args):
    """The result of one module run through the shared runner (testbed.ansible_run)."""
    result, _run = ansible_run.run_module(module, check_mode=check_mode, **args)
    return result


def wait_pg():
    for _attempt in range(120):
        if docker("exec", "-e", "PGPASSWORD=it-secret", PG, "psql", "-h", "127.0.0.1", "-U", "authentik", "-d", "authentik", "-c", "select 1",
                  check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("postgres did not start")


@pytest.fixture(scope="module")
def containers(images):  # pylint: disable=unused-argument
    for name in (PG, REDIS, FILES):
        docker("rm", "-f", "-v", name, check=False)
    docker("volume", "rm", "-f", VOLUME, check=False)
    docker("run", "-d", "--name", PG, "--network", "none", "-e", "POSTGRES_USER=authentik", "-e",
           "POSTGRES_PASSWORD=it-secret", "-e", "POSTGRES_DB=authentik", PG_IMAGE)
    docker("run", "-d", "--name", REDIS, "--network", "none", REDIS_IMAGE, "redis-server", "--save", "3600", "1")
    docker("run", "-d", "--name", FILES, "--network", "none", "-v", f"{VOLUME}:/data", "--entrypoint", "sleep",
           REDIS_IMAGE, "infinity")
    wait_pg()
    try:
        yield
    finally:
        for name in (PG, REDIS, FILES):
            docker("rm", "-f", "-v", name, check=False)
        docker("volume", "rm", "-f", VOLUME, check=False)


HOSTILE_SQL = r"""
create role "Wëird ""Role"" x" nologin;
create table t (id serial primary key, txt text, b bytea, j jsonb, n numeric, ts timestamptz);
insert into t (txt, b, j, n, ts) values
  (E'tab\there\nnew line\\backslash', '\x00ff10'::bytea, '{"a": [1, "ü"]}', 1.5, '2026-01-01T00:00:00Z'),
  ('\.', null, null, null, null),
  (E'-- PostgreSQL database cluster dump complete', '\x'::bytea, '[]', -0, now()),
  ('CREATE ROLE authentik;', null, null, null, null),
  (repeat('ünïcödé ', 20000), decode(repeat('ab', 50000), 'hex'), null, 1e100, null);
insert into t (txt) select md5(g::text) from generate_series(1, 5000) g;
create schema "We;ird";
create table "We;ird"."ta ble" (v text);
insert into "We;ird"."ta ble" values (E'\\.'), (null), (E'line\nbreak');
"""
CHECKSUM_SQL = ("select md5(string_agg(t::text, '|' order by id)) || ':' || count(*) from t;")
CHECKSUM2_SQL = 'select md5(string_agg(coalesce(v, \'<null>\'), \'|\' order by v)) from "We;ird"."ta ble";'


def pg_state():
    return (psql(CHECKSUM_SQL), psql(CHECKSUM2_SQL),
            psql("select string_agg(rolname, ',' order by rolname) from pg_roles where rolname !~ '^pg_'"),
            psql("select string_agg(datname, ',' order by datname) from pg_database", db="postgres"))


def test_postgres_dump_restore_round_trip(containers, tmp_path):
    psql(HOSTILE_SQL)
    docker("exec", PG, "createdb", "-U", "authentik", "ünï db")
    before = pg_state()
    dump = str(tmp_path / "postgres.sql.zst")
    result = run_module("postgres_dump", container=PG, dest=dump)
    assert result.get("changed") and not result.get("failed"), result

    psql("drop table t; drop schema \"We;ird\" cascade; drop role \"Wëird \"\"Role\"\" x\";")
    docker("exec", PG, "dropdb", "-U", "authentik", "ünï db")

    planned = run_module("postgres_restore", check_mode=True, container=PG, src=dump)
    assert planned["changed"] and planned["plan"]["filtered_statements"] == ["DROP ROLE IF EXISTS authentik;",
                                                                             "CREATE ROLE authentik;"], planned
    assert "ünï db" not in psql("select string_agg(datname, ',') from pg_database", db="postgres")

    for _round in range(2):  # a second restore over the restored data works the same
        restored = run_module("postgres_restore", container=PG, src=dump)
        assert restored.get("changed") and restored["rc"] == 0, restored
        assert restored["raw_size"] > 100000
        assert pg_state() == before
    assert "ünï db" in restored["databases"]


def test_postgres_restore_refuses_truncated_and_foreign_files(containers, tmp_path):
    dump = str(tmp_path / "postgres.sql.zst")
    assert not run_module("postgres_dump", container=PG, dest=dump).get("failed")
    state = pg_state()
    import zstandard  # noqa: PLC0415 - only these cases need it

    raw = zstandard.ZstdDecompressor().decompressobj().decompress(open(dump, "rb").read())
    cut = tmp_path / "cut.sql"
    cut.write_bytes(raw[: len(raw) // 2])
    result = run_module("postgres_restore", container=PG, src=str(cut))
    assert result.get("failed") and "truncated" in result["msg"], result
    short = tmp_path / "short.sql.zst"
    short.write_bytes(open(dump, "rb").read()[:-40])
    result = run_module("postgres_restore", container=PG, src=str(short))
    assert result.get("failed"), result
    other = tmp_path / "other.sql"
    other.write_bytes(b"DROP DATABASE authentik;\n")
    result = run_module("postgres_restore", container=PG, src=str(other))
    assert result.get("failed") and "header" in result["msg"], result
    assert pg_state() == state


def test_postgres_restore_in_place_refuses_roles_held_outside_the_dump(containers, tmp_path):
    """A role the dump drops and recreates that owns a database outside the dump, or holds a privilege in the
    postgres database (which dumps leave out): DROP ROLE would fail after the dump's databases were dropped, so the
    in-place restore refuses before it sends anything."""
    dump = str(tmp_path / "postgres.sql.zst")
    assert not run_module("postgres_dump", container=PG, dest=dump).get("failed")
    role = '"Wëird ""Role"" x"'
    psql(f"create database akbt_outside owner {role}", db="postgres")
    psql(f"create table akbt_held (v int); grant select on akbt_held to {role}", db="postgres")
    try:
        state = pg_state()
        for check_mode in (True, False):
            result = run_module("postgres_restore", check_mode=check_mode, container=PG, src=dump)
            assert result.get("failed"), result
            msg = result["msg"]
            assert "roles that own or hold something outside the databases it restores" in msg, msg
            assert 'Wëird "Role" x owns or holds the database akbt_outside' in msg, msg
            assert 'Wëird "Role" x owns or holds objects or privileges in the database postgres' in msg, msg
            assert "nothing was restored or changed" in msg, msg
            assert pg_state() == state
    finally:
        psql("drop database akbt_outside", db="postgres")
        psql("drop table akbt_held", db="postgres")
    restored = run_module("postgres_restore", container=PG, src=dump)
    assert restored.get("changed") and restored["rc"] == 0, restored


def redis_cli(*args):
    return docker("exec", REDIS, "redis-cli", "--raw", *args).stdout


# every key with the MD5 of its DUMP (its value, type and encoding), from one exec in the container
REDIS_STATE_SH = ('redis-cli --raw KEYS "*" | LC_ALL=C sort | while IFS= read -r k; do '
                  'printf "%s\\t" "$k"; redis-cli --raw DUMP "$k" | md5sum; done')


def redis_state():
    return dict(line.split("\t", 1) for line in sh(REDIS, REDIS_STATE_SH).splitlines() if line)


def test_redis_replace_and_flush(containers, tmp_path):
    redis_cli("FLUSHALL")
    docker("exec", "-i", REDIS, "redis-cli", "-x", "SET", "bin", stdin=bytes(range(256)) * 4)
    sh(REDIS, 'i=0; while [ "$i" -lt 200 ]; do redis-cli SET "key:$i" "välue $i" > /dev/null; i=$((i + 1)); done')
    redis_cli("HSET", "h", "f", "v")
    rdb = str(tmp_path / "redis.rdb.gz")
    dumped = run_module("redis_dump", container=REDIS, dest=rdb, compression="gzip")
    assert not dumped.get("failed"), dumped
    expected = redis_state()
    assert len(expected) == 202 and {"bin", "h", "key:0", "key:199"} <= set(expected), expected

    redis_cli("DEL", "key:1", "h")
    redis_cli("SET", "added", "after the backup")
    planned = run_module("redis_restore", check_mode=True, container=REDIS, src=rdb)
    assert planned["changed"] and planned["owner"]["uid"] == int(sh(REDIS, "id -u redis")), planned
    assert redis_cli("EXISTS", "added").strip() == b"1"

    restored = run_module("redis_restore", container=REDIS, src=rdb)
    assert restored.get("changed") and not restored.get("failed"), restored
    assert restored["keys"] == 202
    assert redis_cli("EXISTS", "added").strip() == b"0"
    assert redis_state() == expected
    assert sh(REDIS, "stat -c '%U %a' /data/dump.rdb").split() == ["redis", "600"]

    redis_cli("CONFIG", "SET", "appendonly", "yes")
    try:
        refused = run_module("redis_restore", container=REDIS, src=rdb)
        assert refused.get("failed") and "appendonly" in refused["msg"], refused
    finally:
        redis_cli("CONFIG", "SET", "appendonly", "no")

    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"REDIS0011" + b"\0" * 20)
    result = run_module("redis_restore", container=REDIS, src=str(bad))
    assert result.get("failed") and "nothing was restored" in result["msg"], result

    planned = run_module("redis_restore", check_mode=True, container=REDIS, mode="flush")
    assert planned["changed"] and int(redis_cli("DBSIZE")) == 202
    flushed = run_module("redis_restore", container=REDIS, mode="flush")
    assert flushed["keys"] == 0 and int(redis_cli("DBSIZE")) == 0


LISTING = ('cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r p; do '
           'if [ -L "$p" ]; then echo "L $p -> $(readlink "$p") $(stat -c %u:%g "$p")"; '
           'elif [ -d "$p" ]; then echo "D $p $(stat -c %a:%u:%g "$p")"; '
           'else echo "F $p $(sha256sum < "$p" | cut -c1-64) $(stat -c %a:%u:%g:%h "$p")"; fi; done')

POPULATE = r"""
set -e
cd /data
mkdir -p "sub dir/ünï cödé" empty media/public
printf 'hello\n' > a.txt
head -c 2000000 /dev/urandom > "sub dir/ünï cödé/big random.bin"
printf '' > zero.bin
ln -s ../a.txt media/link-to-a
ln -s "sub dir" dirlink
ln a.txt hard.txt
chmod 640 a.txt
chown -R 1000:1000 media
"""


FS_VIEW = "ls -A / /tmp; ls -la /tmp; test ! -e /evil && echo no-evil"


def test_path_restore_refuses_hostile_archive_and_writes_nothing(containers, tmp_path):
    before = sh(FILES, LISTING, "/data") + sh(FILES, FS_VIEW)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("data/ok.txt", b"fine"), ("data/../evil", b"evil"), ("data/later.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    evil = tmp_path / "evil.tar"
    evil.write_bytes(buf.getvalue())
    for check_mode in (True, False):
        result = run_module("path_restore", check_mode=check_mode, container=FILES, src=str(evil), paths=["/data"],
                            clean=True)
        assert result.get("failed") and "data/../evil" in result["msg"] and "nothing was written" in result["msg"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("data/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc"
        tar.addfile(info)
    evil.write_bytes(buf.getvalue())
    result = run_module("path_restore", container=FILES, src=str(evil), paths=["/data"])
    assert result.get("failed") and "absolute target" in result["msg"], result
    assert sh(FILES, LISTING, "/data") + sh(FILES, FS_VIEW) == before


def test_path_archive_restore_round_trip(containers, tmp_path):
    sh(FILES, 'find /data -mindepth 1 -delete; ' + POPULATE)
    before = sh(FILES, LISTING, "/data")
    assert "ünï cödé" in before and "L ./dirlink -> sub dir" in before
    archive = str(tmp_path / "data.tar.zst")
    result = run_module("path_archive", container=FILES, paths=["/data"], dest=archive, only_mounted=True)
    assert result.get("changed") and result["archived"] == ["/data"], result

    sh(FILES, 'rm /data/a.txt; rm -r /data/empty; echo changed > "/data/sub dir/ünï cödé/big random.bin"; '
              'echo new > /data/new-file; mkdir /data/new-dir')
    planned = run_module("path_restore", check_mode=True, container=FILES, src=archive, paths=["/data", "/nope"],
                         clean=True)
    assert planned["changed"] and planned["plan"]["clean"] == ["/data"], planned
    assert planned["skipped_paths"] == [{"path": "/nope", "reason": "not in the archive"}]
    assert "new-file" in sh(FILES, "ls /data")

    for _round in range(2):
        restored = run_module("path_restore", container=FILES, src=archive, paths=["/data"], clean=True)
        assert restored.get("changed") and restored["restored"] == ["/data"], restored
        assert sh(FILES, LISTING, "/data") == before
    # without clean, added files stay and changed ones are put back
    sh(FILES, "echo new > /data/new-file; echo changed > /data/zero.bin")
    restored = run_module("path_restore", container=FILES, src=archive, paths=["/data"])
    assert not restored.get("failed"), restored
    after = sh(FILES, LISTING, "/data").splitlines()
    assert any(line.startswith("F ./new-file ") for line in after)
    assert [line for line in after if not line.startswith("F ./new-file ")] == before.splitlines()


def _playbook(tmp_path, body):
    path = tmp_path / "play.yml"
    path.write_text(body)
    run = ansible_run.run_playbook(None, path)
    assert run.rc == 0, run.explain()


@pytest.fixture(scope="module")
def backup_set(containers, tmp_path_factory):
    dest = tmp_path_factory.mktemp("sets")
    if not int(psql("select count(*) from pg_tables where tablename = 't'")):
        psql(HOSTILE_SQL)
    redis_cli("SET", "session:1", "x")
    sh(FILES, 'find /data -mindepth 1 -delete; ' + POPULATE)
    play = """
- hosts: localhost
  gather_facts: false
  tasks:
    - authentik_ops.backup.backup_set: {dest: "@DEST@"}
      register: s
    - authentik_ops.backup.postgres_dump: {container: @PG@, dest: "{{ s.path }}/postgres.sql.zst"}
      register: pg
    - authentik_ops.backup.redis_dump: {container: @REDIS@, dest: "{{ s.path }}/redis.rdb"}
      register: rd
    - authentik_ops.backup.path_archive: {container: @FILES@, paths: [/data], dest: "{{ s.path }}/data.tar.zst"}
      register: pa
    - authentik_ops.backup.backup_set:
        dest: "@DEST@"
        name: "{{ s.name }}"
        state: complete
        parts:
          - "{{ pg | combine({'part': 'postgres'}) }}"
          - "{{ rd | combine({'part': 'redis'}) }}"
          - "{{ pa | combine({'part': 'data'}) }}"
        metadata:
          platform: docker
          authentik: {version: "2026.2.2"}
          source: {containers: {postgresql: {name: @PG@, image: "@IMAGE@"}}}
"""
    for key, value in (("@DEST@", str(dest)), ("@PG@", PG), ("@REDIS@", REDIS), ("@FILES@", FILES),
                       ("@IMAGE@", PG_IMAGE)):
        play = play.replace(key, value)
    _playbook(dest, play)

    return str(dest)


def _copy_set(backup_set, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(os.path.realpath(os.path.join(backup_set, "latest")), target)
    return str(target)


def test_verify_passes_a_good_set_with_restore_test(backup_set):
    def verify_containers():  # other containers come and go on a shared engine
        return [n for n in docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
                if n.startswith("authentik-verify-")]

    docker_before = verify_containers()
    refused = run_module("backup_verify", dest=backup_set, restore_test=True)
    assert refused.get("failed") and "give image" in refused["msg"], refused
    result = run_module("backup_verify", dest=backup_set, restore_test=True, image=PG_IMAGE)
    assert result["ok"] and not result.get("failed"), result
    assert [f["format"] for f in result["files"]] == ["pg_dumpall", "rdb", "tar"]
    assert result["authentik"]["version"] == "2026.2.2" and result["platform"] == "docker"
    test = result["restore_test"]
    assert test["ok"] and test["removed"] and test["databases"]["authentik"] >= 1, test
    assert test["image"] == PG_IMAGE
    assert test["container"] not in verify_containers() and verify_containers() == docker_before
    checked = run_module("backup_verify", check_mode=True, dest=backup_set, restore_test=True, image=PG_IMAGE)
    assert checked["ok"] and checked["restore_test"]["ok"] is None


def test_verify_detects_a_corrupted_byte(backup_set, tmp_path):
    path = _copy_set(backup_set, tmp_path)
    target = os.path.join(path, "data.tar.zst")
    data = bytearray(open(target, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(target, "wb").write(bytes(data))
    result = run_module("backup_verify", path=path)
    assert result.get("failed") and "data.tar.zst" in result["msg"] and "sha256" in result["msg"], result
    soft = run_module("backup_verify", path=path, fail_on_error=False)
    assert not soft.get("failed") and soft["ok"] is False and soft["problems"]


def test_verify_detects_missing_file_and_manifest_and_strays(backup_set, tmp_path):
    path = _copy_set(backup_set, tmp_path)
    os.unlink(os.path.join(path, "redis.rdb"))
    open(os.path.join(path, "notes.txt"), "w").write("stray")
    result = run_module("backup_verify", path=path, fail_on_error=False)
    assert not result["ok"] and any("redis.rdb" in p and "missing" in p for p in result["problems"]), result
    assert any("notes.txt" in w for w in result["warnings_found"])
    os.unlink(os.path.join(path, "manifest.json"))
    result = run_module("backup_verify", path=path)
    assert result.get("failed") and "incomplete" in result["msg"], result


def test_verify_detects_a_truncated_dump(backup_set, tmp_path):
    path = _copy_set(backup_set, tmp_path)
    target = os.path.join(path, "postgres.sql.zst")
    data = open(target, "rb").read()
    open(target, "wb").write(data[: len(data) - 100])
    result = run_module("backup_verify", path=path, fail_on_error=False)
    problems = [p for p in result["problems"] if p.startswith("postgres.sql.zst")]
    assert any("truncated" in p for p in problems) and any("sha256" in p or "bytes on disk" in p for p in problems)


# --- Kubernetes: the test API server of tests/testbed/k8s (real client, real v4 exec WebSocket), NOT a cluster ---
K8S_REDIS = PREFIX + "k8sredis"
NS = f"akbtrst{paths.PROJECT_SUFFIX}"


@pytest.fixture(scope="module")
def k8s(containers, tmp_path_factory):
    sys.path.insert(0, os.path.join(REPO, "tests", "testbed", "k8s"))
    import helm_stacks  # noqa: PLC0415 - test bed helper, only for these cases

    docker("rm", "-f", "-v", K8S_REDIS, check=False)
    # --restart always stands in for the kubelet restarting the container after SHUTDOWN NOSAVE
    docker("run", "-d", "--name", K8S_REDIS, "--network", "none", "--restart", "always", REDIS_IMAGE,
           "redis-server", "--save", "3600", "1")
    work = tmp_path_factory.mktemp("k8s")

    def pod(name, container, docker_name):
        return {"name": name, "namespace": NS, "labels": {"app": name},
                "containers": [{"name": container, "docker": docker_name, "image": "stand-in",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}

    state = {"token": "akbt-rst-token", "namespaces": [NS], "deployments": [], "statefulsets": [], "secrets": [],
             "stacks": {}, "pods": [pod("pg-0", "postgresql", PG), pod("redis-0", "redis", K8S_REDIS),
                                    pod("files-0", "files", FILES)]}
    url, kubeconfig, proc = helm_stacks.start_server(state, workdir=str(work))
    try:
        assert url
        yield dict(platform="kubernetes", namespace=NS, kubeconfig=kubeconfig)
    finally:
        helm_stacks.stop_server(proc)
        docker("rm", "-f", "-v", K8S_REDIS, check=False)


def test_k8s_postgres_restore_with_password_on_stdin(k8s, tmp_path):
    if not int(psql("select count(*) from pg_tables where tablename = 't'")):
        psql(HOSTILE_SQL)
    before = pg_state()
    dump = str(tmp_path / "postgres.sql.gz")
    assert not run_module("postgres_dump", dest=dump, compression="gzip", pod="pg-0", **k8s).get("failed")
    psql("drop table t")
    # the password travels on stdin before the dump; head -c must count only the dump
    restored = run_module("postgres_restore", src=dump, pod="pg-0", password="it-secret", host="127.0.0.1", **k8s)
    assert restored.get("changed") and restored["rc"] == 0, restored
    assert pg_state() == before


def test_k8s_path_restore(k8s, tmp_path):
    sh(FILES, 'find /data -mindepth 1 -delete; ' + POPULATE)
    before = sh(FILES, LISTING, "/data")
    archive = str(tmp_path / "data.tar.gz")
    assert not run_module("path_archive", paths=["/data"], dest=archive, compression="gzip", pod="files-0",
                          **k8s).get("failed")
    sh(FILES, 'rm -r /data/media; echo new > /data/new-file')
    restored = run_module("path_restore", src=archive, paths=["/data"], clean=True, pod="files-0", **k8s)
    assert restored.get("changed") and not restored.get("failed"), restored
    assert sh(FILES, LISTING, "/data") == before


def test_k8s_redis_replace_restarts_the_container(k8s, tmp_path):
    cli = ("exec", K8S_REDIS, "redis-cli", "--raw")
    for _attempt in range(40):
        if docker(*cli, "PING", check=False).stdout.strip() == b"PONG":
            break
        time.sleep(0.25)
    docker(*cli, "SET", "kept", "välue")
    rdb = str(tmp_path / "redis.rdb")
    assert not run_module("redis_dump", dest=rdb, pod="redis-0", **k8s).get("failed")
    docker(*cli, "SET", "added", "later")
    docker(*cli, "DEL", "kept")
    restored = run_module("redis_restore", src=rdb, pod="redis-0", wait_timeout=60, **k8s)
    assert restored.get("changed") and not restored.get("failed"), restored
    assert docker(*cli, "GET", "kept").stdout.strip().decode() == "välue"
    assert docker(*cli, "EXISTS", "added").stdout.strip() == b"0"
    assert sh(K8S_REDIS, "ls -A /data").split() == ["dump.rdb"]  # no .restore-tmp left


def test_postgres_restore_refuses_a_newer_major_and_forged_dumps(containers, tmp_path):
    """A PostgreSQL 17 dump into the 15 server and dumps with meta-commands or template1 are refused before
    anything is touched: the live data stays as it was and no command ran in the container."""
    from testbed import proof  # noqa: PLC0415 - only this test starts a 17 server

    psql("create table if not exists precious (v text); insert into precious values ('keep me')")
    state = pg_state()
    pg17 = proof.start_postgres(name=PREFIX + "pg17", image=paths.IMAGE_POSTGRES_17)
    try:
        docker("exec", pg17, "psql", "-X", "-q", "-U", proof.PROOF_SUPERUSER, "-d", "postgres", "-c",
               "create database authentik")
        dump17 = str(tmp_path / "postgres17.sql")
        dumped = run_module("postgres_dump", container=pg17, dest=dump17, compression="none")
        assert not dumped.get("failed"), dumped
    finally:
        proof.cleanup(pg17)
    result = run_module("postgres_restore", container=PG, src=dump17)
    assert result.get("failed"), result
    assert "Dumped from database version 17" in result["msg"] and "target server (15)" in result["msg"], result
    assert "nothing was restored or changed" in result["msg"]
    assert pg_state() == state and psql("select v from precious") == "keep me"

    good = str(tmp_path / "postgres.sql")
    assert not run_module("postgres_dump", container=PG, dest=good, compression="none").get("failed")
    text = open(good, encoding="utf-8").read()
    anchor = "SET statement_timeout = 0;\n"
    for forged, cause in (("\\! touch /tmp/akbt-pwned\n", "meta-command '\\\\!'"),
                          ("SELECT 1; \\! touch /tmp/akbt-pwned\n", "meta-command inside or after"),
                          ("UPDATE pg_catalog.pg_database SET datistemplate = false WHERE datname = 'template1';\n",
                           "template1"),
                          ("CREATE TABLESPACE ts LOCATION '/tmp';\n", "tablespace")):
        bad = tmp_path / "forged.sql"
        bad.write_text(text.replace(anchor, anchor + forged, 1), encoding="utf-8")
        result = run_module("postgres_restore", container=PG, src=str(bad))
        assert result.get("failed") and cause in result["msg"] and "refused" in result["msg"], result
        assert docker("exec", PG, "test", "-e", "/tmp/akbt-pwned", check=False).returncode == 1
        assert pg_state() == state


def databases_now():
    return psql("select string_agg(datname || ':' || datallowconn, ',' order by datname) from pg_database",
                db="postgres")


def test_postgres_restore_beside_the_live_data(containers, tmp_path):
    """staged loads under temporary names and proves every table while the live data stays; swapped exchanges the
    names in one transaction and keeps the previous data; rolled_back puts it back; cleaned drops the kept copy."""
    psql("create table if not exists precious (v text)")
    psql("delete from precious; insert into precious values ('in the backup')")
    dump = str(tmp_path / "postgres.sql.zst")
    assert not run_module("postgres_dump", container=PG, dest=dump).get("failed")
    in_backup = pg_state()
    psql("insert into precious values ('after the backup')")
    after_backup = pg_state()
    journal = str(tmp_path / "journal")

    planned = run_module("postgres_restore", check_mode=True, container=PG, src=dump, state="staged",
                         journal_dir=journal, run_id="t1")
    assert planned["plan"]["databases"] == {"authentik": "akr_t1_1", "ünï db": "akr_t1_2"}, planned
    assert pg_state() == after_backup and not os.path.exists(journal)

    staged = run_module("postgres_restore", container=PG, src=dump, state="staged", journal_dir=journal,
                        run_id="t1")
    assert staged.get("changed") and not staged.get("failed"), staged
    assert staged["proof"]["equal"] and staged["proof"]["tables"] >= 3 and staged["proof"]["rows"] > 5000, staged
    # every table proved by its digest in load order, taken in the container: none compared row by row
    assert staged["proof"]["compared_by_rows"] == 0, staged
    assert pg_state()[:3] == after_backup[:3]  # the live data is untouched
    assert "akr_t1_1:true" in databases_now() and "akr_t1_2:true" in databases_now()
    assert psql("select string_agg(v, ',') from precious", db="akr_t1_1") == "in the backup"
    mode = os.stat(os.path.join(journal, "t1.json")).st_mode & 0o777, os.stat(journal).st_mode & 0o777
    assert mode == (0o600, 0o700)

    swapped = run_module("postgres_restore", container=PG, state="swapped", journal_dir=journal)
    assert swapped.get("changed") and swapped["previous"] == {"authentik": "akp_t1_1", "ünï db": "akp_t1_2"}, swapped
    assert pg_state()[:3] == in_backup[:3]
    now = databases_now()
    assert "akp_t1_1:false" in now and "akp_t1_2:false" in now and "akr_" not in now and "authentik:true" in now

    rolled = run_module("postgres_restore", container=PG, state="rolled_back", journal_dir=journal)
    assert rolled.get("changed") and rolled["replaced"] == {"authentik": "akn_t1_1", "ünï db": "akn_t1_2"}, rolled
    assert pg_state()[:3] == after_backup[:3]
    assert "authentik:true" in databases_now() and "akn_t1_1:false" in databases_now()

    cleaned = run_module("postgres_restore", container=PG, state="cleaned", journal_dir=journal)
    assert cleaned["dropped"] == ["akn_t1_1", "akn_t1_2"], cleaned
    assert "akn_" not in databases_now() and "akp_" not in databases_now()
    assert pg_state() == after_backup


def test_postgres_restore_target_killed_while_staging(containers, tmp_path):
    """The database server killed in the middle of the load: the live data is intact after it comes back, the
    journal tells which temporary databases were left, and state=discarded drops them."""
    import threading  # noqa: PLC0415

    psql("drop table if exists big; create table big as "
         "select g, repeat(md5(g::text), 12) as v from generate_series(1, 250000) g")
    dump = str(tmp_path / "postgres.sql")
    assert not run_module("postgres_dump", container=PG, dest=dump, compression="none").get("failed")
    psql("drop table big")
    before = pg_state()
    journal = str(tmp_path / "journal")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(run_module(
        "postgres_restore", container=PG, src=dump, state="staged", journal_dir=journal, run_id="k1")))
    worker.start()
    for _attempt in range(1200):
        if "akr_k1_1" in (docker("exec", PG, "psql", "-X", "-A", "-t", "-U", "authentik", "-d", "postgres", "-c",
                                 "select string_agg(datname, ',') from pg_database", check=False).stdout.decode()):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the load did not start: {outcome}")
    time.sleep(1)
    docker("kill", PG)
    worker.join(600)
    docker("start", PG)
    wait_pg()
    assert outcome.get("failed") and "The live databases were not touched" in outcome["msg"], outcome
    assert pg_state()[:3] == before[:3]
    assert "akr_k1_1" in databases_now()
    with open(os.path.join(journal, "k1.json"), encoding="utf-8") as handle:
        assert '"phase": "staging"' in handle.read()
    discarded = run_module("postgres_restore", container=PG, state="discarded", journal_dir=journal, run_id="k1")
    assert discarded.get("changed") and discarded["dropped"] == ["akr_k1_1", "akr_k1_2"], discarded
    assert pg_state() == before


def test_postgres_restore_proof_falls_back_to_rows_and_catches_a_changed_value(containers, tmp_path):
    """The fast proof (each table's MD5 in load order, from md5sum in the container) is only a first try: where its
    digests differ, every such table is compared row by row (order-independent) and the restore goes on when those
    are equal; a value the server stores differently from the dump (here an integer written 01) fails the proof,
    the temporary databases are dropped and the live data stays as it was."""
    import zstandard  # noqa: PLC0415

    psql("drop table if exists akbt_norm; create table akbt_norm (n int, v text); "
         "insert into akbt_norm select g, 'row ' || g from generate_series(1, 300) g")
    dump = tmp_path / "postgres.sql.zst"
    assert not run_module("postgres_dump", container=PG, dest=str(dump)).get("failed")
    before = pg_state()
    journal = str(tmp_path / "journal")
    # an md5sum that answers a wrong digest for everything: the fast proof fails for every table
    shim = "/usr/local/bin/md5sum"
    sh(PG, f'printf "#!/bin/sh\\ncat >/dev/null\\necho 00000000000000000000000000000000 -\\n" > {shim}; '
           f"chmod 755 {shim}")
    try:
        staged = run_module("postgres_restore", container=PG, src=str(dump), state="staged", journal_dir=journal,
                            run_id="f1")
    finally:
        sh(PG, f"rm -f {shim}")
    assert staged.get("changed") and not staged.get("failed"), staged
    assert staged["proof"]["equal"] and staged["proof"]["compared_by_rows"] == staged["proof"]["tables"] >= 3, staged
    assert psql("select count(*) from akbt_norm", db="akr_f1_1") == "300"
    assert run_module("postgres_restore", container=PG, state="discarded", journal_dir=journal, run_id="f1")["changed"]

    sql = zstandard.ZstdDecompressor().stream_reader(dump.open("rb")).read()
    assert b"\n7\trow 7\n" in sql
    changed = tmp_path / "changed.sql.zst"
    changed.write_bytes(zstandard.ZstdCompressor().compress(sql.replace(b"\n7\trow 7\n", b"\n07\trow 7\n", 1)))
    failed = run_module("postgres_restore", container=PG, src=str(changed), state="staged", journal_dir=journal,
                        run_id="f2")
    assert failed.get("failed"), failed
    assert "the restored data differs from the dump" in failed["msg"], failed
    assert "akbt_norm" in failed["msg"] and "same count, different content" in failed["msg"], failed
    assert "The live databases were not touched; the temporary databases were dropped" in failed["msg"], failed
    assert "akr_f2" not in databases_now()
    assert pg_state() == before
    psql("drop table akbt_norm")
