# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of plugins/filter/discovery.py (pure functions on docker_host_info-shaped data)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.authentik_ops.backup.plugins.filter import discovery as d


def container(project, service, image, *, number=1, naming="v2", state="running", mounts=(), command="",
              working_dir="/opt/authentik", config_files=None, labels=None):
    """A container as community.docker.docker_host_info returns it with verbose_output=true."""
    name = f"{project}-{service}-{number}" if naming == "v2" else f"{project}_{service}_{number}"
    all_labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": str(number),
        "com.docker.compose.project.working_dir": working_dir,
        "com.docker.compose.project.config_files": config_files or f"{working_dir}/compose.yml",
    }
    all_labels.update(labels or {})
    return {
        "Id": f"{project}{service}{number}".ljust(64, "0"),
        "Names": [f"/{name}"],
        "Image": image,
        "ImageID": "sha256:" + "ab" * 32,
        "Command": command,
        "State": state,
        "Status": "Up 2 minutes" if state == "running" else "Exited (0) 1 minute ago",
        "Labels": all_labels,
        "Mounts": [{"Type": "bind", "Source": f"{working_dir}{m}", "Destination": m} for m in mounts],
    }


def current_stack(project="authentik", naming="v2", image="ghcr.io/goauthentik/server:2026.2.2", **kw):
    return [
        container(project, "postgresql", "docker.io/library/postgres:16-alpine", naming=naming,
                  mounts=["/var/lib/postgresql/data"], **kw),
        container(project, "server", image, naming=naming, mounts=["/data", "/templates"],
                  command="dumb-init -- ak server", **kw),
        container(project, "worker", image, naming=naming, mounts=["/data", "/certs", "/templates"],
                  command="dumb-init -- ak worker", **kw),
    ]


def legacy_stack(project="authentik_legacy", naming="v1", image="ghcr.io/goauthentik/server:2025.2.4", **kw):
    return [
        container(project, "postgresql", "docker.io/library/postgres:16-alpine", naming=naming, **kw),
        container(project, "redis", "docker.io/library/redis:alpine", naming=naming, mounts=["/data"], **kw),
        container(project, "server", image, naming=naming, mounts=["/media", "/templates"],
                  command="dumb-init -- ak server", **kw),
        container(project, "worker", image, naming=naming, mounts=["/media", "/certs", "/templates"],
                  command="dumb-init -- ak worker", **kw),
    ]


OTHER = [container("nextcloud", "app", "nextcloud:29"), container("nextcloud", "db", "postgres:16")]


# --- authentik_projects / compose_projects -------------------------------------------------------------------

@pytest.mark.parametrize("image, expected", [
    ("ghcr.io/goauthentik/server:2026.2.2", True),
    ("akbt.local/goauthentik/server:2025.2.4", True),
    ("goauthentik/server:latest", True),
    ("registry.example.com:5000/mirror/goauthentik/server@sha256:" + "0" * 64, True),
    ("docker.io/authentik/server:2024.12.1", True),
    ("beryju/authentik:2021.5.4", True),
    ("ghcr.io/goauthentik/ldap:2026.2.2", False),
    ("ghcr.io/goauthentik/proxy:2026.2.2", False),
    ("ghcr.io/goauthentik/server-dev:gh-main", False),
    ("example.com/notgoauthentik/server:1", False),
    ("postgres:16", False),
    ("sha256:" + "ab" * 32, False),
])
def test_authentik_projects_image_pattern(image, expected):
    containers = [container("proj", "server", image)] + OTHER
    assert d.authentik_projects(containers) == (["proj"] if expected else [])


def test_projects_sorted_distinct_and_ignore_unlabelled():
    unlabelled = {"Id": "x", "Names": ["/loose"], "Image": "ghcr.io/goauthentik/server:2026.2.2", "Labels": {}}
    containers = current_stack("b-proj") + legacy_stack("a_proj") + OTHER + [unlabelled]
    assert d.authentik_projects(containers) == ["a_proj", "b-proj"]
    assert d.compose_projects(containers) == ["a_proj", "b-proj", "nextcloud"]


