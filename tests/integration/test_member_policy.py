# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The archive member policy of path_restore on every restore path, against real targets.

- Docker (the Engine API archive endpoint) into a GNU userland container and a busybox one;
- Kubernetes (``tar -x`` over the exec of the test API server of tests/testbed/k8s) into the same containers;
- this host (platform=local, Python's tarfile).

The policy: setuid, setgid and sticky bits cleared; numeric owners kept in containers and pods (names dropped),
never set on this host; members that are not regular files carry size 0 (every reader sees the members that were
checked); a symlink of the target where the archive has a directory, or a directory where it has a symlink or file,
refused before anything is written. Clean and non-clean restores work with busybox's find, rm, mv and tar; a clean
restore is extracted beside the current contents first, so one that runs out of space changes nothing.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile

import pytest

from testbed import ansible_run, paths

REPO = str(paths.REPO_ROOT)
PREFIX = f"akbt-pol-it{paths.PROJECT_SUFFIX}-"
NS = f"akbtpol{paths.PROJECT_SUFFIX}"
USERLANDS = {"gnu": paths.IMAGE_REDIS, "busybox": paths.IMAGE_REDIS_BUSYBOX}

LISTING = ('cd "$1" && find . | LC_ALL=C sort | while IFS= read -r p; do '
           'if [ -L "$p" ]; then echo "L $p -> $(readlink "$p") $(stat -c %u:%g "$p")"; '
           'elif [ -d "$p" ]; then echo "D $p $(stat -c %a:%u:%g "$p")"; '
           'else echo "F $p $(cat "$p") $(stat -c %a:%u:%g "$p")"; fi; done')


def docker(*args, check=True):
    proc = subprocess.run(["docker", *args], capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc


def sh(container, script, *args):
    return docker("exec", container, "sh", "-c", script, "sh", *args).stdout.decode("utf-8", "surrogateescape")


def run_module(module, check_mode=False, **args):
    result, _run = ansible_run.run_module(module, check_mode=check_mode, **args)
    return result


@pytest.fixture(scope="module")
def targets(images):  # pylint: disable=unused-argument
    names = {userland: PREFIX + userland for userland in USERLANDS}
    for userland, image in USERLANDS.items():
        docker("rm", "-f", "-v", names[userland], check=False)
        docker("volume", "rm", "-f", names[userland], check=False)
        docker("run", "-d", "--name", names[userland], "--network", "none", "-v", f"{names[userland]}:/data",
               "--entrypoint", "sleep", image, "infinity")
    try:
        yield names
    finally:
        for name in names.values():
            docker("rm", "-f", "-v", name, check=False)
            docker("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def k8s(targets, tmp_path_factory):
    sys.path.insert(0, os.path.join(REPO, "tests", "testbed", "k8s"))
    import helm_stacks  # noqa: PLC0415 - test bed helper, only for these cases

    pods = [{"name": f"files-{userland}", "namespace": NS, "labels": {"app": userland},
             "containers": [{"name": "files", "docker": name, "image": "stand-in",
                             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
             "volumes": [{"name": "data", "emptyDir": {}}]} for userland, name in targets.items()]
    state = {"token": "akbt-pol-token", "namespaces": [NS], "deployments": [], "statefulsets": [], "secrets": [],
             "stacks": {}, "pods": pods}
    url, kubeconfig, proc = helm_stacks.start_server(state, workdir=str(tmp_path_factory.mktemp("k8s")))
    try:
        assert url
        yield dict(platform="kubernetes", namespace=NS, kubeconfig=kubeconfig)
    finally:
        helm_stacks.stop_server(proc)


def target_args(platform, userland, targets, k8s_args=None):
    if platform == "docker":
        return dict(container=targets[userland])
    return dict(pod=f"files-{userland}", **k8s_args)


def header(name, kind, size=0, mode=0o644, uid=0, gid=0, uname="", gname="", linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname = kind, size, mode, linkname
    info.uid, info.gid, info.uname, info.gname = uid, gid, uname, gname
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def block(data):
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def policy_archive():
    """Special bits, foreign numeric owners under names the target knows as root, and a symlink with a size.

    The symlink's size covers the next member: GNU tar would skip it (and never check it), Python's tarfile and
    busybox read it as a member. path_restore checks it and sends it with size 0 for the symlink.
    """
    hidden = header("data/hidden", tarfile.REGTYPE, 6) + block(b"hidden")
    return (header("data", tarfile.DIRTYPE, mode=0o1777)
            + header("data/run", tarfile.REGTYPE, 3, mode=0o4755, uid=4242, gid=4343, uname="root", gname="root")
            + block(b"run")
            + header("data/shared", tarfile.DIRTYPE, mode=0o2775, uid=4242, gid=4343, uname="root", gname="root")
            + header("data/shared/f", tarfile.REGTYPE, 1, mode=0o2640, uid=1000, gid=1000) + block(b"f")
            + header("data/l", tarfile.SYMTYPE, len(hidden), mode=0o777, linkname="run") + hidden
            + header("data/after", tarfile.REGTYPE, 5, mode=0o600, uid=4242, gid=4343) + block(b"after")
            + bytes(2 * tarfile.BLOCKSIZE))


@pytest.mark.parametrize("platform", ["docker", "kubernetes"])
@pytest.mark.parametrize("userland", list(USERLANDS))
def test_member_policy_in_containers_and_pods(targets, k8s, tmp_path, platform, userland):
    name = targets[userland]
    sh(name, "cd /data && find . ! -name . -prune -exec rm -rf -- {} +; chmod 755 /data")
    src = tmp_path / "policy.tar"
    src.write_bytes(policy_archive())
    result = run_module("path_restore", src=str(src), paths=["/data"], **target_args(platform, userland, targets, k8s))
    assert result.get("changed") and not result.get("failed"), result
    assert result["members"] == 7  # data, run, shared, shared/f, l, hidden, after: hidden was checked
    listing = sh(name, LISTING, "/data").splitlines()
    expected = ["F ./after after 600:4242:4343",
                "F ./hidden hidden 644:0:0",
                "L ./l -> run 0:0",
                "F ./run run 755:4242:4343",
                "D ./shared 775:4242:4343",
                "F ./shared/f f 640:1000:1000"]
    # the top directory (the mount point) keeps its own owner and mode where tar runs as the container's user;
    # the Docker daemon sets it from the archive, without the sticky bit
    top = "D . 777:0:0" if platform == "docker" else "D . 755:0:0"
    assert listing == [top] + expected


@pytest.mark.parametrize("platform", ["docker", "kubernetes"])
@pytest.mark.parametrize("userland", list(USERLANDS))
def test_kind_swaps_refused_before_anything_is_written(targets, k8s, tmp_path, platform, userland):
    name = targets[userland]
    sh(name, "cd /data && find . ! -name . -prune -exec rm -rf -- {} +; mkdir -p /data/real /data/dir/keep; "
             "ln -s real /data/link; echo old > /data/first")
    before = sh(name, LISTING, "/data")
    args = target_args(platform, userland, targets, k8s)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in (("data/first", b"new"), ("data/link/", None), ("data/link/x", b"x")):
            info = tarfile.TarInfo(member.rstrip("/"))
            info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    swap_to_dir = tmp_path / "dir.tar"
    swap_to_dir.write_bytes(buf.getvalue())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in (("data/first", b"new"), ("data/dir", b"a file now")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    swap_to_file = tmp_path / "file.tar"
    swap_to_file.write_bytes(buf.getvalue())
    for src, problem in ((swap_to_dir, "'data/link' is a symlink in the target and a directory in the archive"),
                         (swap_to_file, "'data/dir' is a directory in the target and a file in the archive")):
        for check_mode in (True, False):
            result = run_module("path_restore", check_mode=check_mode, src=str(src), paths=["/data"], **args)
            assert result.get("failed") and problem in result["msg"], result
            assert "nothing was written" in result["msg"]
            assert sh(name, LISTING, "/data") == before
    # with clean the symlink goes first, so the directory of the archive takes its place
    result = run_module("path_restore", src=str(swap_to_dir), paths=["/data"], clean=True, **args)
    assert result.get("changed") and not result.get("failed"), result
    assert [line.split(" ")[:2] for line in sh(name, LISTING, "/data").splitlines()] == [
        ["D", "."], ["F", "./first"], ["D", "./link"], ["F", "./link/x"]]


@pytest.mark.parametrize("userland", list(USERLANDS))
def test_clean_and_non_clean_round_trips(targets, tmp_path, userland):
    name = targets[userland]
    sh(name, "cd /data && find . ! -name . -prune -exec rm -rf -- {} +; mkdir -p '/data/-d/sub' /data/.hidden; "
             "echo a > '/data/-d/sub/-f'; echo b > /data/.hidden/b; ln -s -- -d /data/dl; chmod 750 '/data/-d'")
    before = sh(name, LISTING, "/data")
    archive = str(tmp_path / "data.tar.gz")
    result = run_module("path_archive", container=name, paths=["/data"], dest=archive, compression="gzip")
    assert result.get("changed"), result
    sh(name, "echo new > /data/new; rm -r /data/.hidden; echo changed > '/data/-d/sub/-f'")
    result = run_module("path_restore", container=name, src=archive, paths=["/data"])
    assert result.get("changed") and not result.get("failed"), result
    after = sh(name, LISTING, "/data").splitlines()
    assert "F ./new new 644:0:0" in after and [line for line in after if "./new" not in line] == before.splitlines()
    result = run_module("path_restore", container=name, src=archive, paths=["/data"], clean=True)
    assert result.get("changed") and not result.get("failed"), result
    assert sh(name, LISTING, "/data") == before


@pytest.mark.parametrize("userland", list(USERLANDS))
def test_a_clean_restore_that_runs_out_of_space_changes_nothing(targets, tmp_path, userland):
    """The archive is bigger than the free space of the target's /data (a 2 MiB volume): the extraction into the
    stage fails, the stage goes, and /data keeps exactly what it had (a clean restore used to delete it first)."""
    source = targets[userland]
    sh(source, "cd /data && find . ! -name . -prune -exec rm -rf -- {} +; mkdir /data/media; "
               "head -c 3145728 /dev/urandom > /data/media/big.bin; echo icon > /data/media/icon.svg")
    archive = str(tmp_path / "data.tar")
    assert run_module("path_archive", container=source, paths=["/data"], dest=archive, compression="none")["changed"]
    small = f"{PREFIX}{userland}-full"
    docker("rm", "-f", small, check=False)
    docker("volume", "rm", "-f", small, check=False)
    # a volume of 2 MiB (tmpfs-backed, as Docker's local driver mounts it): the archive endpoint writes into volumes
    docker("volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
           "--opt", "o=size=2m,mode=0755", small)
    docker("run", "-d", "--name", small, "--network", "none", "-v", f"{small}:/data",
           "--entrypoint", "sleep", USERLANDS[userland], "infinity")
    try:
        sh(small, "mkdir -p /data/media /data/-d && echo old > /data/media/icon.svg && echo keep > '/data/-d/x' "
                  "&& echo env > /data/.hidden")
        before = sh(small, LISTING, "/data")
        result = run_module("path_restore", container=small, src=archive, paths=["/data"], clean=True)
        assert result.get("failed"), result
        assert "nothing was changed: every directory keeps its previous contents" in result["msg"], result["msg"]
        assert sh(small, LISTING, "/data") == before  # no stage left, nothing deleted
    finally:
        docker("rm", "-f", small, check=False)
        docker("volume", "rm", "-f", small, check=False)


def test_local_extraction_policy_and_swaps(tmp_path):
    src = tmp_path / "config.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, mode, data in (("opt", 0o1777, None), ("opt/run", 0o4755, b"run"), ("opt/env", 0o2640, b"A=1")):
            info = tarfile.TarInfo(member)
            info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            info.mode, info.size, info.uid, info.gid, info.uname = mode, len(data or b""), 4242, 4343, "root"
            tar.addfile(info, io.BytesIO(data or b""))
    src.write_bytes(buf.getvalue())
    root = tmp_path / "root"
    root.mkdir()
    result = run_module("path_restore", platform="local", src=str(src), local_root=str(root))
    assert result.get("changed") and not result.get("failed"), result
    assert {f["name"]: (f["mode"], f["uid"]) for f in result["files"]} == {"opt/run": ("0755", 4242),
                                                                           "opt/env": ("0640", 4242)}
    got = {p.name: (stat.S_IMODE(p.lstat().st_mode), p.lstat().st_uid)
           for p in [root / "opt", *(root / "opt").iterdir()]}
    assert got == {"opt": (0o700, os.getuid()), "run": (0o600, os.getuid()), "env": (0o600, os.getuid())}
    # a symlink where the archive has a directory: refused in check mode and for real, nothing written
    other = tmp_path / "other"
    other.mkdir()
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "opt").symlink_to(other)
    for check_mode in (True, False):
        result = run_module("path_restore", check_mode=check_mode, platform="local", src=str(src),
                            local_root=str(swapped))
        assert result.get("failed") and "'opt' is a symlink in the target and a directory" in result["msg"], result
        assert "nothing was written" in result["msg"]
    assert list(other.iterdir()) == [] and sorted(p.name for p in swapped.iterdir()) == ["opt"]
