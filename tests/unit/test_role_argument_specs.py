# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' meta/argument_specs.yml against what the roles read, and validated by ansible-core's own validator
(the one a role runs before its first task)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

SPEC_KEYS = ('type', 'elements', 'default', 'choices', 'no_log', 'required', 'aliases')
# a variable in an expression: not a key of a mapping (`name:`), not part of a longer name or of a filter's FQCN
_READ = re.compile(r'(?<![\w.])(authentik_backup_[a-z0-9_]+)\b(?!\s*:(?:\s|$))')
# Variables the backup role's discovery reads that do nothing when the restore includes it (discovery only, with
# authentik_backup_components: []), so the restore does not declare them.
NOT_READ_BY_RESTORE = {
    'authentik_backup_components': 'set to [] by the restore for the included discovery',
    'authentik_backup_paths': 'plans backup parts only; the restore plans from the manifest',
    'authentik_backup_compression': 'plans backup parts only',
    'authentik_backup_encrypt_recipients': 'plans backup parts only',
    'authentik_backup_k8s_secrets': "read only with 'config' in authentik_backup_components",
    'authentik_backup_k8s_helm_release_record': "read only with 'config' in authentik_backup_components",
}


def _spec(repo_root: Path, role: str) -> dict:
    with (repo_root / 'roles' / role / 'meta' / 'argument_specs.yml').open(encoding='utf-8') as handle:
        return yaml.safe_load(handle)['argument_specs']['main']['options']


def _defaults(repo_root: Path, role: str) -> dict:
    with (repo_root / 'roles' / role / 'defaults' / 'main.yml').open(encoding='utf-8') as handle:
        return yaml.safe_load(handle) or {}


def _shape(option: dict) -> dict:
    """An option without its description, sub-options included."""
    shape = {key: option[key] for key in SPEC_KEYS if key in option}
    if 'options' in option:
        shape['options'] = {name: _shape(sub) for name, sub in option['options'].items()}
    return shape


def _validate(spec: dict, params: dict):
    """Validate as a role does, on a copy (the validator fills in the defaults of dict options in place)."""
    return ArgumentSpecValidator(copy.deepcopy(spec)).validate(copy.deepcopy(params))


def test_restore_declares_every_backup_variable_it_reads(repo_root: Path) -> None:
    restore = repo_root / 'roles' / 'restore'
    files = [*restore.glob('tasks/**/*.yml'), restore / 'vars' / 'main.yml', repo_root / 'playbooks' / 'restore.yml']
    # the backup role's task files the restore includes (include_role ... tasks_from)
    for path in list(files):
        for tasks_from in re.findall(r'name: authentik_ops\.backup\.backup\n\s+tasks_from: (\S+)', path.read_text()):
            files.append(repo_root / 'roles' / 'backup' / 'tasks' / tasks_from)
    assert len(files) > len(list(restore.glob('tasks/**/*.yml'))) + 2, files
    read = set()
    for path in files:
        for line in path.read_text(encoding='utf-8').splitlines():
            if not line.lstrip().startswith(('#', 'tags:')):
                read.update(_READ.findall(line))
    read -= set(NOT_READ_BY_RESTORE)
    assert len(read) >= 15, read
    missing = sorted(read - set(_spec(repo_root, 'restore')))
    assert not missing, f'roles/restore reads variables its argument spec does not declare: {missing}'


def test_restore_declares_backup_variables_as_the_backup_role_does(repo_root: Path) -> None:
    backup, restore = _spec(repo_root, 'backup'), _spec(repo_root, 'restore')
    shared = [name for name in restore if name.startswith('authentik_backup_')]
    assert shared
    for name in shared:
        assert _shape(restore[name]) == _shape(backup[name]), name


@pytest.mark.parametrize('role', ['backup', 'restore'])
def test_own_variables_have_the_defaults_of_defaults_main(repo_root: Path, role: str) -> None:
    spec, defaults = _spec(repo_root, role), _defaults(repo_root, role)
    own = {name for name in spec if name.startswith(f'authentik_{role}_')}
    assert own == set(defaults), sorted(own ^ set(defaults))
    for name in own:
        assert spec[name].get('default') == defaults[name], name


@pytest.mark.parametrize('role', ['backup', 'restore'])
def test_k8s_auth_options_are_the_keys_the_roles_pass_on(repo_root: Path, role: str) -> None:
    """The role hands only these keys to kubernetes.core and the modules: the spec accepts exactly those."""
    source = {'backup': 'roles/backup/tasks/kubernetes/main.yml', 'restore': 'roles/restore/vars/main.yml'}[role]
    text = (repo_root / source).read_text(encoding='utf-8')
    keys = re.search(r'_k8s_auth_keys: \[([^\]]*)\]', text).group(1)
    passed = {key.strip() for key in keys.replace('\n', ' ').split(',')}
    assert set(_spec(repo_root, role)['authentik_backup_k8s_auth']['options']) == passed


