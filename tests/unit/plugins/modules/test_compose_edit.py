# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""compose_edit: the line edit of authentik's own Compose files (every other byte kept), its proof by parsing, the
backup copy, idempotence, check and diff mode, and each refusal (nothing written)."""

from __future__ import annotations

import datetime
import os
import re
import shutil

import pytest
import yaml

from fake_transport import run_main

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError, FormatError
from ansible_collections.authentik_ops.backup.plugins.modules import compose_edit

# authentik's published Compose files, byte for byte (the test bed's copies)
UPSTREAM = ["compose-2026.2.yml", "docker-compose-2025.2.yml"]
OLD_IMAGE = "docker.io/library/postgres:16-alpine"
IMAGE = "docker.io/library/postgres:17-alpine"
STAMPED = re.compile(r"\.\d{8}T\d{6}Z\.orig$")


def args(path, **more):
    return dict(dict(path=str(path), service="postgresql", image=IMAGE, volume="database",
                     new_volume="database-pg17"), **more)


def params(**more):
    return dict(dict(service="postgresql", image=IMAGE, volume="database", new_volume="database-pg17",
                     mount_path=None), **more)


def compose(tmp_path, text, name="docker-compose.yml", mode=0o640):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    path.chmod(mode)
    return path


def upstream(repo_root, tmp_path, name):
    path = tmp_path / name
    shutil.copyfile(repo_root / "tests" / "testbed" / "compose" / name, path)
    path.chmod(0o640)
    return path


def snapshot(directory):
    """Every file of ``directory`` with its bytes."""
    return {entry.name: entry.read_bytes() for entry in sorted(directory.iterdir())}


def expected_lines(original, mount):
    """The original lines with exactly the three intended changes, built independently of the module."""
    lines = original.splitlines(keepends=True)
    image = [i for i, line in enumerate(lines) if line.strip() == f"image: {OLD_IMAGE}"]
    item = [i for i, line in enumerate(lines) if line.strip() == "- database:/var/lib/postgresql/data"]
    decl = [i for i, line in enumerate(lines) if line == "  database:\n"]
    assert len(image) == len(item) == len(decl) == 1
    lines[image[0]] = lines[image[0]].replace(OLD_IMAGE, IMAGE)
    lines[item[0]] = lines[item[0]].replace("database:/var/lib/postgresql/data", mount)
    assert lines[decl[0] + 1] == "    driver: local\n"
    lines[decl[0] + 2:decl[0] + 2] = ["  database-pg17:\n", "    driver: local\n"]
    return lines


# --- authentik's own files, end to end through main() --------------------------------------------------------------

@pytest.mark.parametrize("name", UPSTREAM)
@pytest.mark.parametrize("mount_path", [None, "/var/lib/postgresql"])
def test_upstream_file_is_edited_line_by_line(monkeypatch, repo_root, tmp_path, name, mount_path):
    path = upstream(repo_root, tmp_path, name)
    os.chown(path, 1234, 4321)
    original = path.read_text(encoding="utf-8")
    more = {"mount_path": mount_path} if mount_path else {}
    result, failed = run_main(monkeypatch, compose_edit, args(path, **more))
    assert not failed, result
    mount = f"database-pg17:{mount_path or '/var/lib/postgresql/data'}"
    assert result["changed"] and result["path"] == str(path)
    assert (result["image"], result["image_before"]) == (IMAGE, OLD_IMAGE)
    assert (result["volume"], result["new_volume"], result["mount"]) == ("database", "database-pg17", mount)
    assert result["mount_before"] == "database:/var/lib/postgresql/data" and "diff" not in result
    # every other line byte for byte
    edited = path.read_text(encoding="utf-8")
    assert edited.splitlines(keepends=True) == expected_lines(original, mount)
    # the parsed structure: only the intended changes
    before, after = yaml.safe_load(original), yaml.safe_load(edited)
    before["services"]["postgresql"]["image"] = IMAGE
    before["services"]["postgresql"]["volumes"] = [mount]
    before["volumes"]["database-pg17"] = {"driver": "local"}
    assert after == before
    # the copy of the original, its mode and owner kept; the file's too
    backup = result["backup_file"]
    assert STAMPED.search(backup) and os.path.dirname(backup) == str(tmp_path)
    assert open(backup, "rb").read() == original.encode("utf-8")
    for one in (path, backup):
        stat = os.stat(one)
        assert (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid) == (0o640, 1234, 4321)
    assert sorted(os.listdir(tmp_path)) == sorted([name, os.path.basename(backup)])  # no temporary file left
    # a second run changes nothing and writes no second copy
    result, failed = run_main(monkeypatch, compose_edit, args(path, **more))
    assert not failed and not result["changed"] and "backup_file" not in result, result
    assert result["mount"] == mount and result["image_before"] == IMAGE
    assert path.read_text(encoding="utf-8") == edited
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("name", UPSTREAM)
def test_check_mode_writes_nothing_and_diff_mode_shows_the_text(monkeypatch, repo_root, tmp_path, name):
    path = upstream(repo_root, tmp_path, name)
    before = snapshot(tmp_path)
    result, failed = run_main(monkeypatch, compose_edit, args(path, _ansible_diff=True), check_mode=True)
    assert not failed and result["changed"] and "backup_file" not in result, result
    assert snapshot(tmp_path) == before
    diff = result["diff"]
    assert diff["before"] == before[name].decode() and diff["before_header"] == diff["after_header"] == str(path)
    assert diff["after"].splitlines(keepends=True) == expected_lines(diff["before"], result["mount"])
    # the real run writes exactly what check mode showed
    result, failed = run_main(monkeypatch, compose_edit, args(path, _ansible_diff=True))
    assert not failed and path.read_text(encoding="utf-8") == diff["after"] == result["diff"]["after"]


def test_refusal_through_main_writes_nothing(monkeypatch, repo_root, tmp_path):
    path = upstream(repo_root, tmp_path, UPSTREAM[0])
    before = snapshot(tmp_path)
    result, failed = run_main(monkeypatch, compose_edit, args(path, service="postgres"))
    assert failed and "has no service 'postgres'" in result["msg"] and "postgresql, server, worker" in result["msg"]
    assert snapshot(tmp_path) == before


def test_symbolic_link_is_followed_and_kept(monkeypatch, repo_root, tmp_path):
    (tmp_path / "real").mkdir()
    target = upstream(repo_root, tmp_path / "real", UPSTREAM[0])
    link = tmp_path / "docker-compose.yml"
    link.symlink_to(target)
    result, failed = run_main(monkeypatch, compose_edit, args(link))
    assert not failed and result["changed"] and result["path"] == str(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert f"image: {IMAGE}" in target.read_text(encoding="utf-8")
    assert os.path.dirname(result["backup_file"]) == str(tmp_path / "real")


def test_backup_false_writes_no_copy(monkeypatch, repo_root, tmp_path):
    path = upstream(repo_root, tmp_path, UPSTREAM[1])
    result, failed = run_main(monkeypatch, compose_edit, args(path, backup=False))
    assert not failed and result["changed"] and "backup_file" not in result
    assert os.listdir(tmp_path) == [UPSTREAM[1]]


def test_existing_backup_name_is_never_overwritten(monkeypatch, repo_root, tmp_path):
    path = upstream(repo_root, tmp_path, UPSTREAM[0])
    monkeypatch.setattr(compose_edit, "utc_stamp", lambda now=None: "20260301T020000Z")
    (tmp_path / f"{UPSTREAM[0]}.20260301T020000Z.orig").write_bytes(b"older copy")
    before = snapshot(tmp_path)
    result, failed = run_main(monkeypatch, compose_edit, args(path))
    assert failed and "exists already and is never overwritten" in result["msg"]
    assert snapshot(tmp_path) == before


def test_failed_rename_leaves_the_original_and_no_files(monkeypatch, repo_root, tmp_path):
    path = upstream(repo_root, tmp_path, UPSTREAM[0])
    before = snapshot(tmp_path)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compose_edit.os, "replace", refuse)
    result, failed = run_main(monkeypatch, compose_edit, args(path))
    assert failed and "could not be replaced" in result["msg"] and "No space left" in result["msg"]
    assert snapshot(tmp_path) == before


def test_owner_that_cannot_be_kept_is_refused(monkeypatch, repo_root, tmp_path):
    path = upstream(repo_root, tmp_path, UPSTREAM[0])
    os.chown(path, 1234, 4321)
    before = snapshot(tmp_path)

    def fchown(fd, uid, gid):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(compose_edit.os, "fchown", fchown)
    result, failed = run_main(monkeypatch, compose_edit, args(path))
    assert failed and "uid 1234 gid 4321" in result["msg"] and "become" in result["msg"]
    assert snapshot(tmp_path) == before


def test_file_changed_meanwhile_is_not_overwritten(monkeypatch, repo_root, tmp_path):
    path = upstream(repo_root, tmp_path, UPSTREAM[0])
    real_backup = compose_edit.write_backup

    def backup_then_edit(*a, **kw):
        made = real_backup(*a, **kw)
        path.write_text("services: {}\n", encoding="utf-8")  # someone else saves the file now
        return made

    monkeypatch.setattr(compose_edit, "write_backup", backup_then_edit)
    result, failed = run_main(monkeypatch, compose_edit, args(path))
    assert failed and "changed while it was being edited" in result["msg"]
    assert os.listdir(tmp_path) == [UPSTREAM[0]] and path.read_text(encoding="utf-8") == "services: {}\n"


def test_image_set_through_a_variable_warns(monkeypatch, tmp_path):
    path = compose(tmp_path, "services:\n  postgresql:\n    image: ${PG_IMAGE:-postgres:16}\n    volumes:\n"
                             "      - database:/var/lib/postgresql/data\nvolumes:\n  database:\n")
    result, failed = run_main(monkeypatch, compose_edit, args(path, backup=False))
    assert not failed and result["image_before"] == "${PG_IMAGE:-postgres:16}"
    assert any("set through a variable" in warning for warning in result["warnings"])


# --- the edit of other layouts ------------------------------------------------------------------------------------

BASE = """\
# authentik, operator's copy  (do not touch)
services:
  postgresql:   # the database
    image: {image}
    volumes:
{items}
    restart: unless-stopped
  server:
    image: ghcr.io/goauthentik/server:2026.2