def test_custom_image_pattern():
    containers = [container("mine", "idp", "registry.local/sso/authentik-custom:2026.2.2")] + current_stack()
    assert d.authentik_projects(containers, r"sso/authentik-custom") == ["mine"]


@pytest.mark.parametrize("bad", ["not a list", [1, 2], [{"Id": "x", "Image": "y"}]])
def test_bad_container_lists(bad):
    with pytest.raises(AnsibleFilterError):
        d.authentik_projects(bad)


def test_bad_pattern():
    with pytest.raises(AnsibleFilterError, match="regular expression"):
        d.authentik_projects(current_stack(), "(unclosed")


def test_none_is_empty():
    assert d.compose_projects(None) == []


# --- compose_services / authentik_components -----------------------------------------------------------------

@pytest.mark.parametrize("naming", ["v1", "v2"])
def test_compose_services_groups_and_normalizes(naming):
    containers = current_stack("akbt-cur", naming=naming) + current_stack("other") + [
        container("akbt-cur", "server", "ghcr.io/goauthentik/server:2026.2.2", number=2, naming=naming,
                  command="ak server")]
    services = d.compose_services(containers, "akbt-cur")
    assert list(services) == ["postgresql", "server", "worker"]
    assert [c["number"] for c in services["server"]] == [1, 2]
    sep = "-" if naming == "v2" else "_"
    assert services["server"][0]["name"] == f"akbt-cur{sep}server{sep}1"
    assert services["worker"][0]["mounts"] == ["/certs", "/data", "/templates"]
    assert set(services["server"][0]) == {"name", "id", "image", "image_id", "service", "number", "state",
                                          "running", "command", "mounts", "image_version_label"}


@pytest.mark.parametrize("services, expected", [
    # exact names
    ({"postgresql": "postgres:16", "redis": "redis:7", "server": "ghcr.io/goauthentik/server:1",
      "worker": "ghcr.io/goauthentik/server:1"},
     {"postgresql": "postgresql", "redis": "redis", "server": "server", "worker": "worker"}),
    # other names, recognised by image and command
    ({"database": "postgres:16", "kv": "valkey/valkey:8", "web": ("ghcr.io/goauthentik/server:1", "ak server"),
      "jobs": ("ghcr.io/goauthentik/server:1", "dumb-init -- ak worker")},
     {"postgresql": "database", "redis": "kv", "server": "web", "worker": "jobs"}),
    # words in names when images say nothing
    ({"authentik-db": "registry.local/custom-db:1", "auth-redis-cache": "registry.local/kv:1",
      "authentik_server": "ghcr.io/goauthentik/server:1", "authentik-worker-x": "ghcr.io/goauthentik/server:1"},
     {"postgresql": "authentik-db", "redis": "auth-redis-cache", "server": "authentik_server",
      "worker": "authentik-worker-x"}),
    # no redis, no worker
    ({"postgresql": "postgres:16", "server": "ghcr.io/goauthentik/server:1"},
     {"postgresql": "postgresql", "redis": None, "server": "server", "worker": None}),
    # bitnami image under an unusual name
    ({"pgsql": "docker.io/bitnami/postgresql:16", "server": "ghcr.io/goauthentik/server:1"},
     {"postgresql": "pgsql", "redis": None, "server": "server", "worker": None}),
])
def test_authentik_components(services, expected):
    containers = []
    for service, spec in services.items():
        image, command = spec if isinstance(spec, tuple) else (spec, "")
        containers.append(container("p", service, image, command=command))
    assert d.authentik_components(d.compose_services(containers, "p")) == expected


def test_a_service_plays_one_part_only():
    containers = [container("p", "server", "ghcr.io/goauthentik/server:1", command="ak server worker")]
    components = d.authentik_components(d.compose_services(containers, "p"))
    assert components["server"] == "server" and components["worker"] is None


