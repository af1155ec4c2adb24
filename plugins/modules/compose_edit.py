#!/usr/bin/python
# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: compose_edit
short_description: Point the database service of a Compose file at a new image and a new named volume
version_added: 0.1.0
description:
  - For a PostgreSQL major upgrade of a Docker Compose deployment. Changes, in the operator's own Compose file
    O(path), the service O(service) to run O(image) on the new named volume O(new_volume) instead of O(volume). The
    old volume is left declared and untouched, for a rollback.
  - "Three things change, each on its own lines. The value of the service's C(image:) line (its quoting style and
    a trailing comment are kept). The service's volume item C(- <volume>:<path>[:<options>]) (short syntax only,
    optionally quoted), which becomes C(- <new_volume>:<mount path>[:<options>]). And the declaration of O(volume)
    under the top-level C(volumes:), whose lines are copied with the key renamed to O(new_volume) and inserted
    right after it (C(database:), C(database: {}) and a nested block such as C(driver: local) all work)."
  - Every other line of the file is kept byte for byte, comments, key order, quoting and layout included.
  - The edit is made line by line and then proved by parsing. The original file parsed, with the intended changes
    applied to the parsed structure, must equal the edited file parsed. When it does not (flow style, anchors or
    merge keys, long-syntax volumes, keys not where expected), or when the file is not what the task expects (no
    such service, no C(image:) line, no such volume item, O(volume) not declared, O(new_volume) already declared or
    used), the module fails with a message that names the problem and what to change by hand, and writes nothing.
  - A volume declared with C(name:), C(external:) or C(driver_opts.device) is refused, since its copy would lead to
    the same storage as the old one.
  - The file is replaced atomically. The new text goes to a temporary file in the same directory, with the mode and
    owner of the original. That file is synced and renamed over O(path), and then the directory is synced.
    When O(path) is a symbolic link, the file it leads to is replaced (and copied), and the link is kept.
author:
  - authentik_ops maintainers (@authentik-ops)
extends_documentation_fragment:
  - authentik_ops.backup._common
attributes:
  check_mode:
    support: full
    details:
      - Plans and proves the edit and reports what would change (in diff mode with the text); writes nothing.
  diff_mode:
    support: full
    details:
      - Returns the whole file before and after the edit.
  idempotent:
    support: full
    details:
      - A file that already runs O(image) on O(new_volume) (declared, mounted, O(volume) no longer mounted by the
        service) is left alone and reported unchanged.
options:
  path:
    description:
      - The Compose file to edit, for example C(/opt/authentik/docker-compose.yml).
    type: path
    required: true
  service:
    description:
      - The service to change, as named under C(services:) in O(path).
    type: str
    required: true
  image:
    description:
      - The new image reference, written as it is given (a variable such as C(${PG_IMAGE}) in the old value is
        replaced, with a warning).
      - Without it the image is not changed (it may be set in another file, such as an override). At least one of
        O(image) and O(volume) is required.
    type: str
  volume:
    description:
      - The named volume the service mounts its data from today, its key under the top-level C(volumes:).
      - Without it (and O(new_volume)) the volumes are not changed.
    type: str
  new_volume:
    description:
      - The key of the new named volume. It must not be declared or used in O(path) yet, unless the file is already
        exactly in the wanted state (then nothing changes).
      - Docker Compose creates it as C(<project>_<new_volume>) on the next C(docker compose up).
      - Required with O(volume).
    type: str
  mount_path:
    description:
      - The container path the new volume is mounted at, for example V(/var/lib/postgresql) for the PostgreSQL 18
        and later images (which keep their data below it, in a directory of the major version).
      - Defaults to the path O(volume) was mounted at. Mount options after a second colon (C(:rw), C(:z)) are kept
        either way.
    type: str
  backup:
    description:
      - Before the file is replaced, copy the original to C(<path>.<UTC time YYYYmmddTHHMMSSZ>.orig), with its mode,
        owner and times, and return its name in RV(backup_file). An existing file of that name is never overwritten.
    type: bool
    default: true
requirements:
  - The Python library C(PyYAML) on the host the module runs on.
notes:
  - Only the file O(path) is read. When the service's image or volumes are set in another Compose file (an
    override file, C(extends:), C(include:)), change them there.
  - Stop the service before the edit takes effect (C(docker compose up -d) with the edited file creates the new,
    empty volume and a container of the new image on it).
