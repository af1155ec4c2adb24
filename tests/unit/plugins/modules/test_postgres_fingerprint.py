# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""postgres_fingerprint: its pure parts (headers, the canonical schema listing and its digest, sequences, the
comparison) and its main() against a scripted server that answers psql's scripts as psql would."""

from __future__ import annotations

import json
import random
import re

import pytest

from fake_transport import FakeTransport, Reply, run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils._pgproof import line_value
from ansible_collections.authentik_ops.backup.plugins.modules import postgres_fingerprint as fp

# --- headers and names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row, header", [
    (dict(schema="public", table="t", columns=["a", "b"]), "public.t (a, b)"),
    (dict(schema='"Schéma"', table='"Tâble ünï"', columns=["id", '"order"', "data"]),
     '"Schéma"."Tâble ünï" (id, "order", data)'),
    (dict(schema="public", table="empty", columns=[]), "public.empty"),
    (dict(schema="public", table='"a""b"', columns=['"x y"']), 'public."a""b" ("x y")'),
])
def test_table_header_is_pg_dumps_copy_form(row, header):
    assert fp.table_header(row) == header


@pytest.mark.parametrize("text, canonical", [
    ('public.t (id, "json_object")', "public.t (id, json_object)"),
    ('public.t (id, json_object)', "public.t (id, json_object)"),
    ('"Schéma"."Tâble ünï" (id, "order")', '"Schéma"."Tâble ünï" (id, order)'),
    ('public."Mixed" ("a b", "x""y")', 'public."Mixed" ("a b", "x""y")'),
    ("public.t  (a,\n b)", "public.t (a, b)"),
])
def test_canonical_name_drops_only_the_quotes_a_keyword_list_asks_for(text, canonical):
    assert fp.canonical_name(text) == canonical


@pytest.mark.parametrize("name, argument", [
    ("authentik", "authentik"),
    ("äpp db", "äpp db"),
    ("a=b", "dbname='a=b'"),
    ("it's=\\", "dbname='it\\'s=\\\\'"),
    ("postgresql://x", "dbname='postgresql://x'"),
])
def test_database_argument_keeps_psql_from_reading_a_name_as_a_conninfo(name, argument):
    assert fp.database_argument(name) == argument


def test_catalog_script_asks_for_sql_standard_bodies_only_from_postgresql_14_on():
    assert "p.prosqlbody IS NOT NULL" in fp.catalog_script(150000)
    old = fp.catalog_script(130000)
    assert "prosqlbody" not in old and "SQLBODY" not in old
    assert old.startswith(fp.READ_ONLY) and old.endswith("COMMIT;\n") and "\\gexec" in old


# --- the schema listing -------------------------------------------------------------------------------------------

# The same view as PostgreSQL 15 and 17 deparse it: 16 stopped qualifying the columns of a one-relation query.
VIEW_15 = (' SELECT t.id,\n    t."order",\n    ( SELECT count(*) AS count\n           FROM public.ident i\n'
           '          WHERE (i.parent = t.id)) AS c\n   FROM "Schéma"."Tâble ünï" t\n'
           '  WHERE (t.f > (0.5)::double precision)\n  ORDER BY t.id;')
VIEW_17 = (' SELECT id,\n    "order",\n    ( SELECT count(*) AS count\n           FROM public.ident i\n'
           '          WHERE (i.parent = t.id)) AS c\n   FROM "Schéma"."Tâble ünï" t\n'
           '  WHERE (f > (0.5)::double precision)\n  ORDER BY id;')


def objects(view=VIEW_15, json_object='json_object', body="SELECT a + b"):
    return [
        ["schema", "public", "pg_database_owner"],
        ["schema", "Schéma", "app"],
        ["relation", '"Schéma"."Tâble ünï"', "r", "p", "app", None, None, None],
        ["relation", "public.parted_1", "r", "p", "postgres", None, "FOR VALUES FROM (0) TO (100)", ["public.parted"]],
        ["column", '"Schéma"."Tâble ünï"', "id", "bigint", True, "nextval('\"Schéma\".\"Tâble ünï_id_seq\"'::regclass)",
         "", "", None],
        ["column", f"public.{json_object}", "x", "integer", False, None, "", "", None],
        ["constraint", '"Schéma"."Tâble ünï"', "chk", "c", 'CHECK ((length("order") < 100))'],
        ["index", "public.parted_v_idx", "CREATE INDEX parted_v_idx ON ONLY public.parted USING btree (v)"],
        ["view", "public.v", "v", "postgres", view],
        ["sequence", "public.unused_seq", "postgres", "bigint", "42", "3", "1", "9223372036854775807", "1", False, None],
        ["function", "public.add(a integer, b integer)", "f", "postgres", "integer", True,
         f"CREATE OR REPLACE FUNCTION public.add(a integer, b integer)\n RETURNS integer\n BEGIN ATOMIC\n {body};\nEND"],
        ["function", "public.total(integer)", "a", "postgres", "bigint", False, None],
        ["trigger", '"Schéma"."Tâble ünï"', "touch",
         'CREATE TRIGGER touch BEFORE UPDATE ON "Schéma"."Tâble ünï" FOR EACH ROW EXECUTE FUNCTION public.touch()'],
    ]