# --- authentik_version ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image, labels, expected", [
    ("ghcr.io/goauthentik/server:2026.2.2", None, "2026.2.2"),
    ("akbt.local/goauthentik/server:2025.2.4", None, "2025.2.4"),
    ("ghcr.io/goauthentik/server:2026.2.0-rc1", None, "2026.2.0-rc1"),
    ("ghcr.io/goauthentik/server:v2025.10.1", None, "2025.10.1"),
    ("ghcr.io/goauthentik/server:2026.2", None, "2026.2"),
    ("registry:5000/goauthentik/server:2026.2.2@sha256:" + "1" * 64, None, "2026.2.2"),
    ("ghcr.io/goauthentik/server:latest", None, None),
    ("ghcr.io/goauthentik/server:latest", {"org.opencontainers.image.version": "2026.2.2"}, "2026.2.2"),
    ("ghcr.io/goauthentik/server@sha256:" + "2" * 64, {"org.opencontainers.image.version": "2025.2.4"},
     "2025.2.4"),
    ("ghcr.io/goauthentik/server", {"org.opencontainers.image.version": "not-a-version"}, None),
    ("registry:5000/goauthentik/server", None, None),
    ("sha256:" + "ab" * 32, {"org.opencontainers.image.version": "2026.2.2"}, "2026.2.2"),
    ("", None, None),
    (None, None, None),
])
def test_authentik_version(image, labels, expected):
    assert d.authentik_version(image, labels) == expected


# --- authentik_deployment / authentik_layout ------------------------------------------------------------------

def test_deployment_current():
    dep = d.authentik_deployment(current_stack("akbt-cur") + legacy_stack(), "akbt-cur")
    assert dep["layout"] == "current"
    assert dep["version"] == "2026.2.2" and dep["version_source"] == "tag"
    assert dep["components"]["redis"] is None
    assert dep["containers"]["postgresql"]["name"] == "akbt-cur-postgresql-1"
    assert dep["working_dir"] == "/opt/authentik"
    assert dep["config_files"] == ["/opt/authentik/compose.yml"]


def test_deployment_legacy_v1():
    dep = d.authentik_deployment(legacy_stack("akbt_legacy"), "akbt_legacy")
    assert dep["layout"] == "legacy"
    assert dep["version"] == "2025.2.4"
    assert dep["containers"]["redis"]["name"] == "akbt_legacy_redis_1"


def test_layout_legacy_by_media_only():
    stack = current_stack()
    stack[1]["Mounts"].append({"Destination": "/media"})
    assert d.authentik_deployment(stack, "authentik")["layout"] == "legacy"


def test_deployment_version_unknown_for_latest():
    dep = d.authentik_deployment(current_stack(image="ghcr.io/goauthentik/server:latest"), "authentik")
    assert dep["version"] is None and dep["version_source"] is None


def test_deployment_prefers_running_replica():
    stack = current_stack()
    stack[1]["State"] = "exited"
    stack.append(container("authentik", "server", "ghcr.io/goauthentik/server:2026.2.2", number=2,
                           mounts=["/data"], command="ak server"))
    dep = d.authentik_deployment(stack, "authentik")
    assert dep["containers"]["server"]["name"] == "authentik-server-2"
    assert dep["containers"]["server"]["replicas"] == 2


@pytest.mark.parametrize("config_files, expected", [
    ("/srv/ak/compose.yml,/srv/ak/compose.override.yml", ["/srv/ak/compose.yml", "/srv/ak/compose.override.yml"]),
    ("docker-compose.yml", ["/srv/ak/docker-compose.yml"]),
    (" /srv/ak/a.yml , ", ["/srv/ak/a.yml"]),
])
def test_config_files_label(config_files, expected):
    stack = current_stack(working_dir="/srv/ak", config_files=config_files)
    assert d.authentik_deployment(stack, "authentik")["config_files"] == expected


def test_deployment_unknown_project():
    with pytest.raises(AnsibleFilterError, match="no container"):
        d.authentik_deployment(current_stack(), "nope")


def test_layout_needs_dict():
    with pytest.raises(AnsibleFilterError):
        d.authentik_layout("current")