volumes:
{decl}
  # media, bound elsewhere
  media: {{}}
"""


def base(image=OLD_IMAGE, items="      - database:/var/lib/postgresql/data", decl="  database:\n    driver: local"):
    return BASE.format(image=image, items=items, decl=decl)


def changed_lines(before, after):
    """The lines of ``after`` that are not in ``before`` at the same place, ignoring one inserted block."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    return [line for line in new if line not in old]


@pytest.mark.parametrize("image_text, wanted_line", [
    (OLD_IMAGE, f"    image: {IMAGE}\n"),
    (f'"{OLD_IMAGE}"   # pinned for PG16', f'    image: "{IMAGE}"   # pinned for PG16\n'),
    (f"'{OLD_IMAGE}'", f"    image: '{IMAGE}'\n"),
    (f"{OLD_IMAGE}  # see docs #3", f"    image: {IMAGE}  # see docs #3\n"),
])
def test_image_line_keeps_its_quoting_and_comment(image_text, wanted_line):
    text = base(image=image_text)
    plan = compose_edit.plan_edit(text, params())
    assert plan["changed"] and wanted_line in plan["text"]
    assert plan["image_before"] == OLD_IMAGE


@pytest.mark.parametrize("item, wanted", [
    ('      - "database:/var/lib/postgresql/data:rw"  # data', '      - "database-pg17:/var/lib/postgresql:rw"  # data'),
    ("      - 'database:/var/lib/postgresql/data:z'", "      - 'database-pg17:/var/lib/postgresql:z'"),
    ("      -   database:/var/lib/postgresql/data   # spaced", "      -   database-pg17:/var/lib/postgresql   # spaced"),
    ("    - database:/var/lib/postgresql/data", "    - database-pg17:/var/lib/postgresql"),
])
def test_quoted_and_commented_items_with_options_and_mount_path(item, wanted):
    items = f"      - ./conf:/etc/postgresql  # config\n{item}\n      - type: tmpfs\n        target: /tmp"
    if item.startswith("    -"):
        items = f"    - ./conf:/etc/postgresql  # config\n{item}"
    text = base(items=items)
    plan = compose_edit.plan_edit(text, params(mount_path="/var/lib/postgresql"))
    assert wanted + "\n" in plan["text"]
    assert "./conf:/etc/postgresql  # config\n" in plan["text"]
    assert plan["mount"] == yaml.safe_load(f"x: {wanted.split('- ', 1)[1]}")["x"]


