from __future__ import annotations

import os

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _sets
from ansible_collections.authentik_ops.backup.plugins.modules import backup_set


def _make(dest, name, complete=True):
    path = dest / name
    path.mkdir()
    if complete:
        (path / "manifest.json").write_text("{}")


def test_complete_sets_orders_by_time_and_counter_and_ignores_other_names(tmp_path):
    for name in ("authentik-20261130T020000Z-10", "authentik-20261130T020000Z", "authentik-20261130T020000Z-2",
                 "authentik-20261129T230000Z", "authentik-manual", "other-20261201T000000Z"):
        _make(tmp_path, name)
    _make(tmp_path, "authentik-20261201T000000Z", complete=False)
    assert backup_set.complete_sets(str(tmp_path), "authentik") == [
        "authentik-20261129T230000Z", "authentik-20261130T020000Z", "authentik-20261130T020000Z-2",
        "authentik-20261130T020000Z-10"]


@pytest.mark.parametrize("name, key", [
    ("authentik-20261130T020000Z", ("20261130T020000Z", 1)),
    ("authentik-20261130T020000Z-3", ("20261130T020000Z", 3)),
    ("authentik-latest", None),
    ("authentik-20261130T020000", None),
])
def test_set_order(name, key):
    assert _sets.set_order(name, "authentik") == key


def test_point_latest_is_relative_and_replaces(tmp_path):
    _make(tmp_path, "authentik-20261130T020000Z")
    _make(tmp_path, "authentik-20261130T030000Z")
    backup_set.point_latest(str(tmp_path), "authentik-20261130T020000Z")
    backup_set.point_latest(str(tmp_path), "authentik-20261130T030000Z")
    assert os.readlink(tmp_path / "latest") == "authentik-20261130T030000Z"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["authentik-20261130T020000Z", "authentik-20261130T030000Z", "latest"]