seealso:
  - module: authentik_ops.backup.postgres_dump
  - module: authentik_ops.backup.postgres_restore
"""

EXAMPLES = r"""
- name: Run authentik's database on PostgreSQL 17 with a new volume, keeping the old one for a rollback
  authentik_ops.backup.compose_edit:
    path: /opt/authentik/docker-compose.yml
    service: postgresql
    image: docker.io/library/postgres:17-alpine
    volume: database
    new_volume: database-pg17
  register: compose_edit

- name: PostgreSQL 18 and later keep their data below /var/lib/postgresql
  authentik_ops.backup.compose_edit:
    path: /opt/authentik/docker-compose.yml
    service: postgresql
    image: docker.io/library/postgres:18-alpine
    volume: database
    new_volume: database-pg18
    mount_path: /var/lib/postgresql
"""

RETURN = r"""
changed:
  description: Whether the file was (or in check mode would be) changed.
  returned: always
  type: bool
  sample: true
path:
  description: The Compose file.
  returned: always
  type: str
  sample: /opt/authentik/docker-compose.yml
backup_file:
  description: The copy of the original file that was written before it was replaced.
  returned: the file was changed and O(backup=true), not in check mode
  type: str
  sample: /opt/authentik/docker-compose.yml.20260301T020000Z.orig
image:
  description: The service's image after the task.
  returned: success
  type: str
  sample: docker.io/library/postgres:17-alpine
image_before:
  description: The service's image before the task.
  returned: success
  type: str
  sample: docker.io/library/postgres:16-alpine
volume:
  description: The old named volume (O(volume)), still declared.
  returned: success
  type: str
  sample: database
new_volume:
  description: The new named volume (O(new_volume)).
  returned: success
  type: str
  sample: database-pg17
mount:
  description: The service's volume item of the new volume, as parsed (without quotes).
  returned: success
  type: str
  sample: database-pg17:/var/lib/postgresql/data
mount_before:
  description: The service's volume item of the old volume before the task, or V(null) when nothing changed.
  returned: success
  type: str
  sample: database:/var/lib/postgresql/data
diff:
  description: The file's text before and after the task.
  returned: diff mode
  type: dict
  contains:
    before:
      description: The original text.
      type: str
    after:
      description: The edited text.
      type: str
    before_header:
      description: O(path).
      type: str
    after_header:
      description: O(path).
      type: str
"""

import copy
import datetime
import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.yaml import HAS_YAML, yaml_load

from ansible_collections.authentik_ops.backup.plugins.module_utils._common import run_module
from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError, FormatError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import fsync_dir

# Compose's own rule for volume and service names.
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# A block mapping key on one line: indent, key (plain, 'single' or "double" quoted), colon, the rest.
KEY_LINE = re.compile(r"""(?P<indent> *)(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"?:,\[\]{}&*!|>%@`-][^#]*?"""
                      r"""|-[^\s#][^#]*?)[ \t]*:(?=[ \t]|$)(?P<rest>.*)""")
# A block sequence item: indent and dash with the spaces after it, then the item.
ITEM_LINE = re.compile(r"(?P<prefix> *-(?:[ \t]+|$))(?P<rest>.*)")
QUOTED = {"'": re.compile(r"'(?:[^']|'')*'"), '"': re.compile(r'"(?:[^"\\]|\\.)*"')}
TAIL = re.compile(r"[ \t]*(?:#.*)?")
BOM = "\ufeff"


# --- the lines of the file -----------------------------------------------------------------------------------------

def split_lines(text):
    """The lines of ``text``, each with its line end; joined they give ``text`` back."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def body(line):
    return line.rstrip("\r\n")


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def is_content(line):
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def is_item(line, indent):
    """Whether ``line`` is an item (``- ...``) of a block sequence at ``indent``."""
    return indent_of(line) == indent and ITEM_LINE.fullmatch(body(line)[indent:]) is not None


def block_end(lines, start, stop):
    """The index after the last line of the block opened by the key line ``lines[start]``: its deeper lines (and
    the items of an indentless sequence), not the blank and comment lines that follow it."""
    indent = indent_of(lines[start])
    last = start
    for index in range(start + 1, stop):
        line = lines[index]
        if not is_content(line):
            continue
        if indent_of(line) < indent or (indent_of(line) == indent and not is_item(line, indent)):
            break
        last = index
    return last + 1


def load(text, what):
    """``text`` parsed with PyYAML's safe loader; FormatError when it is not YAML."""
    try:
        return yaml_load(text)
    except Exception as exc:  # yaml.YAMLError and the constructors' ValueError/TypeError: not YAML either way
        raise FormatError(f"{what} is not YAML: {' '.join(str(exc).split())}") from None


