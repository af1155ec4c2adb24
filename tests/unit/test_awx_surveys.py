# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX surveys (awx/survey-*.json) offer what the roles accept: every variable is a role variable, every choice
list is the argument spec's, every default is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

SURVEYS = {'survey-backup.json': 'backup', 'survey-restore.json': 'restore'}


def _options(repo_root: Path, role: str) -> dict:
    with (repo_root / 'roles' / role / 'meta' / 'argument_specs.yml').open(encoding='utf-8') as handle:
        return yaml.safe_load(handle)['argument_specs']['main']['options']


@pytest.mark.parametrize('survey', sorted(SURVEYS))
def test_survey_matches_the_role(repo_root: Path, survey: str) -> None:
    options = _options(repo_root, SURVEYS[survey])
    spec = json.loads((repo_root / 'awx' / survey).read_text(encoding='utf-8'))['spec']
    assert spec
    for question in spec:
        name = question['variable']
        assert name in options, f'{survey}: {name} is not a variable of the {SURVEYS[survey]} role'
        option = options[name]
        kind = question['type']
        if kind == 'multiselect':
            assert option['type'] == 'list'
            assert sorted(question['choices']) == sorted(option['choices']), name
            assert set(question['default'].split('\n')) <= set(option['choices']), name
        elif kind == 'multiplechoice':
            allowed = [str(c).lower() for c in option.get('choices', [True, False] if option['type'] == 'bool' else [])]
            assert sorted(str(c).lower() for c in question['choices']) == sorted(allowed), name
            assert str(question['default']).lower() in allowed, name
        elif kind == 'integer':
            assert option['type'] in ('int', 'float') and question['min'] <= question['default'] <= question['max'], name
        else:
            assert kind in ('text', 'password') and option['type'] in ('str', 'path'), name
        if option.get('no_log'):
            assert kind == 'password', f'{survey}: {name} is secret and must be a password field'
