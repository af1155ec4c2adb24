"""Shared paths and names of the test bed, in one place. Everything is derived from this file's location."""

from __future__ import annotations

import os
from pathlib import Path

TESTBED_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTBED_DIR.parent.parent
COMPOSE_DIR = TESTBED_DIR / "compose"
ENGINE_SH = TESTBED_DIR / "engine.sh"
IMAGES_SH = TESTBED_DIR / "images.sh"
IMAGES_VARIANTS_SH = TESTBED_DIR / "images-variants.sh"
COMPOSE_SH = TESTBED_DIR / "compose.sh"
OUTPUT_DIR = REPO_ROOT / "tests" / "output" / "testbed"
STATE_DIR = OUTPUT_DIR / "state"

PREFIX = "akbt"
PROOF_PREFIX = "akbt-proof-"

IMAGE_POSTGRES = "akbt.local/postgres:15"
IMAGE_REDIS = "akbt.local/redis:7"
AUTHENTIK_IMAGE_REPO = "akbt.local/goauthentik/server"
AUTHENTIK_VERSIONS = {"current": "2026.2.2", "legacy": "2025.2.4"}
IMAGES = [IMAGE_POSTGRES, IMAGE_REDIS] + [f"{AUTHENTIK_IMAGE_REPO}:{v}" for v in AUTHENTIK_VERSIONS.values()]

# built by images-variants.sh from the images above (and PostgreSQL 17 from Debian trixie)
IMAGE_POSTGRES_17 = "akbt.local/postgres:17"
IMAGE_POSTGRES_BUSYBOX = "akbt.local/postgres:15-busybox"
IMAGE_REDIS_BUSYBOX = "akbt.local/redis:7-busybox"
POSTGRES_IMAGES = {"15": IMAGE_POSTGRES, "17": IMAGE_POSTGRES_17}
UPSTREAM_AUTHENTIK_REPO = "ghcr.io/goauthentik/server"
# the names authentik's compose files use, given to the test bed's images (the busybox ones for PostgreSQL/Redis)
UPSTREAM_IMAGES = {
    "docker.io/library/postgres:16-alpine": IMAGE_POSTGRES_BUSYBOX,
    "docker.io/library/redis:alpine": IMAGE_REDIS_BUSYBOX,
    "docker.io/library/postgres:17-alpine": IMAGE_POSTGRES_17,
    **{f"{UPSTREAM_AUTHENTIK_REPO}:{v}": f"{AUTHENTIK_IMAGE_REPO}:{v}" for v in AUTHENTIK_VERSIONS.values()},
}
IMAGES_VARIANTS = [IMAGE_POSTGRES_17, IMAGE_POSTGRES_BUSYBOX, IMAGE_REDIS_BUSYBOX]

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
# authentik's legacy file as users run it: Compose v2, the images it names (busybox userland, PostgreSQL as uid 70,
# Redis as uid 999)
STACK_ALPINE = {
    "project": "akbt-alpine" + PROJECT_SUFFIX,
    "layout": "legacy",
    "naming": "v2",
    "pg_user": None,
    "flavour": "alpine",
}
