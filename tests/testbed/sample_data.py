"""Hostile sample data for the test bed: PostgreSQL SQL, Redis commands and files for the bind-mounted folders."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from pathlib import Path

EXTRA_DATABASES = ["akbt_extra", "données ünï-表"]
EXTRA_ROLES = ["akbt_app", "akbt_reader"]
UNICODE_SCHEMA = "ünïcødé_表"
UNICODE_TABLE = "tåble ✓ Ω"
HOSTILE_TEXT = (
    "line1\nline2\r\nwith\ttab and \\backslash\\ and 'single' \"double\" quotes\n"
    "\\.\n"  # COPY's end-of-data marker on a line of its own
    "ünïcødé 表 ✓ 🦊 RTL: שלום zero-width:\u200b combining: e\u0301"
)


def _lit(text):
    """SQL string literal (standard_conforming_strings on)."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name):
    return '"' + name.replace('"', '""') + '"'


def postgres_sql(pg_user, pg_db, db_size_mb=0):
    """psql script (run as the superuser, connected to ``postgres``) that (re)creates the sample data."""
    u = _ident(pg_user)
    parts = ["\\set ON_ERROR_STOP 1", "SET client_min_messages = warning;"]
    for db in EXTRA_DATABASES:
        parts.append(f"DROP DATABASE IF EXISTS {_ident(db)};")
    for role in EXTRA_ROLES:
        parts.append(f"DROP ROLE IF EXISTS {_ident(role)};")
    parts.append("CREATE ROLE akbt_app LOGIN PASSWORD 'akbt-app-pw' CONNECTION LIMIT 20;")
    parts.append("CREATE ROLE akbt_reader LOGIN PASSWORD 'akbt-reader-pw' VALID UNTIL '2099-01-01';")
    parts.append("COMMENT ON ROLE akbt_reader IS 'read-only role of the akbt test bed ✓';")
    parts.append(f"CREATE DATABASE {_ident(EXTRA_DATABASES[0])} OWNER akbt_app;")
    parts.append(f"CREATE DATABASE {_ident(EXTRA_DATABASES[1])};")

    # --- the authentik database ------------------------------------------------------------------------------------
    parts.append(f"\\connect {_ident(pg_db)}")
    parts.append("SET client_min_messages = warning;")
    s, t = _ident(UNICODE_SCHEMA), _ident(UNICODE_TABLE)
    parts.append(f"""
DROP SCHEMA IF EXISTS {s} CASCADE;
DROP TABLE IF EXISTS public.authentik_core_user, public.authentik_events_event, public."MixedCase",
    public.akbt_blobs, public.akbt_bulk CASCADE;
SELECT lo_unlink(oid) FROM pg_largeobject_metadata;

CREATE TABLE public.authentik_core_user (
    id serial PRIMARY KEY,
    username text NOT NULL UNIQUE,
    name text,
    email text,
    is_active boolean NOT NULL DEFAULT true,
    attributes jsonb NOT NULL DEFAULT '{{}}',
    last_login timestamptz,
    uuid uuid NOT NULL
);
INSERT INTO public.authentik_core_user (username, name, email, is_active, attributes, last_login, uuid)
SELECT 'user' || i, 'Üser ' || i || ' 表', 'user' || i || '@example.org', i % 7 <> 0,
       jsonb_build_object('n', i, 'tags', jsonb_build_array('ä', 'b\\c', E'new\\nline')),
       CASE WHEN i % 3 = 0 THEN NULL ELSE timestamptz '2026-01-01 00:00:00+00' + i * interval '37 minutes' END,
       md5(i::text)::uuid
FROM generate_series(1, 500) AS i;
INSERT INTO public.authentik_core_user (username, name, email, uuid)
VALUES ('akadmin', {_lit(HOSTILE_TEXT)}, NULL, '00000000-0000-0000-0000-000000000001');

CREATE TABLE public.authentik_events_event (
    event_uuid uuid PRIMARY KEY,
    action text NOT NULL,
    context jsonb,
    created timestamptz NOT NULL,
    client_ip inet
);
INSERT INTO public.authentik_events_event
SELECT md5('event' || i)::uuid, (ARRAY['login', 'logout', 'model_created', 'secret_view'])[1 + i % 4],
       jsonb_build_object('i', i, 'text', repeat('ü', i % 13), 'null', NULL),
       timestamptz '2026-02-01 00:00:00+00' + i * interval '1 second', ('10.0.' || (i % 250) || '.' || (i % 200))::inet
FROM generate_series(1, 2000) AS i;

CREATE TABLE public."MixedCase" ("select" text, "Column With Space" int, "ÜmlautCol" numeric(20, 6), nothing text);
INSERT INTO public."MixedCase" VALUES
    ('reserved', 1, 3.141593, NULL), (NULL, NULL, NULL, NULL), ('', 0, -0.000001, ''),
    ({_lit(HOSTILE_TEXT)}, 2147483647, 99999999999999.999999, E'\\\\N');

-- bytea: all 256 byte values, random bytes, a few MiB
CREATE TABLE public.akbt_blobs (id int PRIMARY KEY, label text, data bytea, big text);
INSERT INTO public.akbt_blobs (id, label, data)
SELECT 1, 'all 256 byte values', decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex')
FROM generate_series(0, 255) AS i;
INSERT INTO public.akbt_blobs (id, label, data)
SELECT 2, 'reversed, twice', decode(string_agg(lpad(to_hex(255 - (i % 256)), 2, '0'), '' ORDER BY i), 'hex')
FROM generate_series(0, 511) AS i;
INSERT INTO public.akbt_blobs (id, label, data)
SELECT 3, 'random 3 MiB', decode(string_agg(md5(random()::text || i), ''), 'hex') FROM generate_series(1, 196608) AS i;
INSERT INTO public.akbt_blobs (id, label, big)
SELECT 10 + i, 'large text row ' || i, repeat(md5(i::text) || E'\\n\\t\\\\ü', 131072) FROM generate_series(1, 3) AS i;
INSERT INTO public.akbt_blobs (id, label, data, big) VALUES (20, NULL, NULL, NULL), (21, '', '', '');

-- a large object
SELECT lo_from_bytea(424242, decode(repeat('00ff7f80', 100000), 'hex'));

CREATE SCHEMA {s};
CREATE TABLE {s}.{t} (
    "ïd" bigserial PRIMARY KEY,
    "cølumn ü" text,
    "数据" bytea,
    "ärray" text[],
    "flöat" double precision,
    "zeit" timestamptz
);
INSERT INTO {s}.{t} ("cølumn ü", "数据", "ärray", "flöat", "zeit") VALUES
    ({_lit(HOSTILE_TEXT)}, '\\x00ff00ff5c0a0d09'::bytea, ARRAY['a', NULL, 'ü "q"', E'b\\\\s'], 0.1, '2026-11-30 12:00:00+00'),
    (NULL, NULL, NULL, NULL, NULL),
    ('NaN and infinities', ''::bytea, '{{}}', 'NaN', 'infinity'),
    ('tiny float', '\\x'::bytea, ARRAY[''], 1e-300, '-infinity');
CREATE VIEW {s}."vüe" AS SELECT "ïd", "cølumn ü" FROM {s}.{t};
COMMENT ON TABLE {s}.{t} IS {_lit(HOSTILE_TEXT)};
GRANT USAGE ON SCHEMA {s} TO akbt_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO akbt_reader;
GRANT SELECT ON public.authentik_core_user TO akbt_reader;
""")
    if db_size_mb and int(db_size_mb) > 0:
        rows = int(db_size_mb) * 1024  # ~1 KiB of text per row
        parts.append(f"""
CREATE TABLE public.akbt_bulk (id bigint PRIMARY KEY, created timestamptz NOT NULL, payload text NOT NULL);
INSERT INTO public.akbt_bulk
SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) ||
       repeat(md5(i::text) || ' ', 20) || md5(random()::text) || md5(random()::text) || md5(random()::text) ||
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
FROM generate_series(1, {rows}) AS i;
""")
    parts.append(f"ALTER DATABASE {_ident(pg_db)} SET search_path TO public;")

    # --- the other databases ------------------------------------------------------------------------------------------
    parts.append(f"\\connect {_ident(EXTRA_DATABASES[0])}")
    parts.append("""
SET ROLE akbt_app;
CREATE TABLE app_settings (key text PRIMARY KEY, value text);
INSERT INTO app_settings VALUES ('theme', 'dark'), ('motd', E'hello\\nworld\\t\\\\'), ('nothing', NULL);
CREATE SEQUENCE app_counter START 1000;
SELECT nextval('app_counter'), nextval('app_counter');
RESET ROLE;
""")
    parts.append(f"\\connect {_ident(EXTRA_DATABASES[1])}")
    parts.append(f"""
CREATE TABLE "ünïcødé_表" ("ключ" int PRIMARY KEY, "値" text, "octets" bytea);
INSERT INTO "ünïcødé_表"
SELECT i, repeat('表', i % 50) || ' ' || i, decode(lpad(to_hex(i % 256), 2, '0') || 'ff00', 'hex')
FROM generate_series(1, 300) AS i;
ALTER TABLE "ünïcødé_表" OWNER TO {u};
""")
    return "\n".join(parts) + "\n"


