# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of plugins/filter/storage.py: where authentik keeps its media, read from its environment."""

from __future__ import annotations

import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.filter import storage as s

SECRETS = ["AKIA-not-in-output", "s3cr3t-not-in-output", "token-not-in-output"]
S3_ENV = [
    "PATH=/usr/local/bin:/usr/bin",
    "AUTHENTIK_SECRET_KEY=very-secret",
    "AUTHENTIK_STORAGE__BACKEND=s3",
    "AUTHENTIK_STORAGE__S3__BUCKET_NAME=authentik-media",
    "AUTHENTIK_STORAGE__S3__ENDPOINT=http://127.0.0.1:9000",
    "AUTHENTIK_STORAGE__S3__REGION=eu-central-1",
    f"AUTHENTIK_STORAGE__S3__ACCESS_KEY={SECRETS[0]}",
    f"AUTHENTIK_STORAGE__S3__SECRET_KEY={SECRETS[1]}",
    f"AUTHENTIK_STORAGE__S3__SESSION_TOKEN={SECRETS[2]}",
]


def test_filter_is_registered():
    assert set(s.FilterModule().filters()) == {"authentik_storage", "authentik_storage_credentials"}


def test_default_is_the_file_backend():
    assert s.authentik_storage(["PATH=/bin"], "2026.2.2") == {"media": {"backend": "file", "backend_setting": None}}


def test_s3_is_recorded_without_credentials():
    media = s.authentik_storage(S3_ENV, "2026.2.2")["media"]
    assert media == {"backend": "s3", "backend_setting": "AUTHENTIK_STORAGE__BACKEND", "bucket": "authentik-media",
                     "endpoint": "http://127.0.0.1:9000", "region": "eu-central-1", "prefix": "media/",
                     "credentials_set": True, "unresolved": []}
    text = json.dumps(media)
    assert not any(secret in text for secret in SECRETS + ["very-secret"])


def test_the_media_settings_override_the_general_ones():
    env = {"AUTHENTIK_STORAGE__BACKEND": "file", "AUTHENTIK_STORAGE__MEDIA__BACKEND": "S3",
           "AUTHENTIK_STORAGE__S3__BUCKET_NAME": "general", "AUTHENTIK_STORAGE__MEDIA__S3__BUCKET_NAME": "media-only",
           "AUTHENTIK_STORAGE__S3__ENDPOINT": "https://s3.example.com"}
    media = s.authentik_storage(env, "2026.2.2")["media"]
    assert (media["backend"], media["backend_setting"]) == ("s3", "AUTHENTIK_STORAGE__MEDIA__BACKEND")
    assert (media["bucket"], media["endpoint"], media["credentials_set"]) == ("media-only", "https://s3.example.com",
                                                                              False)
    # an empty media setting does not hide the general one
    env = {"AUTHENTIK_STORAGE__MEDIA__BACKEND": "", "AUTHENTIK_STORAGE__BACKEND": "s3"}
    assert s.authentik_storage(env, "2026.2.2")["media"]["backend_setting"] == "AUTHENTIK_STORAGE__BACKEND"


@pytest.mark.parametrize("version, prefix", [("2026.2.2", "media/"), ("2025.12.0-rc1", "media/"),
                                             ("2025.10.3", ""), ("2025.2.4", ""), (None, None), ("latest", None)])
def test_the_key_prefix_follows_the_release(version, prefix):
    env = {"AUTHENTIK_STORAGE__MEDIA__BACKEND": "s3", "AUTHENTIK_STORAGE__MEDIA__S3__BUCKET_NAME": "b"}
    assert s.authentik_storage(env, version)["media"]["prefix"] == prefix


def test_env_and_file_uris():
    env = {"AUTHENTIK_STORAGE__BACKEND": "env://MEDIA_BACKEND", "MEDIA_BACKEND": "s3",
           "AUTHENTIK_STORAGE__S3__BUCKET_NAME": "env://BUCKET?fallback-bucket",
           "AUTHENTIK_STORAGE__S3__ENDPOINT": "file:///run/secrets/endpoint"}
    media = s.authentik_storage(env, "2026.2.2")["media"]
    assert media["backend"] == "s3" and media["bucket"] == "fallback-bucket"
    assert media["endpoint"] is None and media["unresolved"] == ["AUTHENTIK_STORAGE__S3__ENDPOINT"]
    unknown = s.authentik_storage({"AUTHENTIK_STORAGE__BACKEND": "file:///run/secrets/backend"})["media"]
    assert unknown == {"backend": "unknown", "backend_setting": "AUTHENTIK_STORAGE__BACKEND",
                       "unresolved": ["AUTHENTIK_STORAGE__BACKEND"]}


def test_refuses_what_is_not_an_environment():
    with pytest.raises(AnsibleFilterError, match="list of NAME=value or a dict"):
        s.authentik_storage("AUTHENTIK_STORAGE__BACKEND=s3")


def test_credentials_are_read_in_authentiks_lookup_order():
    env = S3_ENV + ["AUTHENTIK_STORAGE__MEDIA__S3__ACCESS_KEY=media-own-key", "OTHER_SECRET=from-env-uri",
                    "AUTHENTIK_STORAGE__MEDIA__S3__SECRET_KEY=env://OTHER_SECRET"]
    assert s.authentik_storage_credentials(env) == {
        "access_key": "media-own-key", "secret_key": "from-env-uri", "session_token": SECRETS[2]}
    assert s.authentik_storage_credentials(S3_ENV, "reports") == dict(zip(
        ("access_key", "secret_key", "session_token"), SECRETS))


def test_credentials_unset_or_in_a_file_are_none():
    env = ["AUTHENTIK_STORAGE__BACKEND=s3", "AUTHENTIK_STORAGE__S3__SECRET_KEY=file:///run/secrets/s3"]
    assert s.authentik_storage_credentials(env) == {"access_key": None, "secret_key": None, "session_token": None}
    with pytest.raises(AnsibleFilterError):
        s.authentik_storage_credentials("AUTHENTIK_STORAGE__S3__SECRET_KEY=x")
