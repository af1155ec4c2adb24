"""Helpers that prove a backup: compare what is in the live system with what a backup restores to.

Every function raises on a failure of its own (docker, SQL, parsing); a difference in data is shown by comparing
the returned structures, which are plain dicts and tuples (so pytest prints a useful diff).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

from . import paths, resp
from ._docker import DockerError, docker, inspect, names, remove_containers, remove_volumes, wait_for

# proof containers of this process carry this prefix, so a cleanup never hits another session's containers
SESSION_PREFIX = f"{paths.PROOF_PREFIX}{os.getpid():x}-"
PROOF_SUPERUSER = "akbt_proof"

_SESSION_SQL = """\
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 3;
SET bytea_output = 'hex';
SET client_min_messages = warning;
"""

# one JSON line per table: rowcount and md5 over the md5 of every row's text, ordered (collation-independent)
_CHECKSUM_SQL = _SESSION_SQL + r"""
SELECT format(
  'SELECT json_build_object(''t'', %L, ''n'', count(*), ''m'', '
  'md5(coalesce(string_agg(md5(x::text), '''' ORDER BY md5(x::text)), '''')))::text FROM ONLY %I.%I AS x',
  n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY 1
\gexec
SELECT format(
  'SELECT json_build_object(''t'', %L, ''n'', 1, ''m'', md5(last_value::text || '','' || is_called::text))::text '
  'FROM %I.%I', n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
ORDER BY 1
\gexec
SELECT json_build_object('t', 'pg_catalog.pg_largeobject', 'n', count(*),
  'm', md5(coalesce(string_agg(loid || ':' || pageno || ':' || encode(data, 'hex'), ',' ORDER BY loid, pageno), '')))::text
FROM pg_largeobject;
"""

_DATABASES_SQL = """\
SELECT coalesce(json_agg(datname ORDER BY datname), '[]')::text FROM pg_database
WHERE NOT datistemplate AND datallowconn AND datname <> 'postgres';
"""

_ROLES_SQL = """\
SELECT coalesce(json_object_agg(rolname, json_build_array(rolsuper, rolinherit, rolcreaterole, rolcreatedb,
  rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolpassword, rolvaliduntil) ORDER BY rolname), '{}')::text
FROM pg_authid WHERE rolname NOT LIKE 'pg\\_%';
"""


def _conninfo_db(db):
    return "dbname='" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _psql(container, user, sql, db="postgres", password=None):
    args = ["exec", "-i"]
    env = None
    if password is not None:
        args += ["-e", "PGPASSWORD"]  # value taken from our environment: never in argv
        env = {"PGPASSWORD": password}
    args += [container, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", _conninfo_db(db)]
    return docker(*args, input=sql.encode("utf-8"), env=env).stdout.decode("utf-8")


def databases(container, user, password=None):
    """Names of the non-template databases except ``postgres``."""
    return json.loads(_psql(container, user, _DATABASES_SQL, password=password).strip())


def drop_kept_restore_databases(container, user, password=None):
    """Drop the databases all-or-nothing restores of other tests kept on a shared stack (``akp_*``, ``akr_*``);
    returns their names."""
    listed = _psql(container, user, "SELECT datname FROM pg_database WHERE datname ~ '^ak[rpn]_[a-z0-9]+_[0-9]+$';",
                   password=password)
    names = [name for name in listed.split() if re.match(r"^ak[rpn]_[a-z0-9]+_\d+$", name)]
    for name in names:
        _psql(container, user, f'DROP DATABASE "{name}";', password=password)
    return names


def table_checksums(container, user, password=None):
    """``{db: {"schema.table": (rowcount, md5)}}`` for every table (and materialized view) of every non-template
    database except ``postgres``; sequences appear with rowcount 1 and the md5 of ``last_value,is_called``, large
    objects as ``pg_catalog.pg_largeobject``. Computed in SQL inside the container."""
    result = {}
    for db in databases(container, user, password):
        tables = {}
        for line in _psql(container, user, _CHECKSUM_SQL, db=db, password=password).splitlines():
            if line.strip():
                row = json.loads(line)
                tables[row["t"]] = (row["n"], row["m"])
        result[db] = tables
    return result


def role_state(container, user, password=None, exclude=(PROOF_SUPERUSER,)):
    """``{role: [attributes..., password verifier, valid until]}`` of every role except pg_* and ``exclude``."""
    roles = json.loads(_psql(container, user, _ROLES_SQL, password=password).strip())
    return {k: tuple(v) for k, v in roles.items() if k not in exclude}


def _proof_name(kind):
    return f"{SESSION_PREFIX}{kind}-{uuid.uuid4().hex[:8]}"


def _open_decompressed(path):
    """A binary file object yielding the decompressed content of ``path`` (by suffix: .gz, .zst, else plain)."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb"), None
    if path.endswith(".zst"):
        try:
            import zstandard  # pylint: disable=import-outside-toplevel
        except ImportError:
            proc = subprocess.Popen(
                ["zstd", "-d", "-c", "-q", path], stdout=subprocess.PIPE
            )  # pylint: disable=consider-using-with
            return proc.stdout, proc
        raw = open(path, "rb")  # pylint: disable=consider-using-with
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), None
    return open(path, "rb"), None  # pylint: disable=consider-using-with


