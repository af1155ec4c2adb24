# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""moto's standalone S3 server on 127.0.0.1 (the real S3 HTTP API, object lock and versioning included), started for
a test module and stopped after it; boto3 talks to it as backup_upload does."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

VENV_BIN = Path(sys.executable).parent
REGION = "us-east-1"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_dir, access_key, secret_key):
    """(endpoint URL, boto3 client) of a moto server on a free port of 127.0.0.1; its output goes to log_dir."""
    port = free_port()
    log = Path(log_dir) / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],  # noqa: S603
                                  stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
                          aws_secret_access_key=secret_key)
    try:
        for _attempt in range(100):
            try:
                client.list_buckets()
                break
            except Exception:  # pylint: disable=broad-exception-caught  # not listening yet
                time.sleep(0.1)
        else:
            raise AssertionError(f"moto did not start: {log.read_text()}")
        yield endpoint, client
    finally:
        server.terminate()
        server.wait(timeout=10)


def bucket_state(client, bucket):
    """{key: (bytes, content type)} of every object in ``bucket`` (its current versions)."""
    state = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            answer = client.get_object(Bucket=bucket, Key=item["Key"])
            state[item["Key"]] = (answer["Body"].read(), answer.get("ContentType"))
    return state