def test_schema_digest_does_not_depend_on_the_order_of_the_objects():
    items = objects()
    digest = fp.schema_digest(items)
    for seed in range(5):
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)
        assert fp.schema_digest(shuffled) == digest
    assert digest[1] == len(items) and re.fullmatch(r"[0-9a-f]{64}", digest[0])


def test_schema_digest_is_the_same_for_postgresql_15_and_17_deparsing():
    assert fp.schema_digest(objects(view=VIEW_15)) == fp.schema_digest(objects(view=VIEW_17))
    assert fp.schema_digest(objects(json_object="json_object")) == fp.schema_digest(
        objects(json_object='"json_object"'))
    assert fp.deparsed_query(VIEW_15) == fp.deparsed_query(VIEW_17)
    assert "(0.5)::double precision" in fp.deparsed_query(VIEW_15)
    assert fp.deparsed_query('SELECT "a.b".c, t.*, x.y.z FROM s.t') == 'SELECT c, *, z FROM t'


@pytest.mark.parametrize("change", [
    lambda items: items[2].__setitem__(4, "postgres"),                    # another owner
    lambda items: items[4].__setitem__(4, False),                         # not null dropped
    lambda items: items[6].__setitem__(4, 'CHECK ((length("order") < 99))'),
    lambda items: items[8].__setitem__(4, VIEW_17.replace("0.5", "0.6")),
    lambda items: items[9].__setitem__(5, "4"),                           # sequence increment
    lambda items: items[10].__setitem__(6, items[10][6].replace("a + b", "a - b")),
    lambda items: items.pop(),                                            # a trigger less
])
def test_schema_digest_sees_a_change(change):
    items = objects()
    digest = fp.schema_digest(items)[0]
    change(items)
    assert fp.schema_digest(items)[0] != digest


def test_canonical_object_hashes_function_definitions():
    plain = fp.canonical_object(["function", "public.f()", "f", "app", "integer", False, "CREATE ... $$ t.x $$"])
    atomic = fp.canonical_object(["function", "public.f()", "f", "app", "integer", True, "CREATE ... t.x"])
    aggregate = fp.canonical_object(["function", "public.agg(integer)", "a", "app", "bigint", False, None])
    assert re.fullmatch(r"[0-9a-f]{32}", plain[-1]) and re.fullmatch(r"[0-9a-f]{32}", atomic[-1])
    assert plain[-1] != fp.canonical_object(["function", "public.f()", "f", "app", "integer", False,
                                             "CREATE ... $$ x $$"])[-1]
    assert atomic[-1] == fp.canonical_object(["function", "public.f()", "f", "app", "integer", True,
                                              "CREATE ... x"])[-1]
    assert aggregate[-1] is None


# --- sequences ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item, entry", [
    (["public.s", 42, False], dict(name="public.s", last_value=42, is_called=False)),
    (["public.s", "9223372036854775807", True], dict(name="public.s", last_value=9223372036854775807, is_called=True)),
    (["public.s", None, None], dict(name="public.s", last_value=None, is_called=None)),
])
def test_sequence_entry(item, entry):
    assert fp.sequence_entry(item) == entry


def test_a_null_sequence_value_equals_only_null():
    base = dict(tables=[], schema_sha256="a" * 64, schema_objects=1)
    null = dict(base, sequences=[dict(name="public.s", last_value=None, is_called=None)])
    assert fp.differences(dict(db=null), dict(db=null)) == []
    value = dict(base, sequences=[dict(name="public.s", last_value=1, is_called=False)])
    assert fp.differences(dict(db=null), dict(db=value)) == [
        "db: sequence public.s: last_value null is_called null before, last_value 1 is_called false now"]


