"""Impressions that cannot be written: counted, requests unharmed. `python -m serving` as the
Makefile runs it: a real uvicorn process, and exit 3 when the warehouse is unreachable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from moovitamix.roles import APP
from moovitamix.settings import PROJECT_ROOT
from moovitamix.warehouse import connect
from serving.config import from_env
from tests.serving.conftest import TOKEN, Trained, config, running_api, wait_for


def test_a_failed_flush_is_counted_and_requests_go_on(fresh_trained: Trained) -> None:
    trained = fresh_trained
    table = "monitoring.recommendation_impressions"
    with running_api(trained.settings, config(trained)) as client:
        with connect(trained.url) as conn:
            conn.execute(f"revoke insert on {table} from {APP}")
        for user_id in (1, 2, 3):
            assert client.get(f"/users/{user_id}/recommendations").status_code == 200
        failed = 'serving_impressions_total{outcome="failed"} 3.0'
        wait_for(lambda: failed in client.get("/metrics").text)
        with connect(trained.url) as conn:
            conn.execute(f"grant insert on {table} to {APP}")
        assert client.get("/users/4/recommendations").status_code == 200
        flushed = 'serving_impressions_total{outcome="flushed"} 1.0'
        wait_for(lambda: flushed in client.get("/metrics").text)
    with connect(trained.url) as conn:
        rows = conn.execute(f"select user_id from {table}").fetchall()
    assert rows == [(4,)]  # nothing written twice, the failed batch lost as documented


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(
    tmp_path: Path, warehouse_url: str, *args: str, artifacts: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SERVING_ARTIFACTS_DIR": str(artifacts or tmp_path / "no-models"),
        "WAREHOUSE_URL": warehouse_url,
        "SERVING_TOKENS": TOKEN,
        "MOOVITAMIX_DATA_DIR": str(tmp_path / "data"),
        "MOOVITAMIX_LOGS_DIR": str(tmp_path / "logs"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "serving", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_python_m_serving_serves_on_the_given_port(trained: Trained, tmp_path: Path) -> None:
    port = free_port()
    process = serve(
        tmp_path,
        trained.url.url(),
        "--port",
        str(port),
        "--workers",
        "2",
        artifacts=trained.artifacts,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/health").status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                return False

        wait_for(up, timeout_s=120)
        health = httpx.get(f"{base}/health").json()
        assert health["fold_in_model_run_id"] == health["lists_model_run_id"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        listed = httpx.get(f"{base}/users/1/recommendations", headers=headers)
        assert listed.status_code == 200 and listed.json()["user_id"] == 1
        assert httpx.get(f"{base}/users/1/recommendations").status_code == 401
        workers = psutil.Process(process.pid).children()
        assert len(workers) >= 2
    finally:
        process.terminate()
        process.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == []  # SIGTERM stops every worker


def test_an_unreachable_warehouse_exits_3_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/moovitamix"
    process = serve(tmp_path, url, "--port", str(free_port()))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3
    assert stderr.decode().strip().startswith("error: cannot reach the warehouse")


def test_tokens_and_artifacts_from_the_environment_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SERVING_TOKENS=a, b ,\nSERVING_ARTIFACTS_DIR=models\n")
    from_file = from_env({}, root=tmp_path)
    assert from_file.tokens == ("a", "b") and from_file.artifacts is not None
    assert from_file.artifacts.name == "models"
    assert from_env({"SERVING_TOKENS": "c"}, root=tmp_path).tokens == ("c",)
    assert from_env({"SERVING_TOKENS": " , "}, root=tmp_path).tokens == ()