@pytest.mark.parametrize("decl, copy", [
    ("  database:", "  database-pg17:"),
    ("  database: {}", "  database-pg17: {}"),
    ("  database:   # PG16 data", "  database-pg17:   # PG16 data"),
    ('  "database":\n    driver: local', '  "database-pg17":\n    driver: local'),
    ("  database:\n    driver: local\n    # keep\n    labels:\n      tier: db",
     "  database-pg17:\n    driver: local\n    # keep\n    labels:\n      tier: db"),
    ("  database: {driver: local}", "  database-pg17: {driver: local}"),
])
def test_volume_declaration_is_copied_after_itself(decl, copy):
    text = base(decl=decl)
    plan = compose_edit.plan_edit(text, params())
    assert f"{decl}\n{copy}\n  # media, bound elsewhere\n" in plan["text"]
    assert plan["text"].replace(f"{copy}\n", "", 1) == text.replace(OLD_IMAGE, IMAGE).replace(
        "- database:", "- database-pg17:")
    parsed = yaml.safe_load(plan["text"])
    assert parsed["volumes"]["database-pg17"] == parsed["volumes"]["database"]
    assert list(parsed["volumes"]) == ["database", "database-pg17", "media"]


def test_comments_and_all_other_lines_are_kept():
    text = base(items="      # the data\n      - database:/var/lib/postgresql/data # PGDATA\n      # end")
    plan = compose_edit.plan_edit(text, params())
    assert changed_lines(text, plan["text"]) == [
        f"    image: {IMAGE}\n", "      - database-pg17:/var/lib/postgresql/data # PGDATA\n", "  database-pg17:\n"]
    assert len(plan["text"].splitlines()) == len(text.splitlines()) + 2
    for line in text.splitlines(keepends=True):
        if "16-alpine" not in line and "- database:" not in line:
            assert line in plan["text"]


