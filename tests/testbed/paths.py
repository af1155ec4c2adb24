"""Shared paths and names of the test bed, in one place. Everything is derived from this file's location."""

from __future__ import annotations

import os
from pathlib import Path

TESTBED_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTBED_DIR.parent.parent
COMPOSE_DIR = TESTBED_DIR / "compose"
ENGINE_SH = TESTBED_DIR / "engine.sh"
IMAGES_SH = TESTBED_DIR / "images.sh"
OUTPUT_DIR = REPO_ROOT / "tests" / "output" / "testbed"
STATE_DIR = OUTPUT_DIR / "state"

PREFIX = "akbt"
PROOF_PREFIX = "akbt-proof-"

IMAGE_POSTGRES = "akbt.local/postgres:15"
IMAGE_REDIS = "akbt.local/redis:7"
AUTHENTIK_IMAGE_REPO = "akbt.local/goauthentik/server"
AUTHENTIK_VERSIONS = {"current": "2026.2.2", "legacy": "2025.2.4"}
IMAGES = [IMAGE_POSTGRES, IMAGE_REDIS] + [f"{AUTHENTIK_IMAGE_REPO}:{v}" for v in AUTHENTIK_VERSIONS.values()]

COMPOSE_FILES = {
    # layout: (file shipped in tests/testbed/compose, name it gets in the stack's working directory)
    "current": ("compose-2026.2.yml", "compose.yml"),
    "legacy": ("docker-compose-2025.2.yml", "docker-compose.yml"),
}

# the stacks the integration tests use (tests/integration/conftest.py). AKBT_PROJECT_SUFFIX (lower-case letters,
# digits, - and _) gives a developer's session its own projects when other sessions use the same machine.
PROJECT_SUFFIX = os.environ.get("AKBT_PROJECT_SUFFIX", "")
STACK_CURRENT = {"project": "akbt-cur" + PROJECT_SUFFIX, "layout": "current", "naming": "v2", "pg_user": None}
STACK_LEGACY = {"project": "akbt_legacy" + PROJECT_SUFFIX, "layout": "legacy", "naming": "v1", "pg_user": "ak_admin"}