def parse_scalar(text):
    """``(token, value, tail)`` of a string written on one line (plain, 'single' or "double" quoted, then nothing
    or a comment), or None for anything else: flow collections, anchors, aliases, tags, block scalars, a mapping,
    a value that is not a string."""
    if not text or text[0] in "&*!|>{[%@`#,?":
        return None
    if text[0] in QUOTED:
        match = QUOTED[text[0]].match(text)
        if not match or not TAIL.fullmatch(text[match.end():]):
            return None
        token = match.group()
    else:
        cut = re.search(r"[ \t]+#", text)
        token = (text[:cut.start()] if cut else text).rstrip()
        if re.search(r":(?:[ \t]|$)", token) or re.match(r"-(?:[ \t]|$)", token):
            return None
    try:
        value = yaml_load(token)
    except Exception:  # pylint: disable=broad-exception-caught  # not a scalar we can read: not ours to edit
        return None
    if not isinstance(value, str):
        return None
    return token, value, text[len(token):]


def render(value, token):
    """``value`` written in the style of ``token`` (the old value): the same quotes, plain when it can be."""
    if token.startswith("'"):
        return "'" + value.replace("'", "''") + "'"
    if token.startswith('"') or not plain_ok(value):
        return json.dumps(value)
    return value


def plain_ok(value):
    """Whether ``value`` reads back as the same string when written plain."""
    if not value or value != value.strip() or any(char in value for char in "\r\n\t"):
        return False
    try:
        return yaml_load(f"k: {value}\n") == {"k": value}
    except Exception:  # pylint: disable=broad-exception-caught  # not plain YAML: it gets quotes
        return False


def key_lines(lines, start, stop):
    """``{key: [index, ...]}`` of the mapping keys one level below the key line ``lines[start]`` (the block ends
    before ``stop``); {} when that block is not a block mapping."""
    child = None
    found = {}
    for index in range(start + 1, stop):
        line = lines[index]
        if not is_content(line):
            continue
        if child is None:
            child = indent_of(line)
        if indent_of(line) != child:
            continue
        match = KEY_LINE.fullmatch(body(line))
        if match is not None:
            found.setdefault(key_of(match), []).append(index)
    return found


def top_level_keys(lines):
    found = {}
    for index, line in enumerate(lines):
        if is_content(line) and indent_of(line) == 0:
            match = KEY_LINE.fullmatch(body(line))
            if match is not None:
                found.setdefault(key_of(match), []).append(index)
    return found


def key_of(match):
    """The key of a KEY_LINE match, unquoted (None for a quoted key that cannot be read)."""
    key = match.group("key")
    if key[0] not in QUOTED:
        return key
    scalar = parse_scalar(key)
    return scalar[1] if scalar else None


class LayoutError(Exception):
    """The file is valid, but its lines are not laid out as the line edit expects."""


def one(found, key, where):
    """The one line of ``key`` in ``found``; LayoutError when there is none or more than one."""
    indexes = found.get(key, [])
    if len(indexes) != 1:
        raise LayoutError(f"{'no' if not indexes else 'more than one'} line of the key {key!r} under {where}")
    return indexes[0]


# --- the parsed structure ------------------------------------------------------------------------------------------

def split_mount(item):
    """``(source, target, options)`` of a short-syntax volume item, or None when it has no source."""
    parts = item.split(":", 2)
    if len(parts) < 2:
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def join_mount(source, target, options):
    return f"{source}:{target}" + (f":{options}" if options is not None else "")


def mounts_of(service_def):
    items = service_def.get("volumes") if isinstance(service_def, dict) else None
    return items if isinstance(items, list) else []