def test_crlf_bom_and_no_final_line_end():
    text = "\ufeff" + base(decl="  database:\n    driver: local").replace(
        "  # media, bound elsewhere\n  media: {}\n", "").replace("\n", "\r\n").rstrip("\r\n")
    plan = compose_edit.plan_edit(text, params())
    assert plan["text"].startswith("\ufeff# authentik")
    assert plan["text"].endswith("  database:\r\n    driver: local\r\n  database-pg17:\r\n    driver: local")
    assert "\n" not in plan["text"].replace("\r\n", "")
    assert yaml.safe_load(plan["text"].lstrip("\ufeff"))["volumes"]["database-pg17"] == {"driver": "local"}


def test_merge_keys_elsewhere_do_not_matter():
    text = ("x-common: &common\n  restart: unless-stopped\nservices:\n  postgresql:\n    <<: *common\n"
            f"    image: {OLD_IMAGE}\n    volumes:\n      - database:/var/lib/postgresql/data\n"
            "  server:\n    <<: *common\n    image: srv\nvolumes:\n  database:\n")
    plan = compose_edit.plan_edit(text, params())
    assert yaml.safe_load(plan["text"])["services"]["postgresql"]["restart"] == "unless-stopped"


def test_wanted_state_is_unchanged_and_a_half_done_edit_is_refused():
    done = compose_edit.plan_edit(base(), params())["text"]
    assert compose_edit.plan_edit(done, params()) == dict(
        changed=False, text=done, image_before=IMAGE, mount="database-pg17:/var/lib/postgresql/data",
        mount_before=None)
    # the same file but another mount_path asked: not the wanted state, and new_volume exists
    with pytest.raises(ConfigError, match="new_volume: database-pg17 is already declared"):
        compose_edit.plan_edit(done, params(mount_path="/var/lib/postgresql"))
    # image changed by hand already, the rest not: only the volume parts change
    half = base(image=IMAGE)
    plan = compose_edit.plan_edit(half, params())
    assert plan["changed"] and plan["image_before"] == IMAGE and plan["text"] == done


