# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of plugins/filter/upgrade.py: the restore's version relation and the layout mapping of directories."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.filter import upgrade as u


def deployment(version, server=(), worker=()):
    return {"version": version, "containers": {
        "postgresql": {"name": "db", "mounts": ["/var/lib/postgresql/data"]},
        "server": {"name": "server", "mounts": list(server)},
        "worker": {"name": "worker", "mounts": list(worker)},
    }}


CURRENT = deployment("2026.2.2", server=["/data", "/templates"], worker=["/data", "/certs", "/templates"])
LEGACY = deployment("2025.2.4", server=["/media", "/templates"], worker=["/media", "/certs", "/templates"])


def test_filters_are_registered():
    expected = {"authentik_version_relation", "authentik_version_at_least", "authentik_restore_path_map"}
    assert set(u.FilterModule().filters()) == expected


def test_relation_is_the_module_utils_comparison():
    assert u.authentik_version_relation("2025.2.4", "2026.2.2")["relation"] == "upgrade"
    assert u.authentik_version_relation("2026.5.0", "2026.2.2")["relation"] == "downgrade"


def test_at_least_refuses_a_bad_minimum():
    assert u.authentik_version_at_least("2026.2.2", "2025.10") is True
    with pytest.raises(AnsibleFilterError, match="not a release"):
        u.authentik_version_at_least("2026.2.2", "soon")


def test_legacy_media_goes_to_data_media_of_a_current_deployment():
    assert u.authentik_restore_path_map(CURRENT, ["/media", "/templates", "/certs"]) == {
        "/media": "/data/media", "/templates": "/templates", "/certs": "/certs"}


def test_a_mounted_path_is_restored_where_it_is():
    expected = {"/media": "/media", "/templates": "/templates"}
    assert u.authentik_restore_path_map(LEGACY, ["/media", "/templates"]) == expected
    # a current release that still mounts /media (kept by its operator): no mapping
    both = deployment("2026.2.2", server=["/media", "/data"])
    assert u.authentik_restore_path_map(both, ["/media"]) == {"/media": "/media"}


@pytest.mark.parametrize("target", [
    deployment("2025.10.3", server=["/data"]),  # before 2025.12 authentik reads /media, not /data/media
    deployment(None, server=["/data"]),  # unknown version: nothing is guessed
    deployment("2026.2.2", server=["/templates"]),  # /data not mounted
])
def test_no_mapping_without_the_new_place_and_release(target):
    assert u.authentik_restore_path_map(target, ["/media"]) == {"/media": "/media"}


def test_the_set_cannot_name_a_target():
    # only /media has a new place; whatever else the set lists maps to itself, and the plan refuses it unmounted
    assert u.authentik_restore_path_map(CURRENT, ["/etc", "/data/../etc", "/media/../etc"]) == {
        "/etc": "/etc", "/data/../etc": "/etc", "/media/../etc": "/etc"}


def test_path_map_needs_a_deployment():
    with pytest.raises(AnsibleFilterError):
        u.authentik_restore_path_map(["/media"], ["/media"])