# --- the comparison -----------------------------------------------------------------------------------------------

def database(tables=(), sequences=(), digest="a" * 64, count=10):
    return dict(tables=[dict(table=t, rows=r, sum=s) for t, r, s in tables],
                sequences=[dict(name=n, last_value=v, is_called=c) for n, v, c in sequences],
                schema_sha256=digest, schema_objects=count)


BEFORE = dict(
    authentik=database([("public.a (id, json_object)", 3, "17"), ("public.b (id)", 2, "5"), ("public.c (id)", 1, "1")],
                       [("public.a_id_seq", 3, True), ("public.b_id_seq", 1, False)]),
    old=database(),
)


def test_equal_fingerprints_have_no_differences():
    assert fp.differences(BEFORE, json.loads(json.dumps(BEFORE))) == []


def test_names_quoted_for_another_keyword_list_still_match():
    now = json.loads(json.dumps(BEFORE))
    now["authentik"]["tables"][0]["table"] = 'public.a (id, "json_object")'
    assert fp.differences(BEFORE, now) == []


def test_every_kind_of_difference_is_named():
    now = dict(
        authentik=database([("public.a (id, json_object)", 3, "18"), ("public.b (id)", 1, "5"), ("public.d (x)", 0, "0")],
                           [("public.a_id_seq", 4, True), ("public.z_seq", 1, False)], digest="b" * 64, count=11),
        new=database(),
    )
    assert fp.differences(BEFORE, now) == [
        "authentik: table public.a (id, json_object): same row count (3), different content",
        "authentik: table public.b (id): 2 rows before, 1 now",
        "authentik: table public.c (id): missing (1 rows before)",
        "authentik: table public.d (x): extra (0 rows), not in compare_to",
        "authentik: sequence public.a_id_seq: last_value 3 is_called true before, last_value 4 is_called true now",
        "authentik: sequence public.b_id_seq: missing",
        "authentik: sequence public.z_seq: extra, not in compare_to",
        f"authentik: schema differs (sha256 {'a' * 12}... of 10 objects before, {'b' * 12}... of 11 now)",
        "database new: extra (on this server, not in compare_to)",
        "database old: missing (in compare_to, not on this server)",
    ]


def test_summary_names_at_most_ten_differences():
    found = [f"difference {n}" for n in range(13)]
    message = fp.summary(found)
    assert "in 13 place(s)" in message and "difference 9;" in message and "difference 10" not in message
    assert message.endswith("; ... and 3 more")
    assert fp.summary(found[:2]) == "the fingerprint differs from compare_to in 2 place(s): difference 0; difference 1"


@pytest.mark.parametrize("value, message", [
    (["a"], "it is not a dictionary"),
    ("not json", "it is not a dictionary"),
    (dict(changed=False, tables=3, databases={}), "its entry 'changed' has no tables"),
    (dict(authentik=dict(tables=[], sequences=[])), "its entry 'authentik' has no tables, sequences and schema_sha256"),
    (dict(authentik=dict(tables=[dict(table="public.t (a)", rows=1)], sequences=[], schema_sha256="0")),
     "a table of its entry 'authentik' lacks table, rows or sum"),
    (dict(authentik=dict(tables=[], sequences=[dict(last_value=1)], schema_sha256="0")),
     "a sequence of its entry 'authentik' has no name"),
])
def test_check_compare_to_names_the_fix(value, message):
    with pytest.raises(fp.ConfigError) as raised:
        fp.check_compare_to(value)
    assert message in raised.value.msg and "{{ before.databases }}" in raised.value.msg


def test_check_compare_to_takes_json_text():
    assert fp.check_compare_to(json.dumps(BEFORE)) == BEFORE


# --- main() against a scripted server -----------------------------------------------------------------------------

SERVERS = {
    # database: (catalog tables, COPY lines per header, sequences [name, last_value, is_called], schema objects)
    "authentik": (
        [dict(schema="public", table="authentik_core_user", columns=["id", "username", '"order"']),
         dict(schema='"Schéma"', table='"Tâble ünï"', columns=["id", "data"]),
         dict(schema="public", table="empty", columns=[])],
        {"public.authentik_core_user (id, username, \"order\")": [b"1\takadmin\t\\N", b"2\tj\xc3\xbcrgen\t3"],
         '"Schéma"."Tâble ünï" (id, data)': [b"1\t\\\\x00ff"],
         "public.empty": [b"", b""]},
        [["public.authentik_core_user_id_seq", 2, True], ["public.unused_seq", 42, False]],
        objects(),
    ),
    "second": ([dict(schema="public", table="t", columns=["a"])], {"public.t (a)": []}, [], objects()[:3]),
}