def test_dict_variables_have_options_or_say_why_not(repo_root: Path) -> None:
    spec = _spec(repo_root, 'backup')
    dicts = {name for name, option in spec.items() if option.get('type') == 'dict'}
    assert dicts == {'authentik_backup_s3', 'authentik_backup_k8s_auth', 'authentik_backup_notify_headers',
                     'authentik_backup_media_s3'}
    assert spec['authentik_backup_s3']['options'] and spec['authentik_backup_k8s_auth']['options']
    assert spec['authentik_backup_media_s3']['options'] and spec['authentik_backup_media_s3']['no_log'] is True
    # header names are the user's: no fixed keys, the whole dict is secret
    headers = spec['authentik_backup_notify_headers']
    assert 'options' not in headers and headers['no_log'] is True


# --- validated by ansible-core ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('role', ['backup', 'restore'])
def test_unknown_k8s_auth_key_is_refused(repo_root: Path, role: str) -> None:
    result = _validate(_spec(repo_root, role), {'authentik_backup_k8s_auth': {'kubeconfig': '/k', 'kubconfig': '/k'}})
    assert any('kubconfig' in message for message in result.error_messages), result.error_messages
    result = _validate(_spec(repo_root, role), {'authentik_backup_k8s_auth': {'kubeconfig': '/k', 'context': 'c',
                                                                              'validate_certs': 'yes'}})
    assert not result.error_messages
    assert result.validated_parameters['authentik_backup_k8s_auth']['validate_certs'] is True


def test_s3_options_are_checked(repo_root: Path) -> None:
    spec = _spec(repo_root, 'backup')
    assert not _validate(spec, {'authentik_backup_s3': {}}).error_messages
    good = {'bucket': 'b', 'endpoint_url': 'https://s3.local', 'access_key': 'AK', 'secret_key': 'SK',
            'verify': 'etag', 'part_size': '32'}
    assert not _validate(spec, {'authentik_backup_s3': good}).error_messages
    for bad, word in (({'bucket': 'b', 'secretkey': 'x'}, 'secretkey'), ({'bucket': 'b', 'verify': 'md5'}, 'verify'),
                      ({'bucket': 'b', 'part_size': 'big'}, 'part_size')):
        messages = _validate(spec, {'authentik_backup_s3': bad}).error_messages
        assert any(word in message for message in messages), (bad, messages)


@pytest.mark.parametrize('role', ['backup', 'restore'])
def test_restore_validates_the_backup_variables(repo_root: Path, role: str) -> None:
    spec = _spec(repo_root, role)
    messages = _validate(spec, {'authentik_backup_platform': 'podman'}).error_messages
    assert any('authentik_backup_platform' in message and 'podman' in message for message in messages), messages
    messages = _validate(spec, {'authentik_backup_k8s_auth': 'kubeconfig'}).error_messages
    assert any('authentik_backup_k8s_auth' in message for message in messages), messages


def test_secrets_are_no_log(repo_root: Path) -> None:
    secrets = {'authentik_backup_postgres_password': 'akbt-pg-secret', 'authentik_backup_redis_password': 'akbt-rd',
               'authentik_backup_notify_url': 'https://hook.local/akbt-token',
               'authentik_backup_notify_headers': {'Authorization': 'Bearer akbt-header-token'},
               'authentik_backup_s3': {'bucket': 'b', 'secret_key': 'akbt-s3-secret', 'session_token': 'akbt-s3-tok'},
               'authentik_backup_k8s_auth': {'api_key': 'akbt-k8s-token', 'password': 'akbt-k8s-pw',
                                             'proxy_headers': {'proxy_basic_auth': 'u:akbt-proxy-pw'}}}
    result = _validate(_spec(repo_root, 'backup'), secrets)
    assert not result.error_messages
    hidden = {str(value) for value in result._no_log_values}  # pylint: disable=protected-access
    for wanted in ('akbt-pg-secret', 'akbt-rd', 'https://hook.local/akbt-token', 'Bearer akbt-header-token',
                   'akbt-s3-secret', 'akbt-s3-tok', 'akbt-k8s-token', 'akbt-k8s-pw', 'u:akbt-proxy-pw'):
        assert wanted in hidden, (wanted, hidden)
    restore_spec = _spec(repo_root, 'restore')
    restore = _validate(restore_spec, {k: v for k, v in secrets.items() if k in restore_spec})
    assert {'akbt-pg-secret', 'akbt-k8s-token'} <= {str(v) for v in restore._no_log_values}  # pylint: disable=protected-access
