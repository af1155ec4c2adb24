#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_restore
short_description: Put a Redis RDB snapshot back into a container or pod, or flush Redis
version_added: 0.1.0
description:
  - For authentik releases up to 2025.8, which keep sessions and caches in Redis. Losing them logs users out; it
    loses no permanent data.
  - O(mode=replace) makes Redis load the RDB file O(src) written by M(authentik_ops.backup.redis_dump). The file's
    header, EOF opcode and CRC64 are checked completely before anything is touched.
  - The same way on Docker and Kubernetes, so that a failure half-way leaves the previous data. The file is
    written next to the RDB as C(<dbfilename>.restore-tmp) through the exec's standard input and read back; its
    size, RDB header, EOF opcode and CRC64 are checked and its sha256 compared with the source's. A failure up to
    here removes it; nothing was changed and Redis keeps running on its data.
  - Then C(CONFIG SET save "") keeps Redis from writing its snapshot over the new file, the file is renamed over
    the RDB with the owner and mode of the file it replaces (if that fails, the save setting is given back and
    nothing was changed), and C(SHUTDOWN NOSAVE) stops Redis without writing a snapshot. The container's restart
    policy, or the kubelet (this needs the pod's restart policy C(Always), as a StatefulSet has; the restart count
    goes up by one), starts it again; a Docker container that stays stopped is started by the module. Redis loads
    the file, with the save setting of its configuration. The module waits until a new Redis process (a new
    C(run_id)) answers C(PING) and C(INFO persistence) reports C(loading:0).
  - Redis with C(appendonly yes) loads its append-only file, not the RDB, on startup; O(mode=replace) refuses such a
    server unless O(force=true).
  - O(mode=flush) runs C(FLUSHALL) instead, emptying Redis (authentik's sessions and caches; users are logged out).
  - The password reaches C(redis-cli) only as E(REDISCLI_AUTH), as for M(authentik_ops.backup.redis_dump).
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - authentik_ops.backup._common.decrypt
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Checks the RDB file, reads the Redis configuration and key count, and reports the plan in RV(plan). Redis
        is not changed.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run replaces or flushes the data and reports a change.
options:
  mode:
    description:
      - V(replace) loads the RDB file O(src); V(flush) empties Redis with C(FLUSHALL).
    type: str
    choices: [replace, flush]
    default: replace
  src:
    description:
      - Path of the RDB file on the host the module runs on. Required with O(mode=replace).
    type: path
  compression:
    description:
      - Codec of O(src). V(auto) decides by the suffix (C(.zst), C(.gz), else none).
    type: str
    choices: [auto, none, gzip, zstd]
    default: auto
  password:
    description:
      - Password of the Redis server (C(requirepass)), passed as E(REDISCLI_AUTH).
    type: str
  rdb_path:
    description:
      - Path of the RDB file inside the container, when C(CONFIG GET) is disabled on the server.
      - Defaults to what C(CONFIG GET dir) and C(CONFIG GET dbfilename) report.
    type: str
  force:
    description:
      - Replace the RDB also when Redis runs with C(appendonly yes). Use it only when the append-only file is
        disabled in the configuration Redis starts with, or Redis will load the append-only file instead.
    type: bool
    default: false
  stop_timeout:
    description:
      - Not used by O(mode=replace) any more (Redis is stopped with C(SHUTDOWN NOSAVE), not by Docker); kept so
        that existing tasks still run.
    type: int
    default: 60
  wait_timeout:
    description:
      - Seconds to wait for Redis to answer and finish loading after the restart.
    type: int
    default: 300
notes:
  - Needs C(sh), C(stat), C(cat), C(head), C(wc), C(mv) and C(redis-cli) in the container (busybox userlands
    work).
seealso:
  - module: authentik_ops.backup.redis_dump
  - module: authentik_ops.backup.backup_verify
"""

EXAMPLES = r"""
- name: Load the RDB of a legacy Compose deployment
  authentik_ops.backup.redis_restore:
    container: authentik-redis-1
    src: /var/backups/authentik/latest/redis.rdb

- name: Load the RDB into the Redis master pod of a legacy Helm release (the container restarts)
  authentik_ops.backup.redis_restore:
    platform: kubernetes
    namespace: authentik
    pod: authentik-redis-master-0
    src: /var/backups/authentik/latest/redis.rdb

- name: Only empty Redis (sessions and caches)
  authentik_ops.backup.redis_restore:
    container: authentik-redis-1
    mode: flush
"""

RETURN = r"""
mode:
  description: What was done.
  returned: always
  type: str
  sample: replace
src:
  description: Path of the RDB file.
  returned: with O(mode=replace)
  type: str
  sample: /var/backups/authentik/latest/redis.rdb
raw_size:
  description: Size of the RDB file (decompressed), in bytes.
  returned: success with O(mode=replace)
  type: int
  sample: 1048576
rdb_version:
  description: RDB format version from the file's header.
  returned: success with O(mode=replace)
  type: int
  sample: 10
rdb_check:
  description: What was checked of the file.
  returned: success with O(mode=replace)
  type: str
  sample: RDB header, EOF opcode and CRC64 checked
rdb_path:
  description: Path of the RDB file inside the container.
  returned: success with O(mode=replace)
  type: str
  sample: /data/dump.rdb
owner:
  description: Owner (uid, gid) and mode the file was given.
  returned: success with O(mode=replace)
  type: dict
  sample: {uid: 999, gid: 999, mode: "0600"}
keys_before:
  description: Number of keys in the current database (C(DBSIZE)) before the run.
  returned: success
  type: int
  sample: 20
keys:
  description: Number of keys in the current database (C(DBSIZE)) after the run (in check mode, now).
  returned: success
  type: int
  sample: 1234
duration:
  description: Seconds from stopping Redis (or flushing) to Redis answering again.
  returned: success and not check mode
  type: float
  sample: 3.1
target:
  description: The container or pod.
  returned: success
  type: dict
  sample: {platform: docker, container: authentik-redis-1, image: "docker.io/library/redis:alpine"}
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: stop container, replace /data/dump.rdb, start, wait for loading:0}
"""

import hashlib
import posixpath
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    DECRYPT_MUTUALLY_EXCLUSIVE,
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    decrypt_argument_spec,
    excerpt,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    ConfigError,
    RedisAnswerError,
    RestoreError,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import RdbChecker
from ansible_collections.authentik_ops.backup.plugins.module_utils._redis import (
    AUTH_SH,
    info_fields,
    parse_int,
    run_commands,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._restore import Source, iter_file
from ansible_collections.authentik_ops.backup.plugins.module_utils._transport import Feed

STAT_SH = 'if [ -e "$1" ]; then stat -c "%u %g %a" -- "$1"; else stat -c "%u %g 600" -- "$2"; fi'
WRITE_SH = 'umask 077; head -c "$1" > "$2" && wc -c < "$2"'
PLACE_SH = ('if [ "$(id -u)" = 0 ]; then chown -- "$3:$4" "$1"; fi; chmod -- "$5" "$1" && mv -f -- "$1" "$2" || '
            '{ rm -f -- "$1"; exit 1; }')
SAVE_SH = AUTH_SH + 'exec redis-cli --raw CONFIG SET save "$1"'


def redis_secret(params):
    return {"REDISCLI_AUTH": params["password"]} if params.get("password") else None


def check_rdb(src, compression):
    checker = RdbChecker()
    try:
        for block in iter_file(src, compression):
            checker.feed(block)
    except Exception as exc:  # OSError, EOFError, zstandard.ZstdError: the file is unreadable either way
        raise RestoreError(f"{src} cannot be read or decompressed: {exc}") from exc
    ok, message, version = checker.finish()
    if not ok:
        raise RestoreError(f"src: {src}: {message}; nothing was restored")
    return checker.size, message, version


def config_value(answers, command, name):
    lines = answers.get(command, [])
    if len(lines) >= 2 and lines[0] == name:
        return lines[1]
    return None


def probe(transport, params):
    answers = run_commands(transport, params, ["CONFIG GET dir", "CONFIG GET dbfilename",
                                               "CONFIG GET appendonly", "CONFIG GET save", "DBSIZE", "INFO server"])
    rdb_path = params["rdb_path"]
    if not rdb_path:
        directory = config_value(answers, "CONFIG GET dir", "dir")
        filename = config_value(answers, "CONFIG GET dbfilename", "dbfilename")
        if directory and filename:
            rdb_path = directory.rstrip("/") + "/" + filename
    save = answers.get("CONFIG GET save", [])
    return dict(rdb_path=rdb_path, appendonly=config_value(answers, "CONFIG GET appendonly", "appendonly"),
                save=save[1] if len(save) >= 2 and save[0] == "save" else "",
                keys=parse_int(answers.get("DBSIZE")),
                run_id=info_fields(answers.get("INFO server", [])).get("run_id"))


def file_owner(transport, rdb_path):
    directory = posixpath.dirname(rdb_path) or "/"
    result = transport.exec_capture(["sh", "-c", STAT_SH, "sh", rdb_path, directory])
    fields = result.stdout.decode("utf-8", "replace").split()
    if not result.ok or len(fields) != 3:
        raise TransportError(f"cannot read the owner of {rdb_path} in {transport.describe()}: "
                             f"{result.problem or f'exit status {result.exit_code}'}: {excerpt(result.stderr)}")
    return dict(uid=int(fields[0]), gid=int(fields[1]), mode="0" + fields[2].lstrip("0").rjust(3, "0"))


def start_if_stopped(transport):
    """A container whose restart policy does not restart Redis is started here; a pod's kubelet restarts it."""
    if not transport.can_stop:
        return
    try:
        transport.check_running()
    except TransportError:
        transport.start()


