# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of plugins/module_utils/_versions.py: authentik's numbering, releases and the set/deployment relation."""

from __future__ import annotations

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _versions as v


@pytest.mark.parametrize("text, expected", [
    ("2026.2.2", (2026, 2, 2, 3, 0)),
    ("v2025.2.4", (2025, 2, 4, 3, 0)),
    ("2025.10", (2025, 10, 0, 3, 0)),
    ("2026.2.0-rc1", (2026, 2, 0, 2, 1)),
    ("2026.2.0-rc.3", (2026, 2, 0, 2, 3)),
    ("2024.12.3-beta2", (2024, 12, 3, 1, 2)),
    ("2024.12.0-alpha", (2024, 12, 0, 0, 0)),
    (" 2025.12.1 ", (2025, 12, 1, 3, 0)),
])
def test_parse(text, expected):
    assert tuple(v.parse(text)) == expected


@pytest.mark.parametrize("text", [None, "", "latest", "2025", "2025.13.1", "2025.0.1", "25.2.1", "2025.2.1-dev",
                                  "sha256:abcd", "2025.2.1.4"])
def test_parse_refuses_what_is_not_a_version(text):
    assert v.parse(text) is None


def test_pre_releases_sort_before_the_final_version():
    assert v.parse("2026.2.0-alpha") < v.parse("2026.2.0-beta1") < v.parse("2026.2.0-rc1") < v.parse("2026.2.0-rc2")
    assert v.parse("2026.2.0-rc2") < v.parse("2026.2.0") < v.parse("2026.2.1")
    assert v.parse("2025.9.9") < v.parse("2025.10.0")  # numerically, not as text


@pytest.mark.parametrize("set_version, deployment_version, relation", [
    ("2026.2.2", "2026.2.2", v.SAME),
    ("v2026.2.2", "2026.2.2", v.SAME),
    ("2026.2.1", "2026.2.2", v.PATCH),
    ("2026.2.2", "2026.2.1", v.PATCH),
    ("2026.2.0-rc1", "2026.2.0", v.PATCH),
    ("2025.2.4", "2026.2.2", v.UPGRADE),
    ("2025.10.3", "2025.12.0", v.UPGRADE),
    ("2025.12.0-rc1", "2026.2.0", v.UPGRADE),
    ("2026.2.2", "2025.2.4", v.DOWNGRADE),
    ("2025.12.0", "2025.10.9", v.DOWNGRADE),
    ("2026.5.0-rc1", "2026.2.2", v.DOWNGRADE),
    (None, "2026.2.2", v.UNKNOWN),
    ("2026.2.2", None, v.UNKNOWN),
    ("latest", "2026.2.2", v.UNKNOWN),
])
def test_compare(set_version, deployment_version, relation):
    result = v.compare(set_version, deployment_version)
    assert result["relation"] == relation
    assert result["set_version"] == set_version and result["deployment_version"] == deployment_version


def test_compare_names_both_releases():
    result = v.compare("2025.2.4", "2026.2.0-rc1")
    assert (result["set_release"], result["deployment_release"]) == ("2025.2", "2026.2")
    assert v.compare(None, "2026.2.2")["set_release"] is None


@pytest.mark.parametrize("version, minimum, expected", [
    ("2025.10.0", v.REDIS_REMOVED, True),
    ("2025.10.0-rc1", v.REDIS_REMOVED, True),
    ("2025.8.4", v.REDIS_REMOVED, False),
    ("2026.2.2", v.DATA_LAYOUT, True),
    ("2025.10.3", v.DATA_LAYOUT, False),
    (None, v.DATA_LAYOUT, False),
    ("latest", v.DATA_LAYOUT, False),
])
def test_at_least(version, minimum, expected):
    assert v.at_least(version, minimum) is expected