# --- refusals -----------------------------------------------------------------------------------------------------

REFUSALS = [
    # (file text, module arguments, error type, message part)
    ("services: [\n", {}, FormatError, "is not YAML"),
    ("- a\n- b\n", {}, FormatError, "top level is not a mapping"),
    (base(), {"service": "db"}, ConfigError, "has no service 'db'"),
    (base().replace(f"    image: {OLD_IMAGE}\n", "    extends:\n      file: base.yml\n      service: pg\n"), {},
     ConfigError, "the image is set in another file or by an extends: change it there"),
    (base(items="      - type: volume\n        source: database\n        target: /var/lib/postgresql/data"), {},
     ConfigError, "long syntax"),
    (base(items="      - pgdata:/var/lib/postgresql/data"), {}, ConfigError, "mounts no volume 'database'"),
    (base(items="      - database:/a\n      - database:/b"), {}, ConfigError, "more than once"),
    (base(decl="  pgdata:"), {}, ConfigError, "database is not declared under the top-level volumes:"),
    (base(decl="  database:\n  database-pg17:"), {}, ConfigError, "database-pg17 is already declared"),
    (base().replace("    image: ghcr.io/goauthentik/server:2026.2\n",
                    "    image: ghcr.io/goauthentik/server:2026.2\n    volumes: ['database-pg17:/x']\n"), {},
     ConfigError, "already mounted by server"),
    (base(decl="  database:\n    name: authentik_database"), {}, ConfigError, "declared with name"),
    (base(decl="  database:\n    external: true"), {}, ConfigError, "declared with external"),
    (base(decl="  database:\n    driver_opts:\n      type: none\n      o: bind\n      device: /srv/pg"), {},
     ConfigError, "driver_opts.device"),
    (base(items="      [database:/var/lib/postgresql/data]").replace("    volumes:\n      [", "    volumes: ["), {},
     FormatError, "not a block sequence"),
    (base().replace("    volumes:\n", "    volumes: &pgvolumes\n"), {}, FormatError, "not a block sequence"),
    (base().replace(f"    image: {OLD_IMAGE}\n", f"    image: &img {OLD_IMAGE}\n"), {}, FormatError,
     "services.postgresql.image is not a string on the line of its key"),
    (base().replace(f"    image: {OLD_IMAGE}\n", f"    image:\n      {OLD_IMAGE}\n"), {}, FormatError,
     "not a string on the line"),
    ("services: {postgresql: {image: postgres:16, volumes: ['database:/d']}}\nvolumes: {database: {}}\n", {},
     FormatError, "no line of the key 'postgresql' under services"),
    (f"services:\n  postgresql:\n    image: {OLD_IMAGE}\n    volumes:\n      - database:/d\n"
     "volumes: {database: {driver: local}}\n", {}, FormatError,
     "no line of the key 'database' under the top-level volumes"),
    (base(), {"new_volume": "database"}, ConfigError, "new_volume must differ from volume"),
    (base(), {"new_volume": "-pg17"}, ConfigError, "is not a Compose volume name"),
    (base(), {"mount_path": "var/lib/postgresql"}, ConfigError, "must be an absolute container path"),
    (base(), {"image": "postgres 17"}, ConfigError, "is not an image reference"),
]


