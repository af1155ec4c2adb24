#!/usr/bin/env python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks of authentik_ops.backup on the test bed (``make bench``); see docs/performance.md.

Builds its own Compose-like stack (project ``akbt-bench``) with a database whose dump is about ``--size-mb`` MiB,
then measures, several rounds each (the order rotates every round; medians are reported):

* the PostgreSQL dump: the collection's ``postgres_dump`` module (each compression, by default through its helper
  container in the database's network namespace, and with ``method: exec``) against the raw
  ``docker exec <pg> pg_dumpall > file`` pipe, the docs' two-step way (dump to a file inside the container,
  ``docker cp``, ``rm``) and the in-container ceiling (``pg_dumpall > /dev/null`` inside);
* bytes written inside the database container by each way (files on its root filesystem newer than a marker, and
  the change of the container's ``SizeRw``);
* the sink's own speed per codec on the sample dump (no container involved), to show whether compression limits;
* peak RSS (VmHWM) of the module process at ``--sizes`` (MiB of dump);
* the Kubernetes transport (through the test API server, tests/testbed/k8s) against the Docker exec transport and
  against Docker's default (the helper), same data;
* a whole role run (playbooks/backup.yml) on the stack: wall time, each part's time, Ansible overhead;
* the PostgreSQL restore of the same dump: the raw ``docker exec -i <pg> psql < dump`` (the docs' way, in place)
  against ``postgres_restore`` in place (``state: restored``) and all-or-nothing (``state: staged``, which loads
  beside the live data and proves every table, then ``state: swapped``; the kept previous data is dropped after each
  round, outside the time);
* a PostgreSQL major upgrade (playbooks/upgrade_postgres.yml, 15 -> 17, last since it changes the stack): how long
  authentik is down (server and worker stopped, from Docker's events) against the raw ``docker exec <old>
  pg_dumpall | docker exec -i <new> psql`` into a new server of the same image.

Prints a table of ratios and writes the raw figures as JSON to benchmarks/results/<UTC timestamp>.json.
Timings depend on the machine and its load: compare ratios from one run, never absolute numbers between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".collections"
RESULTS = REPO / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position
from testbed import stacks  # noqa: E402
from testbed._docker import exec_ok, wait_for  # noqa: E402
from testbed.k8s import helm_stacks  # noqa: E402

MIB = 1 << 20
# stacks.py makes ~1.04 MiB of pg_dumpall output per --db-size-mb (rows of ~1 KiB text, plus the fixed sample data)
DUMP_MIB_PER_DB_MB = 1.04
MODULE = "ansible_collections.authentik_ops.backup.plugins.modules.{}"
INNER_TMP = "/tmp/akbt-bench-dump.sql"
# Runs a module as __main__ and, at exit, writes its peak RSS (VmHWM of its own memory since exec) to a file.
# ru_maxrss from wait4 would not do: with posix_spawn/vfork the child inherits the parent's high-water mark.
CHILD = """
import atexit, os, runpy, sys
def peak():
    with open('/proc/self/status') as status:
        kib = next(line.split()[1] for line in status if line.startswith('VmHWM:'))
    with open(os.environ['AKBT_BENCH_RSS_FILE'], 'w') as out:
        out.write(kib)
atexit.register(peak)
name = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_module(name, run_name='__main__', alter_sys=True)
"""
MARKER = "/tmp/.akbt-bench-marker"
UPGRADE_IMAGE = "akbt.local/postgres:17"  # the test bed's PostgreSQL 17 (tests/testbed/images-variants.sh)
CODECS = [("none", None), ("gzip", None), ("zstd", None)]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def docker(*args, check=True, **kwargs):
    return subprocess.run(["docker", *args], check=check, capture_output=True, **kwargs)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def db_size_for(dump_mib):
    return max(1, round(dump_mib / DUMP_MIB_PER_DB_MB))


# --- the ways of dumping ----------------------------------------------------------------------------------------

class Bench:
    def __init__(self, stack, workdir):
        self.stack = stack
        self.pg = stack.pg_container
        self.user = stack.pg_user
        self.workdir = Path(workdir)
        excludes = ["--exclude-database=postgres", "--exclude-database=template1"]
        self.dump_args = ["pg_dumpall", "-U", self.user, "--clean", "--if-exists", *excludes]

    def out(self, name):
        path = self.workdir / name
        if path.exists():
            path.unlink()
        return path

    # bytes written inside the container ---------------------------------------------------------------------
    def size_rw(self):
        info = json.loads(docker("container", "inspect", "--size", self.pg, text=True).stdout)
        return info[0].get("SizeRw") or 0

    def mark(self):
        docker("exec", self.pg, "sh", "-c", f"rm -f {MARKER}; touch {MARKER}")
        return self.size_rw()

    def written_since_mark(self, size_rw_before):
        script = (f"find / -xdev -newer {MARKER} -type f ! -path {MARKER} -printf '%s\\n' 2>/dev/null"
                  " | awk '{s+=$1} END {print s+0}'")
        newer = int(docker("exec", self.pg, "sh", "-c", script, text=True).stdout.strip() or 0)
        delta = self.size_rw() - size_rw_before
        docker("exec", self.pg, "rm", "-f", MARKER)
        return dict(newer_files_bytes=newer, size_rw_delta=delta)

    # the ways ----------------------------------------------------------------------------------------------
    def ceiling(self):
        start = time.monotonic()
        docker("exec", self.pg, "sh", "-c", 'exec "$@" > /dev/null', "sh", *self.dump_args)
        return dict(seconds=time.monotonic() - start)

    def raw_pipe(self):
        path = self.out("raw-pipe.sql")
        start = time.monotonic()
        with open(path, "wb") as handle:
            subprocess.run(["docker", "exec", self.pg, *self.dump_args], stdout=handle, check=True)
        elapsed = time.monotonic() - start
        size = path.stat().st_size
        path.unlink()
        return dict(seconds=elapsed, raw_size=size, size=size)

    def docs_way(self):
        path = self.out("docs-way.sql")
        start = time.monotonic()
        docker("exec", self.pg, "sh", "-c", f'exec "$@" > {INNER_TMP}', "sh", *self.dump_args)
        dumped = time.monotonic()
        inside = int(docker("exec", self.pg, "stat", "-c", "%s", INNER_TMP, text=True).stdout)
        copy_start = time.monotonic()
        docker("cp", f"{self.pg}:{INNER_TMP}", str(path))
        docker("exec", self.pg, "rm", "-f", INNER_TMP)
        elapsed = (dumped - start) + (time.monotonic() - copy_start)
        size = path.stat().st_size
        path.unlink()
        return dict(seconds=elapsed, raw_size=size, size=size, bytes_written_inside=inside)

    def ours(self, compression, level=None, platform_args=None, tag="", method=None):
        dest = self.out(f"ours{tag}-{compression}{level or ''}.sql" + {"none": "", "gzip": ".gz", "zstd": ".zst"}[
            compression])
        args = dict(container=self.pg, dest=str(dest), compression=compression)
        if level:
            args["compression_level"] = level
        if method:
            args["method"] = method
        if platform_args:
            args.pop("container")
            args.update(platform_args)
        elapsed, result = self.run_module("postgres_dump", args)
        if not platform_args and method is None and result.get("method") != "helper":
            raise RuntimeError(f"postgres_dump did not use its helper by default: {result.get('method_note')}")
        return dict(seconds=elapsed, raw_size=result["raw_size"], size=result["size"],
                    module_duration=result["duration"], maxrss_kib=result["maxrss_kib"], method=result.get("method"))

    # restores of one dump (made once by restore_source) -------------------------------------------------------
    def restore_source(self):
        self.restore_src = self.workdir / "restore-src.sql"
        with open(self.restore_src, "wb") as handle:
            subprocess.run(["docker", "exec", self.pg, *self.dump_args], stdout=handle, check=True)
        self.journal = self.workdir / "journal"
        return self.restore_src.stat().st_size

    def raw_restore(self):
        start = time.monotonic()
        with open(self.restore_src, "rb") as src:
            subprocess.run(["docker", "exec", "-i", self.pg, "psql", "-X", "-q", "-U", self.user, "-d", "postgres"],
                           stdin=src, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return dict(seconds=time.monotonic() - start)

    def ours_restore_in_place(self):
        elapsed, _result = self.run_module("postgres_restore", dict(container=self.pg, src=str(self.restore_src)))
        return dict(seconds=elapsed)

    def ours_restore_all_or_nothing(self):
        common = dict(container=self.pg, journal_dir=str(self.journal))
        staged_time, staged = self.run_module("postgres_restore",
                                              dict(common, src=str(self.restore_src), state="staged"))
        swap_time, _swapped = self.run_module("postgres_restore", dict(common, state="swapped", run_id=staged["run_id"]))
        self.run_module("postgres_restore", dict(common, state="cleaned", run_id=staged["run_id"]))
        return dict(seconds=staged_time + swap_time, staged_seconds=staged_time, swap_seconds=swap_time,
                    phases=staged.get("phases"), proof=staged.get("proof"))

    def run_module(self, name, args):
        """Run a module of the collection in a child process (as Ansible runs it, minus Ansible), through
        os.wait4 to read the child's own peak RSS; returns the wall time and the module's result."""
        args_file = self.workdir / f"{name}.args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
        out_path = self.workdir / f"{name}.out"
        start = time.monotonic()
        rss_path = self.workdir / f"{name}.rss"
        env["AKBT_BENCH_RSS_FILE"] = str(rss_path)
        with open(out_path, "wb") as out, open(os.devnull, "wb") as null:
            pid = os.posix_spawn(sys.executable, [sys.executable, "-c", CHILD, MODULE.format(name), str(args_file)],
                                 env, file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                                    (os.POSIX_SPAWN_DUP2, null.fileno(), 2)])
            _pid, status, _usage = os.wait4(pid, 0)
        elapsed = time.monotonic() - start
        args_file.unlink()
        stdout = out_path.read_bytes()
        out_path.unlink()
        peak_kib = int(rss_path.read_text()) if rss_path.exists() else None
        rss_path.unlink(missing_ok=True)
        try:
            result = json.loads(stdout[stdout.index(b"{"):])
        except ValueError:
            raise RuntimeError(f"module {name} gave no result (wait status {status})") from None
        if result.get("failed"):
            raise RuntimeError(f"module {name} failed: {result.get('msg')}")
        if result.get("dest") and os.path.exists(result["dest"]):
            os.unlink(result["dest"])
        result["maxrss_kib"] = peak_kib
        return elapsed, result


# --- sections -----------------------------------------------------------------------------------------------------

def section_dump(bench, rounds):
    ways = {
        "ceiling_in_container": bench.ceiling,
        "raw_docker_exec_pipe": bench.raw_pipe,
        "docs_two_step": bench.docs_way,
    }
    for compression, level in CODECS:
        ways[f"ours_{compression}"] = (lambda c=compression, lv=level: bench.ours(c, lv))
    ways["ours_zstd_level1"] = lambda: bench.ours("zstd", 1)
    # the same module forced through docker exec (what method=auto falls back to without TCP)
    ways["ours_exec_none"] = lambda: bench.ours("none", method="exec", tag="-exec")
    ways["ours_exec_zstd"] = lambda: bench.ours("zstd", method="exec", tag="-exec")
    names = list(ways)
    raw = {name: [] for name in names}
    written = {}
    for rnd in range(rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            measure_writes = rnd == 0
            before = bench.mark() if measure_writes else None
            figures = ways[name]()
            if measure_writes:
                written[name] = bench.written_since_mark(before)
                if "bytes_written_inside" in figures:
                    written[name]["dump_file_inside"] = figures["bytes_written_inside"]
            raw[name].append(figures)
            log(f"round {rnd + 1}/{rounds} {name}: {figures['seconds']:.2f} s")
    summary = {}
    for name, runs in raw.items():
        entry = {"seconds": median([r["seconds"] for r in runs])}
        for key in ("raw_size", "size", "module_duration", "maxrss_kib"):
            if any(key in r for r in runs):
                entry[key] = median([r.get(key) for r in runs])
        entry["bytes_written_inside"] = max((written.get(name) or {}).values() or [0])
        summary[name] = entry
    return dict(rounds=raw, median=summary, written_inside=written)


def section_restore(bench, rounds):
    size = bench.restore_source()
    ways = {"raw_psql_in_place": bench.raw_restore, "ours_in_place": bench.ours_restore_in_place,
            "ours_all_or_nothing": bench.ours_restore_all_or_nothing}
    names = list(ways)
    raw = {name: [] for name in names}
    for rnd in range(rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            figures = ways[name]()
            raw[name].append(figures)
            log(f"round {rnd + 1}/{rounds} restore {name}: {figures['seconds']:.2f} s")
    bench.restore_src.unlink()
    return dict(dump_size=size, rounds=raw, median={name: {"seconds": median([r["seconds"] for r in runs])}
                                                    for name, runs in raw.items()})


def section_codecs(bench, size_mib):
    """The sink alone, fed from a dump file on this host: what each codec can take (MiB/s of raw input)."""
    from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import AtomicSink

    sample = bench.workdir / "sample.sql"
    with open(sample, "wb") as handle:
        subprocess.run(["docker", "exec", bench.pg, *bench.dump_args], stdout=handle, check=True)
    limit = min(sample.stat().st_size, size_mib * MIB)
    results = {}
    for name, compression, level, threads in [("none", "none", None, 0), ("gzip-6", "gzip", None, 0),
                                              ("gzip-1", "gzip", 1, 0), ("zstd-3", "zstd", 3, 0),
                                              ("zstd-3-1thread", "zstd", 3, 1), ("zstd-1", "zstd", 1, 0),
                                              ("zstd-6", "zstd", 6, 0)]:
        dest = bench.out(f"codec-{name}")
        with open(sample, "rb") as src:
            start = time.monotonic()
            with AtomicSink(str(dest), compression, level, threads) as sink:
                left = limit
                while left > 0:
                    block = src.read(min(4 * MIB, left))
                    if not block:
                        break
                    left -= len(block)
                    sink.write(block)
                stats = sink.commit()
            elapsed = time.monotonic() - start
        dest.unlink()
        results[name] = dict(seconds=elapsed, raw_size=stats["raw_size"], size=stats["size"],
                             mib_per_s=stats["raw_size"] / MIB / elapsed, ratio=stats["raw_size"] / stats["size"])
        log(f"codec {name}: {results[name]['mib_per_s']:.0f} MiB/s, ratio {results[name]['ratio']:.2f}")
    sample.unlink()
    return results


def section_rss(bench, sizes, main_size, restore):
    out = {}
    for size in sizes:
        if db_size_for(size) != bench.stack.db_size_mb:
            log(f"loading a database for ~{size} MiB of dump")
            resize_bulk(bench.stack, db_size_for(size))
        runs = {}
        for name, compression, method in (("zstd", "zstd", None), ("none", "none", None),
                                          ("exec_zstd", "zstd", "exec")):
            runs[name] = bench.ours(compression, tag="-rss", method=method)
            log(f"rss at {size} MiB ({name}): {runs[name]['maxrss_kib'] / 1024:.1f} MiB")
        out[str(size)] = runs
    if restore and db_size_for(main_size) != bench.stack.db_size_mb:
        resize_bulk(bench.stack, db_size_for(main_size))
    return out


def resize_bulk(stack, db_size_mb):
    """Refill only the bulk table of the sample data (the same rows as tests/testbed/sample_data.py makes)."""
    sql = f"""\\set ON_ERROR_STOP 1
DROP TABLE IF EXISTS public.akbt_bulk;
CREATE TABLE public.akbt_bulk (id bigint PRIMARY KEY, created timestamptz NOT NULL, payload text NOT NULL);
INSERT INTO public.akbt_bulk
SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) ||
       repeat(md5(i::text) || ' ', 20) || md5(random()::text) || md5(random()::text) || md5(random()::text) ||
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
FROM generate_series(1, {int(db_size_mb) * 1024}) AS i;
"""
    stacks.psql(stack, sql, db=stack.pg_db)
    stack.db_size_mb = int(db_size_mb)


def section_k8s(bench, rounds):
    state = {
        "token": "akbt-bench-token",
        "namespaces": ["akbt-bench"],
        "pods": [{"name": "akbt-bench-postgresql-0", "namespace": "akbt-bench",
                  "labels": {"app.kubernetes.io/name": "postgresql"},
                  "containers": [{"name": "postgresql", "docker": bench.pg}]}],
        "deployments": [], "statefulsets": [], "secrets": [],
    }
    workdir = tempfile.mkdtemp(prefix="akbt-bench-k8s-")
    _url, kubeconfig, proc = helm_stacks.start_server(state, workdir=workdir)
    k8s_args = dict(platform="kubernetes", kubeconfig=kubeconfig, namespace="akbt-bench",
                    pod="akbt-bench-postgresql-0", pod_container="postgresql")
    # docker: the same exec transport as Kubernetes has (method=exec); docker_helper: Docker's default way
    raw = {"docker": [], "kubernetes": [], "docker_helper": []}
    names = list(raw)
    try:
        for rnd in range(rounds):
            for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                if name == "kubernetes":
                    figures = bench.ours("none", platform_args=k8s_args, tag="-k8s")
                else:
                    figures = bench.ours("none", tag="-k8s", method="exec" if name == "docker" else None)
                raw[name].append(figures)
                log(f"round {rnd + 1}/{rounds} transport {name}: {figures['seconds']:.2f} s")
    finally:
        helm_stacks.stop_server(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return dict(rounds=raw, median={k: {"seconds": median([r["seconds"] for r in v]),
                                        "raw_size": median([r["raw_size"] for r in v])} for k, v in raw.items()})


def section_role(bench, rounds):
    inventory = bench.workdir / "hosts.yml"
    inventory.write_text("authentik:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {sys.executable}\n")
    env = ansible_env()
    runs = []
    for rnd in range(rounds):
        dest = bench.workdir / "sets"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "backup.yml"),
                "-e", f"authentik_backup_dest={dest}", "-e", f"authentik_backup_compose_project={bench.stack.project}"]
        check_start = time.monotonic()
        check = subprocess.run(argv + ["--check"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
        check_wall = time.monotonic() - check_start
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        if proc.returncode != 0 or check.returncode != 0:
            raise RuntimeError(f"the backup playbook failed (rc {proc.returncode}, check rc {check.returncode}): "
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        manifest = json.loads((dest / "latest" / "manifest.json").read_text())
        parts = {f["part"] + ("" if f["part"] != "files" else ":" + f["name"]): f["duration"]
                 for f in manifest["files"]}
        slowest = max(parts.values())
        runs.append(dict(wall=wall, check_wall=check_wall, parts=parts, slowest_part=slowest,
                         sum_of_parts=sum(parts.values()), overhead=wall - slowest))
        log(f"round {rnd + 1}/{rounds} role: wall {wall:.1f} s, slowest part {slowest:.1f} s, "
            f"sum of parts {sum(parts.values()):.1f} s, check mode {check_wall:.1f} s")
        shutil.rmtree(dest, ignore_errors=True)
    keys = ("wall", "check_wall", "slowest_part", "sum_of_parts", "overhead")
    return dict(rounds=runs, median={k: median([r[k] for r in runs]) for k in keys})


def ansible_env():
    site = f"{Path(sys.executable).parent.parent}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", ANSIBLE_COLLECTIONS_PATH=f"{COLLECTIONS}:{site}")


def wait_ready(container, user, timeout=120):
    wait_for(lambda: exec_ok(container, "psql", "-X", "-q", "-U", user, "-d", "postgres", "-c", "SELECT 1"),
             timeout, f"PostgreSQL in {container}")


def raw_upgrade_copy(bench, image):
    """The raw way of the docs: a new server of ``image`` on a new volume, then ``docker exec <old> pg_dumpall |
    docker exec -i <new> psql``; only the copy is timed (starting the new server is not)."""
    name = f"{bench.stack.project}-bench-newpg"
    docker("rm", "-f", "-v", name, check=False)
    docker("run", "-d", "--name", name, "--network", "none", "-e", f"POSTGRES_USER={bench.user}",
           "-e", f"POSTGRES_PASSWORD={bench.stack.pg_password}", image)
    try:
        wait_ready(name, bench.user)
        start = time.monotonic()
        dump = subprocess.Popen(["docker", "exec", bench.pg, *bench.dump_args], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", name, "psql", "-X", "-q", "-U", bench.user, "-d", "postgres"],
                              stdin=dump.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        dump.stdout.close()
        if dump.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"the raw copy failed (pg_dumpall {dump.returncode}, psql {load.returncode})")
        return dict(seconds=time.monotonic() - start)
    finally:
        docker("rm", "-f", "-v", name, check=False)


class Downtime:
    """Watches Docker's events of ``containers`` while it is open (``docker events`` streaming: the daemon keeps only
    the last events, so they cannot be read back afterwards on a busy engine); ``seconds`` is the time from the
    first stop (die) of any of them to the last start after it."""

    def __init__(self, containers):
        self.containers = containers
        argv = ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
                "--filter", "event=die", "--filter", "event=start"]
        for name in containers:
            argv += ["--filter", f"container={name}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: S603
        self.events = []

    def __enter__(self):
        time.sleep(1)  # the stream is open before anything happens
        return self

    def __exit__(self, *exc):
        time.sleep(1)
        self.proc.terminate()
        out, _err = self.proc.communicate(timeout=30)
        self.events = [json.loads(line) for line in out.splitlines() if line.strip()]

    @property
    def seconds(self):
        dies = [e["timeNano"] for e in self.events if e.get("status") == "die"]
        if not dies:
            raise RuntimeError(f"no stop of {', '.join(self.containers)} during the upgrade")
        starts = [e["timeNano"] for e in self.events if e.get("status") == "start" and e["timeNano"] > min(dies)]
        if not starts:
            raise RuntimeError(f"{', '.join(self.containers)} were not started again by the upgrade")
        return (max(starts) - min(dies)) / 1e9


def section_upgrade(bench, image, keep):
    """playbooks/upgrade_postgres.yml onto ``image`` against the raw ``pg_dumpall | psql`` into a new server: the
    downtime of authentik (server and worker stopped) against the raw copy alone. Rolls back and cleans up after
    itself when the stack is kept."""
    raw = raw_upgrade_copy(bench, image)
    log(f"upgrade: raw pg_dumpall | psql into a new {image}: {raw['seconds']:.2f} s")
    inventory = bench.workdir / "hosts-upgrade.yml"
    inventory.write_text("authentik:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {sys.executable}\n")
    dest = bench.workdir / "upgrade-sets"
    common = ["-e", f"authentik_backup_dest={dest}", "-e", f"authentik_backup_compose_project={bench.stack.project}"]
    playbook = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
                str(REPO / "playbooks" / "upgrade_postgres.yml")]
    apps = [bench.stack.containers[s] for s in ("server", "worker") if s in bench.stack.containers]
    with Downtime(apps) as watched:
        start = time.monotonic()
        proc = subprocess.run(playbook + common + ["-e", f"authentik_upgrade_postgres_image={image}", "-e",
                                                   "authentik_upgrade_confirm=true"],
                              cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the upgrade playbook failed (rc {proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
    down = watched.seconds
    log(f"upgrade: playbook {wall:.1f} s, authentik down {down:.2f} s (server and worker stopped)")
    if keep:
        for extra in (["-e", "authentik_upgrade_rollback=true"], ["-e", "authentik_upgrade_cleanup=true"]):
            back = subprocess.run(playbook + common + extra, cwd=REPO, env=ansible_env(), capture_output=True,
                                  text=True, check=False)
            if back.returncode != 0:
                raise RuntimeError(f"rolling the bench stack back failed: {(back.stdout + back.stderr)[-3000:]}")
    shutil.rmtree(dest, ignore_errors=True)
    return dict(image=image, raw_copy=raw, playbook_wall=wall, downtime=down)


# --- report -------------------------------------------------------------------------------------------------------

def ratios(report):
    """The performance targets as ratios (throughput ratio = time of the reference / time of the way)."""
    rows = []

    def add(name, value, target=None, ok=None, unit="x"):
        rows.append(dict(name=name, value=value, unit=unit, target=target, met=ok))

    dump = (report.get("dump") or {}).get("median")
    if dump:
        raw = dump["raw_docker_exec_pipe"]["seconds"]
        for name, entry in dump.items():
            if name != "raw_docker_exec_pipe":
                add(f"{name} throughput / raw pipe", raw / entry["seconds"],
                    *({"ours_none": (">= 1.0 (aim 1.5)", raw / entry["seconds"] >= 1.0),
                       "ours_zstd": (">= 0.8", raw / entry["seconds"] >= 0.8)}.get(name, (None, None))))
        zstd = dump["ours_zstd"]
        add("ours_zstd file size: raw / compressed", zstd["raw_size"] / zstd["size"], ">= 3", zstd["raw_size"] >=
            3 * zstd["size"])
        for name, entry in dump.items():
            add(f"{name} bytes written inside the db container", entry["bytes_written_inside"], "0 for ours" if
                name.startswith("ours") else None, entry["bytes_written_inside"] == 0 if name.startswith("ours")
                else None, unit="B")
    rss = report.get("rss")
    if rss:
        peaks = {size: max(r["maxrss_kib"] for r in runs.values()) / 1024 for size, runs in rss.items()}
        for size, peak in peaks.items():
            add(f"module peak RSS at {size} MiB of dump", peak, "<= 100", peak <= 100, unit="MiB")
        flat = max(peaks.values()) / min(peaks.values()) - 1
        add("module peak RSS growth, smallest -> largest size", flat * 100, "<= 10", flat <= 0.10, unit="%")
    k8s = (report.get("k8s") or {}).get("median")
    if k8s:
        value = k8s["docker"]["seconds"] / k8s["kubernetes"]["seconds"]
        add("kubernetes exec transport throughput / docker exec transport", value, ">= 0.8", value >= 0.8)
        if "docker_helper" in k8s:
            add("kubernetes exec transport throughput / docker default (helper)",
                k8s["docker_helper"]["seconds"] / k8s["kubernetes"]["seconds"])
    restore = (report.get("restore") or {}).get("median")
    if restore:
        raw = restore["raw_psql_in_place"]["seconds"]
        add("restore in place (postgres_restore) throughput / raw psql", raw / restore["ours_in_place"]["seconds"])
        value = raw / restore["ours_all_or_nothing"]["seconds"]
        add("restore all-or-nothing (staged + proof + swap) throughput / raw psql", value, ">= 0.9", value >= 0.9)
    upgrade = report.get("upgrade")
    if upgrade:
        value = upgrade["downtime"] / upgrade["raw_copy"]["seconds"]
        add("PostgreSQL upgrade: authentik's downtime / raw pg_dumpall | psql", value, "<= 1.2 (aim)", value <= 1.2)
    role = (report.get("role") or {}).get("median")
    if role:
        add("role run: wall time", role["wall"], unit="s")
        add("role run: slowest part", role["slowest_part"], unit="s")
        add("role run: sum of the parts (what one after another would take)", role["sum_of_parts"], unit="s")
        add("role run: Ansible overhead (wall - slowest part)", role["overhead"], unit="s")
        add("role run in check mode (discovery + plan only)", role["check_wall"], unit="s")
    return rows


def print_table(report):
    rows = ratios(report)
    width = max(len(r["name"]) for r in rows) if rows else 10
    print(f"\n{'measure':<{width}}  {'value':>12}  {'target':<18} met")
    for row in rows:
        value = row["value"]
        text = f"{value:,.0f} {row['unit']}" if row["unit"] == "B" else f"{value:.2f} {row['unit']}"
        met = "" if row["met"] is None else ("yes" if row["met"] else "NO")
        print(f"{row['name']:<{width}}  {text:>12}  {row['target'] or '':<18} {met}")
    dump = (report.get("dump") or {}).get("median")
    if dump:
        print("\nmedian seconds and MiB/s of the dump ways:")
        for name, entry in dump.items():
            raw_size = entry.get("raw_size") or dump["raw_docker_exec_pipe"]["raw_size"]
            print(f"  {name:<26} {entry['seconds']:7.2f} s  {raw_size / MIB / entry['seconds']:7.1f} MiB/s"
                  + (f"  file {entry['size'] / MIB:8.1f} MiB" if entry.get("size") else ""))
    codecs = report.get("codecs")
    if codecs:
        print("\nthe sink alone per codec (raw MiB/s, ratio):")
        for name, entry in codecs.items():
            print(f"  {name:<16} {entry['mib_per_s']:7.1f} MiB/s  ratio {entry['ratio']:5.2f}")
    return rows


def machine():
    info = dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count())
    try:
        info["docker"] = docker("version", "--format", "{{.Server.Version}}", text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["docker"] = None
    try:
        info["loadavg_start"] = os.getloadavg()
        with open("/proc/meminfo", encoding="ascii") as handle:
            info["mem_total_kib"] = int(handle.readline().split()[1])
    except OSError:
        pass
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="MiB of dump of the main database (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measure (median reported)")
    parser.add_argument("--sizes", default="256,2048", help="MiB of dump for the peak-RSS measure (comma list)")
    parser.add_argument("--skip", default="", help="sections to skip: dump,codecs,rss,k8s,role,restore,upgrade (comma list)")
    parser.add_argument("--project", default="akbt-bench", help="Compose project of the bench stack (akbt...)")
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards (and reuse one)")
    parser.add_argument("--output", help="JSON file to write (default benchmarks/results/<UTC timestamp>.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size_mb, args.rounds, args.sizes = 8, 1, "4,8"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not (COLLECTIONS / "ansible_collections" / "authentik_ops" / "backup").exists():
        raise SystemExit("bench: run `make collections-link` first (the modules are imported from .collections)")

    report = dict(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=machine(),
                  settings=dict(size_mb=args.size_mb, rounds=args.rounds, sizes=sizes, skip=sorted(skip)))
    workdir = tempfile.mkdtemp(prefix="akbt-bench-", dir=os.environ.get("AKBT_BENCH_TMP"))
    with stacks.lock(args.project):
        reuse = args.keep and stacks.is_up(args.project) and stacks.load(args.project).db_size_mb == db_size_for(
            args.size_mb)
        if reuse:
            stack = stacks.load(args.project)
        else:
            log(f"creating stack {args.project} with ~{args.size_mb} MiB of dump")
            stack = stacks.up(args.project, layout="legacy", db_size_mb=db_size_for(args.size_mb),
                              log=log)
        try:
            bench = Bench(stack, workdir)
            if "dump" not in skip:
                report["dump"] = section_dump(bench, args.rounds)
            if "codecs" not in skip:
                report["codecs"] = section_codecs(bench, min(args.size_mb, 512))
            if "k8s" not in skip:
                report["k8s"] = section_k8s(bench, args.rounds)
            if "role" not in skip:
                report["role"] = section_role(bench, max(1, min(args.rounds, 3)))
            if "restore" not in skip:
                report["restore"] = section_restore(bench, args.rounds)
            if "rss" not in skip:
                report["rss"] = section_rss(bench, sizes, args.size_mb, args.keep)
            if "upgrade" not in skip:  # last: it moves the stack to another PostgreSQL
                report["upgrade"] = section_upgrade(bench, UPGRADE_IMAGE, args.keep)
        finally:
            if not args.keep:
                stacks.down(args.project, log=log)
            shutil.rmtree(workdir, ignore_errors=True)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["ratios"] = print_table(report)
    output = Path(args.output) if args.output else RESULTS / (report["started"].replace(":", "") + ".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nraw figures: {output}")
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    log(f"done (bench process peak RSS {self_rss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
