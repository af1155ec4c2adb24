# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the collection importable as ansible_collections.authentik_ops.backup in unit tests.

If this checkout already sits at .../ansible_collections/authentik_ops/backup (ansible-test, an installed
collection), that tree is used. Otherwise the link made by `make collections-link`
(.collections/ansible_collections/authentik_ops/backup -> the repo root) is put on sys.path. Either way the
``ansible_collections`` namespace package also spans the collections of the ansible package
(community.docker, kubernetes.core) because none of the directories has an __init__.py (PEP 420).

Skips are counted and, with CI=true, fail the run unless tests/skip-allowlist.txt names them (tests/skip_policy.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, NAME = 'authentik_ops', 'backup'


def _collections_root() -> Path:
    """Return the directory that contains ansible_collections/authentik_ops/backup for this checkout."""
    if REPO_ROOT.parent.name == NAMESPACE and REPO_ROOT.parents[1].name == 'ansible_collections':
        return REPO_ROOT.parents[2]
    return REPO_ROOT / '.collections'


COLLECTIONS_ROOT = _collections_root()
_link = COLLECTIONS_ROOT / 'ansible_collections' / NAMESPACE / NAME
if not _link.is_dir() or _link.resolve() != REPO_ROOT:
    raise pytest.UsageError(f'{_link} does not lead to {REPO_ROOT}: run `make collections-link` first')
if str(COLLECTIONS_ROOT) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_ROOT))
if str(REPO_ROOT / 'tests') not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / 'tests'))

import skip_policy  # noqa: E402  pylint: disable=wrong-import-position


def pytest_configure(config: pytest.Config) -> None:
    skip_policy.register(config)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """The collection's root directory (the checkout)."""
    return REPO_ROOT
