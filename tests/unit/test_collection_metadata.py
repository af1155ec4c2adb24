# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Consistency of galaxy.yml, meta/runtime.yml, the requirements files and the code they describe."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ansible
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

# Shared options of each action group (module_defaults: group/authentik_ops.backup.<group>: {...} must be accepted
# by every module of the group).
GROUP_OPTIONS = {
    'transport': {'platform', 'docker_host', 'api_timeout', 'namespace',
                  'kubeconfig', 'context', 'host', 'api_key', 'validate_certs', 'ca_cert'},
    'sets': {'dest'},
    'compose': {'path', 'service'},
    's3': {'endpoint_url', 'region', 'access_key', 'secret_key', 'session_token', 'validate_certs', 'ca_bundle',
           'addressing_style'},
}
# Top-level Python imports of plugins/ that are not in the standard library or ansible-core, and the
# distribution that provides each. boto3/botocore are optional (backup_upload only, in its `requirements`).
IMPORT_DISTRIBUTIONS = {
    'jmespath': 'jmespath',
    'zstandard': 'zstandard',
    'cryptography': 'cryptography',
    'kubernetes': 'kubernetes',
    'websocket': 'websocket-client',
}
OPTIONAL_IMPORTS = {'boto3', 'botocore'}
# Requirements no plugin of ours imports, and why the hosts need them anyway.
NEEDED_BY_DEPENDENCIES = {
    'requests': 'community.docker modules the roles run on the Docker host (docker_host_info, docker_container, ...)',
}


def _load_yaml(path: Path) -> dict:
    with path.open(encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def _module_names(repo_root: Path) -> set[str]:
    modules_dir = repo_root / 'plugins' / 'modules'
    return {path.stem for path in modules_dir.glob('*.py') if not path.name.startswith('_')}


def _requirements(path: Path) -> dict[str, Requirement]:
    reqs = {}
    for line in path.read_text(encoding='utf-8').splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[req.name.lower()] = req
    return reqs


def _pins(path: Path) -> dict[str, str]:
    return {name: str(next(iter(req.specifier))).removeprefix('==') for name, req in _requirements(path).items()}


def _lower_bound(spec: SpecifierSet) -> str:
    (bound,) = [s.version for s in spec if s.operator == '>=']
    return bound


def _tracked_files(repo_root: Path) -> list[Path]:
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=repo_root, check=True,
                         capture_output=True).stdout.decode()
    return [repo_root / name for name in out.split('\0') if name and (repo_root / name).is_file()]


def _installed_collection_version(name: str) -> str:
    namespace, coll = name.split('.')
    site = Path(ansible.__file__).resolve().parent.parent
    manifest = json.loads((site / 'ansible_collections' / namespace / coll / 'MANIFEST.json').read_text())
    return manifest['collection_info']['version']


def _oldest_claimed_core(repo_root: Path) -> bool:
    """True in the venv of the oldest ansible-core the collection claims (requirements-<X.Y>.txt)."""
    claimed = _lower_bound(SpecifierSet(_load_yaml(repo_root / 'meta' / 'runtime.yml')['requires_ansible']))
    running = Version(importlib.metadata.version('ansible-core'))
    return (running.major, running.minor) == Version(claimed).release[:2]


# --- names, license, URLs ----------------------------------------------------------------------------------------

def test_galaxy_names_the_collection(repo_root: Path) -> None:
    galaxy = _load_yaml(repo_root / 'galaxy.yml')
    assert (galaxy['namespace'], galaxy['name']) == ('authentik_ops', 'backup')
    assert set(galaxy['dependencies']) >= {'community.docker', 'kubernetes.core'}


def test_galaxy_version_matches_collection_version(repo_root: Path) -> None:
    common = importlib.import_module('ansible_collections.authentik_ops.backup.plugins.module_utils._common')
    galaxy = _load_yaml(repo_root / 'galaxy.yml')
    assert common.COLLECTION_VERSION == galaxy['version']


def test_license_file_is_the_gpl3_text(repo_root: Path) -> None:
    galaxy = _load_yaml(repo_root / 'galaxy.yml')
    assert galaxy['license'] == ['GPL-3.0-or-later']
    text = (repo_root / 'LICENSE').read_text(encoding='utf-8')
    assert text.lstrip().startswith('GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007')
    assert 'END OF TERMS AND CONDITIONS' in text and 'How to Apply These Terms to Your New Programs' in text


