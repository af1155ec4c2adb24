#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_dump
short_description: Snapshot Redis and stream its RDB file from a container or pod into a checked file
version_added: 0.1.0
description:
  - For authentik releases up to 2025.8, which keep sessions and caches in Redis. Later releases have no Redis.
  - Asks Redis for a snapshot with C(BGSAVE) (or C(SAVE), which blocks every client, with O(save_mode=save)), polls
    C(LASTSAVE) and C(INFO persistence) until it has finished, finds the file with C(CONFIG GET dir) and
    C(CONFIG GET dbfilename), and streams it out of the container into O(dest).
  - The RDB header (C(REDIS) and a 4-digit version), the EOF opcode and the CRC64 trailer are checked while the file
    streams; a file that fails them is not kept.
  - A password comes from O(password), else from C($REDIS_PASSWORD) or C($REDIS_PASSWORD_FILE) in the container, and
    reaches C(redis-cli) only through E(REDISCLI_AUTH), never as C(-a).
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
  - authentik_ops.backup._common.transport
  - authentik_ops.backup._common.output
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details:
      - Reads the Redis configuration and key count and reports the plan in RV(plan). No snapshot is taken and
        nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run takes a new snapshot.
options:
  compression:
    description:
      - Codec applied on the host. RDB files are already compressed by Redis, so the default is V(none).
    type: str
    choices: [none, gzip, zstd]
    default: none
  password:
    description:
      - Password of the Redis server (C(requirepass)), passed as E(REDISCLI_AUTH), handed over on the exec's
        standard input (never on a command line nor in a Docker exec's C(Env)).
    type: str
  save_mode:
    description:
      - V(bgsave) forks a background save and polls until it has finished; clients are not blocked.
      - V(save) runs a foreground C(SAVE), which blocks every client until the file is written.
      - V(none) takes no new snapshot and copies the last one Redis wrote.
    type: str
    choices: [bgsave, save, none]
    default: bgsave
  save_timeout:
    description:
      - Seconds to wait for the snapshot to finish.
    type: int
    default: 600
  rdb_path:
    description:
      - Path of the RDB file inside the container, when C(CONFIG GET) is disabled on the server.
      - Defaults to what C(CONFIG GET dir) and C(CONFIG GET dbfilename) report, else V(/data/dump.rdb).
    type: str
  verify_checksum:
    description:
      - Recompute the RDB's CRC64 while it streams and compare it to the file's trailer.
      - The header and the EOF opcode are always checked.
    type: bool
    default: true
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.backup_set
"""

EXAMPLES = r"""
- name: Snapshot Redis of a legacy (2025.2) Compose deployment
  authentik_ops.backup.redis_dump:
    container: authentik-redis-1
    dest: /var/backups/authentik/authentik-20261130T020000Z/redis.rdb

- name: Snapshot the Redis master pod of a legacy Helm release
  authentik_ops.backup.redis_dump:
    platform: kubernetes
    namespace: authentik
    pod: authentik-redis-master-0
    dest: /var/backups/authentik/authentik-20261130T020000Z/redis.rdb
"""

RETURN = r"""
dest:
  description: Path of the RDB file.
  returned: success
  type: str
  sample: /var/backups/authentik/authentik-20261130T020000Z/redis.rdb
size:
  description: Size of the file on disk, in bytes.
  returned: success and not check mode
  type: int
  sample: 1048576
sha256:
  description: SHA-256 of the file on disk.
  returned: success and not check mode
  type: str
  sample: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
raw_size:
  description: Size of the RDB file itself, in bytes.
  returned: success and not check mode
  type: int
  sample: 1048576
compression:
  description: Codec of the file.
  returned: success
  type: str
  sample: none
encryption:
  description: How the file is encrypted (O(encrypt_recipients)); the recipients are public keys.
  returned: success with O(encrypt_recipients)
  type: dict
  sample: {scheme: age, recipients: [age124n3glqf2ltpr3x33zh7dlznrdsrc8f343z8gpxhm4teqs550fqqnvkd3e]}
duration:
  description: Seconds for snapshot and copy.
  returned: success and not check mode
  type: float
  sample: 0.8
throughput:
  description: RDB bytes per second of the copy.
  returned: success and not check mode
  type: int
  sample: 50000000
rdb_version:
  description: RDB format version from the file's header.
  returned: success and not check mode
  type: int
  sample: 11
rdb_check:
  description: What was checked of the file.
  returned: success and not check mode
  type: str
  sample: RDB header, EOF opcode and CRC64 checked
keys:
  description: Number of keys in the current database (C(DBSIZE)) when the snapshot was taken.
  returned: success
  type: int
  sample: 1234
rdb_path:
  description: Path of the RDB file inside the container.
  returned: success
  type: str
  sample: /data/dump.rdb
target:
  description: The container or pod.
  returned: success
  type: dict
  sample: {platform: docker, container: authentik-redis-1, image: "docker.io/library/redis:alpine"}
plan:
  description: What the module would do, in check mode.
  returned: check mode
  type: dict
  sample: {action: bgsave and copy, rdb_path: /data/dump.rdb, dest: /var/backups/authentik/s/redis.rdb}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.authentik_ops.backup.plugins.module_utils import _transport_factory as factory
from ansible_collections.authentik_ops.backup.plugins.module_utils._common import (
    TRANSPORT_REQUIRED_IF,
    Stopwatch,
    check_output,
    excerpt,
    file_result,
    open_sink,
    output_argument_spec,
    run_module,
    transport_argument_spec,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import (
    BackupError,
    FormatError,
    RedisAnswerError,
    TransportError,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._formats import RdbChecker
from ansible_collections.authentik_ops.backup.plugins.module_utils._redis import (
    info_fields,
    parse_int as _int,
    run_commands,
)


def probe(transport, params):
    answers = run_commands(transport, params, ["CONFIG GET dir", "CONFIG GET dbfilename", "LASTSAVE", "DBSIZE",
                                               "TIME"])
    rdb_path = params["rdb_path"]
    if not rdb_path:
        directory = answers.get("CONFIG GET dir", [])
        filename = answers.get("CONFIG GET dbfilename", [])
        if len(directory) >= 2 and directory[0] == "dir" and len(filename) >= 2 and filename[0] == "dbfilename":
            rdb_path = directory[1].rstrip("/") + "/" + filename[1]
        else:
            rdb_path = "/data/dump.rdb"
    return dict(rdb_path=rdb_path, lastsave=_int(answers.get("LASTSAVE")), keys=_int(answers.get("DBSIZE")),
                now=_int(answers.get("TIME")))


def snapshot(transport, params, before):
    """Take the snapshot; returns when Redis has written it."""
    if params["save_mode"] == "none":
        return
    if params["save_mode"] == "save":
        answer = run_commands(transport, params, ["SAVE"])["SAVE"]
        if answer[:1] != ["OK"]:
            raise RedisAnswerError(f"SAVE failed in {transport.describe()}: {excerpt(chr(10).join(answer), 300)}")
        return
    lastsave = before["lastsave"] or 0
    if before["now"] is not None and lastsave >= before["now"]:
        time.sleep(1.05)  # LASTSAVE has one-second resolution: make the next save distinguishable
    deadline = time.monotonic() + params["save_timeout"]
    started = False
    while time.monotonic() < deadline:
        if not started:
            answer = "\n".join(run_commands(transport, params, ["BGSAVE"])["BGSAVE"])
            if "started" in answer or "scheduled" in answer:
                started = True
            elif "in progress" not in answer:
                raise RedisAnswerError(f"BGSAVE failed in {transport.describe()}: {excerpt(answer, 300)}")
        answers = run_commands(transport, params, ["INFO persistence", "LASTSAVE"])
        fields = info_fields(answers["INFO persistence"])
        done = started and fields.get("rdb_bgsave_in_progress") == "0" and (_int(answers["LASTSAVE"]) or 0) > lastsave
        if started and fields.get("rdb_bgsave_in_progress") == "0" and fields.get("rdb_last_bgsave_status") == "err":
            raise RedisAnswerError(f"BGSAVE failed in {transport.describe()} (rdb_last_bgsave_status:err); "
                                   "see the Redis log (disk full or read-only data directory?)")
        if done:
            return
        time.sleep(0.2)
    raise RedisAnswerError(f"the snapshot did not finish within {params['save_timeout']} s in "
                           f"{transport.describe()}; raise save_timeout")


def copy(params, transport, rdb_path):
    checker = RdbChecker(verify_crc=params["verify_checksum"])
    watch = Stopwatch()
    try:
        with open_sink(params) as sink:
            def write(data):
                checker.feed(data)
                sink.write(data)

            result = transport.exec_stream(["cat", "--", rdb_path], write)
            if not result.complete:
                raise TransportError(f"the RDB stream from {transport.describe()} broke off: {result.problem}")
            if result.exit_code != 0:
                raise TransportError(f"reading {rdb_path} failed with status {result.exit_code} in "
                                     f"{transport.describe()}: {excerpt(result.stderr)}",
                                     rc=result.exit_code, stderr_excerpt=excerpt(result.stderr))
            ok, message, version = checker.finish()
            if not ok:
                raise FormatError(f"{rdb_path} from {transport.describe()}: {message}")
            stats = sink.commit()
    except BackupError as exc:
        raise exc.add_fields(dest=params["dest"])
    except OSError as exc:
        raise BackupError(str(exc), dest=params["dest"]) from exc
    result = file_result(stats, watch.elapsed)
    result.update(rdb_version=version, rdb_check=message)
    return result


def run(module):
    params = module.params
    check_output(module)
    transport = factory.open_transport(params)
    target = transport.target_facts()
    before = probe(transport, params)
    common = dict(changed=True, dest=params["dest"], compression=params["compression"], keys=before["keys"],
                  rdb_path=before["rdb_path"], target=target)
    if module.check_mode:
        return dict(common, plan=dict(action=f"{params['save_mode']} and copy", rdb_path=before["rdb_path"],
                                      dest=params["dest"]))
    watch = Stopwatch()
    snapshot(transport, params, before)
    common.update(copy(params, transport, before["rdb_path"]))
    common["duration"] = watch.elapsed
    return common


def main():
    argument_spec = transport_argument_spec()
    argument_spec.update(output_argument_spec("none"))
    argument_spec.update(
        password=dict(type="str", no_log=True),
        save_mode=dict(type="str", default="bgsave", choices=["bgsave", "save", "none"]),
        save_timeout=dict(type="int", default=600),
        rdb_path=dict(type="str"),
        verify_checksum=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=TRANSPORT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
