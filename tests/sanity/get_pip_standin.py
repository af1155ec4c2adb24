# Copyright: authentik_ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for get-pip.py, used only by ansible-test when it bootstraps pip in its sanity venvs.

ansible-test downloads get-pip-<version>.py from ci-files.testing.ansible.com unless it finds
~/.ansible/test/cache/get_pip_<version>.py; tests/run-sanity.sh copies this file there. Like get-pip.py it
is run as ``python get_pip.py [pip options] <packages>`` (for example ``pip==24.2 --no-setuptools
--no-wheel``). It installs the pip wheel bundled with Python (ensurepip, no network), then runs
``python -m pip install <packages>`` so the requested pip comes from the configured indexes.

ensurepip.bootstrap() deletes every PIP_* variable and sets PIP_CONFIG_FILE=/dev/null in this process's
environment, so the second pip runs with a copy of the environment taken before the bootstrap: otherwise it
would lose the machine's pip configuration (certificate bundle, index URLs, find-links).
"""

from __future__ import annotations

import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = frozenset(('--no-setuptools', '--no-wheel'))


def main() -> int:
    """Bootstrap the bundled pip, then install the requested packages with the original environment."""
    original_env = dict(os.environ)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]

    import ensurepip  # pylint: disable=import-outside-toplevel

    ensurepip.bootstrap(upgrade=True)  # mutates os.environ, hence original_env

    if not args:
        return 0
    return subprocess.call([sys.executable, '-m', 'pip', 'install', *args], env=original_env)


if __name__ == '__main__':
    sys.exit(main())
