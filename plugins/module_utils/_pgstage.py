# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The phases of postgres_restore beside the live data: staged, swapped, discarded, rolled_back, cleaned.

``staged`` loads the dump under temporary names and proves every table equal to the dump (count and content hash
of the COPY lines: first the MD5 of each table's COPY output in load order, taken in the database's container; a
table that differs there is compared again by the order-independent fingerprint); any failure drops the temporary
databases and leaves the live ones untouched. ``swapped``
exchanges the names in one transaction and keeps the previous data as ``akp_<run_id>_<n>``. ``rolled_back`` puts
the previous data back the same way (the replaced databases are kept as ``akn_<run_id>_<n>``); ``cleaned`` drops
the kept databases of an accepted restore (or of a rollback); ``discarded`` drops the temporary databases of a
staged restore that is not wanted. ``recovered`` finishes the journals of runs that died before they ended (killed,
host restarted): a swap that committed is recorded as swapped, the temporary databases of any other are dropped.
"""

from __future__ import annotations

import os

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import Stopwatch, excerpt
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError, RestoreError
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgproof import Digests, Fingerprint, differences
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgswap import (
    check_run_id,
    disk_space,
    drop_databases,
    existing_databases,
    journal_path,
    latest_journal,
    list_journals,
    new_run_id,
    prove,
    prove_digests,
    read_journal,
    space_needed,
    swap,
    write_journal,
)


def run_state(module, params, transport, target, hooks):
    handler = {"staged": stage, "swapped": swapped, "discarded": discarded, "rolled_back": rolled_back,
               "cleaned": cleaned, "recovered": recovered}[params["state"]]
    return handler(module, params, transport, target, hooks)


def number_of(name):
    return name.rsplit("_", 1)[1]


def journal_for(params, phases, what):
    """The journal of ``run_id``, or the newest one in one of ``phases``; RestoreError if it is in another phase."""
    if params.get("run_id"):
        record = read_journal(params["journal_dir"], check_run_id(params["run_id"]))
    else:
        record = latest_journal(params["journal_dir"], phases)
        if record is None:
            raise RestoreError(f"no restore in {params['journal_dir']} can be {what} (none in phase "
                               f"{' or '.join(phases)}); nothing was changed")
    if record.get("phase") not in phases:
        raise RestoreError(f"the restore {record['run_id']} is in phase {record.get('phase')}, it cannot be {what} "
                           f"(needs {' or '.join(phases)}); nothing was changed")
    return record


# --- staged -------------------------------------------------------------------------------------------------------

def stage(module, params, transport, target, hooks):
    journal_dir = params["journal_dir"]
    run_id = check_run_id(params.get("run_id") or new_run_id())
    if os.path.exists(journal_path(journal_dir, run_id)):
        raise RestoreError(f"the restore {run_id} already has a journal in {journal_dir}; use another run_id")
    source = hooks["source"](params, src=params["src"])
    phases = {}
    watch = Stopwatch()
    info = hooks["probe"](params, transport)
    tables = Digests(hashing=False)
    size, _removed, check = hooks["first_pass"](params, source, info, info.get("user"), run_id=run_id,
                                                fingerprint=tables)
    mapping = check.scanner.mapping
    clash = existing_databases(transport, params, list(mapping.values()))
    if clash:
        raise RestoreError(f"the temporary names {', '.join(sorted(clash))} exist already; nothing was changed")
    if not info.get("superuser"):
        module.warn(f"role {info.get('user')!r} is not a superuser; the dump's roles may not be created")
    space = room_for(module, params, transport, size, list(mapping))
    phases["check"] = watch.elapsed
    result = dict(changed=True, state="staged", run_id=run_id, src=source.path, mapping=mapping, raw_size=size,
                  target=target, server_version=info.get("version"), user=info.get("user"),
                  majors=check.scanner.majors, journal=journal_path(journal_dir, run_id), space=space)
    if module.check_mode:
        return dict(result, plan=dict(action="stage", databases=mapping, bytes=size, tables=len(tables.order)))
    record = write_journal(journal_dir, dict(run_id=run_id, src=source.path, target=target, mapping=mapping,
                                             phase="staging"))
    watch = Stopwatch()
    try:
        # the dump's digests are taken from the bytes as they are sent (the first pass only checked them)
        expected = Digests()
        load(params, transport, source, size, info.get("user"), run_id, hooks, fingerprint=expected)
        if expected.order != tables.order:
            raise RestoreError(f"{source.path} changed between its check and the load (its tables differ)")
        phases["load"] = watch.elapsed
        compared = prove_staged(params, transport, source, info, run_id, expected, mapping, hooks)
        phases["proof"] = round(watch.elapsed - phases["load"], 3)
    except BackupError as exc:
        raise give_up(params, transport, record, exc) from exc
    write_journal(journal_dir, dict(record, phase="staged"))
    rows = sum(rows for rows, _digest in expected.tables.values())
    return dict(result, duration=watch.elapsed, phases=phases,
                proof=dict(tables=len(expected.order), rows=rows, equal=True, compared_by_rows=compared))


def prove_staged(params, transport, source, info, run_id, expected, mapping, hooks):
    """Prove every loaded table equal to the dump; RestoreError naming the tables that differ. Returns how many
    tables needed the order-independent comparison (their digest in load order differed, or none was taken)."""
    digests = prove_digests(transport, params, expected, mapping)
    suspect = [key for key in expected.order if digests.get(key) != expected.tables[key][1]]
    if not suspect:
        return 0
    full = Fingerprint()
    hooks["first_pass"](params, source, info, info.get("user"), run_id=run_id, fingerprint=full)
    wanted = full.only(suspect)
    restored = prove(transport, params, wanted, mapping)
    different = differences(wanted.tables, restored.tables)
    if different:
        raise RestoreError("the restored data differs from the dump: " + "; ".join(different))
    return len(suspect)


def megabytes(count):
    return f"{int(count) / (1 << 20):.0f} MB"


def room_for(module, params, transport, size, names):
    """Refuse a load the database server's disk cannot take, before anything is written (PostgreSQL may not
    survive a full disk: a checkpoint that cannot write stops the server). Returns what was measured."""
    space = disk_space(transport, params, names)
    needed = space_needed(size, space)
    measured = dict(dir=space["dir"], free=space["free"], needed=needed, checked=False)
    if not params.get("space_check", True):
        return measured
    if space["free"] is None:
        module.warn(f"the free space of the database server was not checked: {space['problem']}")
        return measured
    if space["free"] < needed:
        raise RestoreError(
            f"not enough free disk space on the database server: its data directory {space['dir']} has "
            f"{megabytes(space['free'])} free, and staging this dump beside the live databases needs about "
            f"{megabytes(needed)} (a second copy of the databases and the write-ahead log of loading it); a full "
            "disk can stop PostgreSQL. Free space on its volume (or skip this check with space_check=false) and "
            "run again; nothing was restored or changed", space=dict(measured, checked=True))
    return dict(measured, checked=True)


def load(params, transport, source, size, role, run_id, hooks, fingerprint=None):
    result, feed, _filter, _check = hooks["restore_dump"](transport, params, source.path, source.compression, role,
                                                          size, params["database"], scan=True, run_id=run_id,
                                                          fingerprint=fingerprint)
    stderr = excerpt(result.stderr)
    if feed.error is not None or source.changed():
        raise RestoreError(f"reading {source.path} failed during the load: "
                           f"{feed.error or 'the file changed while it was sent'}", stderr_excerpt=stderr)
    if not result.complete or result.exit_code != 0:
        raise RestoreError(f"loading into {transport.describe()} failed: "
                           f"{result.problem or f'psql exited with status {result.exit_code}'}: {stderr}",
                           rc=result.exit_code, stderr_excerpt=stderr)


def give_up(params, transport, record, exc):
    """Drop the temporary databases of a failed staging; the error to raise says what was left."""
    temps = sorted(record["mapping"].values())
    try:
        drop_databases(transport, params, temps)
    except BackupError as drop_exc:
        return RestoreError(f"{exc.msg}. The live databases were not touched. The temporary databases "
                            f"{', '.join(temps)} could not be dropped ({drop_exc.msg}); state=discarded with run_id "
                            f"{record['run_id']} drops them", run_id=record["run_id"], **exc.fields)
    write_journal(params["journal_dir"], dict(record, phase="discarded", error=exc.msg))
    return RestoreError(f"{exc.msg}. The live databases were not touched; the temporary databases were dropped",
                        run_id=record["run_id"], **exc.fields)


# --- swapped, rolled_back -----------------------------------------------------------------------------------------

def swapped(module, params, transport, target, _hooks):
    record = journal_for(params, ["staged"], "swapped")
    run_id, mapping = record["run_id"], record["mapping"]
    temps = existing_databases(transport, params, list(mapping.values()))
    missing = sorted(set(mapping.values()) - set(temps))
    if missing:
        raise RestoreError(f"the temporary databases {', '.join(missing)} of the restore {run_id} are gone; "
                           "nothing was swapped")
    live = existing_databases(transport, params, list(mapping))
    previous = {name: f"akp_{run_id}_{number_of(mapping[name])}" for name in mapping if name in live}
    pairs = [(name, previous[name]) for name in previous] + [(tmp, name) for name, tmp in mapping.items()]
    result = dict(changed=True, state="swapped", run_id=run_id, mapping=mapping, previous=previous, target=target)
    if module.check_mode:
        return dict(result, plan=dict(action="swap", renames=pairs))
    watch = Stopwatch()
    swap(transport, params, pairs, close=[name for name in previous if live[name]], reopen=[])
    write_journal(params["journal_dir"], dict(record, phase="swapped", previous=previous))
    return dict(result, swap_duration=watch.elapsed)


def rolled_back(module, params, transport, target, _hooks):
    record = journal_for(params, ["swapped"], "rolled back")
    run_id, previous = record["run_id"], record.get("previous") or {}
    kept = existing_databases(transport, params, list(previous.values()))
    missing = sorted(set(previous.values()) - set(kept))
    if missing:
        raise RestoreError(f"the previous databases {', '.join(missing)} of the restore {run_id} are gone; "
                           "nothing was rolled back")
    live = existing_databases(transport, params, list(record["mapping"]))
    newer = {name: f"akn_{run_id}_{number_of(tmp)}" for name, tmp in record["mapping"].items() if name in live}
    pairs = [(name, newer[name]) for name in newer] + [(old, name) for name, old in previous.items()]
    result = dict(changed=True, state="rolled_back", run_id=run_id, previous=previous, replaced=newer, target=target)
    if module.check_mode:
        return dict(result, plan=dict(action="roll back", renames=pairs))
    swap(transport, params, pairs, close=[name for name in newer if live[name]], reopen=list(previous))
    write_journal(params["journal_dir"], dict(record, phase="rolled_back", replaced=newer))
    return result


# --- discarded, cleaned -------------------------------------------------------------------------------------------

def discarded(module, params, transport, target, _hooks):
    record = journal_for(params, ["staging", "staged"], "discarded")
    temps = sorted(record["mapping"].values())
    result = dict(changed=True, state="discarded", run_id=record["run_id"], dropped=temps, target=target)
    if module.check_mode:
        return dict(result, plan=dict(action="drop", databases=temps))
    drop_databases(transport, params, temps)
    write_journal(params["journal_dir"], dict(record, phase="discarded"))
    return result


def cleaned(module, params, transport, target, _hooks):
    record = journal_for(params, ["swapped", "rolled_back"], "cleaned")
    kept = record.get("previous") if record["phase"] == "swapped" else record.get("replaced")
    names = sorted((kept or {}).values())
    result = dict(changed=True, state="cleaned", run_id=record["run_id"], dropped=names, target=target)
    if module.check_mode:
        return dict(result, plan=dict(action="drop", databases=names))
    drop_databases(transport, params, names)
    write_journal(params["journal_dir"], dict(record, phase="cleaned"))
    return result


# --- recovered ----------------------------------------------------------------------------------------------------

UNFINISHED = ("staging", "staged")


def same_target(recorded, target):
    """Whether a journal's target is the database the module reaches now (by name: a recreated container or a
    restarted pod keeps it)."""
    return all((recorded or {}).get(key) == target.get(key) for key in ("platform", "container", "namespace", "pod"))


def unfinished_step(transport, params, record):
    """What finishes the run of ``record`` (phase staging or staged, its run gone): ("swapped", previous) when its
    swap committed (the temporary names are gone and kept databases akp_<run_id>_<n> exist), else ("discarded",
    the temporary databases to drop)."""
    run_id, mapping = record["run_id"], record["mapping"]
    temps = existing_databases(transport, params, list(mapping.values()))
    if record["phase"] == "staged" and not temps:
        kept = {name: f"akp_{run_id}_{number_of(tmp)}" for name, tmp in mapping.items()}
        found = existing_databases(transport, params, list(kept.values()))
        previous = {name: old for name, old in kept.items() if old in found}
        if previous:
            return "swapped", previous
    return "discarded", sorted(temps)


def recovered(module, params, transport, target, _hooks):
    """Finish every journal a dead run left in phase staging or staged on this target (oldest first).

    Call it only while no restore runs with this journal directory (the role holds the destination's lock). A
    journal of another target is left alone and reported in ``other_targets``.
    """
    records = [record for record in list_journals(params["journal_dir"]) if record.get("phase") in UNFINISHED]
    mine = [record for record in records if same_target(record.get("target"), target)]
    others = sorted(record["run_id"] for record in records if not same_target(record.get("target"), target))
    steps = []
    for record in mine:
        phase, found = unfinished_step(transport, params, record)
        step = dict(run_id=record["run_id"], was=record["phase"], phase=phase)
        step["previous" if phase == "swapped" else "dropped"] = found
        steps.append((record, step))
    result = dict(changed=bool(steps), state="recovered", recovered=[step for _record, step in steps],
                  other_targets=others, target=target)
    if module.check_mode:
        return dict(result, plan=dict(action="recover", runs=result["recovered"]))
    for record, step in steps:
        if step["phase"] == "swapped":
            write_journal(params["journal_dir"], dict(record, phase="swapped", previous=step["previous"],
                                                      recovered=True))
        else:
            drop_databases(transport, params, sorted(record["mapping"].values()))
            write_journal(params["journal_dir"], dict(record, phase="discarded", recovered=True))
    return result
