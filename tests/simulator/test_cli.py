"""The program: its flags, the ready line, fixed and free ports, a clean stop on signals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from simulator import cli
from simulator.faults import EndpointFaults, FaultSpecError
from simulator.launcher import REPO_ROOT, SimulatorProcess

READY = re.compile(r"^MOOVITAMIX_SIMULATOR_READY url=http://127\.0\.0\.1:(\d+)$")


def test_free_port_ready_line_and_clean_stop_on_sigterm() -> None:
    proc = SimulatorProcess(["--users", "50", "--tracks", "50"])
    url = proc.wait_ready()
    assert READY.match(proc.lines[0]), proc.lines
    assert int(READY.match(proc.lines[0]).group(1)) > 0
    assert httpx.get(f"{url}/users").json()["total"] == 50
    assert proc.stop(signal.SIGTERM) == 0
    assert proc.lines == [proc.lines[0]]  # exactly one line on stdout
    assert "Traceback" not in proc.stderr_text()


def test_fixed_port_prints_the_ready_line_too_and_stops_on_sigint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "simulator", "--port", str(port), "--users", "20"]
    child = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == f"MOOVITAMIX_SIMULATOR_READY url=http://127.0.0.1:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/tracks?size=1").status_code == 200
        child.send_signal(signal.SIGINT)  # Ctrl-C in a terminal
        assert child.wait(timeout=15) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


def test_defaults() -> None:
    args = cli.parse_args([])
    assert (args.host, args.port, args.seed, args.profile) == ("127.0.0.1", 8000, 1, "realistic")
    assert (args.users, args.tracks, args.day) == (1000, 1000, 0)
    assert not args.access_log
    assert args.fault_config.endpoints == {}


def test_fault_flags_and_json_combine() -> None:
    args = cli.parse_args(
        [
            "--faults-json",
            '{"*": {"latency": 0.5, "latency_ms": 20}, "users": {"bad_records": 0.01}}',
            "--fault",
            "tracks:http_5xx=0.1,http_429=0.05",
            "--fault",
            "listen_history:always_fail=true",
        ]
    )
    config = args.fault_config
    assert config.for_endpoint("tracks") == EndpointFaults(
        latency=0.5, latency_ms=20, http_5xx=0.1, http_429=0.05
    )
    assert config.for_endpoint("users") == EndpointFaults(
        latency=0.5, latency_ms=20, bad_records=0.01
    )
    assert config.for_endpoint("listen_history").always_fail


@pytest.mark.parametrize(
    "spec",
    [
        "tracks",
        "tracks:",
        "songs:http_5xx=0.1",
        "tracks:http_5xx",
        "tracks:nope=1",
        "tracks:http_5xx=1.5",
        "users:latency=abc",
        "users:always_fail=maybe",
    ],
)
def test_bad_fault_specs_are_refused(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--fault", spec])
    assert exit_info.value.code == 2
    assert "faults:" in capsys.readouterr().err
    with pytest.raises(FaultSpecError):
        cli.fault_config([spec], None)


def test_help_documents_faults_and_admin(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    text = capsys.readouterr().out
    for word in (
        "--fault",
        "http_5xx",
        "unstable_order",
        "always_fail",
        "/_admin/state",
        "MOOVITAMIX_SIMULATOR_READY",
    ):
        assert word in text
