# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""A lexer-aware streaming scanner (and rewriter) of ``pg_dumpall`` scripts.

The scanner follows psql's view of the script: statements end at a ``;`` outside quotes, comments, dollar-quoted
bodies and parentheses; ``COPY ... FROM stdin;`` is followed by data lines up to a line ``\\.`` which pass through
untouched (in large blocks); a backslash outside quotes and comments is a psql meta-command. Text that merely looks
like a statement inside a function body, a comment or COPY data is never taken for one.

What it refuses (:class:`DumpRefused`, raised before anything is sent): a psql meta-command other than ``\\connect``,
``\\encoding``, ``\\restrict`` and ``\\unrestrict`` in their pg_dump forms (backquotes and variables in their
arguments would run commands), the sections of ``template1`` and ``postgres``, tablespaces, ``COPY`` from or to
anything but standard input, a change of ``standard_conforming_strings`` (it would change how psql splits the rest),
and database-level statements naming a database the dump does not create.

With a ``run_id`` it also rewrites (restore beside the live data): every database is created as
``akr_<run_id>_<n>``, database-level statements and ``\\connect`` lines point at that name, ``DROP DATABASE`` and
``DROP ROLE`` are left out, ``CREATE ROLE`` only creates a missing role, the connected role's ``CREATE``/``ALTER``
are left out, and ``GRANTED BY`` of role memberships is dropped (the grantor becomes the restoring role).

It also reads the dump's majors (``Dumped from database version`` and ``Dumped by pg_dump version``) and, when asked,
fingerprints every table's COPY data (see ``_pgproof``).
"""

from __future__ import annotations

import re

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import RestoreError

MAX_STATEMENT = 256 * 1024 * 1024
ALLOWED_META = ("\\connect", "\\encoding", "\\restrict", "\\unrestrict")
PROTECTED_DATABASES = ("template1", "postgres", "template0")


class DumpRefused(RestoreError):
    """The dump holds something a restore must not run; found before anything is touched."""


def temp_name(run_id, number):
    return f"akr_{run_id}_{number}"


def previous_name(run_id, number):
    return f"akp_{run_id}_{number}"


# --- lexer --------------------------------------------------------------------------------------------------------

_NEUTRAL = re.compile(rb"--|/\*|[eE]'|'|\"|\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$|\\|;|\(|\)")
_COMMENT = re.compile(rb"/\*|\*/")
_STRING = re.compile(rb"'")
_ESTRING = re.compile(rb"\\.|'", re.S)
_IDENT = re.compile(rb'"')
_IDENT_CHAR = re.compile(rb"[A-Za-z0-9_$\x80-\xff]")


class Lexer:
    """psql's lexical state over SQL text (not COPY data), fed line by line."""

    def __init__(self):
        self.state = "neutral"  # neutral, comment, string, estring, ident, dollar
        self.depth = 0  # nested /* */ depth
        self.parens = 0
        self.tag = b""

    @property
    def neutral(self):
        return self.state == "neutral"

    def scan(self, line):
        """Scan one line; returns (positions of statement-ending ``;``, position of a meta-command backslash)."""
        ends, pos, size = [], 0, len(line)
        while pos < size:
            if self.state == "neutral":
                match = _NEUTRAL.search(line, pos)
                if not match:
                    return ends, None
                token, pos = match.group(0), match.end()
                start = match.start()
                if token == b"--":
                    return ends, None
                if token == b"\\":
                    return ends, start
                if token == b";":
                    if self.parens == 0:
                        ends.append(start)
                elif token == b"(":
                    self.parens += 1
                elif token == b")":
                    self.parens = max(0, self.parens - 1)
                else:
                    pos = self._open(line, token, start, pos)
            else:
                pos = self._inside(line, pos)
        return ends, None

    def _open(self, line, token, start, pos):
        follows_word = start > 0 and _IDENT_CHAR.match(line, start - 1)
        if token == b"/*":
            self.state, self.depth = "comment", 1
        elif token in (b"e'", b"E'"):
            self.state = "string" if follows_word else "estring"
        elif token == b"'":
            self.state = "string"
        elif token == b'"':
            self.state = "ident"
        elif follows_word:  # a$b$ is an identifier, not a dollar quote
            return start + 1
        else:
            self.state, self.tag = "dollar", token
        return pos

    def _inside(self, line, pos):
        if self.state == "comment":
            match = _COMMENT.search(line, pos)
            if not match:
                return len(line)
            self.depth += 1 if match.group(0) == b"/*" else -1
            if self.depth == 0:
                self.state = "neutral"
            return match.end()
        if self.state == "dollar":
            found = line.find(self.tag, pos)
            if found < 0:
                return len(line)
            self.state = "neutral"
            return found + len(self.tag)
        pattern = {"string": _STRING, "estring": _ESTRING, "ident": _IDENT}[self.state]
        while True:
            match = pattern.search(line, pos)
            if not match:
                return len(line)
            pos = match.end()
            if len(match.group(0)) == 2:  # backslash escape in E'...'
                continue
            quote = match.group(0)
            if line[pos:pos + 1] == quote:  # '' or "" inside
                pos += 1
                continue
            self.state = "neutral"
            return pos


