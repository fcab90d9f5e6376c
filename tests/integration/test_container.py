"""A binary that exists only inside a real podman container is named, with the container's id."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.build import build_c
from tests.integration.conftest import hostflame, pprof_traces

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.slow]

IMAGE = "localhost/hostflame-test-split:latest"
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
# The binary's path inside the image; nothing exists at this path on the host.
INSIDE = "/opt/only-in-container/split"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny image: busybox and the split workload, built static, imported without a registry."""
    work = tmp_path_factory.mktemp("image")
    exe = build_c("split", work, "-static")
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    inside = rootfs / INSIDE.lstrip("/")
    inside.parent.mkdir(parents=True)
    shutil.move(exe, inside)  # the host keeps no copy
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    subprocess.run(["podman", "import", "-q", str(tar), IMAGE], check=True, capture_output=True)
    assert not Path(INSIDE).exists()
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    result = subprocess.run(
        [*PODMAN, "run", "-d", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
         "--ulimit", "nproc=1024:1024", image, INSIDE, "60"],
        check=True, capture_output=True, text=True,
    )
    cid = result.stdout.strip().splitlines()[-1]
    yield cid
    subprocess.run([*PODMAN, "kill", cid], capture_output=True, check=False)


def test_binary_inside_a_container_is_named_and_labeled(container: str, tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN the workload running inside a podman container, its binary only in the container
    out = tmp_path / "p.pb.gz"
    # WHEN the host is recorded
    result = hostflame("record", "--duration", "3", "--top", "0", "-o", str(out))
    assert result.returncode == 0, result.stderr
    # THEN its samples carry the container id and its functions are named under main
    mine = [t for t in pprof_traces(pprof_tool, out) if t.labels.get("container_id") == [container]]
    assert mine, f"no samples labeled {container}"
    named = sum(t.value for t in mine if t.frames[:3] in (["leaf_a", "dispatch", "main"],
                                                          ["leaf_b", "dispatch", "main"]))
    assert named >= 0.8 * sum(t.value for t in mine)
