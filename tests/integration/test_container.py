"""A binary that exists only inside a real podman container is named, with the container's id."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import INSIDE, PODMAN, PODMAN_RUN, hostflame, pprof_traces

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def container(image: str) -> Iterator[str]:
    result = subprocess.run(
        [*PODMAN_RUN, "-d", "--rm", image, INSIDE, "60"],
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