def skip_space_and_comments(text):
    """``text`` without leading white space and comments (``--`` lines, nested ``/* */``)."""
    pos = 0
    while True:
        match = re.compile(r"\s*").match(text, pos)
        pos = match.end()
        if text.startswith("--", pos):
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end + 1
        elif text.startswith("/*", pos):
            depth, pos = 1, pos + 2
            while depth and pos < len(text):
                nxt = re.compile(r"/\*|\*/").search(text, pos)
                if not nxt:
                    return ""
                depth += 1 if nxt.group(0) == "/*" else -1
                pos = nxt.end()
        else:
            return text[pos:]


# --- identifiers --------------------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"((?:[^"]|"")*)"')
_BARE = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")


def read_identifier(text, pos=0):
    """(name, end) of the SQL identifier at ``text[pos:]``, or (None, pos)."""
    match = _QUOTED.match(text, pos)
    if match:
        return match.group(1).replace('""', '"'), match.end()
    match = _BARE.match(text, pos)
    if match:
        return match.group(0).lower(), match.end()
    return None, pos


def quote_identifier(name):
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


_CONNINFO_VALUE = re.compile(r"dbname='((?:[^'\\]|\\.)*)'", re.S)


def connect_target(arguments):
    """The database a pg_dump ``\\connect`` line names (its three forms), or None for anything else."""
    match = re.fullmatch(r"([A-Za-z0-9_.]+)", arguments)
    if match:
        return match.group(1)
    match = re.fullmatch(r'"((?:[^"]|"")*)"', arguments)
    if match:
        return match.group(1).replace('""', '"')
    match = re.fullmatch(r'-reuse-previous=on "((?:[^"]|"")*)"', arguments)
    if match:
        conninfo = match.group(1).replace('""', '"')
        value = _CONNINFO_VALUE.fullmatch(conninfo)
        if value:
            return re.sub(r"\\(.)", r"\1", value.group(1), flags=re.S)
    return None


# --- statements ---------------------------------------------------------------------------------------------------

_VERSION = re.compile(rb"^-- Dumped (from database|by pg_dump) version (\d+)(?:\.(\d+))?")
_COPY_FROM_STDIN = re.compile(r"COPY\s+(.+?)\s+FROM\s+stdin\s*;\s*$", re.I | re.S)
_DB_STATEMENTS = (
    ("create", re.compile(r"CREATE\s+DATABASE\s+", re.I)),
    ("drop", re.compile(r"DROP\s+DATABASE\s+(?:IF\s+EXISTS\s+)?", re.I)),
    ("alter", re.compile(r"ALTER\s+DATABASE\s+", re.I)),
    ("comment", re.compile(r"COMMENT\s+ON\s+DATABASE\s+", re.I)),
    ("label", re.compile(r"SECURITY\s+LABEL\s+(?:FOR\s+(?:\"(?:[^\"]|\"\")*\"|\S+)\s+)?ON\s+DATABASE\s+", re.I)),
    ("acl", re.compile(r"(?:GRANT|REVOKE)\s+[A-Za-z_,\s]+?\s+ON\s+DATABASE\s+", re.I)),
    ("role_in_db", re.compile(r"ALTER\s+ROLE\s+(?:\"(?:[^\"]|\"\")*\"|\S+)\s+IN\s+DATABASE\s+", re.I)),
)
_TABLESPACE = re.compile(r"\bTABLESPACE\b", re.I)
_DEFAULT_TABLESPACE_OK = re.compile(r"SET\s+default_tablespace\s*=\s*''\s*;\s*$", re.I)
_SCS = re.compile(r"standard_conforming_strings", re.I)
_SCS_ON = re.compile(r"SET\s+standard_conforming_strings\s*=\s*on\s*;\s*$", re.I)
_COPY = re.compile(r"COPY\b", re.I)
_CREATE_ROLE = re.compile(r"CREATE\s+ROLE\s+", re.I)
_DROP_ROLE = re.compile(r"DROP\s+ROLE\s+(?:IF\s+EXISTS\s+)?", re.I)
_ALTER_ROLE = re.compile(r"ALTER\s+ROLE\s+", re.I)
_GRANTED_BY = re.compile(r"\s+GRANTED\s+BY\s+(?:\"(?:[^\"]|\"\")*\"|[^\s;]+)\s*;\s*$", re.I)
_MEMBERSHIP = re.compile(r"GRANT\s+(?:\"(?:[^\"]|\"\")*\"|[^\s;]+)\s+TO\s+", re.I)


