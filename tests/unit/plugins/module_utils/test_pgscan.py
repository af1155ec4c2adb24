# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pg_dumpall scanner/rewriter and the COPY fingerprint on hostile dumps."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._pgproof import Fingerprint, copy_out_sql, differences
from ansible_collections.authentik_ops.backup.plugins.module_utils._pgscan import (
    DumpRefused,
    DumpScanner,
    connect_target,
    major_problem,
    read_identifier,
)

WEIRD = "Wéird \"Quoted\" DB 表 'x'"
WEIRD_SQL = '"Wéird ""Quoted"" DB 表 \'x\'"'
WEIRD_CONNECT = '\\connect -reuse-previous=on "dbname=\'Wéird ""Quoted"" DB 表 \\\'x\\\'\'"'
LONG = "ü" * 31 + "a"  # 63 bytes

HOSTILE = f"""--
-- PostgreSQL database cluster dump
--

\\restrict F3Be

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

DROP DATABASE IF EXISTS {WEIRD_SQL};
DROP DATABASE IF EXISTS authentik;
DROP DATABASE IF EXISTS "{LONG}";

DROP ROLE IF EXISTS akbt_app;
DROP ROLE IF EXISTS authentik;

CREATE ROLE akbt_app;
ALTER ROLE akbt_app WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x';
CREATE ROLE authentik;
ALTER ROLE authentik WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:y';
GRANT akbt_reader TO akbt_app WITH INHERIT TRUE GRANTED BY authentik;

\\unrestrict F3Be

--
-- Databases
--

--
-- Database "{WEIRD}" dump
--

\\restrict ujKI

-- Dumped from database version 15.18 (Debian 15.18-1.pgdg120+1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-1.pgdg120+1)

SET statement_timeout = 0;
CREATE DATABASE {WEIRD_SQL} WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE = 'C.UTF-8';
ALTER DATABASE {WEIRD_SQL} OWNER TO akbt_app;

\\unrestrict ujKI
\\encoding SQL_ASCII
{WEIRD_CONNECT}
\\restrict ujKI

COMMENT ON DATABASE {WEIRD_SQL} IS 'a comment ✓';
ALTER DATABASE {WEIRD_SQL} SET work_mem TO '8MB';
ALTER ROLE akbt_app IN DATABASE {WEIRD_SQL} SET statement_timeout TO '5s';
SECURITY LABEL FOR dummy ON DATABASE {WEIRD_SQL} IS 'x';

CREATE FUNCTION public.evil() RETURNS text
    LANGUAGE plpgsql
    AS $_$
\\connect authentik
CREATE DATABASE evil;
GRANT ALL ON DATABASE authentik TO PUBLIC;
COPY x FROM stdin;
SELECT 'it''s; fine' /* ; */;
$_$;

/* ALTER DATABASE authentik SET x = 1;
   \\! id */

CREATE RULE r AS ON INSERT TO public.t DO (INSERT INTO public.u VALUES (1); INSERT INTO public.u VALUES (2););

COPY public.t (id, txt) FROM stdin;
1\t\\\\connect authentik
2\tCREATE DATABASE evil;
3\t\\\\.
4\t$$ ; ' "
\\.

SELECT E'a\\'; \\\\! id', 'x', a$b$ FROM t;
GRANT CONNECT,TEMPORARY ON DATABASE {WEIRD_SQL} TO akbt_app;

\\unrestrict ujKI

--
-- Database "authentik" dump
--

\\restrict abc
-- Dumped from database version 15.18
-- Dumped by pg_dump version 15.18
CREATE DATABASE authentik WITH TEMPLATE = template0 ENCODING = 'UTF8';
\\unrestrict abc
\\connect authentik
\\restrict abc
COPY public."We;ird" ("a b") FROM stdin;
x
\\N
\\.
ALTER DATABASE authentik SET search_path TO 'public';
REVOKE CONNECT,TEMPORARY ON DATABASE authentik FROM PUBLIC;
\\unrestrict abc
CREATE DATABASE "{LONG}";
\\connect "{LONG}"

--
-- PostgreSQL database cluster dump complete
--
"""


def scan(text, size=1 << 20, **kwargs):
    scanner = DumpScanner(**kwargs)
    data = text.encode("utf-8") if isinstance(text, str) else text
    out = b"".join(scanner.process([data[i:i + size] for i in range(0, len(data), size)]))
    return scanner, out.decode("utf-8")


