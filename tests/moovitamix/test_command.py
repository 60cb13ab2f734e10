"""The shared entry of every `python -m <package>`: one set of flags, codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from moovitamix import exit_codes
from moovitamix.command import Command, Commands, UsageError
from moovitamix.step import StepFailed
from moovitamix.warehouse import WarehouseUnreachable


class ToolBroke(RuntimeError):
    pass


def _raise(exc: Exception):
    def handler(cmd: Command) -> None:
        raise exc

    return handler


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Commands:
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOOVITAMIX_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("MOOVITAMIX_RUN_ID", raising=False)
    commands = Commands("python -m demo", None, step_errors=(ToolBroke,))
    seen = commands.add("ok", lambda cmd: print(cmd.run_id, cmd.args.verbose), "fine")
    seen.add_argument("--run-id")
    commands.add("step", _raise(StepFailed("no marts\n(run the transform)", 4)), "a step")
    commands.add("tool", _raise(ToolBroke("broke")), "a tool's own failure")
    commands.add("usage", _raise(UsageError("--max-runs must be at least 1")), "bad")
    commands.add("down", _raise(WarehouseUnreachable("cannot reach the warehouse")), "down")
    return commands


def test_verbose_before_or_after_the_command_and_the_run_id(
    commands: Commands, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main(["ok"]) == exit_codes.OK
    run_id, verbose = capsys.readouterr().out.split()
    assert verbose == "False" and len(run_id) == len("20261126T153012Z-3f9a1c")
    assert commands.main(["-v", "ok", "--run-id", "r1"]) == exit_codes.OK
    assert capsys.readouterr().out.split() == ["r1", "True"]
    assert commands.main(["ok", "-v"]) == exit_codes.OK
    assert capsys.readouterr().out.split() == ["r1", "True"]  # exported: the run's id


@pytest.mark.parametrize(
    ("command", "code", "line"),
    [
        ("step", 4, "FAILED step 'step': no marts (run the transform)"),
        ("tool", exit_codes.STEP_FAILED, "FAILED step 'tool': broke"),
        ("usage", exit_codes.USAGE, "error: --max-runs must be at least 1"),
        ("down", exit_codes.WAREHOUSE_UNREACHABLE, "error: cannot reach the warehouse"),
    ],
)
def test_a_failure_is_one_line_and_its_exit_code(
    commands: Commands, capsys: pytest.CaptureFixture[str], command: str, code: int, line: str
) -> None:
    assert commands.main([command]) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_bad_arguments_exit_2(commands: Commands) -> None:
    with pytest.raises(SystemExit) as exited:
        commands.main(["nope"])
    assert exited.value.code == exit_codes.USAGE
