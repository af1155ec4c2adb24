# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/testbed/bootstrap.sh run by a user who is not root (as root, the test drops to nobody with setpriv): it
names what is missing, prints the one command to run and exits 1, installing nothing. The root path (apt-get, the
engine) is what .ci/run and `make test` run first on every CI machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "tests" / "testbed" / "bootstrap.sh"
NOBODY = 65534


@pytest.fixture
def checkout():
    """A copy of the script in a directory any user may read, laid out as in the repository."""
    with tempfile.TemporaryDirectory(prefix="akbt-bootstrap-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        (root / "tests" / "testbed").mkdir(parents=True)
        for part in (root / "tests", root / "tests" / "testbed"):
            part.chmod(0o755)
        shutil.copy2(SCRIPT, root / "tests" / "testbed" / "bootstrap.sh")
        yield root


def as_user(checkout, packages, cwd):
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = dict(os.environ, AKBT_BOOTSTRAP_PACKAGES=packages, HOME=str(checkout))
    return subprocess.run([*prefix, "bash", str(checkout / "tests" / "testbed" / "bootstrap.sh")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_missing_package_prints_the_one_command_and_stops(checkout):
    proc = as_user(checkout, "coreutils akbt-no-such-package", cwd=checkout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bootstrap: missing Debian packages: akbt-no-such-package\n" in proc.stdout
    assert "\n    sudo tests/testbed/bootstrap.sh\n" in proc.stdout
    assert "apt-get" not in proc.stdout + proc.stderr


def test_from_elsewhere_the_command_has_the_full_path(checkout):
    proc = as_user(checkout, "akbt-no-such-package", cwd="/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"\n    sudo {checkout}/tests/testbed/bootstrap.sh\n" in proc.stdout


def test_installed_packages_are_not_reported(checkout):
    proc = as_user(checkout, "coreutils bash", cwd=checkout)
    assert "missing Debian packages" not in proc.stdout
    # whether this user may use the Docker engine depends on the machine; either way the answer is clear
    if proc.returncode != 0:
        assert "Docker engine" in proc.stdout, proc.stdout + proc.stderr


def test_the_list_holds_what_ci_needs():
    text = SCRIPT.read_text()
    for package in ("make", "python3-venv", "docker.io", "mmdebstrap", "zstd", "postgresql-client", "redis-tools",
                    "age", "shellcheck"):
        assert f" {package}" in text.split("packages=(", 1)[1].split("\n)", 1)[0], package
