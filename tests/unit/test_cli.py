"""Bad input on the command line: one line on stderr, exit status 2, nothing started or written.

These run in-process without root: every one of them must fail before any BPF is loaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agent.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["record", "--bogus"], "unrecognized arguments: --bogus"),
        (["record", "--duration", "0", "-o", "x.pb.gz"], "--duration must be more than 0"),
        (["record", "--duration", "-3", "-o", "x.pb.gz"], "--duration must be more than 0"),
        (["record", "--duration", "abc", "-o", "x.pb.gz"], "not a number"),
        (["record", "--frequency", "0", "-o", "x.pb.gz"], "--frequency must be between 1 and 10000"),
        (["record", "--frequency", "10001", "-o", "x.pb.gz"], "--frequency must be between 1 and 10000"),
        (["record", "-o", "x.txt"], "unknown output format"),
        (["record"], "no output"),
        (["record", "--pid", "999999999", "-o", "x.pb.gz"], "--pid 999999999: no such process"),
        (["run", "--interval", "0"], "--interval must be at least 1"),
        (["run", "--frequency", "20000"], "--frequency must be between 1 and 10000"),
        (["frobnicate"], "invalid choice"),
        (["symbolize"], "required: -e/--exe"),
        (["doctor", "--duration", "0"], "--duration must be more than 0"),
        (["doctor", "--frequency", "0"], "--frequency must be between 1 and 10000"),
        (["doctor", "--pid", "999999999"], "--pid 999999999: no such process"),
        ([], "required"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], needle: str, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a clean working directory
    monkeypatch.chdir(tmp_path)
    # WHEN hostflame is called with a bad argument
    code, err = run_cli(args, capsys)
    # THEN it exits 2 with exactly one line that names the problem, and writes nothing
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hostflame: error: "), err
    assert needle in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_output_in_a_missing_directory_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "nope" / "p.pb.gz"
    code, err = run_cli(["record", "--duration", "1", "-o", str(target)], capsys)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    assert not target.parent.exists()


def test_export_dir_that_is_a_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    code, err = run_cli(["run", "--export-dir", str(f)], capsys)
    assert code == 2 and "is not a directory" in err


def test_symbolize_of_a_file_that_is_not_elf_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a text file and an address on stdin
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("0\n"))
    # WHEN it is symbolized, THEN one line says why, exit status 1
    code, err = run_cli(["symbolize", "-e", str(text)], capsys)
    assert code == 1 and err.count("\n") == 1 and "as ELF" in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["record", "--help"])
    assert exc.value.code == 0
    assert "--duration" in capsys.readouterr().out