def redis_commands(seed=42):
    """Commands that fill a Redis with a few hundred keys of every type. Deterministic for a given seed."""
    rnd = random.Random(seed)
    cmds = [("FLUSHALL",)]
    for i in range(120):
        value = bytes(rnd.getrandbits(8) for _i in range(rnd.randint(0, 300)))
        cmds.append(("SET", f"authentik_cache:str:{i}", value))
    cmds.append(("SET", "binary:all-bytes", bytes(range(256))))
    cmds.append(("SET", b"binary-key-\xff\xfe\x00-nonutf8", b"\x80\x81\xc3\x28 not utf-8"))
    cmds.append(("SET", "ünïcødé key 表", "värde ✓ 🦊"))
    cmds.append(("SET", "key with spaces and\ttab", "line1\nline2\r\n"))
    cmds.append(("SET", "empty-string", b""))
    cmds.append(("SET", "big:string", bytes(rnd.getrandbits(8) for _i in range(200_000))))
    for i in range(60):
        fields = []
        for j in range(rnd.randint(1, 12)):
            fields += [f"field {j} ü", bytes(rnd.getrandbits(8) for _i in range(rnd.randint(0, 40)))]
        cmds.append(("HSET", f"authentik_session:{i:04d}", *fields))
    cmds.append(("HSET", "hash:binary-fields", b"\x00\xff", b"\x01", "ü", "表"))
    for i in range(60):
        items = [f"item-{k}-{rnd.random():.6f}" for k in range(rnd.randint(1, 20))]
        cmds.append(("RPUSH", f"list:{i}", *items))
    cmds.append(("RPUSH", "list:dupes and binary", "a", "a", b"\xff", "", "a"))
    for i in range(50):
        members = [f"m{rnd.randint(0, 1000)}" for _i in range(rnd.randint(1, 15))]
        cmds.append(("SADD", f"set:{i}", *members))
    cmds.append(("SADD", "set:ünïcødé", "ä", "表", b"\xfe\xff"))
    for i in range(50):
        args = []
        for k in range(rnd.randint(1, 15)):
            args += [f"{rnd.uniform(-1000, 1000):.17g}", f"member-{k}"]
        cmds.append(("ZADD", f"zset:{i}", *args))
    cmds.append(("ZADD", "zset:special", "-inf", "minus-inf", "inf", "plus-inf", "0", "zero", "1e-300", "tiny"))
    for i in range(10):
        cmds.append(("SET", f"ttl:{i}", f"expires later {i}", "EX", str(86400 * (i + 1))))
    cmds.append(("HSET", "ttl:hash", "f", "v"))
    cmds.append(("EXPIRE", "ttl:hash", "604800"))
    cmds.append(("SELECT", "1"))
    cmds.append(("SET", "db1:key", "in database 1"))
    cmds.append(("SELECT", "0"))
    return cmds