def wait_ready(transport, params, old_run_id, deadline):
    """Wait until a Redis process other than ``old_run_id`` answers PING and has finished loading."""
    last = "no answer yet"
    while True:
        transport.refresh()  # forget the cached container/pod state: it restarted
        try:
            start_if_stopped(transport)
            answers = run_commands(transport, params, ["PING", "INFO persistence", "INFO server", "DBSIZE"])
            fields = info_fields(answers.get("INFO persistence", []))
            run_id = info_fields(answers.get("INFO server", [])).get("run_id")
            if answers.get("PING", [""])[:1] == ["PONG"] and fields.get("loading") == "0" and run_id != old_run_id:
                return parse_int(answers.get("DBSIZE"))
            last = excerpt("\n".join(answers.get("PING", [])), 200) or "loading"
        except (TransportError, RedisAnswerError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RedisAnswerError(f"Redis in {transport.describe()} did not come back within "
                                   f"{params['wait_timeout']} s (last: {last}); raise wait_timeout or see its log")
        time.sleep(0.5)


def stage(transport, source, tmp, size):
    """Write the file beside the RDB through the exec's stdin, then read it back and check it (size, RDB header,
    EOF opcode and CRC64, sha256 equal to the source's); a file that fails is removed."""
    if source.changed():
        raise RestoreError(f"{source.path} changed after it was checked; nothing was changed")
    answer = _Capture()
    feed = Feed(iter_file(source.path, source.compression), size)
    result = transport.exec_stream(["sh", "-c", WRITE_SH, "sh", str(size), tmp], answer, stdin=feed)
    written = parse_int([answer.data.decode("ascii", "replace").strip()])
    problem = None
    if feed.error is not None:
        problem = f"reading {source.path} failed while it was sent: {feed.error}"
    elif not result.ok or written != size:
        problem = (f"writing {tmp} in {transport.describe()} failed "
                   f"({result.problem or f'exit status {result.exit_code}'}, {written} of {size} bytes): "
                   f"{excerpt(result.stderr)}")
    else:
        problem = staged_problem(transport, source, tmp, size)
    if problem:
        transport.exec_capture(["rm", "-f", "--", tmp])
        raise TransportError(f"{problem}; nothing was changed, Redis keeps running on its data")


def staged_problem(transport, source, tmp, size):
    """Why the staged file is not the checked snapshot, or None."""
    checker = RdbChecker()
    digest = hashlib.sha256()

    def take(data):
        checker.feed(data)
        digest.update(data)

    result = transport.exec_stream(["cat", "--", tmp], take)
    ok, message, _version = checker.finish()
    if not result.ok:
        return f"reading {tmp} back failed ({result.problem or f'exit status {result.exit_code}'})"
    if not ok or checker.size != size:
        return f"{tmp} in {transport.describe()} is not the snapshot that was sent ({message}, {checker.size} bytes)"
    expected = hashlib.sha256()
    for block in iter_file(source.path, source.compression):
        expected.update(block)
    if source.changed() or expected.digest() != digest.digest():
        return f"{source.path} changed while it was sent"
    return None


def set_save(transport, params, value):
    result = transport.exec_capture(["sh", "-c", SAVE_SH, "sh", value], secret_env=redis_secret(params))
    if not result.ok or result.stdout.strip() != b"OK":
        raise RedisAnswerError(f"CONFIG SET save in {transport.describe()} failed: "
                               f"{result.problem or excerpt(result.stderr or result.stdout, 300)}")


def swap(transport, params, tmp, rdb_path, owner, save):
    """Keep Redis from writing its snapshot (CONFIG SET save ""), move the staged file over the RDB; on failure
    give the save setting back and remove the staged file."""
    try:
        set_save(transport, params, "")
    except (TransportError, RedisAnswerError) as exc:
        transport.exec_capture(["rm", "-f", "--", tmp])
        raise RedisAnswerError(f"{exc}; nothing was changed, Redis keeps running on its data") from exc
    result = transport.exec_capture(["sh", "-c", PLACE_SH, "sh", tmp, rdb_path, str(owner["uid"]),
                                     str(owner["gid"]), owner["mode"]])
    if not result.ok:
        try:
            set_save(transport, params, save)
        except (TransportError, RedisAnswerError) as exc:
            raise TransportError(f"moving {tmp} over {rdb_path} failed ({excerpt(result.stderr)}) and the save "
                                 f"setting {save!r} could not be given back ({exc}); set it again with CONFIG SET "
                                 "save; the RDB was not changed") from exc
        raise TransportError(f"moving {tmp} over {rdb_path} in {transport.describe()} failed: "
                             f"{result.problem or f'exit status {result.exit_code}'}: {excerpt(result.stderr)}; "
                             "nothing was changed, Redis keeps running on its data")


def restart(transport, params):
    """SHUTDOWN NOSAVE: Redis exits without writing a snapshot; its supervisor (or this module) starts it again."""
    try:
        run_commands(transport, params, ["SHUTDOWN NOSAVE"])
    except (TransportError, RedisAnswerError):
        pass  # the exec dies with the server; success is judged by the new run_id


class _Capture:
    """on_stdout callback that keeps the (short) answer of ``wc -c``."""

    def __init__(self):
        self.data = b""

    def __call__(self, data):
        self.data = (self.data + bytes(data))[-64:]


def flush(module, transport, params, before, result):
    if module.check_mode:
        return dict(result, changed=True, keys=before["keys"], plan=dict(action="FLUSHALL"))
    watch = Stopwatch()
    answer = run_commands(transport, params, ["FLUSHALL"])["FLUSHALL"]
    if answer[:1] != ["OK"]:
        raise RedisAnswerError(f"FLUSHALL failed in {transport.describe()}: {excerpt(chr(10).join(answer), 300)}")
    keys = parse_int(run_commands(transport, params, ["DBSIZE"])["DBSIZE"])
    return dict(result, changed=True, keys=keys, duration=watch.elapsed)


def replace(module, transport, params, source, size, before, result):
    rdb_path = before["rdb_path"]
    if not rdb_path:
        raise ConfigError(f"CONFIG GET is not available in {transport.describe()}; set rdb_path")
    if before["appendonly"] == "yes" and not params["force"]:
        raise ConfigError(f"Redis in {transport.describe()} runs with appendonly yes: on startup it loads its "
                          "append-only file and ignores the RDB. Disable appendonly in its configuration and set "
                          "force=true, or use mode=flush")
    owner = file_owner(transport, rdb_path)
    tmp = rdb_path + ".restore-tmp"
    result.update(rdb_path=rdb_path, owner=owner)
    steps = (f"write {tmp} and check it, CONFIG SET save \"\", move it over {rdb_path}, SHUTDOWN NOSAVE, "
             "wait for the new Redis process and loading:0")
    if module.check_mode:
        return dict(result, changed=True, keys=before["keys"], plan=dict(action=steps, rdb_path=rdb_path, bytes=size))
    watch = Stopwatch()
    stage(transport, source, tmp, size)
    swap(transport, params, tmp, rdb_path, owner, before["save"])
    restart(transport, params)
    try:
        keys = wait_ready(transport, params, before["run_id"], time.monotonic() + params["wait_timeout"])
    except BackupError as exc:
        raise RedisAnswerError(f"{exc}; {rdb_path} holds the restored snapshot, Redis loads it when it starts",
                               **exc.fields) from exc
    return dict(result, changed=True, keys=keys, duration=watch.elapsed)


def run(module):
    params = module.params
    result = dict(mode=params["mode"])
    source = size = None
    if params["mode"] == "replace":
        result["src"] = params["src"]
        source = Source(params, **result)
        try:
            size, message, version = check_rdb(source.path, source.compression)
        except RestoreError as exc:
            raise exc.add_fields(**result)
        result.update(raw_size=size, rdb_check=message, rdb_version=version)
    try:
        transport = factory.open_transport(params)
        result["target"] = transport.target_facts()
        before = probe(transport, params)
        result["keys_before"] = before["keys"]
        if params["mode"] == "flush":
            return flush(module, transport, params, before, result)
        return replace(module, transport, params, source, size, before, result)
    except BackupError as exc:
        raise exc.add_fields(**result)


def main():
    argument_spec = transport_argument_spec()
    argument_spec.update(
        mode=dict(type="str", default="replace", choices=["replace", "flush"]),
        src=dict(type="path"),
        compression=dict(type="str", default="auto", choices=["auto", "none", "gzip", "zstd"]),
        password=dict(type="str", no_log=True),
        rdb_path=dict(type="str"),
        force=dict(type="bool", default=False),
        stop_timeout=dict(type="int", default=60),
        wait_timeout=dict(type="int", default=300),
    )
    argument_spec.update(decrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec,
                           required_if=TRANSPORT_REQUIRED_IF + [("mode", "replace", ("src",))],
                           mutually_exclusive=DECRYPT_MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
