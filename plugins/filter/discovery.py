# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that turn the Docker host's container list into an authentik deployment and a backup plan.

Every filter is pure: it only looks at its arguments (the ``containers`` list of
``community.docker.docker_host_info`` with ``verbose_output: true``, and results of the collection's modules).
The documentation of each filter is in the YAML file of the same name next to this file.
"""

from __future__ import annotations

import posixpath
import re

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.module_utils._sets import RESULT_NOISE

try:
    import jmespath

    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - jmespath is a declared requirement
    HAS_JMESPATH = False

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
VERSION_LABEL = "org.opencontainers.image.version"

DEFAULT_SERVER_IMAGE_PATTERN = r"(^|/)(goauthentik/server|authentik/server|beryju/authentik)([:@]|$)"

COMPONENTS = ("postgresql", "redis", "server", "worker")
PART_KINDS = ("postgres", "redis", "files", "config", "media-s3")
# why a part the deployment has is not in a set: the run's --tags/--skip-tags left it out (the set is partial)
TAGS_REASON = "not selected by --tags/--skip-tags"
EXTENSIONS = {"none": "", "gzip": ".gz", "zstd": ".zst"}

# Service names that identify a component outright, then words that make a service name likely one.
EXACT_NAMES = {
    "postgresql": ("postgresql", "postgres", "db", "database", "pg"),
    "redis": ("redis", "valkey", "cache"),
    "server": ("server", "authentik", "authentik-server", "authentik_server"),
    "worker": ("worker", "authentik-worker", "authentik_worker"),
}
NAME_WORDS = {
    "postgresql": re.compile(r"postgres|(^|[-_])(db|pg)([-_]|$)"),
    "redis": re.compile(r"redis|valkey|keydb"),
    "server": re.compile(r"server"),
    "worker": re.compile(r"worker"),
}
# Image repositories (any registry prefix) that identify the database and the cache.
IMAGE_PATTERNS = {
    "postgresql": re.compile(r"(^|/)(postgres|postgresql|postgis|timescaledb[\w-]*|pgvector)([:@]|$)"),
    "redis": re.compile(r"(^|/)(redis|redis-stack-server|valkey|keydb)([:@]|$)"),
}

# authentik versions: YYYY.M.P with an optional pre-release (2026.2.0-rc1), optionally prefixed with v.
VERSION_RE = re.compile(r"^v?(?P<version>\d{4}\.\d{1,2}(?:\.\d+)?(?:-(?:rc|beta|alpha)\.?\d*)?)$")


if HAS_JMESPATH:
    _JP_PROJECT = jmespath.compile(f'Labels."{PROJECT_LABEL}"')
    _JP_MOUNTS = jmespath.compile("Mounts[].Destination")
    _JP_NAME = jmespath.compile("Names[0]")


def _require_jmespath():
    if not HAS_JMESPATH:
        raise AnsibleFilterError("the authentik_ops.backup filters need the Python library jmespath on the "
                                 "controller: pip install jmespath")


def _check_containers(containers):
    _require_jmespath()
    if containers is None:
        return []
    if not isinstance(containers, (list, tuple)):
        raise AnsibleFilterError(f"expected the list of containers of community.docker.docker_host_info, got "
                                 f"{type(containers).__name__}")
    for container in containers:
        if not isinstance(container, dict):
            raise AnsibleFilterError("every container must be a dict as returned by community.docker.docker_host_info")
        if "Labels" not in container:
            raise AnsibleFilterError("the containers lack their labels: run community.docker.docker_host_info with "
                                     "verbose_output: true")
    return containers


def _pattern(image_pattern):
    try:
        return re.compile(image_pattern or DEFAULT_SERVER_IMAGE_PATTERN)
    except re.error as exc:
        raise AnsibleFilterError(f"image pattern {image_pattern!r} is not a valid regular expression: {exc}")


def _project_of(container):
    return _JP_PROJECT.search(container) or ""


def _labels(container):
    return container.get("Labels") or {}


def _image_matches(pattern, container):
    return bool(pattern.search(container.get("Image") or ""))


def compose_projects(containers):
    """Names of all Compose projects that have at least one container, sorted."""
    containers = _check_containers(containers)
    return sorted({_project_of(c) for c in containers if _project_of(c)})


def authentik_projects(containers, image_pattern=None):
    """Names of the Compose projects with a container running an authentik server image, sorted."""
    containers = _check_containers(containers)
    pattern = _pattern(image_pattern)
    return sorted({_project_of(c) for c in containers if _project_of(c) and _image_matches(pattern, c)})


def _container_number(container):
    try:
        return int(_labels(container).get(NUMBER_LABEL) or 0)
    except (TypeError, ValueError):
        return 0


def _normalize(container):
    labels = _labels(container)
    name = (_JP_NAME.search(container) or container.get("Id", "")[:12] or "").lstrip("/")
    state = container.get("State")
    if isinstance(state, dict):  # inspect-style State object
        state = state.get("Status")
    state = state or "unknown"
    return dict(
        name=name,
        id=container.get("Id"),
        image=container.get("Image"),
        image_id=container.get("ImageID"),
        service=labels.get(SERVICE_LABEL),
        number=_container_number(container),
        state=state,
        running=state == "running",
        command=container.get("Command") or "",
        mounts=sorted(_JP_MOUNTS.search(container) or []),
        image_version_label=labels.get(VERSION_LABEL),
    )


def compose_services(containers, project):
    """The containers of one Compose project grouped by service, each list sorted by container number."""
    containers = _check_containers(containers)
    services = {}
    for container in containers:
        if _project_of(container) != project:
            continue
        entry = _normalize(container)
        service = entry["service"] or entry["name"]
        services.setdefault(service, []).append(entry)
    for entries in services.values():
        entries.sort(key=lambda e: (e["number"], e["name"]))
    return dict(sorted(services.items()))


def _primary(entries):
    """The container of a service the backup works with: the first running one, else the first."""
    running = [e for e in entries if e["running"]]
    return (running or entries)[0] if entries else None


def _score(component, service, entries, pattern):
    """How strongly a service looks like a component: 3 exact name, 2 image/command, 1 name word, 0 not."""
    lowered = service.lower()
    if lowered in EXACT_NAMES[component]:
        return 3
    image = entries[0]["image"] or ""
    command = " ".join(e["command"] for e in entries).lower()
    if component in IMAGE_PATTERNS:
        if IMAGE_PATTERNS[component].search(image):
            return 2
    elif pattern.search(image):
        words = command.split()
        if component == "worker" and "worker" in words:
            return 2
        if component == "server" and "server" in words:
            return 2
    if NAME_WORDS[component].search(lowered):
        return 1
    return 0


def authentik_components(services, image_pattern=None):
    """Map postgresql, redis, server and worker to the service that plays the part (or None).

    ``services`` is the output of compose_services. A service plays at most one part. The service name decides
    first (exact known names), then the image and command, then words in the service name.
    """
    if not isinstance(services, dict):
        raise AnsibleFilterError("authentik_components expects the dict returned by compose_services")
    pattern = _pattern(image_pattern)
    scored = []
    for component in COMPONENTS:
        for service, entries in services.items():
            if not entries:
                continue
            score = _score(component, service, entries, pattern)
            if score:
                scored.append((-score, COMPONENTS.index(component), service, component))
    result = dict.fromkeys(COMPONENTS)
    taken = set()
    for _neg_score, _order, service, component in sorted(scored):
        if result[component] is None and service not in taken:
            result[component] = service
            taken.add(service)
    return result


def authentik_version(image, labels=None):
    """authentik's version from an image reference's tag, else from the image's version label, else None."""
    reference = image or ""
    reference = reference.split("@", 1)[0]  # drop a digest
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
        match = VERSION_RE.match(tag)
        if match:
            return match.group("version")
    label = (labels or {}).get(VERSION_LABEL) if isinstance(labels, dict) else None
    if label:
        match = VERSION_RE.match(str(label).strip())
        if match:
            return match.group("version")
    return None


def authentik_layout(deployment):
    """V(legacy) when the deployment has Redis or mounts /media into server or worker; V(current) otherwise."""
    if not isinstance(deployment, dict):
        raise AnsibleFilterError("authentik_layout expects the dict returned by authentik_deployment")
    components = deployment.get("components") or {}
    if components.get("redis"):
        return "legacy"
    for component in ("server", "worker"):
        container = (deployment.get("containers") or {}).get(component) or {}
        if any(m == "/media" or m.startswith("/media/") for m in container.get("mounts") or []):
            return "legacy"
    return "current"


def _split_config_files(value, working_dir):
    files = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        if not item.startswith("/") and working_dir:
            item = posixpath.join(working_dir, item)
        files.append(posixpath.normpath(item))
    return files


def authentik_deployment(containers, project, image_pattern=None):
    """Everything the backup needs to know about one Compose project running authentik."""
    services = compose_services(containers, project)
    if not services:
        raise AnsibleFilterError(f"no container of the Compose project {project!r} on this Docker host")
    components = authentik_components(services, image_pattern)
    chosen = {}
    for component, service in components.items():
        if service:
            chosen[component] = dict(_primary(services[service]), replicas=len(services[service]))
    raw = [c for c in containers if _project_of(c) == project]
    working_dir = next((_labels(c).get(WORKING_DIR_LABEL) for c in raw if _labels(c).get(WORKING_DIR_LABEL)), None)
    config_label = next((_labels(c).get(CONFIG_FILES_LABEL) for c in raw if _labels(c).get(CONFIG_FILES_LABEL)), None)
    authentik = chosen.get("server") or chosen.get("worker")
    image = authentik["image"] if authentik else None
    version = authentik_version(image) if image else None
    deployment = dict(
        project=project,
        working_dir=working_dir,
        config_files=_split_config_files(config_label, working_dir),
        services=services,
        components=components,
        containers=chosen,
        image=image,
        image_id=authentik["image_id"] if authentik else None,
        version=version,
        version_source="tag" if version else None,
    )
    deployment["layout"] = authentik_layout(deployment)
    return deployment


def _mounts(container, path):
    path = path.rstrip("/") or "/"
    for mount in container.get("mounts") or []:
        mount = mount.rstrip("/") or "/"
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return True
    return False


def _part_name(path, used):
    base = posixpath.basename(path.rstrip("/")) or "root"
    if base in used or base in PART_KINDS:
        base = path.strip("/").replace("/", "-") or "root"
    return base


class _Plan:
    """The parts, skipped parts and errors of a backup plan while it is made."""

    def __init__(self, deployment, components, selected, compression):
        self.deployment = deployment
        self.containers = deployment.get("containers") or {}
        self.components = components
        self.selected = selected
        self.compression = compression
        self.ext = EXTENSIONS[compression]
        self.parts, self.skipped, self.errors = [], [], []

    def skip(self, part, reason):
        self.skipped.append(dict(part=part, reason=reason))

    def wanted(self, kind):
        if kind not in self.components:
            self.skip(kind, "not in authentik_backup_components")
            return False
        return True

    def postgres(self):
        db = self.containers.get("postgresql")
        if db:
            self.parts.append(dict(part="postgres", kind="postgres", service=db["service"], container=db["name"],
                                   file=f"postgres.sql{self.ext}", compression=self.compression))
        else:
            self.errors.append(f"no PostgreSQL service found in the Compose project {self.deployment['project']!r} "
                               f"(services: {', '.join(self.deployment.get('services') or {})}); an external "
                               "database is not backed up by this role: remove postgres from "
                               "authentik_backup_components to back up the rest")

    def redis(self):
        cache = self.containers.get("redis")
        if cache:
            self.parts.append(dict(part="redis", kind="redis", service=cache["service"], container=cache["name"],
                                   file="redis.rdb", compression="none"))
        else:
            self.skip("redis", "no redis service in this deployment (authentik 2025.10 and later use none)")

    def files(self, paths):
        used = set()
        seen = set()
        sources = [self.containers[c] for c in ("server", "worker") if self.containers.get(c)]
        for path in paths or []:
            norm = posixpath.normpath(path) if path else path
            if not norm or not norm.startswith("/"):
                self.errors.append(f"authentik_backup_paths: {path!r} is not an absolute path")
                continue
            if norm in seen:
                continue
            seen.add(norm)
            mounting = [c for c in sources if _mounts(c, norm)]
            if not mounting:
                name = _part_name(norm, used)
                self.skip(name, f"{norm} is not mounted in "
                                f"{' or '.join(c['service'] for c in sources) or 'any authentik container'}")
                continue
            source = next((c for c in mounting if c["running"]), mounting[0])
            name = _part_name(norm, used)
            used.add(name)
            self.parts.append(dict(part=name, kind="files", service=source["service"], container=source["name"],
                                   paths=[norm], file=f"{name}.tar{self.ext}", compression=self.compression))

    def config(self):
        working_dir = self.deployment.get("working_dir")
        files = []
        if working_dir:
            files.append(posixpath.join(working_dir, ".env"))
        files.extend(f for f in self.deployment.get("config_files") or [] if f not in files)
        if files:
            self.parts.append(dict(part="config", kind="config", service=None, container=None, paths=files,
                                   file=f"config.tar{self.ext}", compression=self.compression))
        else:
            self.skip("config", f"the containers carry no {WORKING_DIR_LABEL} or {CONFIG_FILES_LABEL} label")

    def media_s3(self, storage):
        """authentik's media objects copied from their S3 bucket (only asked for by listing media-s3)."""
        media = (storage or {}).get("media") if isinstance(storage, dict) else None
        if not isinstance(media, dict):
            self.skip("media-s3", "where authentik keeps its media is not known here (on Kubernetes the storage "
                                  "settings are not read yet)")
            return
        if media.get("backend") != "s3":
            self.skip("media-s3", f"authentik keeps its media in {media.get('backend') or 'file'} storage, not S3: "
                                  "the directory archives hold it")
            return
        if not media.get("bucket") or media.get("unresolved"):
            self.errors.append("media-s3: the bucket of authentik's media is not known (its setting is unset or a "
                               f"file:// URI: {', '.join(media.get('unresolved') or ['BUCKET_NAME'])}); leave "
                               "media-s3 out of authentik_backup_components")
            return
        if media.get("prefix") is None:
            self.errors.append("media-s3: authentik's version is unknown, so is the key prefix of its media objects; "
                               "set authentik_backup_media_s3.prefix (media/ from 2025.12 on, empty before)")
            return
        self.parts.append(dict(part="media-s3", kind="media-s3", service=None, container=None,
                               file=f"media-s3.tar{self.ext}", compression=self.compression,
                               bucket=media["bucket"], prefix=media["prefix"], endpoint=media.get("endpoint"),
                               region=media.get("region"), addressing_style=media.get("addressing_style")))

    def targets(self):
        """The containers the parts come from, and those of them that do not run."""
        targets = {}
        for part in self.parts:
            if part["container"]:
                targets.setdefault(part["container"], dict(container=part["container"], service=part["service"],
                                                           parts=[]))["parts"].append(part["part"])
        not_running = []
        for name, target in targets.items():
            entry = next(c for c in self.containers.values() if c["name"] == name)
            if not entry["running"]:
                not_running.append(dict(target, state=entry["state"]))
        return list(targets.values()), not_running


def authentik_backup_plan(deployment, components, paths=None, compression="zstd", selected=None, encrypted=False,
                          storage=None):
    """Decide which parts the backup takes, from which container, into which file; and which are skipped, why."""
    if not isinstance(deployment, dict) or "components" not in deployment:
        raise AnsibleFilterError("authentik_backup_plan expects the dict returned by authentik_deployment")
    if compression not in EXTENSIONS:
        raise AnsibleFilterError(f"compression must be one of {', '.join(EXTENSIONS)}, not {compression!r}")
    components = list(components or [])
    unknown = [c for c in components if c not in PART_KINDS]
    if unknown:
        raise AnsibleFilterError(f"unknown components {unknown}: choose from {', '.join(PART_KINDS)}")
    selected = PART_KINDS if selected is None else list(selected)
    plan = _Plan(deployment, components, selected, compression)
    partial = []
    builders = (("postgres", "postgres", ()), ("redis", "redis", ()), ("files", "files", (paths,)),
                ("config", "config", ()), ("media-s3", "media_s3", (storage,)))
    for kind, method, args in builders:
        if kind == "media-s3" and kind not in components:
            continue  # asked for by listing it only: no note for everyone else
        if not plan.wanted(kind):
            continue
        if kind in selected:
            getattr(plan, method)(*args)
            continue
        # left out by the run's tags: what it would back up is missing from this set, which is partial; the
        # problems of a part that is not backed up do not stop the run
        scratch = _Plan(deployment, components, selected, compression)
        getattr(scratch, method)(*args)
        for part in scratch.parts:
            plan.skip(part["part"], TAGS_REASON)
            partial.append(part["part"])
        plan.skipped.extend(scratch.skipped)
    if encrypted:  # age-encrypted files: the name says so (postgres.sql.zst.age)
        for part in plan.parts:
            part["file"] += ".age"
    targets, not_running = plan.targets()
    return dict(parts=plan.parts, skipped=plan.skipped, errors=plan.errors, targets=targets,
                not_running=not_running, partial=partial)


def _clean_result(result):
    return {k: v for k, v in result.items() if not RESULT_NOISE.search(k)}


def authentik_backup_collect(results, plan):
    """Pair the registered results of the dump tasks with the planned parts.

    Returns ``parts`` (entries for backup_set: the cleaned result with its part name, or in check mode the
    planned entry) and ``skipped`` (the plan's skipped parts, plus archives or paths the modules found absent).
    """
    if not isinstance(plan, dict) or "parts" not in plan:
        raise AnsibleFilterError("authentik_backup_collect expects the plan returned by authentik_backup_plan")
    by_file = {p["file"]: p for p in plan["parts"]}
    flat = []
    for result in results or []:
        if not isinstance(result, dict):
            continue
        if isinstance(result.get("results"), list):  # a looped task
            flat.extend(r for r in result["results"] if isinstance(r, dict))
        else:
            flat.append(result)
    parts = []
    skipped = [dict(s) for s in plan.get("skipped") or []]
    for result in flat:
        if result.get("skipped") is True or result.get("failed"):
            continue
        planned = None
        item = result.get("item")
        if isinstance(item, dict) and item.get("file") in by_file:
            planned = by_file[item["file"]]
        dest = result.get("dest")
        if planned is None and dest:
            planned = by_file.get(posixpath.basename(dest))
        if planned is None:
            continue
        for absent in result.get("skipped_paths") or []:
            if isinstance(absent, dict):
                skipped.append(dict(part=planned["part"], path=absent.get("path"), reason=absent.get("reason")))
        if not dest:
            skipped.append(dict(part=planned["part"], reason="nothing to archive: every path was absent"))
            continue
        entry = _clean_result(result)
        entry.pop("skipped_paths", None)
        entry["part"] = planned["part"]
        parts.append(entry)
    return dict(parts=parts, skipped=skipped)


def authentik_source_containers(deployment):
    """The containers of the deployment by service (name, image, state, replicas) for the manifest."""
    if not isinstance(deployment, dict) or "services" not in deployment:
        raise AnsibleFilterError("authentik_source_containers expects the dict returned by authentik_deployment")
    out = {}
    for service, entries in (deployment.get("services") or {}).items():
        primary = _primary(entries)
        out[service] = dict(name=primary["name"], image=primary["image"], state=primary["state"],
                            replicas=len(entries))
    return out


class FilterModule:
    """authentik_ops.backup discovery and planning filters."""

    def filters(self):
        return {
            "compose_projects": compose_projects,
            "authentik_projects": authentik_projects,
            "compose_services": compose_services,
            "authentik_components": authentik_components,
            "authentik_version": authentik_version,
            "authentik_layout": authentik_layout,
            "authentik_deployment": authentik_deployment,
            "authentik_backup_plan": authentik_backup_plan,
            "authentik_backup_collect": authentik_backup_collect,
            "authentik_source_containers": authentik_source_containers,
        }