class Server:
    """Answers the module's psql scripts (stdin) as psql does: JSON lines, \\echo markers and COPY text."""

    def __init__(self, databases=None, version="17.2", version_num=170002, listed=None, fail=None):
        self.databases = SERVERS if databases is None else databases
        self.version = version
        self.version_num = version_num
        self.listed = listed
        self.fail = fail or {}

    def __call__(self, call):
        script = call.stdin.decode("utf-8")
        database = call.argv[-1]
        for marker, reply in self.fail.items():
            if marker in script:
                return reply
        if "server_version_num" in script:
            names = self.listed if self.listed is not None else ["postgres", "template1", *self.databases]
            return Reply(json.dumps(dict(version=self.version, version_num=self.version_num, databases=names)) + "\n")
        if script.startswith("ANALYZE"):
            return Reply()
        tables, copies, sequences, schema = self.databases[database]
        if "\\gexec" in script:
            lines = [json.dumps(dict(tables=tables, schema=schema))] + [json.dumps(s) for s in sequences]
            return Reply(("\n".join(lines) + "\n").encode("utf-8"))
        out = []
        for echo, copy in re.findall(r"^\\echo (.+)\n(COPY .+ TO STDOUT;)$", script, re.M):
            header = re.fullmatch(r"COPY (.+?) ?(\(.*\))? TO STDOUT;", copy)
            key = " ".join(part for part in header.groups() if part)
            out.append(echo.encode() + b"\n" + b"".join(line + b"\n" for line in copies[key]))
        return Reply(b"".join(out), chunk=7)


def expected_sum(lines):
    return str(sum(line_value(line) for line in lines))


def run(monkeypatch, server=None, check_mode=False, **args):
    fake = FakeTransport(server or Server())
    result, failed = run_main(monkeypatch, fp, dict(dict(container="db"), **args), check_mode=check_mode,
                              transport=fake)
    return result, failed, fake


def test_main_fingerprints_every_database(monkeypatch):
    result, failed, fake = run(monkeypatch, password="s3cret")
    assert not failed, result
    assert result["changed"] is False and result["server_version"] == "17.2"
    assert sorted(result["databases"]) == ["authentik", "second"]
    authentik = result["databases"]["authentik"]
    copies = SERVERS["authentik"][1]
    assert authentik["tables"] == sorted(
        [dict(table=header, rows=len(lines), sum=expected_sum(lines)) for header, lines in copies.items()],
        key=lambda t: t["table"])
    assert authentik["sequences"] == [
        dict(name="public.authentik_core_user_id_seq", last_value=2, is_called=True),
        dict(name="public.unused_seq", last_value=42, is_called=False)]
    assert (authentik["schema_sha256"], authentik["schema_objects"]) == fp.schema_digest(objects())
    assert result["databases"]["second"]["tables"] == [dict(table="public.t (a)", rows=0, sum="0")]
    assert result["tables"] == 4 and result["rows"] == 5
    assert "equal" not in result and "differences" not in result
    # two psql runs per database (catalog, COPYs) and the server query; the password only in the environment
    assert len(fake.calls) == 5
    for call in fake.calls:
        assert call.secret_env == {"PGPASSWORD": "s3cret"}
        assert not any("s3cret" in arg for arg in call.argv) and b"s3cret" not in call.stdin
    assert "s3cret" not in json.dumps(result)
    copy_scripts = [c.stdin.decode() for c in fake.calls if b"COPY " in c.stdin]
    assert all(s.startswith(fp.READ_ONLY + fp.COPY_SETTINGS) and s.endswith("COMMIT;\n") for s in copy_scripts)


def test_main_leaves_out_the_excluded_databases_and_those_not_listed(monkeypatch):
    server = Server(listed=["authentik", "second", "template1"])
    result, failed, fake = run(monkeypatch, server, exclude_databases=["second", "template1"])
    assert not failed, result
    assert list(result["databases"]) == ["authentik"]
    assert {c.argv[-1] for c in fake.calls} == {"template1", "authentik"}


def test_main_analyzes_first_and_reports_a_change(monkeypatch):
    result, failed, fake = run(monkeypatch, analyze=True)
    assert not failed and result["changed"] is True
    analyzed = [c.argv[-1] for c in fake.calls if c.stdin == b"ANALYZE;\n"]
    assert analyzed == ["authentik", "second"]
    order = [c.stdin.split(b"\n", 1)[0] for c in fake.calls if c.argv[-1] == "authentik"]
    assert order[0] == b"ANALYZE;"