def _pem(kind, rnd, lines):
    body = base64.b64encode(bytes(rnd.getrandbits(8) for _i in range(48 * lines))).decode()
    wrapped = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}-----\n{wrapped}\n-----END {kind}-----\n"


def write_files(workdir, layout, seed=7, owner=(1000, 1000)):
    """Create the bind-mounted folders of a stack with hostile content. Returns the folders created."""
    rnd = random.Random(seed)
    wd = Path(workdir)
    media_root = wd / "data" / "media" if layout == "current" else wd / "media"
    app_dir = wd / "data" if layout == "current" else wd / "media"
    dirs = [app_dir, wd / "custom-templates", wd / "certs"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    icons = media_root / "public" / "application-icons"
    icons.mkdir(parents=True, exist_ok=True)
    (icons / "ünïcødé 表.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rnd.randbytes(64 * 1024))
    (icons / "plain.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><text>ü</text></svg>\n', encoding="utf-8")
    bg = media_root / "public" / "flow-backgrounds"
    bg.mkdir(parents=True, exist_ok=True)
    (bg / "name with spaces.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rnd.randbytes(256 * 1024))
    (media_root / "big-random.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (media_root / "zero-length").write_bytes(b"")
    (media_root / "empty-dir").mkdir(exist_ok=True)
    deep = media_root / "nested" / "a" / "b" / "c"
    deep.mkdir(parents=True, exist_ok=True)
    (deep / "deep.txt").write_text("deep ü\n", encoding="utf-8")
    link = media_root / "link to icon"
    if not link.is_symlink():
        link.symlink_to(Path("public") / "application-icons" / "ünïcødé 表.png")
    dangling = media_root / "dangling-link"
    if not dangling.is_symlink():
        dangling.symlink_to("does/not/exist")
    private = media_root / "private-0600.txt"
    private.write_text("private\n", encoding="utf-8")
    private.chmod(0o600)
    script = media_root / "exec-0755.sh"
    script.write_text("#!/bin/sh\necho hi\n", encoding="utf-8")
    script.chmod(0o755)
    if layout == "current":
        reports = app_dir / "reports"
        reports.mkdir(exist_ok=True)
        (reports / "users-2026-11.csv").write_text(
            "username,email\nakadmin,root@localhost\nüser,ü@example.org\n", encoding="utf-8"
        )

    tpl = wd / "custom-templates"
    (tpl / "email").mkdir(exist_ok=True)
    (tpl / "email" / "ünï welcome.html").write_text("<p>Wïllkommen {{ user.name }} ✓</p>\n", encoding="utf-8")
    (tpl / "login.html").write_text(
        '{% extends "base/skeleton.html" %}\n{% block body %}hi{% endblock %}\n', encoding="utf-8"
    )
    (tpl / "empty").mkdir(exist_ok=True)

    certs = wd / "certs"
    (certs / "akbt.example.org.pem").write_text(_pem("CERTIFICATE", rnd, 20), encoding="utf-8")
    key = certs / "akbt.example.org.key"
    key.write_text(_pem("PRIVATE KEY", rnd, 10), encoding="utf-8")
    key.chmod(0o600)
    (certs / "sub dir ü").mkdir(exist_ok=True)
    (certs / "sub dir ü" / "chain.pem").write_text(
        _pem("CERTIFICATE", rnd, 12) + _pem("CERTIFICATE", rnd, 12), encoding="utf-8"
    )

    if owner:
        for d in (app_dir, tpl):
            for root, subdirs, files in os.walk(d):
                for name in subdirs + files + ["."]:
                    os.lchown(os.path.join(root, name), *owner)
    return [str(d) for d in dirs]


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
