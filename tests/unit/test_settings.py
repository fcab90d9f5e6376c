"""Settings of `hostflame run`: TOML < HOSTFLAME_* < flags, refusals naming the key, the example file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import DEFAULT_EXPORT_DIR
from agent.errors import UsageError
from agent.settings import SCALAR_KEYS, load_run_config
from tests.conftest import REPO

EXAMPLE = REPO / "packaging" / "hostflame.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostflame.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    # GIVEN the same keys in all three layers
    cfg = write(tmp_path, 'interval_s = 30\nfrequency_hz = 49\n[labels]\nenv = "file"\nteam = "core"\n'
                          '[pyroscope]\nurl = "http://file:4040"\ntenant_id = "t1"\n')
    env = {"HOSTFLAME_FREQUENCY_HZ": "19", "HOSTFLAME_PYROSCOPE_URL": "http://env:4040",
           "HOSTFLAME_LABELS": "env=env", "HOSTFLAME_CACHE_DIR": "/tmp/x"}
    flags = {"interval": None, "frequency": None, "pyroscope_url": "http://flag:4040", "label": ["env=flag"]}
    config = load_run_config(cfg, env, flags)
    # THEN each value comes from the highest layer that set it
    assert config.interval_s == 30 and config.frequency_hz == 19
    assert config.pyroscope is not None and config.pyroscope.url == "http://flag:4040"
    assert config.pyroscope.tenant_id == "t1"
    assert dict(config.labels) == {"env": "flag", "team": "core"}
    # AND with a remote exporter and no directory, nothing goes to disk
    assert config.export_dir is None


def test_no_exporter_means_the_default_directory() -> None:
    assert load_run_config(None, {}, {}).export_dir == DEFAULT_EXPORT_DIR


@pytest.mark.parametrize(("text", "env", "message"), [
    ("intervall_s = 3\n", {}, "intervall_s in .*: unknown key"),
    ("[pyroscope]\nurll = 'x'\n", {}, "pyroscope.urll in .*: unknown key"),
    ("[pyroscope]\nurl = 'http://x'\ntimeout_s = 'soon'\n", {}, "pyroscope.timeout_s in .*: must be a number"),
    ("frequency_hz = 9.5\n", {}, "frequency_hz in .*: must be an integer"),
    ("[labels]\nenv = 3\n", {}, "labels in .*: must be a table of strings"),
    ("[[relabel]]\naction = 'rename'\n", {}, r"relabel\[0\] in .*\.action: 'rename' is not one of"),
    ("", {"HOSTFLAME_INTERVAL_S": "x"}, "HOSTFLAME_INTERVAL_S: must be a number"),
    ("", {"HOSTFLAME_LABELS": "novalue"}, "HOSTFLAME_LABELS: want NAME=VALUE"),
    ("interval_s = [\n", {}, "not valid TOML"),
])
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                                   message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_run_config(write(tmp_path, text), env, {})


@pytest.mark.parametrize(("text", "message"), [
    ("interval_s = 0.5\n", "interval_s in .* must be at least 1 second"),
    ("[pyroscope]\nurl = 'pyroscope:4040'\n", r"pyroscope.url in .*: want http\(s\)://"),
    ("[otlp]\nurl = 'https://x'\nca_file = '/nonexistent.pem'\n", "otlp.ca_file in .*: no such file"),
    ("[pyroscope]\nurl = 'https://x'\nbearer_token = 'a'\nbasic_auth_user = 'b'\n", "not both"),
    ("[pyroscope]\nurl = 'https://x'\napi = 'grpc'\n", "pyroscope.api in .*: want push or ingest"),
    ("metrics_addr = 'localhost'\n", "metrics_addr in .*: want HOST:PORT"),
    ("[pyroscope]\nurl = 'https://x'\nqueue_bytes = 10\n", "pyroscope.queue_bytes in .* must be at least 1 MiB"),
])
def test_bad_values_are_refused_at_validation(tmp_path: Path, text: str, message: str) -> None:
    config = load_run_config(write(tmp_path, text), {}, {})
    with pytest.raises(UsageError, match=message):
        config.validate()


def test_cli_refuses_a_bad_config_file_with_one_line_and_exit_2(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--config", str(write(tmp_path, "[disk]\nmax_age = 3\n"))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "disk.max_age in" in err and "unknown key" in err


def test_example_file_loads_and_documents_every_key(tmp_path: Path) -> None:
    # GIVEN the shipped example, WHEN loaded THEN it is valid
    config = load_run_config(EXAMPLE, {}, {"export_dir": str(tmp_path)})
    config.validate()
    # AND every scalar key appears in it, commented out or not
    text = EXAMPLE.read_text()
    sections = {"": text.split("\n[", 1)[0]}
    for match in re.finditer(r"^#? ?\[(\w+)\]\n(.*?)(?=^#? ?\[|\Z)", text, re.S | re.M):
        sections[match.group(1)] = sections.get(match.group(1), "") + match.group(2)
    for key in SCALAR_KEYS:
        section, _, name = key.rpartition(".")
        assert re.search(rf"^#? ?{name} = ", sections.get(section, ""), re.M), f"{key} not documented"
    for key in ("[labels]", "[pyroscope.headers]", "[otlp.headers]", "[[relabel]]"):
        assert key in text
