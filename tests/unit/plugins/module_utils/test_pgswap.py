# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The restore journal, the swap script, the proof's output router and the drop guard."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RestoreError
from ansible_collections.authentik_ops.backup.plugins.module_utils import _pgswap
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import TransportError
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgproof import Digests, Fingerprint
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgswap import (
    CopyRouter,
    digest_script,
    prove_digests,
    check_run_id,
    drop_databases,
    latest_journal,
    new_run_id,
    read_journal,
    swap_sql,
    write_journal,
)


def test_journal_is_private_atomic_and_found_by_phase(tmp_path):
    journal = str(tmp_path / "j")
    write_journal(journal, dict(run_id="a1", phase="staging", mapping={"authentik": "akr_a1_1"}))
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(journal, "a1.json")).st_mode) == 0o600
    assert os.listdir(journal) == ["a1.json"]
    write_journal(journal, dict(read_journal(journal, "a1"), phase="staged"))
    assert read_journal(journal, "a1")["phase"] == "staged"
    assert latest_journal(journal, ["staged"])["run_id"] == "a1"
    assert latest_journal(journal, ["swapped"]) is None
    with pytest.raises(RestoreError, match="no journal"):
        read_journal(journal, "b2")


@pytest.mark.parametrize("bad", ["", "A1", "a-1", "../x", "a" * 25])
def test_run_id_is_short_lower_case(bad):
    with pytest.raises(RestoreError):
        check_run_id(bad)
    assert check_run_id(new_run_id())


def test_swap_script_closes_then_renames_in_one_transaction():
    sql = swap_sql([("authentik", "akp_r_1"), ("akr_r_1", "authentik"), ("akr_r_2", 'Wé "x"')], ["authentik"], [])
    lines = sql.splitlines()
    assert lines[0] == "ALTER DATABASE authentik ALLOW_CONNECTIONS false;"
    assert lines[1].startswith("SELECT count(pg_terminate_backend(pid, 5000))") and "'authentik'" in lines[1]
    assert lines[2:] == ["BEGIN;", "ALTER DATABASE authentik RENAME TO akp_r_1;",
                         "ALTER DATABASE akr_r_1 RENAME TO authentik;",
                         'ALTER DATABASE akr_r_2 RENAME TO "Wé ""x""";', "COMMIT;"]


@pytest.mark.parametrize("name", ["authentik", "akp_x", "akr_1_1; DROP DATABASE authentik", "postgres"])
def test_drop_only_restore_databases(name):
    with pytest.raises(RestoreError, match="not a database a restore created"):
        drop_databases(None, {}, [name])


@pytest.mark.parametrize("size", [1, 7, 1 << 16])
def test_copy_router_splits_tables(size):
    fingerprint = Fingerprint()
    router = CopyRouter("db", ["public.a (x)", "public.b (y)"], fingerprint)
    assert router.script().count("COPY public.") == 2 and "TO STDOUT;" in router.script()
    nonce = router.nonce
    out = nonce + b" 0\n1\n2\n" + nonce + b" 1\n" + nonce + b" 1x\n"
    for i in range(0, len(out), size):
        router.write(out[i:i + size])
    expected = Fingerprint()
    expected.start_table("db", "public.a (x)")
    expected.add_lines(b"1\n2\n")
    expected.start_table("db", "public.b (y)")
    expected.add_lines(nonce + b" 1x\n")
    assert fingerprint.tables == expected.tables


def test_digests_count_lines_and_hash_the_bytes_in_order():
    digests = Digests()
    digests.start_table("db", "public.a  (x)")
    for block in (b"1\n", b"2\n3\n"):
        digests.add_lines(block)
    digests.end_table()
    digests.start_table("db", "public.e (y)")
    digests.end_table()
    assert digests.order == [("db", "public.a (x)"), ("db", "public.e (y)")]
    assert digests.tables[("db", "public.a (x)")] == [3, hashlib.md5(b"1\n2\n3\n").hexdigest()]
    assert digests.tables[("db", "public.e (y)")] == [0, hashlib.md5(b"").hexdigest()]
    other = Digests()
    other.start_table("db", "public.a (x)")
    other.add_lines(b"2\n1\n3\n")
    other.end_table()
    assert other.tables[("db", "public.a (x)")][1] != digests.tables[("db", "public.a (x)")][1]


def test_digest_script_pipes_each_copy_into_its_own_md5sum():
    script = digest_script(["public.a (x)", '"We;ird"."ta ble" (v)'])
    lines = script.splitlines()
    assert "SET synchronize_seqscans = off;" in lines
    assert lines[-5:] == ["\\o |md5sum", "COPY public.a (x) TO STDOUT;", "\\o |md5sum",
                          'COPY "We;ird"."ta ble" (v) TO STDOUT;', "\\o"]


def test_prove_digests_keeps_only_a_complete_answer(monkeypatch):
    expected = Digests()
    for database, header in (("a", "public.t (x)"), ("a", "public.u (y)"), ("b", "public.v (z)")):
        expected.start_table(database, header)
        expected.end_table()
    answers = {"akr_r_1": "d41d8cd98f00b204e9800998ecf8427e  -\n0123456789abcdef0123456789abcdef  -\n",
               "akr_r_2": "d41d8cd98f00b204e9800998ecf8427e  -\n"}
    monkeypatch.setattr(_pgswap, "run_sql", lambda _t, _p, _sql, database: answers[database])
    found = prove_digests(None, {}, expected, {"a": "akr_r_1", "b": "akr_r_2"})
    assert found == {("a", "public.t (x)"): "d41d8cd98f00b204e9800998ecf8427e",
                     ("a", "public.u (y)"): "0123456789abcdef0123456789abcdef",
                     ("b", "public.v (z)"): "d41d8cd98f00b204e9800998ecf8427e"}
    # one digest short (md5sum missing for one table), or psql failing: that database's tables are not proved here
    answers["akr_r_1"] = "d41d8cd98f00b204e9800998ecf8427e  -\n"
    assert set(prove_digests(None, {}, expected, {"a": "akr_r_1", "b": "akr_r_2"})) == {("b", "public.v (z)")}

    def failing(_t, _p, _sql, database):
        raise TransportError(f"psql failed in {database}")
    monkeypatch.setattr(_pgswap, "run_sql", failing)
    assert prove_digests(None, {}, expected, {"a": "akr_r_1", "b": "akr_r_2"}) == {}