# --- authentik_backup_plan ----------------------------------------------------------------------------------------

ALL = ["postgres", "redis", "files", "config"]
PATHS = ["/data", "/media", "/templates", "/certs", "/blueprints"]


def test_plan_current():
    plan = d.authentik_backup_plan(d.authentik_deployment(current_stack(), "authentik"), ALL, PATHS, "zstd")
    assert [(p["part"], p["file"], p["container"]) for p in plan["parts"]] == [
        ("postgres", "postgres.sql.zst", "authentik-postgresql-1"),
        ("data", "data.tar.zst", "authentik-server-1"),
        ("templates", "templates.tar.zst", "authentik-server-1"),
        ("certs", "certs.tar.zst", "authentik-worker-1"),
        ("config", "config.tar.zst", None),
    ]
    assert plan["parts"][-1]["paths"] == ["/opt/authentik/.env", "/opt/authentik/compose.yml"]
    assert {s["part"] for s in plan["skipped"]} == {"redis", "media", "blueprints"}
    assert plan["errors"] == [] and plan["not_running"] == []
    targets = [t["container"] for t in plan["targets"]]
    assert targets == ["authentik-postgresql-1", "authentik-server-1", "authentik-worker-1"]


@pytest.mark.parametrize("compression, sql, tar", [("none", "postgres.sql", "media.tar"),
                                                   ("gzip", "postgres.sql.gz", "media.tar.gz"),
                                                   ("zstd", "postgres.sql.zst", "media.tar.zst")])
def test_plan_legacy_extensions(compression, sql, tar):
    plan = d.authentik_backup_plan(d.authentik_deployment(legacy_stack(), "authentik_legacy"), ALL, PATHS,
                                   compression)
    files = {p["part"]: p["file"] for p in plan["parts"]}
    assert files["postgres"] == sql and files["media"] == tar and files["redis"] == "redis.rdb"
    assert {s["part"] for s in plan["skipped"]} == {"data", "blueprints"}


def test_plan_dedups_paths_and_names():
    stack = current_stack()
    stack[1]["Mounts"].append({"Destination": "/srv/a/data"})
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ["files"],
                                   ["/data", "/data/", "/srv/a/data", "/data"], "zstd")
    assert [(p["part"], p["paths"]) for p in plan["parts"]] == [("data", ["/data"]),
                                                                ("srv-a-data", ["/srv/a/data"])]


def test_plan_path_inside_mount_and_running_preference():
    stack = current_stack()
    stack[1]["State"] = "exited"  # server stopped: /data comes from the worker, which mounts it too
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ["files"], ["/data/media"], "none")
    assert plan["parts"][0]["container"] == "authentik-worker-1"
    assert plan["parts"][0]["part"] == "media" and plan["not_running"] == []


def test_plan_not_running_database():
    stack = current_stack()
    stack[0]["State"] = "exited"
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ALL, PATHS, "zstd")
    assert plan["not_running"] == [{"container": "authentik-postgresql-1", "service": "postgresql",
                                    "parts": ["postgres"], "state": "exited"}]


def test_plan_no_database_is_an_error():
    stack = current_stack()[1:]
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ALL, PATHS, "zstd")
    assert plan["errors"] and "no PostgreSQL service" in plan["errors"][0]
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ["files"], PATHS, "zstd")
    assert plan["errors"] == []


def test_plan_components_and_tags():
    dep = d.authentik_deployment(legacy_stack(), "authentik_legacy")
    full = d.authentik_backup_plan(dep, ["postgres", "files"], PATHS, "zstd")
    directories = [p["part"] for p in full["parts"] if p["kind"] == "files"]
    assert len(directories) >= 2 and full["partial"] == []
    plan = d.authentik_backup_plan(dep, ["postgres", "files"], PATHS, "zstd", selected=["postgres"])
    assert [p["part"] for p in plan["parts"]] == ["postgres"]
    reasons = {s["part"]: s["reason"] for s in plan["skipped"]}
    assert reasons == dict({"redis": "not in authentik_backup_components",
                            "config": "not in authentik_backup_components"},
                           **{name: "not selected by --tags/--skip-tags" for name in directories},
                           **{s["part"]: s["reason"] for s in full["skipped"]})
    # the directories the deployment has, left out by the tags: the set is partial
    assert plan["partial"] == directories