@pytest.mark.parametrize("text, more, error, message", REFUSALS)
def test_refusals_name_the_problem_and_write_nothing(monkeypatch, tmp_path, text, more, error, message):
    path = compose(tmp_path, text)
    before = snapshot(tmp_path)
    with pytest.raises(error, match=re.escape(message)):
        compose_edit.check_options(params(**more))
        compose_edit.plan_edit(text, params(**more), str(path))
    result, failed = run_main(monkeypatch, compose_edit, args(path, **more))
    assert failed and message in result["msg"], result
    assert snapshot(tmp_path) == before


def test_layout_refusal_says_what_to_change_by_hand():
    text = "services: {postgresql: {image: postgres:16, volumes: ['database:/d']}}\nvolumes: {database: {}}\n"
    with pytest.raises(FormatError) as failed:
        compose_edit.plan_edit(text, params(), "compose.yml")
    assert ("Change it by hand: in services.postgresql set image: docker.io/library/postgres:17-alpine and mount "
            "database-pg17:/d instead of database") in failed.value.msg
    assert failed.value.msg.endswith("Nothing was written.")


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("unreadable", "cannot be read"),
    ("binary", "is not a UTF-8 text file"),
])
def test_file_that_cannot_be_read(monkeypatch, tmp_path, problem, message):
    path = tmp_path / "docker-compose.yml"
    if problem == "unreadable":
        path.mkdir()
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe\x00services")
    result, failed = run_main(monkeypatch, compose_edit, args(path))
    assert failed and message in result["msg"]


def test_a_line_edit_that_parses_differently_is_refused(monkeypatch, tmp_path):
    # a plain image continued on the next line: the line holds only part of the value
    text = base().replace(f"    image: {OLD_IMAGE}\n", "    image: docker.io/library/postgres:16\n      -alpine\n")
    path = compose(tmp_path, text)
    with pytest.raises(FormatError, match="does not give the intended change") as failed:
        compose_edit.plan_edit(text, params(), str(path))
    assert failed.value.fields["difference"] == (
        f"services.postgresql.image is '{IMAGE} -alpine' instead of '{IMAGE}'")
    result, failed = run_main(monkeypatch, compose_edit, args(path))
    assert failed and "Change it by hand" in result["msg"] and os.listdir(tmp_path) == ["docker-compose.yml"]


def test_verification_catches_a_wrong_line_edit(monkeypatch):
    real = compose_edit.edit_lines

    def off_by_one(lines, parameters, item):
        lines, new_item = real(lines, parameters, item)
        return [line.replace("driver: local", "driver: locale", 1) for line in lines], new_item

    monkeypatch.setattr(compose_edit, "edit_lines", off_by_one)
    with pytest.raises(FormatError, match=re.escape("volumes.database.driver is 'locale' instead of 'local'")):
        compose_edit.plan_edit(base(), params())


# --- helpers -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "a", "a\n", "a\nb", "a\r\nb\r\n", "\n\n", "a\n\nb\n"])
def test_split_lines_gives_the_text_back(text):
    lines = compose_edit.split_lines(text)
    assert "".join(lines) == text and all(line.endswith("\n") for line in lines[:-1])