@pytest.mark.parametrize("size", [1, 2, 7, 100, 1 << 20])
def test_check_only_passes_everything_through(size):
    scanner, out = scan(HOSTILE, size, role="authentik")
    assert out == HOSTILE
    assert scanner.majors == {"from": 15, "by": 15}
    assert scanner.databases == [WEIRD, "authentik", LONG]


@pytest.mark.parametrize("size", [1, 3, 64, 1 << 20])
def test_rewrite_to_temporary_names(size):
    scanner, out = scan(HOSTILE, size, role="authentik", run_id="r1")
    assert scanner.mapping == {WEIRD: "akr_r1_1", "authentik": "akr_r1_2", LONG: "akr_r1_3"}
    assert "DROP DATABASE" not in out and "DROP ROLE" not in out
    assert "CREATE DATABASE akr_r1_1 WITH TEMPLATE = template0" in out
    assert "ALTER DATABASE akr_r1_1 OWNER TO akbt_app;" in out
    assert "\\encoding SQL_ASCII\n\\connect akr_r1_1\n" in out
    assert "COMMENT ON DATABASE akr_r1_1 IS 'a comment ✓';" in out
    assert "ALTER ROLE akbt_app IN DATABASE akr_r1_1 SET statement_timeout" in out
    assert "SECURITY LABEL FOR dummy ON DATABASE akr_r1_1 IS 'x';" in out
    assert "GRANT CONNECT,TEMPORARY ON DATABASE akr_r1_1 TO akbt_app;" in out
    assert "REVOKE CONNECT,TEMPORARY ON DATABASE akr_r1_2 FROM PUBLIC;" in out
    assert "ALTER DATABASE akr_r1_2 SET search_path TO 'public';" in out
    assert "\\connect akr_r1_3\n" in out and f'\\connect "{LONG}"' not in out
    # roles: additive, the connected role untouched, GRANTED BY dropped
    assert "DO $akbt_r1$BEGIN CREATE ROLE akbt_app; EXCEPTION WHEN duplicate_object THEN NULL; END$akbt_r1$;" in out
    assert "ALTER ROLE akbt_app WITH NOSUPERUSER" in out
    assert "CREATE ROLE authentik" not in out and "ALTER ROLE authentik" not in out
    assert "GRANT akbt_reader TO akbt_app WITH INHERIT TRUE;\n" in out
    # function body, comment, rule and COPY data byte-identical
    for part in ("$_$\n\\connect authentik\nCREATE DATABASE evil;\nGRANT ALL ON DATABASE authentik TO PUBLIC;\n"
                 "COPY x FROM stdin;\nSELECT 'it''s; fine' /* ; */;\n$_$;",
                 "/* ALTER DATABASE authentik SET x = 1;\n   \\! id */",
                 "1\t\\\\connect authentik\n2\tCREATE DATABASE evil;\n3\t\\\\.\n4\t$$ ; ' \"\n\\.\n",
                 "SELECT E'a\\'; \\\\! id', 'x', a$b$ FROM t;"):
        assert part in out


def test_fingerprint_of_copy_lines():
    fingerprint = Fingerprint()
    scan(HOSTILE, 5, fingerprint=fingerprint, run_id="r1")
    tables = fingerprint.tables
    assert list(tables) == [(WEIRD, "public.t (id, txt)"), ("authentik", 'public."We;ird" ("a b")')]
    lines = [b"1\t\\\\connect authentik", b"2\tCREATE DATABASE evil;", b"3\t\\\\.", b"4\t$$ ; ' \""]
    expected = sum(int.from_bytes(hashlib.md5(x).digest()[:8], "big", signed=True) for x in lines)
    assert tables[(WEIRD, "public.t (id, txt)")] == [4, expected]
    # order-independent, duplicates count
    other = Fingerprint()
    other.start_table(WEIRD, "public.t  (id, txt)")
    other.add_lines(b"".join(x + b"\n" for x in reversed(lines)))
    assert other.tables[(WEIRD, "public.t (id, txt)")] == [4, expected]
    other.add_lines(lines[0] + b"\n")
    assert differences(tables, other.tables)[0].startswith(f"{WEIRD}: public.t (id, txt): 4 rows in the dump, 5")
    assert differences(tables, tables) == []
    assert copy_out_sql('public."We;ird" ("a b")') == 'COPY public."We;ird" ("a b") TO STDOUT;'