def test_check_mode_fingerprints_but_does_not_analyze(monkeypatch):
    result, failed, fake = run(monkeypatch, check_mode=True, analyze=True)
    assert not failed and result["changed"] is True
    assert not any(c.stdin == b"ANALYZE;\n" for c in fake.calls)
    assert result["databases"]["authentik"]["tables"]


def test_compare_to_an_equal_fingerprint(monkeypatch):
    before, failed = run(monkeypatch)[:2]
    assert not failed
    result, failed = run(monkeypatch, compare_to=json.loads(json.dumps(before["databases"])))[:2]
    assert not failed, result
    assert result["equal"] is True and result["differences"] == [] and result["changed"] is False


def test_compare_to_across_keyword_lists(monkeypatch):
    """PostgreSQL 15 does not quote json_object, 17 does: the same table on both sides."""
    def server(column):
        tables = [dict(schema="public", table="t", columns=["id", column])]
        return Server({"authentik": (tables, {f"public.t (id, {column})": [b"1\tx"]}, [], objects())})
    before, failed = run(monkeypatch, server("json_object"))[:2]
    assert not failed
    result, failed = run(monkeypatch, server('"json_object"'), compare_to=before["databases"])[:2]
    assert not failed, result
    assert result["equal"] is True


def test_compare_to_a_different_fingerprint_fails_naming_the_differences(monkeypatch):
    before, failed = run(monkeypatch)[:2]
    assert not failed
    changed = dict(SERVERS)
    tables, copies, sequences, schema = changed["authentik"]
    copies = dict(copies, **{'"Schéma"."Tâble ünï" (id, data)': [b"1\t\\\\x00fe"]})
    changed["authentik"] = (tables, copies, [["public.authentik_core_user_id_seq", 3, True], sequences[1]],
                            schema[:-1])
    del changed["second"]
    result, failed = run(monkeypatch, Server(changed), compare_to=before["databases"])[:2]
    assert failed
    assert result["equal"] is False and result["differences"] == [
        'authentik: table "Schéma"."Tâble ünï" (id, data): same row count (1), different content',
        "authentik: sequence public.authentik_core_user_id_seq: last_value 2 is_called true before, "
        "last_value 3 is_called true now",
        f"authentik: schema differs (sha256 {before['databases']['authentik']['schema_sha256'][:12]}... of 13 "
        f"objects before, {fp.schema_digest(schema[:-1])[0][:12]}... of 12 now)",
        "database second: missing (in compare_to, not on this server)",
    ]
    assert result["msg"].startswith("the fingerprint differs from compare_to in 4 place(s): authentik: table")
    assert result["databases"]["authentik"]["tables"]


def test_compare_to_many_differences_names_ten_in_the_message(monkeypatch):
    before = {f"db{n:02}": database() for n in range(12)}
    result, failed = run(monkeypatch, compare_to=before)[:2]
    assert failed and len(result["differences"]) == 14
    assert result["msg"].endswith(": " + "; ".join(result["differences"][:10]) + "; ... and 4 more")


def test_a_bad_compare_to_fails_before_the_server_is_touched(monkeypatch):
    result, failed, fake = run(monkeypatch, compare_to=dict(changed=False, databases={}))
    assert failed and "compare_to must be the databases value" in result["msg"]
    assert fake.calls == []


@pytest.mark.parametrize("marker, reply, message", [
    ("server_version_num", Reply(b"", b"psql: error: connection refused", exit_code=2),
     "(database template1) failed: exit status 2: psql: error: connection refused"),
    ("\\gexec", Reply(b"", b"ERROR:  permission denied for sequence s", exit_code=3),
     "(database authentik) failed: exit status 3: ERROR:  permission denied for sequence s"),
    ("COPY ", Reply(b"", b"ERROR:  permission denied for table t", exit_code=3),
     "permission denied for table t"),
    ("\\gexec", Reply(b"not json\n"), "unexpected answer from psql"),
    ("COPY ", Reply(b"", cut_at=0), "the stream was cut"),
])
def test_a_failing_psql_fails_the_task(monkeypatch, marker, reply, message):
    result, failed = run(monkeypatch, Server(fail={marker: reply}))[:2]
    assert failed and message in result["msg"], result["msg"]