def test_plan_tags_leave_out_only_what_the_deployment_has():
    dep = d.authentik_deployment(current_stack(), "authentik")
    plan = d.authentik_backup_plan(dep, ALL, PATHS, "zstd", selected=["postgres"])
    assert plan["partial"] == [p["part"] for p in d.authentik_backup_plan(dep, ALL, PATHS, "zstd")["parts"]
                               if p["kind"] not in ("postgres", "redis")]
    assert {"part": "redis", "reason": "no redis service in this deployment (authentik 2025.10 and later use none)"} \
        in plan["skipped"]
    # a part left out by the tags does not stop the run with its problems
    stack = [c for c in current_stack() if c["Labels"]["com.docker.compose.service"] != "postgresql"]
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ALL, PATHS, "zstd", selected=["files"])
    assert plan["errors"] == [] and plan["partial"] == ["config"]


def test_plan_config_without_labels():
    stack = current_stack()
    for c in stack:
        del c["Labels"]["com.docker.compose.project.working_dir"]
        del c["Labels"]["com.docker.compose.project.config_files"]
    plan = d.authentik_backup_plan(d.authentik_deployment(stack, "authentik"), ["config"], [], "zstd")
    assert plan["parts"] == [] and plan["skipped"][-1]["part"] == "config"


@pytest.mark.parametrize("args, match", [
    ((["postgres", "nope"], PATHS, "zstd"), "unknown components"),
    ((ALL, PATHS, "xz"), "compression"),
])
def test_plan_bad_arguments(args, match):
    with pytest.raises(AnsibleFilterError, match=match):
        d.authentik_backup_plan(d.authentik_deployment(current_stack(), "authentik"), *args)


def test_plan_relative_path_is_an_error():
    plan = d.authentik_backup_plan(d.authentik_deployment(current_stack(), "authentik"), ["files"], ["data"])
    assert plan["errors"] == ["authentik_backup_paths: 'data' is not an absolute path"]


S3_MEDIA = {"backend": "s3", "backend_setting": "AUTHENTIK_STORAGE__BACKEND", "bucket": "authentik-media",
            "endpoint": "https://s3.example.com", "region": "eu-central-1", "prefix": "media/", "credentials_set": True,
            "unresolved": []}
S3_STORAGE = {"media": S3_MEDIA}


def test_plan_media_s3_only_when_asked_and_in_s3():
    dep = d.authentik_deployment(current_stack(), "authentik")
    plan = d.authentik_backup_plan(dep, ALL, PATHS, "zstd", storage=S3_STORAGE)
    assert "media-s3" not in [p["part"] for p in plan["parts"] + plan["skipped"]]
    plan = d.authentik_backup_plan(dep, ALL + ["media-s3"], PATHS, "gzip", storage=S3_STORAGE, encrypted=True)
    part = plan["parts"][-1]
    assert part == dict(part="media-s3", kind="media-s3", service=None, container=None, file="media-s3.tar.gz.age",
                        compression="gzip", bucket="authentik-media", prefix="media/",
                        endpoint="https://s3.example.com", region="eu-central-1", addressing_style=None)
    assert "media-s3" not in {t["container"] for t in plan["targets"]} and not plan["errors"]
    skipped = d.authentik_backup_plan(dep, ["media-s3"], [], "zstd", selected=["postgres"], storage=S3_STORAGE)
    assert skipped["skipped"][-1] == {"part": "media-s3", "reason": "not selected by --tags/--skip-tags"}