@pytest.mark.parametrize("bad, cause", [
    ("\\! id\n", "meta-command '\\\\!'"),
    ("SELECT 1; \\! id\n", "meta-command inside or after"),
    ("SELECT 1 \\g\n", "meta-command inside or after"),
    ("   \\o /tmp/x\n", "meta-command inside or after"),
    ("\\i /etc/passwd\n", "meta-command '\\\\i'"),
    ("\\set x `id`\n", "meta-command '\\\\set'"),
    ("\\connect `id`\n", "\\connect line not in pg_dump's form"),
    ("\\connect :foo\n", "\\connect line not in pg_dump's form"),
    ("\\connect template1\n", "section of the database template1"),
    ("\\encoding `id`\n", "not an encoding name"),
    ("\\restrict a`id`\n", "not a plain key"),
    ("UPDATE pg_catalog.pg_database SET datistemplate = false WHERE datname = 'template1';\n", "template1"),
    ("DROP DATABASE template1;\n", "database template1"),
    ("DROP DATABASE postgres;\n", "database postgres"),
    ("CREATE DATABASE postgres WITH TEMPLATE = template0;\n", "database postgres"),
    ("CREATE TABLESPACE ts OWNER x LOCATION '/x';\n", "tablespace"),
    ("CREATE DATABASE a WITH TABLESPACE = ts;\n", "tablespace"),
    ("SET default_tablespace = ts;\n", "tablespace"),
    ("COPY t FROM PROGRAM 'id';\n", "COPY other than"),
    ("COPY t TO '/tmp/x';\n", "COPY other than"),
    ("SET standard_conforming_strings = off;\n", "standard_conforming_strings"),
    ("/* hidden */ ALTER DATABASE authentik SET x = 1;\n", "does not create"),
    ("GRANT CONNECT ON DATABASE authentik TO PUBLIC;\n", "does not create"),
    ("COPY t FROM stdin; SELECT 1;\n1\n\\.\n", "text after a COPY"),
])
def test_refused(bad, cause):
    text = HOSTILE.replace("SET statement_timeout = 0;\n", "SET statement_timeout = 0;\n" + bad, 1)
    with pytest.raises(DumpRefused) as info:
        scan(text, run_id="r1")
    assert cause in info.value.msg and "refused" in info.value.msg, info.value.msg


def test_function_body_mentioning_tablespace_passes():
    body = "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$SELECT 'TABLESPACE'$$;\n"
    scan(HOSTILE.replace("SET statement_timeout = 0;\n", "SET statement_timeout = 0;\n" + body, 1), run_id="r1")


@pytest.mark.parametrize("tail", ["COPY public.t (a) FROM stdin;\n1\n", "SELECT 'open\n", "CREATE TABLE t (a int\n"])
def test_truncated_inside_a_statement(tail):
    with pytest.raises(DumpRefused, match="truncated"):
        scan("-- PostgreSQL database cluster dump\n" + tail)


def test_identifiers_and_connect_forms():
    assert read_identifier('"a""b" x') == ('a"b', 6)
    assert read_identifier("Authentik;") == ("authentik", 9)
    assert connect_target("akbt_extra") == "akbt_extra"
    assert connect_target('"Upper"') == "Upper"
    assert connect_target(WEIRD_CONNECT[len("\\connect "):]) == WEIRD
    assert connect_target("-reuse-previous=on \"dbname='x' host=evil\"") is None


def test_majors():
    newer = "the dump comes from a newer PostgreSQL "
    assert major_problem({"from": 15, "by": 17}, 15).startswith(newer + "(Dumped by pg_dump version 17)")
    assert major_problem({"from": 17, "by": 17}, 15).startswith(newer + "(Dumped from database version 17)")
    assert major_problem({"from": 15, "by": 15}, 17) is None
    assert major_problem({}, 15) is None
    scanner, _out = scan(HOSTILE.replace("version 15.18 (Debian", "version 17.6 (Debian", 1))
    assert scanner.majors == {"from": 17, "by": 15}


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_dropped_roles_are_listed_except_the_connected_one(run_id):
    scanner, _out = scan(HOSTILE, 64, role="authentik", run_id=run_id)
    assert scanner.dropped_roles == ["akbt_app"]
    scanner, _out = scan(HOSTILE, 64, role="someone", run_id=run_id)
    assert scanner.dropped_roles == ["akbt_app", "authentik"]
