# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection installs as the README says, and the execution environment definition of docs/ee builds a context
that holds the collection and its requirements.

Offline and real: `ansible-galaxy collection build`, `ansible-galaxy collection install --offline` (galaxy.yml's
dependency ranges must be met by the community.docker and kubernetes.core of this venv's `ansible` package, as
nothing can be downloaded), `ansible-doc` from the installed copy, `ansible-builder create` (which needs no network)
and `ansible-builder introspect` (what the image build runs to collect the collections' requirements).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import ansible
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

BIN = Path(sys.executable).parent
SITE_COLLECTIONS = Path(ansible.__file__).resolve().parent.parent / 'ansible_collections'
# Base images of docs/ee/execution-environment.yml that are supported, with the end of their support.
SUPPORTED_BASE_IMAGES = {
    'quay.io/centos/centos:stream10': datetime.date(2030, 1, 1),
}


def _run(*argv: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    # the checkout's ansible.cfg (exported by the Makefile) is not what a user installing the tarball has
    env = {k: v for k, v in os.environ.items() if k not in ('ANSIBLE_CONFIG', 'ANSIBLE_COLLECTIONS_PATH')}
    env.update(extra_env or {})
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, f'{argv}: rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


def _load_yaml(path: Path) -> dict:
    with path.open(encoding='utf-8') as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope='module')
def tarball(repo_root: Path, tmp_path_factory) -> Path:
    """The collection built by `ansible-galaxy collection build` from this checkout."""
    out = tmp_path_factory.mktemp('build')
    _run(str(BIN / 'ansible-galaxy'), 'collection', 'build', '--output-path', str(out), cwd=repo_root)
    version = _load_yaml(repo_root / 'galaxy.yml')['version']
    path = out / f'authentik_ops-backup-{version}.tar.gz'
    assert path.is_file(), sorted(out.iterdir())
    return path


def test_tarball_holds_the_collection_and_not_the_work_files(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for wanted in ('LICENSE', 'README.md', 'MANIFEST.json', 'meta/runtime.yml', 'meta/execution-environment.yml',
                   'meta/ee-requirements.txt', 'meta/ee-bindep.txt', 'plugins/modules/postgres_dump.py',
                   'roles/backup/tasks/main.yml', 'roles/restore/meta/argument_specs.yml', 'playbooks/backup.yml',
                   'requirements.txt'):
        assert wanted in names, wanted
    stray = sorted(n for n in names if n.split('/')[0] in {'.venv', '.collections', '.demo', '.ci', '.git'}
                   or n.startswith(('.venv-', 'tests/output', 'benchmarks/results')))
    assert not stray, stray


def test_tarball_installs_offline_with_the_venvs_dependencies(tarball: Path, tmp_path: Path) -> None:
    dest = tmp_path / 'collections'
    proc = _run(str(BIN / 'ansible-galaxy'), 'collection', 'install', '--offline', str(tarball), '-p', str(dest),
                cwd=tmp_path)
    assert 'authentik_ops.backup:' in proc.stdout and 'was installed successfully' in proc.stdout, proc.stdout
    installed = dest / 'ansible_collections' / 'authentik_ops' / 'backup'
    assert (installed / 'MANIFEST.json').is_file() and (installed / 'LICENSE').is_file()
    proc = _run(str(BIN / 'ansible-doc'), '-t', 'module', 'authentik_ops.backup.postgres_dump', cwd=tmp_path,
                extra_env={'ANSIBLE_COLLECTIONS_PATH': f'{dest}:{SITE_COLLECTIONS.parent}'})
    assert str(installed) in proc.stdout, proc.stdout[-2000:]


# --- the execution environment --------------------------------------------------------------------------------------

def test_ee_base_image_is_supported(repo_root: Path) -> None:
    image = _load_yaml(repo_root / 'docs' / 'ee' / 'execution-environment.yml')['images']['base_image']['name']
    assert image in SUPPORTED_BASE_IMAGES, f'{image} is not a known supported base image'
    assert datetime.date.today() < SUPPORTED_BASE_IMAGES[image], f'{image} is at the end of its support'


def test_ee_pins_what_the_collection_claims(repo_root: Path) -> None:
    ee = _load_yaml(repo_root / 'docs' / 'ee' / 'execution-environment.yml')
    core = Requirement(ee['dependencies']['ansible_core']['package_pip'])
    claimed = SpecifierSet(_load_yaml(repo_root / 'meta' / 'runtime.yml')['requires_ansible'])
    assert core.name == 'ansible-core'
    for minor in ('2.17', '2.18', '2.19', '2.20'):
        assert (Version(f'{minor}.0') in core.specifier) == (Version(f'{minor}.0') in claimed and minor != '2.20'), minor
    reqs = _load_yaml(repo_root / 'docs' / 'ee' / 'requirements.yml')['collections']
    galaxy = _load_yaml(repo_root / 'galaxy.yml')
    assert reqs[0] == {'name': f"collections/authentik_ops-backup-{galaxy['version']}.tar.gz", 'type': 'file'}
    assert {r['name']: r['version'] for r in reqs[1:]} == galaxy['dependencies']


@pytest.fixture(scope='module')
def ee_context(repo_root: Path, tarball: Path, tmp_path_factory) -> Path:
    """`ansible-builder create` of docs/ee, laid out as in a checkout whose root holds the built tarball."""
    checkout = tmp_path_factory.mktemp('checkout')
    shutil.copytree(repo_root / 'docs' / 'ee', checkout / 'docs' / 'ee')
    shutil.copy(tarball, checkout / tarball.name)
    context = checkout / 'context'
    proc = _run(str(BIN / 'ansible-builder'), 'create', '-f', 'execution-environment.yml', '-c', str(context),
                '--output-filename', 'Containerfile', cwd=checkout / 'docs' / 'ee')
    assert 'No matches' not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return context


def test_ee_context_holds_the_collection(ee_context: Path, tarball: Path) -> None:
    copied = ee_context / '_build' / 'collections' / tarball.name
    assert copied.read_bytes() == tarball.read_bytes()
    reqs = _load_yaml(ee_context / '_build' / 'requirements.yml')['collections']
    assert (ee_context / '_build' / reqs[0]['name']) == copied
    containerfile = (ee_context / 'Containerfile').read_text(encoding='utf-8')
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream10"' in containerfile
    # the galaxy stage installs requirements.yml from /build (the context's _build), the builder stage collects the
    # Python and system requirements of every installed collection
    assert 'COPY _build /build\nWORKDIR /build' in containerfile
    assert 'ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml' in containerfile
    assert 'introspect.py introspect --write-bindep=/tmp/src/bindep.txt --write-pip=/tmp/src/requirements.txt' \
        in containerfile


def test_ee_build_finds_the_collections_requirements(repo_root: Path, tarball: Path, tmp_path: Path) -> None:
    """What the builder stage runs, on the collection installed from the tarball next to its dependencies."""
    dest = tmp_path / 'collections'
    _run(str(BIN / 'ansible-galaxy'), 'collection', 'install', '--offline', '--no-deps', str(tarball), '-p', str(dest),
         cwd=tmp_path)
    for dep in ('community/docker', 'kubernetes/core'):
        (dest / 'ansible_collections' / dep).parent.mkdir(parents=True, exist_ok=True)
        (dest / 'ansible_collections' / dep).symlink_to(SITE_COLLECTIONS / dep)
    proc = _run(str(BIN / 'ansible-builder'), 'introspect', '--sanitize', str(dest), cwd=tmp_path)
    found = yaml.safe_load(proc.stdout)
    ours = sorted(line.split('#')[0].strip() for line in found['python']
                  if 'from collection authentik_ops.backup' in line)
    wanted = sorted(line.split('#')[0].strip()
                    for line in (repo_root / 'meta' / 'ee-requirements.txt').read_text(encoding='utf-8').splitlines()
                    if line.split('#')[0].strip())
    assert ours == wanted and len(ours) >= 5, (ours, wanted)
    assert any('from collection kubernetes.core' in line for line in found['python'])
    # the collection needs no system package (meta/ee-bindep.txt lists none); kubernetes.core brings its own
    ours_system = [line for line in found.get('system') or [] if 'authentik_ops.backup' in line]
    bindep = [line for line in (repo_root / 'meta' / 'ee-bindep.txt').read_text(encoding='utf-8').splitlines()
              if line.strip() and not line.startswith('#')]
    assert ours_system == bindep == []