def short_items(service_def, source):
    """``[(index, item), ...]`` of the short-syntax volume items of ``source``."""
    return [(index, item) for index, item in enumerate(mounts_of(service_def))
            if isinstance(item, str) and split_mount(item) and split_mount(item)[0] == source]


def users_of(data, name):
    """The services that mount the named volume ``name`` (short or long syntax)."""
    services = data.get("services") if isinstance(data.get("services"), dict) else {}
    return sorted(str(svc) for svc, definition in services.items()
                  if short_items(definition, name)
                  or any(isinstance(item, dict) and item.get("source") == name for item in mounts_of(definition)))


def declared_volumes(data):
    volumes = data.get("volumes")
    return volumes if isinstance(volumes, dict) else {}


def by_hand(params, target=None):
    """What to change by hand, for the messages of a refused edit."""
    if not params.get("volume"):
        return f"Change it by hand: in services.{params['service']} set image: {params['image']}."
    mount = join_mount(params["new_volume"], params["mount_path"] or target or "<the same path>", None)
    image = f"set image: {params['image']} and " if params.get("image") else ""
    return (f"Change it by hand: in services.{params['service']} {image}mount "
            f"{mount} instead of {params['volume']} (keep its options), and declare {params['new_volume']} under "
            f"the top-level volumes: as {params['volume']} is.")


def wanted_state(data, params):
    """The new volume's item when the file already is in the wanted state, else None."""
    services = data.get("services")
    service_def = services.get(params["service"]) if isinstance(services, dict) else None
    if not isinstance(service_def, dict):
        return None
    if params.get("image") and service_def.get("image") != params["image"]:
        return None
    if not params.get("volume"):
        return ""
    if params["new_volume"] not in declared_volumes(data) or short_items(service_def, params["volume"]):
        return None
    items = short_items(service_def, params["new_volume"])
    if len(items) != 1 or (params["mount_path"] and split_mount(items[0][1])[1] != params["mount_path"]):
        return None
    return items[0][1]


def check_structure(data, params, path):
    """The old volume item ``(index, item)`` after checking the parsed file; ConfigError names what is missing."""
    service, volume, new_volume = params["service"], params["volume"], params["new_volume"]
    services = data.get("services")
    if not isinstance(services, dict) or not isinstance(services.get(service), dict):
        names = ", ".join(sorted(str(name) for name in services)) if isinstance(services, dict) else "none"
        raise ConfigError(f"service: {path} has no service {service!r} under services: (services there: {names}); "
                          "give the name of the database service")
    service_def = services[service]
    if params.get("image") and "image" not in service_def:
        raise ConfigError(f"services.{service} of {path} has no image: line: the image is set in another file or by "
                          f"an extends: change it there (image: {params['image']}) and the volume by hand; "
                          "nothing was written")
    if not volume:
        return None, None
    declared = declared_volumes(data)
    used = users_of(data, new_volume)
    if new_volume in declared or used:
        where = "declared under the top-level volumes:" if new_volume in declared else ""
        where += (" and " if where and used else "") + (f"mounted by {', '.join(used)}" if used else "")
        raise ConfigError(f"new_volume: {new_volume} is already {where} in {path}, and the file is not in the wanted "
                          "state; choose another name, or restore the file from its .orig copy of a half-done edit")
    items = short_items(service_def, volume)
    if not items:
        long_syntax = [item for item in mounts_of(service_def) if isinstance(item, dict) and item.get("source") == volume]
        if long_syntax:
            raise ConfigError(f"services.{service} of {path} mounts the volume {volume} in the long syntax "
                              f"(source: {volume}), which this module does not edit. {by_hand(params)}")
        raise ConfigError(f"volume: services.{service} of {path} mounts no volume {volume!r} in the short syntax "
                          f"(- {volume}:<path>); its volumes: {mounts_of(service_def)}")
    if len(items) > 1:
        raise ConfigError(f"services.{service} of {path} mounts the volume {volume} more than once "
                          f"({', '.join(pair[1] for pair in items)}); change it by hand")
    target = split_mount(items[0][1])[1]
    if volume not in declared:
        raise ConfigError(f"volume: {volume} is not declared under the top-level volumes: of {path}; the volume "
                          "mounted from another file or created outside Compose is not edited here. "
                          f"{by_hand(params, target)}")
    definition = declared[volume] if isinstance(declared[volume], dict) else {}
    driver_opts = definition.get("driver_opts") if isinstance(definition.get("driver_opts"), dict) else {}
    shared = [key for key in ("name", "external") if definition.get(key)]
    if driver_opts.get("device"):
        shared.append("driver_opts.device")
    if shared:
        raise ConfigError(f"volume: {volume} is declared with {', '.join(shared)} in {path}: a copy of its "
                          "declaration would lead to the same storage, not to a new volume. Declare "
                          f"{new_volume} by hand (its own name or device), then mount it in services.{service}")
    return items[0]


