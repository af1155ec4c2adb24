# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Consistency of galaxy.yml, meta/runtime.yml and the code they describe."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

ACTION_GROUP = 'backup'


def _load_yaml(path: Path) -> dict:
    with path.open(encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def _module_names(repo_root: Path) -> set[str]:
    modules_dir = repo_root / 'plugins' / 'modules'
    return {path.stem for path in modules_dir.glob('*.py') if not path.name.startswith('_')}


def test_galaxy_names_the_collection(repo_root: Path) -> None:
    galaxy = _load_yaml(repo_root / 'galaxy.yml')
    assert (galaxy['namespace'], galaxy['name']) == ('authentik_ops', 'backup')
    assert set(galaxy['dependencies']) >= {'community.docker', 'kubernetes.core'}


def test_every_module_is_in_the_action_group(repo_root: Path) -> None:
    group = set(_load_yaml(repo_root / 'meta' / 'runtime.yml')['action_groups'][ACTION_GROUP])
    missing = sorted(_module_names(repo_root) - group)
    assert not missing, f'modules missing from meta/runtime.yml action_groups.{ACTION_GROUP}: {missing}'


def test_every_action_group_entry_is_a_module(repo_root: Path) -> None:
    modules = _module_names(repo_root)
    if not modules:
        pytest.skip('plugins/modules has no modules yet')
    group = set(_load_yaml(repo_root / 'meta' / 'runtime.yml')['action_groups'][ACTION_GROUP])
    unknown = sorted(group - modules)
    assert not unknown, f'meta/runtime.yml action_groups.{ACTION_GROUP} lists modules that do not exist: {unknown}'


def test_galaxy_version_matches_collection_version(repo_root: Path) -> None:
    if not (repo_root / 'plugins' / 'module_utils' / '_common.py').is_file():
        pytest.skip('plugins/module_utils/_common.py does not exist yet')
    common = importlib.import_module('ansible_collections.authentik_ops.backup.plugins.module_utils._common')
    galaxy = _load_yaml(repo_root / 'galaxy.yml')
    assert common.COLLECTION_VERSION == galaxy['version']
