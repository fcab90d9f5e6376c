"""The host service: `make install` into a staging root, the unit verified by systemd itself,
idempotence, `make uninstall`; and hostflame working with exactly the unit's capabilities."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import hostflame, pprof_traces

UNIT = REPO / "packaging" / "systemd" / "hostflame.service"


def unit_caps(directive: str) -> list[str]:
    match = re.search(rf"^{directive}=(.+)$", UNIT.read_text(), re.M)
    assert match, directive
    return match.group(1).split()


def setpriv_for(caps: list[str]) -> tuple[str, ...]:
    names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    return ("setpriv", f"--bounding-set=-all,{names}", "--inh-caps=-all")


def make(target: str, destdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(REPO), target, f"DESTDIR={destdir}"], capture_output=True,
                          text=True, timeout=600, check=False)


def test_unit_grants_exactly_the_documented_capabilities() -> None:
    from agent.preflight import HELPFUL_CAPS, REQUIRED_CAPS

    # GIVEN the unit file THEN bounding and ambient sets are the required + helpful caps, no SYS_ADMIN
    wanted = sorted([*REQUIRED_CAPS, *HELPFUL_CAPS])
    assert sorted(unit_caps("CapabilityBoundingSet")) == wanted
    assert sorted(unit_caps("AmbientCapabilities")) == wanted
    text = UNIT.read_text()
    assert "Restart=on-failure" in text
    assert "ExecStart=/usr/local/bin/hostflame run --config /etc/hostflame/hostflame.toml" in text


@pytest.mark.root
@pytest.mark.slow
def test_make_install_stages_a_verified_unit_idempotently_and_uninstall_removes_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # WHEN installed into a staging root
    first = make("install", root)
    assert first.returncode == 0, first.stderr + first.stdout
    unit = root / "etc/systemd/system/hostflame.service"
    config = root / "etc/hostflame/hostflame.toml"
    binary = root / "usr/local/bin/hostflame"
    # THEN the unit, the example config and a working binary are there
    assert unit.read_text() == UNIT.read_text()
    assert config.read_text() == (REPO / "packaging/hostflame.example.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o600
    help_run = subprocess.run([str(binary), "run", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert help_run.returncode == 0 and "--config" in help_run.stdout, help_run.stderr
    # AND systemd itself accepts the unit: no error, no warning (unknown keys only warn)
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/systemd/system").symlink_to("/lib/systemd/system")  # sysinit.target & co
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "hostflame.service"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    # AND a second install keeps a changed config and leaves the same files
    config.write_text(config.read_text() + "\n# mine\n")
    before = sorted(p.relative_to(root) for p in root.rglob("*") if "venv" not in p.parts)
    second = make("install", root)
    assert second.returncode == 0, second.stderr + second.stdout
    assert config.read_text().endswith("# mine\n")
    assert sorted(p.relative_to(root) for p in root.rglob("*") if "venv" not in p.parts) == before
    # WHEN uninstalled THEN unit, binary and venv are gone; the changed config is kept and said so
    gone = make("uninstall", root)
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and not binary.exists() and not (root / "usr/local/lib/hostflame").exists()
    assert config.exists() and "keeping" in gone.stdout
    # AND an unchanged config goes too; a second uninstall is fine
    shutil.copy(REPO / "packaging/hostflame.example.toml", config)
    assert make("uninstall", root).returncode == 0
    assert not config.exists()


# What ProtectSystem=strict and NoNewPrivileges do to the service, approximated without systemd
# as PID 1: a mount namespace with /usr, /etc and /tmp read-only, and no_new_privs.
READ_ONLY_SYSTEM = ("unshare", "-m", "sh", "-c",
                    "for d in /usr /etc /tmp; do mount -o bind,ro $d $d || exit 99; done; exec \"$@\"", "sh")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A writable directory outside /tmp (the test makes /tmp read-only), like StateDirectory."""
    path = Path(tempfile.mkdtemp(prefix="hostflame-state-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


@pytest.mark.bpf
@pytest.mark.root
def test_record_works_with_exactly_the_units_capabilities(
    workload: subprocess.Popen[bytes], split_exe: Path, state_dir: Path, pprof_tool: Path
) -> None:
    # GIVEN root with the bounding set cut to the unit's capabilities (no CAP_SYS_ADMIN), no_new_privs,
    # and the system read-only but for the state and cache directories
    out = state_dir / "p.pb.gz"
    result = hostflame("record", "--duration", "2", "--top", "0", "-o", str(out),
                       prefix=(*READ_ONLY_SYSTEM, *setpriv_for(unit_caps("CapabilityBoundingSet")), "--no-new-privs"))
    # THEN it records, and the workload's frames are named
    assert result.returncode == 0, result.stderr
    mine = [t for t in pprof_traces(pprof_tool, out) if t.labels.get("pid") == [str(workload.pid)]]
    assert mine, "no samples of the workload"
    assert any("main" in t.frames and t.frames[0] in ("leaf_a", "leaf_b") for t in mine)


@pytest.mark.root
@pytest.mark.parametrize("dropped", ["CAP_BPF", "CAP_PERFMON"])
def test_each_missing_required_capability_is_named(dropped: str, tmp_path: Path) -> None:
    # GIVEN the unit's capabilities less one that loading BPF needs
    caps = [c for c in unit_caps("CapabilityBoundingSet") if c != dropped]
    out = tmp_path / "p.pb.gz"
    result = hostflame("record", "--duration", "1", "-o", str(out), prefix=setpriv_for(caps))
    # THEN one line names exactly that capability, exit 1, nothing written
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and f"missing {dropped})" in result.stderr, result.stderr
    assert not out.exists()