def intended(data, params, index, new_item):
    """The parsed file with the intended change applied."""
    wanted = copy.deepcopy(data)
    service_def = wanted["services"][params["service"]]
    if params.get("image"):
        service_def["image"] = params["image"]
    if not params.get("volume"):
        return wanted
    service_def["volumes"][index] = new_item
    wanted["volumes"][params["new_volume"]] = copy.deepcopy(wanted["volumes"][params["volume"]])
    return wanted


def first_difference(expected, found, where=""):
    """Where ``found`` first differs from ``expected``, in words (``services.db.image is ...``), or None when
    they are equal."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in list(expected) + [key for key in found if key not in expected]:
            at = f"{where}.{key}" if where else str(key)
            if key not in found:
                return f"{at} is missing"
            if key not in expected:
                return f"{at} is there, which it should not be"
            difference = first_difference(expected[key], found[key], at)
            if difference:
                return difference
        return None
    if isinstance(expected, list) and isinstance(found, list):
        if len(expected) != len(found):
            return f"{where or 'the top level'} has {len(found)} items instead of {len(expected)}"
        for index, (one_expected, one_found) in enumerate(zip(expected, found)):
            difference = first_difference(one_expected, one_found, f"{where}[{index}]")
            if difference:
                return difference
        return None
    if expected != found or type(expected) is not type(found):
        return f"{where or 'the top level'} is {found!r} instead of {expected!r}"
    return None


# --- the edit ------------------------------------------------------------------------------------------------------

def edit_lines(lines, params, item):
    """The edited lines (a new list) and the new volume item (parsed). Raises LayoutError when a key or the item
    is not found on a line of its own."""
    service, volume, new_volume = params["service"], params["volume"], params["new_volume"]
    lines = list(lines)
    top = top_level_keys(lines)

    def top_block(key):
        start = one(top, key, "the top level")
        return start, block_end(lines, start, len(lines))

    services_start, services_end = top_block("services")
    service_start = one(key_lines(lines, services_start, services_end), service, "services")
    service_end = block_end(lines, service_start, services_end)
    keys = key_lines(lines, service_start, service_end)

    if params.get("image"):
        edit_image(lines, keys, params)
    if not volume:
        return lines, None
    return edit_volume(lines, params, item, service, volume, new_volume, top, service_end, keys, top_block)


def edit_image(lines, keys, params):
    """Point the image line of the service at ``params["image"]`` (in place)."""
    service = params["service"]
    image_line = one(keys, "image", f"services.{service}")
    match = KEY_LINE.fullmatch(body(lines[image_line]))
    rest = match.group("rest")
    scalar = parse_scalar(rest.lstrip(" \t"))
    if scalar is None:
        raise LayoutError(f"services.{service}.image is not a string on the line of its key")
    token, old_image = scalar[:2]
    if old_image != params["image"]:
        cut = match.start("rest") + len(rest) - len(rest.lstrip(" \t"))
        line = lines[image_line]
        lines[image_line] = line[:cut] + render(params["image"], token) + line[cut + len(token):]


def edit_volume(lines, params, item, service, volume, new_volume, top, service_end, keys, top_block):
    """Mount the new volume instead of ``item`` and declare it like the old one (in place); returns the lines and
    the new item."""
    del top
    # the service's volume item
    volumes_line = one(keys, "volumes", f"services.{service}")
    if TAIL.fullmatch(KEY_LINE.fullmatch(body(lines[volumes_line])).group("rest")) is None:
        raise LayoutError(f"services.{service}.volumes is not a block sequence (- item lines)")
    volumes_end = block_end(lines, volumes_line, service_end)
    item_lines = []
    indent = None
    for index in range(volumes_line + 1, volumes_end):
        line = lines[index]
        if not is_content(line):
            continue
        indent = indent_of(line) if indent is None else indent
        if not is_item(line, indent):
            continue
        match = ITEM_LINE.fullmatch(body(line)[indent:])
        scalar = parse_scalar(match.group("rest"))
        if scalar and scalar[1] == item:
            item_lines.append((index, indent + len(match.group("prefix")), scalar[0]))
    if len(item_lines) != 1:
        raise LayoutError(f"{'no' if not item_lines else 'more than one'} line - {item} under "
                          f"services.{service}.volumes")
    target, options = split_mount(item)[1:]
    new_item = join_mount(new_volume, params["mount_path"] or target, options)
    index, cut, token = item_lines[0]
    line = lines[index]
    lines[index] = line[:cut] + render(new_item, token) + line[cut + len(token):]

    # the declaration of the new volume: a copy of the old one's lines, the key renamed
    volumes_start, volumes_end = top_block("volumes")
    decl_start = one(key_lines(lines, volumes_start, volumes_end), volume, "the top-level volumes")
    decl_end = block_end(lines, decl_start, volumes_end)
    copied = lines[decl_start:decl_end]
    match = KEY_LINE.fullmatch(body(copied[0]))
    key = match.group("key")
    copied[0] = match.group("indent") + render(new_volume, key if key[0] in QUOTED else "") + copied[0][match.end("key"):]
    if not lines[decl_end - 1].endswith("\n"):  # the file's last line had no line end: it gets one
        lines[decl_end - 1] += "\r\n" if lines[0].endswith("\r\n") else "\n"
        copied[-1] = body(copied[-1])
    lines[decl_end:decl_end] = copied
    return lines, new_item


def plan_edit(text, params, path="the file"):
    """What the edit of the Compose file ``text`` gives, proved by parsing: a dict with ``changed``, ``text`` (the
    new text), ``image_before``, ``mount`` and ``mount_before``. Raises ConfigError or FormatError (with what to
    change by hand) when the file cannot be edited as asked."""
    bom = BOM if text.startswith(BOM) else ""
    text = text[len(bom):]
    data = load(text, path)
    if not isinstance(data, dict):
        raise FormatError(f"{path} is not a Compose file: its top level is not a mapping")
    done = wanted_state(data, params)
    if done is not None:
        return dict(changed=False, text=bom + text, image_before=params["image"], mount=done or None,
                    mount_before=None)
    index, item = check_structure(data, params, path)
    image_before = data["services"][params["service"]].get("image")
    try:
        lines, new_item = edit_lines(split_lines(text), params, item)
    except LayoutError as exc:
        raise FormatError(f"{path} is not laid out as this module edits it line by line ({exc}; flow style, "
                          f"anchors or merge keys are not edited). {by_hand(params, mount_target(item))} "
                          "Nothing was written.") from None
    new_text = "".join(lines)
    difference = first_difference(intended(data, params, index, new_item), load(new_text, f"the edited {path}"))
    if difference:
        raise FormatError(f"the line edit of {path} does not give the intended change: in the edited text, "
                          f"{difference}. {by_hand(params, mount_target(item))} Nothing was written.",
                          difference=difference)
    return dict(changed=True, text=bom + new_text, image_before=image_before, mount=new_item, mount_before=item)


def mount_target(item):
    return split_mount(item)[1] if item else None


# --- writing -------------------------------------------------------------------------------------------------------

def utc_stamp(now=None):
    return (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def write_backup(path, data, stat, now=None):
    """Copy ``data`` (the original of ``path``) to ``<path>.<UTC stamp>.orig`` with the original's mode, owner
    (when allowed) and times, never over an existing file. Returns its path."""
    backup = f"{path}.{utc_stamp(now)}.orig"
    try:
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"backup: {backup} exists already and is never overwritten; run again in a second, or "
                          "set backup=false") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            try:
                os.fchown(handle.fileno(), stat.st_uid, stat.st_gid)
            except PermissionError:
                pass  # the copy is ours; the original's owner is kept on the file itself
            os.fchmod(handle.fileno(), stat.st_mode & 0o7777)
            os.fsync(handle.fileno())
        os.utime(backup, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    except BaseException:
        _remove(backup)
        raise
    return backup


def write_temp(path, data, stat):
    """A synced temporary file next to ``path`` holding ``data``, with the mode and owner of ``stat``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if (stat.st_uid, stat.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(handle.fileno(), stat.st_uid, stat.st_gid)
                except PermissionError:
                    raise ConfigError(f"path: {path} belongs to uid {stat.st_uid} gid {stat.st_gid}, which this "
                                      "user cannot give the edited file; run the task as root (become: true) or "
                                      "as its owner. Nothing was written.") from None
            os.fchmod(handle.fileno(), stat.st_mode & 0o7777)
            os.fsync(handle.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def replace_file(path, original, data, backup=True, now=None):
    """Replace ``path`` (whose content was ``original``) with ``data`` atomically, after copying the original when
    ``backup``. A symbolic link is followed: the file it leads to is replaced, the link stays. Returns the backup's
    path or None."""
    path = os.path.realpath(path)
    stat = os.stat(path)
    tmp = write_temp(path, data, stat)
    backup_file = None
    try:
        if backup:
            backup_file = write_backup(path, original, stat, now)
        with open(path, "rb") as handle:
            if handle.read() != original:
                raise FormatError(f"{path} changed while it was being edited; nothing was written, run again")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        if backup_file:
            _remove(backup_file)
        raise
    try:
        fsync_dir(os.path.dirname(path) or ".")
    except OSError:
        pass  # the file is replaced (the rename is done); only its durability across a crash is less certain
    return backup_file


# --- the module ----------------------------------------------------------------------------------------------------

def check_options(params):
    if not params.get("image") and not params.get("volume"):
        raise ConfigError("give image, or volume and new_volume, or both: there is nothing to change")
    if bool(params.get("volume")) != bool(params.get("new_volume")):
        raise ConfigError("volume and new_volume go together: the volume to replace and its replacement")
    if params.get("volume"):
        check_volume_options(params)
    image = params.get("image")
    if image is not None and (not image or image != image.strip() or any(char.isspace() for char in image)):
        raise ConfigError(f"image: {image!r} is not an image reference (no spaces)")


def check_volume_options(params):
    for option in ("volume", "new_volume"):
        if not NAME.fullmatch(params[option]):
            raise ConfigError(f"{option}: {params[option]!r} is not a Compose volume name "
                              "(letters, digits, _ . -, starting with a letter or digit)")
    if params["new_volume"] == params["volume"]:
        raise ConfigError("new_volume must differ from volume: the old volume is kept for a rollback")
    mount_path = params["mount_path"]
    if mount_path is not None and (not mount_path.startswith("/") or ":" in mount_path
                                   or any(char.isspace() for char in mount_path)):
        raise ConfigError(f"mount_path: {mount_path!r} must be an absolute container path without ':' or spaces")


def read_compose(path):
    """The bytes and the text of the Compose file ``path``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"path: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"path: {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{path} is not a UTF-8 text file, so not a Compose file") from None


def run(module):
    params = module.params
    if not HAS_YAML:
        raise ConfigError(missing_required_lib("PyYAML"))
    check_options(params)
    path = params["path"]
    original, text = read_compose(path)
    plan = plan_edit(text, params, path)
    result = dict(changed=plan["changed"], path=path, image=params["image"], image_before=plan["image_before"],
                  volume=params["volume"], new_volume=params["new_volume"], mount=plan["mount"],
                  mount_before=plan["mount_before"])
    if module._diff:
        result["diff"] = dict(before=text, after=plan["text"], before_header=path, after_header=path)
    if plan["changed"] and params["image"] and "${" in str(plan["image_before"]):
        module.warn(f"the image of services.{params['service']} was {plan['image_before']}, set through a "
                    f"variable; it is now {params['image']}")
    if not plan["changed"] or module.check_mode:
        return result
    try:
        backup_file = replace_file(path, original, plan["text"].encode("utf-8"), params["backup"])
    except OSError as exc:
        raise FormatError(f"{path} could not be replaced: {exc}; the original is unchanged") from None
    if backup_file:
        result["backup_file"] = backup_file
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            service=dict(type="str", required=True),
            image=dict(type="str"),
            volume=dict(type="str"),
            new_volume=dict(type="str"),
            mount_path=dict(type="str"),
            backup=dict(type="bool", default=True),
        ),
        required_one_of=[("image", "volume")],
        required_together=[("volume", "new_volume")],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
