"""`python -m ml train|evaluate`: output, exit codes, one-line failures."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ml.__main__ as cli
from moovitamix.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration
# what beats the baselines on the small structured marts (tests/ml/conftest.py), quickly
FAST = [
    *("-o", "runtime.num_threads=1", "-o", "selection.max_challengers=0"),
    *("-o", "model.factors=32", "-o", "model.confidence=bm25", "-o", "model.alpha=1.0"),
    # windows by share of the pairs: the synthetic histories' last days hold few users
    *("-o", "evaluation.valid_days=0", "-o", "evaluation.test_days=0"),
]


@pytest.fixture
def in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run the CLI in-process with its data and logs in tmp_path."""
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOOVITAMIX_LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MOOVITAMIX_RUN_ID", "20261126T000000Z-eeeeee")
    yield tmp_path
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.name == "moovitamix"]:
        root.removeHandler(handler)
        handler.close()


def test_evaluate_prints_the_split_and_the_comparison_table(marts_url, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "WAREHOUSE_URL": marts_url.url(),
        "MOOVITAMIX_DATA_DIR": str(tmp_path),
        "MOOVITAMIX_LOGS_DIR": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ml", "evaluate", *FAST, "-o", "search.families=['als', 'ease']"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("split: time split: train before ")  # the histories span days
    assert re.match(r"validation: [\d,]+ users judged, k=10; gains are paired bootstrap", lines[1])
    header = lines[2].split()
    assert header[:6] == ["candidate", "precision@10", "recall@10", "map@10", "ndcg@10", "coverage"]
    assert header[6:10] == ["ndcg@10", "gain", "vs", "genre_popularity"]
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1:] for line in lines[4:-1]}
    assert list(rows) == [
        "popularity",
        "genre_popularity",
        "config [model]",
        "als defaults",
        "ease defaults",
    ]
    assert rows["genre_popularity"][5] == "-"  # the best baseline: the gains are over it
    low, high = map(float, re.findall(r"-?\d\.\d{4}", rows["config [model]"][5])[1:])
    assert 0 < low <= high  # ALS beats the best baseline on the planted scenes
    assert rows["ease defaults"][-1].startswith("ease lambda=500 binary")
    assert all(0 < float(cells[3]) <= 1 for cells in rows.values())  # ndcg@10
    assert "recall = hits/held-out tracks" in lines[-1] and "selection by ndcg@10" in lines[-1]


def test_train_runs_and_says_what_it_published(
    marts_url, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", marts_url.url())
    code = cli.main(["train", *FAST, "-o", f"artifacts.root={in_tmp / 'models'}"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("train OK in ") and "user rows" in out
    assert "test ndcg@10" in out and "(time split)" in out and "play next: " in out
    assert (in_tmp / "logs" / "20261126T000000Z-eeeeee.jsonl").is_file()
    assert len(list((in_tmp / "models").iterdir())) == 1


def test_train_fails_with_one_line_and_exit_1(
    fresh_warehouse, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", fresh_warehouse.url())
    code = cli.main(["train", *FAST])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED")]
    assert code == 1
    assert err == [
        "FAILED step 'train': input mart(s) missing: marts.bridge_track_genres, "
        "marts.dim_tracks, marts.dim_users, marts.fct_listens (run the transform step first)"
    ]


def test_a_bad_override_is_a_usage_error(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["evaluate", "-o", "model.factors=lots"]) == 2
    assert "model.als.factors: Input should be a valid integer" in capsys.readouterr().err
