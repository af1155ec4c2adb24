# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This doc fragment is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

from __future__ import annotations


class ModuleDocFragment:

    # Descriptions of the attributes every module documents.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
"""

    # Options to reach the container or pod the module works in.
    TRANSPORT = r"""
options:
  platform:
    description:
      - Where the target runs.
      - V(docker) talks to the Docker Engine API over the daemon socket of the host the module runs on.
      - V(kubernetes) execs into a pod through the Kubernetes API, with the credentials of
        the C(kubernetes.core) authentication options.
    type: str
    choices: [docker, kubernetes]
    default: docker
  container:
    description:
      - Name or ID of the Docker container.
      - Required with O(platform=docker).
    type: str
  docker_host:
    description:
      - The Docker daemon socket, as V(unix:///path).
      - If not set, the value of the E(DOCKER_HOST) environment variable is used, else V(unix:///var/run/docker.sock).
      - Remote daemons are not supported; run the module on the Docker host, where the backup should land.
    type: str
    default: unix:///var/run/docker.sock
  api_timeout:
    description:
      - Timeout in seconds for a single API call (not for a whole stream).
    type: int
    default: 60
  pod:
    description:
      - Name of the pod. Required with O(platform=kubernetes).
    type: str
  namespace:
    description:
      - Namespace of the pod. Required with O(platform=kubernetes).
    type: str
  pod_container:
    description:
      - Container inside the pod. Defaults to the pod's first container.
    type: str
requirements:
  - For O(platform=kubernetes), the Python C(kubernetes) client and the C(kubernetes.core) collection.
"""

    # Options of modules that write one file of a backup set.
    OUTPUT = r"""
options:
  dest:
    description:
      - Final path of the file to write.
      - The data is written to a hidden C(.<name>.*.partial) file in the same directory, checked,
        synced to disk and renamed to O(dest) with mode C(0600). A failed run removes the partial file.
      - The directory must exist.
    type: path
    required: true
  compression_level:
    description:
      - Codec level. Defaults to V(6) for gzip and V(3) for zstd.
    type: int
  compression_threads:
    description:
      - Worker threads for zstd. V(0) uses one per CPU core.
    type: int
    default: 0
  force:
    description:
      - Replace O(dest) if it exists. Without it an existing O(dest) is an error and nothing is touched.
    type: bool
    default: false
  encrypt_recipients:
    description:
      - age public keys (V(age1...)) to encrypt the file to, in the age v1 format
        (U(https://age-encryption.org/v1)). Any one of the matching identities can decrypt it.
      - Encryption happens while the data streams, after compression, so no plaintext byte reaches the disk;
        RV(size) and RV(sha256) are those of the encrypted file.
      - O(dest) must end in C(.age) when this is set, and must not end in C(.age) when it is empty.
      - Every key is checked before anything is touched. Needs the Python package C(cryptography) on the host the
        module runs on. GPG is not supported (see the collection's docs/encryption.md).
    type: list
    elements: str
    default: []
  owner:
    description:
      - The run this file belongs to, as M(authentik_ops.backup.backup_lock) returns it in
        RV(authentik_ops.backup.backup_lock#module:owner) (boot id, pid namespace, pid and start time of the
        playbook, or of the SSH session, that lives as long as the run on this host).
      - While the module works it checks every second whether that process still runs; once it is gone (the
        playbook was killed, the SSH connection of the run closed) the module stops by itself, removes its partial
        file (and the dump helper) and fails. Asynchronous tasks go on after the playbook that started them died;
        this ends them.
      - An owner that cannot be judged from here (another boot or pid namespace) never stops the module; omitted,
        the module runs to its end.
    type: str
"""

    # Options of modules that read files of a backup set that may be age-encrypted.
    DECRYPT = r"""
options:
  decrypt_identity:
    description:
      - An age identity (V(AGE-SECRET-KEY-1...)), or the text of an age identity file, to decrypt files
        that M(authentik_ops.backup.postgres_dump), M(authentik_ops.backup.redis_dump) or
        M(authentik_ops.backup.path_archive) encrypted with O(authentik_ops.backup.postgres_dump#module:encrypt_recipients).
      - The file is decrypted in memory while it is read; no plaintext is written to disk.
      - A file that is encrypted without a matching identity is refused before anything is touched.
      - Never logged. Mutually exclusive with O(decrypt_identity_file).
    type: str
  decrypt_identity_file:
    description:
      - Path of an age identity file (as written by C(age-keygen)) on the host the module runs on.
      - Mutually exclusive with O(decrypt_identity).
    type: path
"""

    # Connection options of the modules that talk to S3-compatible storage (boto3).
    S3 = r"""
options:
  endpoint_url:
    description:
      - URL of an S3-compatible service, for example V(https://minio.example.com:9000). Unset for Amazon S3.
      - If not set, the value of the E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL) environment variable is used.
    type: str
  region:
    description:
      - Region of the bucket. If not set, the value of E(AWS_REGION) or E(AWS_DEFAULT_REGION) is used, else
        V(us-east-1).
    type: str
  access_key:
    description:
      - Access key ID. If not set, the value of E(AWS_ACCESS_KEY_ID) is used, else boto3's own credential chain
        (shared credentials file, instance profile, ...).
    type: str
  secret_key:
    description:
      - Secret access key. If not set, the value of E(AWS_SECRET_ACCESS_KEY) is used. Never logged.
    type: str
  session_token:
    description:
      - Session token of temporary credentials. If not set, the value of E(AWS_SESSION_TOKEN) is used. Never logged.
    type: str
  validate_certs:
    description:
      - Check the TLS certificate of the service.
    type: bool
    default: true
  ca_bundle:
    description:
      - A CA bundle file to check the service's certificate with.
    type: path
  addressing_style:
    description:
      - V(path) puts the bucket in the URL path (what most S3-compatible services need), V(virtual) in the host
        name. V(auto) lets boto3 decide.
      - Defaults to V(path) with O(endpoint_url), else V(auto).
    type: str
    choices: [auto, path, virtual]
"""