class DumpScanner:
    """Scan (and with ``run_id`` rewrite) a pg_dumpall script; see the module's description.

    ``role`` is the role the restore connects as. ``fingerprint`` is a ``_pgproof.Fingerprint`` fed with every
    table's COPY data, or None. After a complete pass: ``majors`` ({"from": n, "by": n}), ``databases`` (original
    names in dump order), ``mapping`` ({original: temporary}), ``connects``, ``meta`` (meta-command counts),
    ``dropped_roles`` (the roles the dump drops, other than ``role``).
    """

    def __init__(self, role=None, run_id=None, fingerprint=None):
        self.role = role
        self.run_id = run_id
        self.fingerprint = fingerprint
        self.lexer = Lexer()
        self.copy = False
        self.statement = []
        self.statement_size = 0
        self.majors = {}
        self.databases = []
        self.dropped_roles = []
        self.mapping = {}
        self.connected = None
        self.line_number = 0

    # -- streaming --
    def process(self, chunks):
        buf = b""
        for block in chunks:
            buf = buf + bytes(block) if buf else bytes(block)
            out, buf = self._consume(buf, final=False)
            if out:
                yield out
        out, buf = self._consume(buf, final=True)
        if out:
            yield out
        if self.copy:
            raise DumpRefused("the dump ends inside COPY data (no line \\.): it is truncated")
        if self.statement and skip_space_and_comments(self._statement_text()).strip():
            raise DumpRefused("the dump ends inside an SQL statement: it is truncated")

    def _consume(self, buf, final):
        parts, pos, size = [], 0, len(buf)
        while pos < size:
            if self.copy:
                new = self._copy_data(buf, pos, parts, final)
                if new == pos:
                    break
                pos = new
                continue
            end = buf.find(b"\n", pos)
            if end < 0:
                if not final:
                    break
                end = size - 1
            self.line_number += 1
            out = self._line(buf[pos:end + 1])
            if out:
                parts.append(out)
            pos = end + 1
        return b"".join(parts), buf[pos:]

    def _copy_data(self, buf, pos, parts, final):
        """Pass COPY data through up to the terminator line; returns the new position."""
        if buf.startswith(b"\\.\n", pos) or (final and buf[pos:].rstrip(b"\r\n") == b"\\."):
            end = buf.find(b"\n", pos)
            end = len(buf) - 1 if end < 0 else end
            parts.append(buf[pos:end + 1])
            self._end_copy()
            return end + 1
        found = buf.find(b"\n\\.\n", pos)
        if found < 0 and final and buf.endswith(b"\n\\."):
            found = len(buf) - 3
        if found < 0:
            last = buf.rfind(b"\n", pos)
            if last < 0:
                return pos if not final else self._copy_tail(buf, pos, parts)
            self._data(buf[pos:last + 1], parts)
            return last + 1
        self._data(buf[pos:found + 1], parts)
        return found + 1

    def _copy_tail(self, buf, pos, parts):
        self._data(buf[pos:], parts)
        return len(buf)

    def _data(self, data, parts):
        parts.append(data)
        if self.fingerprint is not None:
            self.fingerprint.add_lines(data)

    def _end_copy(self):
        self.copy = False
        if self.fingerprint is not None:
            self.fingerprint.end_table()

    # -- SQL lines --
    def _line(self, line):
        if not self.statement and self.lexer.neutral and self.lexer.parens == 0:
            stripped = line.strip()
            if not stripped:
                return line
            if line.startswith(b"--"):
                self._comment(line)
                return line
            if line.startswith(b"\\"):
                return self._meta(line)
        ends, meta = self.lexer.scan(line)
        if meta is not None:
            raise self._refuse("a psql meta-command inside or after an SQL statement "
                               f"({self._show(line[meta:meta + 40])})")
        out, start = [], 0
        for end in ends:
            if self.copy:
                raise self._refuse("text after a COPY ... FROM stdin statement on the same line")
            self._add(line[start:end + 1])
            out.append(self._statement_done())
            start = end + 1
        rest = line[start:]
        if self.copy:
            if rest.strip():
                raise self._refuse("text after a COPY ... FROM stdin statement on the same line")
            out.append(rest)
        elif ends and not rest.strip():
            out.append(rest)
        else:
            self._add(rest)
        return b"".join(out)

    def _add(self, part):
        if part:
            self.statement.append(part)
            self.statement_size += len(part)
            if self.statement_size > MAX_STATEMENT:
                raise self._refuse(f"an SQL statement longer than {MAX_STATEMENT} bytes")

    def _statement_text(self):
        return b"".join(self.statement).decode("utf-8", "surrogateescape")

    def _statement_done(self):
        raw = b"".join(self.statement)
        self.statement, self.statement_size = [], 0
        text = raw.decode("utf-8", "surrogateescape")
        result = self._statement(skip_space_and_comments(text))
        if result is None:
            return raw
        return result.encode("utf-8", "surrogateescape")

    def _comment(self, line):
        match = _VERSION.match(line)
        if match:
            kind = "from" if match.group(1) == b"from database" else "by"
            major = int(match.group(2))  # 9.6 -> 9: older than any 10+
            self.majors[kind] = max(self.majors.get(kind, 0), major)

    # -- meta-commands --
    def _meta(self, line):
        text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
        command, _sep, arguments = text.partition(" ")
        if command not in ALLOWED_META:
            raise self._refuse(f"the psql meta-command {self._show(command.encode('utf-8', 'surrogateescape'))} "
                               f"(only {', '.join(ALLOWED_META)} may appear in a dump)")
        if command in ("\\restrict", "\\unrestrict"):
            if not re.fullmatch(r"[A-Za-z0-9]+", arguments):
                raise self._refuse(f"{command} with an argument that is not a plain key")
            return line
        if command == "\\encoding":
            if not re.fullmatch(r"[A-Za-z0-9_]+", arguments):
                raise self._refuse("\\encoding with an argument that is not an encoding name")
            return line
        name = connect_target(arguments)
        if name is None:
            raise self._refuse("a \\connect line not in pg_dump's form")
        if name in PROTECTED_DATABASES:
            raise self._refuse(f"a section of the database {name} (dump it with postgres_dump's default excludes)")
        if name not in self.mapping and self.run_id is not None:
            raise self._refuse(f"\\connect to the database {name!r}, which the dump does not create")
        self.connected = name
        if self.run_id is None:
            return line
        return f"\\connect {self.mapping[name]}\n".encode("ascii")

    # -- statements --
    def _statement(self, head):
        """The rewritten statement, or None to keep ``text`` as it is; raises DumpRefused."""
        self._check(head)
        copy = _COPY_FROM_STDIN.match(head)
        if copy:
            self.copy = True
            if self.fingerprint is not None:
                self.fingerprint.start_table(self.connected, copy.group(1))
            return None
        for kind, pattern in _DB_STATEMENTS:
            match = pattern.match(head)
            if match:
                return self._database_statement(kind, head, match)
        drop = _DROP_ROLE.match(head)
        if drop:
            name, _end = read_identifier(head, drop.end())
            if name is not None and name != self.role and name not in self.dropped_roles:
                self.dropped_roles.append(name)
        if self.run_id is None:
            return None
        return self._role_statement(head)

    def _check(self, head):
        if _COPY.match(head) and not _COPY_FROM_STDIN.match(head):
            raise self._refuse(f"a COPY other than COPY ... FROM stdin ({self._brief(head)})")
        if _SCS.search(head) and not _SCS_ON.match(head):
            raise self._refuse("a change of standard_conforming_strings")
        if re.match(r"SET\s+default_tablespace\b", head, re.I) and not _DEFAULT_TABLESPACE_OK.match(head):
            raise self._refuse(f"a tablespace ({self._brief(head)}); restore sets without tablespaces")
        if _TABLESPACE.search(head) and not _DEFAULT_TABLESPACE_OK.match(head):
            if not self._only_in_literals(head):
                raise self._refuse(f"a tablespace ({self._brief(head)}); restore sets without tablespaces")
        if re.match(r"UPDATE\s+pg_catalog\.pg_database\b", head, re.I):
            raise self._refuse("the section of template1 (UPDATE pg_catalog.pg_database)")

    @staticmethod
    def _only_in_literals(head):
        """True when TABLESPACE appears only inside a function body or string (not a tablespace clause)."""
        outside = re.sub(r"\$([A-Za-z_]*)\$.*?\$\1\$|'(?:[^']|'')*'", "", head, flags=re.S)
        return not _TABLESPACE.search(outside)

    def _database_statement(self, kind, head, match):
        name, end = read_identifier(head, match.end())
        if name is None:
            raise self._refuse(f"a database statement whose name cannot be read ({self._brief(head)})")
        if name in PROTECTED_DATABASES:
            raise self._refuse(f"a section of the database {name} ({self._brief(head)}; dump it with "
                               "postgres_dump's default excludes)")
        rest = head[end:]
        if kind == "create":
            if name in self.mapping:
                raise self._refuse(f"the database {name!r} is created twice")
            self.databases.append(name)
            self.mapping[name] = temp_name(self.run_id, len(self.databases)) if self.run_id else name
        elif kind == "drop":
            return "" if self.run_id is not None else None
        elif name not in self.mapping:
            raise self._refuse(f"a statement on the database {name!r}, which the dump does not create "
                               f"({self._brief(head)})")
        if kind == "acl" and not re.match(r"\s+(TO|FROM)\s", rest, re.I):
            raise self._refuse(f"a GRANT/REVOKE on several databases ({self._brief(head)})")
        if kind == "alter" and re.match(r"\s+RENAME\b", rest, re.I):
            raise self._refuse(f"ALTER DATABASE ... RENAME ({self._brief(head)})")
        if self.run_id is None:
            return None
        return head[:match.end()] + self.mapping[name] + rest

    def _role_statement(self, head):
        for pattern, action in ((_DROP_ROLE, "drop"), (_CREATE_ROLE, "create"), (_ALTER_ROLE, "alter")):
            match = pattern.match(head)
            if not match:
                continue
            name, end = read_identifier(head, match.end())
            if name is None:
                return None
            if action == "drop" or (name == self.role and action in ("create", "alter")):
                return ""
            if action == "create" and head[end:].strip() == ";":
                tag = f"$akbt_{self.run_id}$"
                return (f"DO {tag}BEGIN CREATE ROLE {quote_identifier(name)}; "
                        f"EXCEPTION WHEN duplicate_object THEN NULL; END{tag};")
            return None
        if _MEMBERSHIP.match(head) and not re.search(r"\bON\b", head, re.I):
            stripped = _GRANTED_BY.sub(";", head.rstrip())
            if stripped != head.rstrip():
                return stripped
        return None

    # -- messages --
    def _refuse(self, what):
        return DumpRefused(f"the dump holds {what} at line {self.line_number}; it was refused")

    @staticmethod
    def _show(raw):
        return repr(raw.decode("utf-8", "replace").strip()[:40])

    @staticmethod
    def _brief(head):
        return " ".join(head.split())[:80]


def major_problem(majors, server_major):
    """Why a dump of ``majors`` cannot go into a server of ``server_major``, or None."""
    for kind, label in (("from", "Dumped from database version"), ("by", "Dumped by pg_dump version")):
        major = majors.get(kind)
        if major is not None and major > server_major:
            return (f"the dump comes from a newer PostgreSQL ({label} {major}) than the target server "
                    f"({server_major}); a dump can only be restored into the same or a newer major")
    return None
