from __future__ import annotations

import os

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import ConfigError
from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import bad_file_name, resolve_set


def Module(**params):  # pylint: disable=invalid-name
    """The options resolve_set reads (path, dest, name), as a module would pass them."""
    params = dict(dict(path=None, dest=None, name="latest"), **params)
    return params["path"], params["dest"], params["name"]


def test_latest_follows_the_symlink_and_a_name_is_joined(tmp_path):
    (tmp_path / "authentik-20261130T020000Z").mkdir()
    os.symlink("authentik-20261130T020000Z", tmp_path / "latest")
    target = str(tmp_path / "authentik-20261130T020000Z")
    assert resolve_set(*Module(dest=str(tmp_path))) == target
    assert resolve_set(*Module(dest=str(tmp_path), name="authentik-20261130T020000Z")) == target
    assert resolve_set(*Module(path=target + "/")) == target


@pytest.mark.parametrize("params, message", [
    (dict(name="../etc"), "give the name of a set directory"),
    (dict(name=".."), "give the name of a set directory"),
    (dict(), "there is no complete set"),
    (dict(name="nope"), "is not a backup set directory"),
])
def test_failures_name_the_problem_and_carry_the_fields(tmp_path, params, message):
    with pytest.raises(ConfigError) as failed:
        resolve_set(*Module(dest=str(tmp_path), **params), ok=False)
    result = dict(failed.value.fields, msg=failed.value.msg)
    assert message in result["msg"] and result["ok"] is False


@pytest.mark.parametrize("name, bad", [("postgres.sql.zst", False), ("", True), (None, True), ("a/b", True),
                                       ("manifest.json", True), ("latest", True), ("..", True)])
def test_bad_file_name(name, bad):
    assert bad_file_name(name) is bad