@pytest.mark.parametrize("storage, reason", [
    (None, "not known here"),
    ({"media": {"backend": "file", "backend_setting": None}}, "in file storage, not S3"),
])
def test_plan_media_s3_skipped_without_s3(storage, reason):
    plan = d.authentik_backup_plan(d.authentik_deployment(current_stack(), "authentik"), ["media-s3"], [], "zstd",
                                   storage=storage)
    assert plan["parts"] == [] and not plan["errors"]
    assert plan["skipped"][-1]["part"] == "media-s3" and reason in plan["skipped"][-1]["reason"]


@pytest.mark.parametrize("change, message", [
    ({"bucket": None}, "bucket of authentik's media is not known"),
    ({"unresolved": ["AUTHENTIK_STORAGE__S3__BUCKET_NAME"]}, "AUTHENTIK_STORAGE__S3__BUCKET_NAME"),
    ({"prefix": None}, "set authentik_backup_media_s3.prefix"),
])
def test_plan_media_s3_errors(change, message):
    storage = {"media": dict(S3_STORAGE["media"], **change)}
    plan = d.authentik_backup_plan(d.authentik_deployment(current_stack(), "authentik"), ["media-s3"], [], "zstd",
                                   storage=storage)
    assert plan["parts"] == [] and len(plan["errors"]) == 1 and message in plan["errors"][0]


# --- authentik_backup_collect / authentik_source_containers ----------------------------------------------------

def test_collect():
    plan = d.authentik_backup_plan(d.authentik_deployment(current_stack(), "authentik"), ALL, PATHS, "zstd")
    pg = {"changed": True, "dest": "/b/s/postgres.sql.zst", "size": 10, "sha256": "x", "invocation": {},
          "databases": ["authentik"], "plan": {}, "uid": 0, "mode": "0600", "_ansible_no_log": False}
    files = {"changed": True, "msg": "All items completed", "results": [
        {"changed": True, "dest": "/b/s/data.tar.zst", "size": 5, "archived": ["/data"], "skipped_paths": [],
         "item": plan["parts"][1], "__authentik_backup_part": plan["parts"][1], "ansible_loop_var": "x"},
        {"changed": False, "dest": None, "archived": [], "skipped_paths": [{"path": "/templates", "reason": "gone"}],
         "item": plan["parts"][2]},
        {"skipped": True, "item": plan["parts"][3]},
    ]}
    redis = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
    config = {"changed": True, "dest": "/b/s/config.tar.zst", "size": 3,
              "skipped_paths": [{"path": "/opt/authentik/.env", "reason": "does not exist on the host"}]}
    out = d.authentik_backup_collect([pg, redis, files, config, {}], plan)
    assert out["parts"] == [
        {"dest": "/b/s/postgres.sql.zst", "size": 10, "sha256": "x", "databases": ["authentik"], "part": "postgres"},
        {"dest": "/b/s/data.tar.zst", "size": 5, "archived": ["/data"], "part": "data"},
        {"dest": "/b/s/config.tar.zst", "size": 3, "part": "config"},
    ]
    extra = out["skipped"][len(plan["skipped"]):]
    assert extra == [
        {"part": "templates", "path": "/templates", "reason": "gone"},
        {"part": "templates", "reason": "nothing to archive: every path was absent"},
        {"part": "config", "path": "/opt/authentik/.env", "reason": "does not exist on the host"},
    ]


def test_collect_needs_plan():
    with pytest.raises(AnsibleFilterError):
        d.authentik_backup_collect([], {})


def test_source_containers():
    dep = d.authentik_deployment(legacy_stack(), "authentik_legacy")
    out = d.authentik_source_containers(dep)
    assert out["redis"] == {"name": "authentik_legacy_redis_1", "image": "docker.io/library/redis:alpine",
                            "state": "running", "replicas": 1}
    assert set(out) == {"postgresql", "redis", "server", "worker"}


def test_filter_module_lists_every_filter():
    assert set(d.FilterModule().filters()) == {
        "compose_projects", "authentik_projects", "compose_services", "authentik_components", "authentik_version",
        "authentik_layout", "authentik_deployment", "authentik_backup_plan", "authentik_backup_collect",
        "authentik_source_containers"}
