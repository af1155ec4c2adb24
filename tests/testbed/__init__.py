"""akbt test bed: real Docker containers standing in for authentik deployments, and helpers to prove backups.

Import as ``testbed`` with ``<repo>/tests`` on ``sys.path`` (tests/integration/conftest.py does that), or run the
scripts directly: ``python tests/testbed/stacks.py up --layout current --project akbt-dev``.
"""