@pytest.mark.parametrize("text, parsed", [
    ("database:/d", ("database:/d", "database:/d", "")),
    ("database:/d  # c", ("database:/d", "database:/d", "  # c")),
    ("a#b", ("a#b", "a#b", "")),
    ("'it''s' # c", ("'it''s'", "it's", " # c")),
    ('"a\\"b"', ('"a\\"b"', 'a"b', "")),
    ("type: volume", None),
    ("&x value", None),
    ("*x", None),
    ("[a]", None),
    ("|", None),
    ("16", None),
    ("", None),
    ("'open", None),
])
def test_parse_scalar(text, parsed):
    assert compose_edit.parse_scalar(text) == parsed


@pytest.mark.parametrize("value, token, written", [
    ("postgres:17", "postgres:16", "postgres:17"),
    ("postgres:17", '"postgres:16"', '"postgres:17"'),
    ("it's", "'x'", "'it''s'"),
    ("a: b", "x", '"a: b"'),
    ("17", "x", '"17"'),
    ("#x", "x", '"#x"'),
])
def test_render_keeps_the_style_when_it_reads_back(value, token, written):
    assert compose_edit.render(value, token) == written
    assert yaml.safe_load(f"k: {written}") == {"k": value}


def test_backup_name_is_utc():
    now = datetime.datetime(2026, 3, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
    assert compose_edit.utc_stamp(now) == "20260301T020304Z"


@pytest.mark.parametrize("expected, found, said", [
    ({"a": {"b": 1}}, {"a": {"b": 1}}, None),
    ({"a": {"b": 1}}, {"a": {}}, "a.b is missing"),
    ({"a": {}}, {"a": {"c": 1}}, "a.c is there, which it should not be"),
    ({"a": [1, 2]}, {"a": [1]}, "a has 1 items instead of 2"),
    ({"a": ["x:/d"]}, {"a": ["y:/d"]}, "a[0] is 'y:/d' instead of 'x:/d'"),
    ({"a": "1"}, {"a": 1}, "a is 1 instead of '1'"),
    ([1], {"a": 1}, "the top level is {'a': 1} instead of [1]"),
])
def test_first_difference_names_the_place(expected, found, said):
    assert compose_edit.first_difference(expected, found) == said


def test_image_only_and_volume_only_edits_change_only_their_lines():
    """An override may set the image while the main file mounts the volume: each file gets only its own change."""
    text = base()
    image_only = compose_edit.plan_edit(text, params(volume=None, new_volume=None))
    assert changed_lines(text, image_only["text"]) == [f"    image: {IMAGE}\n"]
    assert image_only["mount"] is None
    volume_only = compose_edit.plan_edit(text, params(image=None))
    changed = changed_lines(text, volume_only["text"])
    assert "      - database-pg17:/var/lib/postgresql/data\n" in changed and not any("image:" in c for c in changed)
    assert OLD_IMAGE in volume_only["text"]
    # each is idempotent
    assert not compose_edit.plan_edit(image_only["text"], params(volume=None, new_volume=None))["changed"]
    assert not compose_edit.plan_edit(volume_only["text"], params(image=None))["changed"]


def test_image_only_needs_no_volumes_and_an_override_without_image_is_refused_for_it():
    override = "services:\n  postgresql:\n    network_mode: none\n    image: akbt.local/postgres:15\n"
    plan = compose_edit.plan_edit(override, params(volume=None, new_volume=None))
    assert plan["text"] == override.replace("akbt.local/postgres:15", IMAGE)
    with pytest.raises(compose_edit.ConfigError, match="has no image: line"):
        compose_edit.plan_edit("services:\n  postgresql:\n    network_mode: none\n",
                               params(volume=None, new_volume=None))


@pytest.mark.parametrize("more, message", [
    (dict(image=None, volume=None, new_volume=None), "nothing to change"),
    (dict(new_volume=None), "volume and new_volume go together"),
])
def test_options_that_ask_for_nothing_or_half_a_volume_are_refused(more, message):
    with pytest.raises(compose_edit.ConfigError, match=message):
        compose_edit.check_options(params(**more))
