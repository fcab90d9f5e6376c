"""Runtime failures: one line on stderr, exit status 1, no traceback, no output file."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import hostflame

pytestmark = [pytest.mark.root]

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach and write (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="hostflame-test-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def assert_one_line_failure(result_stderr: str, needle: str) -> None:
    assert result_stderr.count("\n") == 1, result_stderr
    assert result_stderr.startswith("hostflame: error: ") and needle in result_stderr
    assert "Traceback" not in result_stderr


def test_not_root_is_a_runtime_error(open_dir: Path) -> None:
    # GIVEN an unprivileged user and a directory it may write to
    out = open_dir / "p.pb.gz"
    # WHEN it records THEN it is told to run as root, exit 1, and nothing is written
    result = hostflame("record", "--duration", "1", "-o", str(out), prefix=NOBODY)
    assert result.returncode == 1
    assert_one_line_failure(result.stderr, "run as root")
    assert list(open_dir.iterdir()) == []


def test_unwritable_output_directory_is_a_usage_error(open_dir: Path) -> None:
    locked = open_dir / "locked"
    locked.mkdir(mode=0o755)
    result = hostflame("record", "--duration", "1", "-o", str(locked / "p.pb.gz"), prefix=NOBODY)
    assert result.returncode == 2
    assert_one_line_failure(result.stderr, "is not writable")


def test_unreachable_output_directory_is_a_usage_error(tmp_path: Path) -> None:
    # pytest's tmp_path sits in a root-only directory: nobody cannot even look into it
    result = hostflame("record", "--duration", "1", "-o", str(tmp_path / "p.pb.gz"), prefix=NOBODY)
    assert result.returncode == 2
    assert_one_line_failure(result.stderr, "cannot reach directory")


def test_bpf_not_permitted_names_the_missing_capabilities(tmp_path: Path) -> None:
    # GIVEN root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN in its bounding set
    drop = ("setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", "--inh-caps=-bpf,-perfmon,-sys_admin")
    out = tmp_path / "p.pb.gz"
    result = hostflame("record", "--duration", "1", "-o", str(out), prefix=drop)
    # THEN the error names what is missing and nothing is written
    assert result.returncode == 1, result.stderr
    assert_one_line_failure(result.stderr, "CAP_BPF")
    assert not out.exists()


@pytest.mark.bpf
def test_check_reports_every_item_ok_here() -> None:
    result = hostflame("check")
    lines = result.stdout.splitlines()
    items = [line.split(":")[0].split(None, 1)[1] for line in lines]
    assert items == ["kernel", "bpf() syscall", "perf events", "tracefs", "kernel headers", "bcc",
                     "capabilities", "memlock"]
    assert result.returncode == 0 and all(line.startswith("OK") for line in lines), result.stdout


def test_check_fails_without_privileges() -> None:
    result = hostflame("check", prefix=NOBODY)
    assert result.returncode == 1
    assert "FAIL bpf() syscall" in result.stdout and "fix:" in result.stdout