def start_postgres(name=None, superuser=PROOF_SUPERUSER, password=None, timeout=90, image=paths.IMAGE_POSTGRES):
    """Start a fresh PostgreSQL container of ``image`` (default akbt.local/postgres:15; no volume) and wait until
    it accepts connections."""
    name = name or _proof_name("pg")
    password = password or uuid.uuid4().hex
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--label",
        "akbt.proof=1",
        "-e",
        "POSTGRES_USER",
        "-e",
        "POSTGRES_PASSWORD",
        "-e",
        "POSTGRES_DB",
        image,
        env={"POSTGRES_USER": superuser, "POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres"},
    )

    def ready():
        if not inspect("container", name)["State"]["Running"]:
            raise DockerError(f"{name} stopped: {docker('logs', name, check=False).stderr.decode('utf-8', 'replace')}")
        return (
            docker(
                "exec", name, "psql", "-X", "-q", "-U", superuser, "-d", "postgres", "-c", "SELECT 1", check=False
            ).returncode
            == 0
        )

    wait_for(ready, timeout, f"PostgreSQL in {name}")
    return name


def restore_dump_into_fresh(dump_path, name=None, timeout=600, image=paths.IMAGE_POSTGRES):
    """Restore a ``pg_dumpall`` file (.sql, .sql.gz, .sql.zst) into a fresh PostgreSQL container (``image``) whose
    superuser (``akbt_proof``) does not appear in the dump. Returns the container name; compare with
    ``table_checksums(name, PROOF_SUPERUSER)``; remove with ``cleanup(name)``."""
    name = start_postgres(name=name, image=image)
    src, helper = _open_decompressed(dump_path)
    with tempfile.TemporaryFile() as errf, tempfile.TemporaryFile() as outf:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [
                "docker",
                "exec",
                "-i",
                name,
                "psql",
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-U",
                PROOF_SUPERUSER,
                "-d",
                "postgres",
            ],
            stdin=subprocess.PIPE,
            stdout=outf,
            stderr=errf,
        )
        try:
            with src:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        rc = proc.wait(timeout=timeout)
        if helper is not None and helper.wait() != 0:
            raise RuntimeError(f"zstd -d failed on {dump_path}")
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
        if rc != 0:
            raise RuntimeError(f"restoring {dump_path} into {name} failed (psql exit {rc}):\n{err[-4000:]}")
    return name


def redis_state(container, password=None, port=6379):
    """``{key: (type, value, has_ttl)}`` of every key, binary-safe (keys and values are bytes). Keys of database
    n > 0 are prefixed with ``b"db<n>:"``. value: bytes (string), dict (hash), list (list), frozenset (set),
    tuple of (member, score) pairs (zset)."""
    info = resp.pipeline(container, [("INFO", "keyspace")], password=password, port=port)[0].decode()
    dbs = sorted(int(line.split(":")[0][2:]) for line in info.splitlines() if line.startswith("db"))
    state = {}
    for db in dbs:
        keys = resp.pipeline(container, [("SELECT", str(db)), ("KEYS", "*")], password=password, port=port)[1]
        if not keys:
            continue
        meta = resp.pipeline(
            container,
            [("SELECT", str(db))] + [c for k in keys for c in (("TYPE", k), ("PTTL", k))],
            password=password,
            port=port,
        )[1:]
        types = meta[0::2]
        ttls = meta[1::2]
        fetch = [("SELECT", str(db))]
        for key, typ in zip(keys, types):
            fetch.append(
                {
                    "string": ("GET", key),
                    "hash": ("HGETALL", key),
                    "list": ("LRANGE", key, "0", "-1"),
                    "set": ("SMEMBERS", key),
                    "zset": ("ZRANGE", key, "0", "-1", "WITHSCORES"),
                }.get(typ, ("TYPE", key))
            )
        values = resp.pipeline(container, fetch, password=password, port=port)[1:]
        for key, typ, ttl, value in zip(keys, types, ttls, values):
            if typ == "hash":
                value = dict(zip(value[0::2], value[1::2]))
            elif typ == "set":
                value = frozenset(value)
            elif typ == "zset":
                value = tuple(zip(value[0::2], value[1::2]))
            elif typ == "list":
                value = tuple(value)
            full_key = key if db == 0 else b"db%d:" % db + key
            state[full_key] = (typ, value, ttl >= 0)
    return state