def test_no_placeholder_urls(repo_root: Path) -> None:
    found = [str(path.relative_to(repo_root)) for path in _tracked_files(repo_root)
             if path.name != Path(__file__).name and b'example.invalid' in path.read_bytes()]
    assert not found, f'placeholder example.invalid URLs in: {found}'


def _version_added(node, where: str):
    """(where, version_added) of a doc and every option below it."""
    if isinstance(node, dict):
        if 'version_added' in node:
            yield where, str(node['version_added'])
        for key in ('options', 'suboptions'):
            for name, sub in (node.get(key) or {}).items():
                yield from _version_added(sub, f'{where}.{name}')


def _plugin_docs(repo_root: Path):
    for path in sorted((repo_root / 'plugins' / 'modules').glob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        for node in tree.body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'DOCUMENTATION':
                yield path.stem, yaml.safe_load(node.value.value)
    for path in sorted((repo_root / 'plugins' / 'filter').glob('*.yml')):
        yield path.stem, _load_yaml(path)['DOCUMENTATION']


def test_version_added_is_not_newer_than_the_collection(repo_root: Path) -> None:
    version = Version(_load_yaml(repo_root / 'galaxy.yml')['version'])
    docs = list(_plugin_docs(repo_root))
    assert len(docs) >= len(_module_names(repo_root)) + 10
    newer = [(where, added) for name, doc in docs for where, added in _version_added(doc, name)
             if Version(added) > version]
    missing = [name for name, doc in docs if 'version_added' not in doc]
    assert not newer, f'version_added newer than galaxy.yml version {version}: {newer}'
    assert not missing, f'no version_added: {missing}'


# --- action groups -----------------------------------------------------------------------------------------------

def test_every_module_is_in_exactly_one_action_group(repo_root: Path) -> None:
    groups = _load_yaml(repo_root / 'meta' / 'runtime.yml')['action_groups']
    assert set(groups) == set(GROUP_OPTIONS)
    members = [module for group in groups.values() for module in group]
    assert sorted(members) == sorted(_module_names(repo_root)), groups


@pytest.fixture(scope='module')
def module_options(repo_root: Path) -> dict[str, set[str]]:
    """Every module's options as ansible-doc renders them (doc fragments included)."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=f"{repo_root / '.collections'}:"
               f"{Path(ansible.__file__).resolve().parent.parent}")
    names = [f'authentik_ops.backup.{m}' for m in sorted(_module_names(repo_root))]
    proc = subprocess.run([str(Path(sys.executable).parent / 'ansible-doc'), '-t', 'module', '--json', *names],
                          env=env, capture_output=True, text=True, check=False, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    return {name.rsplit('.', 1)[1]: set(doc['doc']['options']) for name, doc in docs.items()}


@pytest.mark.parametrize('group', sorted(GROUP_OPTIONS))
def test_every_module_of_a_group_accepts_the_group_options(repo_root: Path, module_options, group: str) -> None:
    members = _load_yaml(repo_root / 'meta' / 'runtime.yml')['action_groups'][group]
    lacking = {m: sorted(GROUP_OPTIONS[group] - module_options[m]) for m in members
               if GROUP_OPTIONS[group] - module_options[m]}
    assert not lacking, f'group/authentik_ops.backup.{group} members without the shared options: {lacking}'


# --- ansible-core and collection versions: claimed = tested --------------------------------------------------------

def _tested_cores(repo_root: Path) -> dict[str, Path]:
    """ansible-core minor -> the requirements file that pins it (requirements-dev.txt and requirements-X.Y.txt)."""
    tested = {}
    for path in [repo_root / 'requirements-dev.txt', *sorted(repo_root.glob('requirements-[0-9]*.txt'))]:
        version = Version(_pins(path)['ansible-core'])
        tested[f'{version.major}.{version.minor}'] = path
    return tested


def test_every_claimed_ansible_core_has_a_tested_venv(repo_root: Path) -> None:
    claimed = Version(_lower_bound(SpecifierSet(_load_yaml(repo_root / 'meta' / 'runtime.yml')['requires_ansible'])))
    tested = _tested_cores(repo_root)
    newest = max(Version(v) for v in tested)
    wanted = {f'{claimed.major}.{minor}' for minor in range(claimed.minor, newest.minor + 1)}
    assert set(tested) == wanted, f'claimed ansible-core {sorted(wanted)}, requirements files for {sorted(tested)}'
    for minor, path in tested.items():
        if path.name != 'requirements-dev.txt':
            assert path.name == f'requirements-{minor}.txt'
    makefile = (repo_root / 'Makefile').read_text(encoding='utf-8')
    older = sorted(m for m, p in tested.items() if p.name != 'requirements-dev.txt')
    assert re.search(r'^CORE_MATRIX \?= ' + re.escape(' '.join(older)) + '$', makefile, re.M), older


def test_roles_claim_the_same_minimum_ansible_core(repo_root: Path) -> None:
    claimed = Version(_lower_bound(SpecifierSet(_load_yaml(repo_root / 'meta' / 'runtime.yml')['requires_ansible'])))
    for role in ('backup', 'restore'):
        meta = _load_yaml(repo_root / 'roles' / role / 'meta' / 'main.yml')
        assert meta['galaxy_info']['min_ansible_version'] == f'{claimed.major}.{claimed.minor}', role


def test_running_ansible_core_and_collections_are_in_the_claimed_ranges(repo_root: Path) -> None:
    """Runs in every venv of the matrix: what it holds must be inside what galaxy.yml and runtime.yml claim."""
    requires = SpecifierSet(_load_yaml(repo_root / 'meta' / 'runtime.yml')['requires_ansible'])
    assert Version(importlib.metadata.version('ansible-core')) in requires
    for name, spec in _load_yaml(repo_root / 'galaxy.yml')['dependencies'].items():
        installed = _installed_collection_version(name)
        assert Version(installed) in SpecifierSet(spec.replace(' ', '')), (name, installed, spec)
        if _oldest_claimed_core(repo_root):  # the oldest venv holds the lowest claimed version
            assert installed == _lower_bound(SpecifierSet(spec)), (name, installed, spec)


def test_running_python_requirements_are_in_the_claimed_ranges(repo_root: Path) -> None:
    reqs = _requirements(repo_root / 'requirements.txt')
    for name, req in reqs.items():
        installed = importlib.metadata.version(name)
        assert Version(installed) in req.specifier, (name, installed, str(req.specifier))
        if _oldest_claimed_core(repo_root):
            assert installed == _lower_bound(req.specifier), (name, installed, str(req.specifier))


def test_the_matrix_venvs_pin_the_ends_of_each_range(repo_root: Path) -> None:
    reqs = _requirements(repo_root / 'requirements.txt')
    tested = _tested_cores(repo_root)
    oldest = _pins(tested[min(tested, key=Version)])
    newest = _pins(tested[max(tested, key=Version)])
    for name, req in reqs.items():
        assert oldest.get(name) == _lower_bound(req.specifier), (name, oldest.get(name), str(req))
        assert Version(newest[name]) in req.specifier, (name, newest[name], str(req))


# --- Python requirements -----------------------------------------------------------------------------------------

def _third_party_imports(repo_root: Path) -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in (repo_root / 'plugins').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(n.split('.')[0] for n in names)
    return found - stdlib - {'ansible', 'ansible_collections', '__future__'}


def test_requirements_list_what_the_plugins_import_and_nothing_else(repo_root: Path) -> None:
    imports = _third_party_imports(repo_root)
    unknown = imports - set(IMPORT_DISTRIBUTIONS) - OPTIONAL_IMPORTS
    assert not unknown, f'imports without a known distribution: {unknown}'
    wanted = {IMPORT_DISTRIBUTIONS[name] for name in imports if name in IMPORT_DISTRIBUTIONS}
    assert set(_requirements(repo_root / 'requirements.txt')) == wanted | set(NEEDED_BY_DEPENDENCIES)


def test_requirements_for_dependencies_are_what_the_roles_use(repo_root: Path) -> None:
    used = set()
    for path in (repo_root / 'roles').rglob('*.yml'):
        used.update(re.findall(r'community\.docker\.(docker_[a-z_]+)', path.read_text(encoding='utf-8')))
    assert used, 'the roles use no community.docker module: requests is not needed'


def test_ee_requirements_equal_requirements_txt(repo_root: Path) -> None:
    ours = {name: str(req) for name, req in _requirements(repo_root / 'requirements.txt').items()}
    ee = {name: str(req) for name, req in _requirements(repo_root / 'meta' / 'ee-requirements.txt').items()}
    assert ee == ours


def test_ee_definition_points_at_the_requirement_files(repo_root: Path) -> None:
    ee = _load_yaml(repo_root / 'meta' / 'execution-environment.yml')
    assert ee['dependencies'] == {'python': 'meta/ee-requirements.txt', 'system': 'meta/ee-bindep.txt'}
    for rel in ee['dependencies'].values():
        assert (repo_root / rel).is_file()