def load_rdb_into_fresh(rdb_path, name=None, timeout=60):
    """Start a fresh akbt.local/redis:7 container whose /data (a bind-mounted temp dir) holds ``rdb_path`` as
    dump.rdb (.gz/.zst are decompressed). Returns the container name once the data is loaded."""
    name = name or _proof_name("redis")
    tmp = tempfile.mkdtemp(prefix=f"{name}-")
    src, helper = _open_decompressed(rdb_path)
    with src, open(os.path.join(tmp, "dump.rdb"), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if helper is not None and helper.wait() != 0:
        raise RuntimeError(f"zstd -d failed on {rdb_path}")
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--label",
        "akbt.proof=1",
        "--label",
        f"akbt.proof.tmpdir={tmp}",
        "--mount",
        f"type=bind,source={tmp},target=/data",
        paths.IMAGE_REDIS,
        "redis-server",
        "--save",
        "",
        "--appendonly",
        "no",
    )

    def ready():
        if not inspect("container", name)["State"]["Running"]:
            raise DockerError(f"{name} stopped: {docker('logs', name, check=False).stdout.decode('utf-8', 'replace')}")
        reply = resp.pipeline(name, [("PING",)], check=False)[0]
        return reply == "PONG"

    wait_for(ready, timeout, f"Redis in {name}")
    return name


def _file_sha256(fileobj):
    h = hashlib.sha256()
    for chunk in iter(lambda: fileobj.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def tree_state(path):
    """``{relpath: ("file", sha256, mode) | ("link", target) | ("dir",) | ("other", type)}`` of a host
    directory (the directory itself is not listed; symlinks are not followed)."""
    root = Path(path)
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in sorted(dirnames + filenames):
            full = os.path.join(dirpath, entry)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    state[rel] = ("file", _file_sha256(fh), stat.S_IMODE(st.st_mode))
            else:
                state[rel] = ("other", stat.S_IFMT(st.st_mode))
        # do not descend into symlinked directories (os.walk does not follow links by default)
    return state


def _norm_member(name, strip_prefix):
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/").rstrip("/")
    prefix = (strip_prefix or "").strip("/")
    while prefix.startswith("./"):
        prefix = prefix[2:]
    if prefix:
        if name == prefix:
            return ""
        if not name.startswith(prefix + "/"):
            return None
        name = name[len(prefix) + 1 :]
    return name


def tar_state(tarfile_path, strip_prefix=""):
    """The ``tree_state`` structure of an archive (.tar, .tar.gz/.tgz, .tar.zst), with ``strip_prefix`` (e.g.
    ``"data"`` for an archive of the container path /data) removed from member names. Members outside the prefix
    are reported under their full name with a leading ``"!outside:"`` so a comparison fails on them."""
    path = str(tarfile_path)
    helper = None
    if path.endswith(".zst"):
        fileobj, helper = _open_decompressed(path)
    elif path.endswith((".gz", ".tgz")):
        fileobj = gzip.open(path, "rb")
    else:
        fileobj = open(path, "rb")  # pylint: disable=consider-using-with
    state = {}
    hashes = {}
    with fileobj, tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            rel = _norm_member(member.name, strip_prefix)
            if rel is None:
                state["!outside:" + member.name] = ("outside",)
                continue
            if rel == "":
                continue
            if member.issym():
                state[rel] = ("link", member.linkname)
            elif member.isdir():
                state[rel] = ("dir",)
            elif member.isfile():
                digest = _file_sha256(tar.extractfile(member))
                hashes[member.name] = digest
                state[rel] = ("file", digest, member.mode & 0o7777)
            elif member.islnk():
                state[rel] = ("file", hashes.get(member.linkname, "hardlink:" + member.linkname), member.mode & 0o7777)
            else:
                state[rel] = ("other", member.type)
    if helper is not None and helper.wait() != 0:
        raise RuntimeError(f"zstd -d failed on {path}")
    return state


def cleanup(*container_names):
    """Remove proof containers (and the temp dirs of Redis proof containers)."""
    for name in container_names:
        info = inspect("container", name)
        if not info:
            continue
        tmp = (info["Config"].get("Labels") or {}).get("akbt.proof.tmpdir")
        remove_containers([name])
        if tmp and os.path.basename(tmp).startswith(paths.PROOF_PREFIX):
            shutil.rmtree(tmp, ignore_errors=True)


def cleanup_prefix(prefix=None):
    """Remove containers and volumes whose name starts with ``prefix`` (default: this session's proof prefix).
    Refuses prefixes that do not start with ``akbt`` or are shorter than 6 characters."""
    prefix = prefix or SESSION_PREFIX
    if not prefix.startswith(paths.PREFIX) or len(prefix) < 6:
        raise ValueError(f"refusing to clean up prefix {prefix!r}")
    containers = names("container", prefix)
    cleanup(*containers)
    volumes = names("volume", prefix)
    remove_volumes(volumes)
    return containers, volumes


__all__ = [
    "PROOF_SUPERUSER",
    "SESSION_PREFIX",
    "cleanup",
    "cleanup_prefix",
    "databases",
    "load_rdb_into_fresh",
    "redis_state",
    "restore_dump_into_fresh",
    "role_state",
    "start_postgres",
    "table_checksums",
    "tar_state",
    "tree_state",
]
