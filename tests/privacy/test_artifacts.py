"""An erased user in the recommender's artifacts (privacy/outer_stores.py): their id-map entry
is dead and their factor row zero, for every family that keeps per-user arrays; the tracks'
arrays, which serving and fold-in use, are as they were; a second erasure changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ml import families
from ml.params import AlsParams, BprParams, EaseParams, ItemKnnParams, Params
from ml.registry import ID_MAPS_FILE, load_model, save_model
from privacy.outer_stores import DEAD_ID, forget_in_artifacts
from serving.foldin import ServedModel


def _matrix(users: int = 40, tracks: int = 30) -> sp.csr_matrix:
    rng = np.random.default_rng(5)
    dense = (rng.random((users, tracks)) < 0.2) * rng.integers(1, 5, (users, tracks))
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize(
    "params",
    [AlsParams(factors=4, iterations=2), BprParams(factors=4, iterations=2),
     ItemKnnParams(neighbours=5), EaseParams(regularization=10.0)],
    ids=lambda p: p.family,
)  # fmt: skip
def test_the_user_is_dead_in_every_artifact_and_serving_still_loads_it(
    tmp_path: Path, params: Params
) -> None:
    matrix = _matrix()
    user_ids = np.arange(1000, 1000 + matrix.shape[0], dtype=np.int64)
    track_ids = np.arange(5000, 5000 + matrix.shape[1], dtype=np.int64)
    fitted = families.fit(matrix, params, num_threads=1)
    for run in ("run-a", "run-b"):
        save_model(tmp_path, run, fitted, user_ids, track_ids, {"model_run_id": run})
    before = {p.name: p.read_bytes() for p in (tmp_path / "run-a").iterdir()}

    assert forget_in_artifacts(tmp_path, 1007) == 2
    for run in ("run-a", "run-b"):
        loaded = load_model(tmp_path / run)
        assert 1007 not in loaded.user_ids and loaded.user_ids[7] == DEAD_ID
        np.testing.assert_array_equal(np.delete(loaded.user_ids, 7), np.delete(user_ids, 7))
        np.testing.assert_array_equal(loaded.track_ids, track_ids)
        factors = getattr(getattr(loaded.model, "model", None), "user_factors", None)
        if factors is not None:
            assert not np.asarray(factors)[7].any() and np.asarray(factors)[6].any()
        served = ServedModel.load(tmp_path / run)
        assert served.fold_in({5001: 2}, [5002], 5) is not None
    after = {p.name: p.read_bytes() for p in (tmp_path / "run-a").iterdir()}
    assert after.keys() == before.keys()
    assert forget_in_artifacts(tmp_path, 1007) == 0, "a second erasure finds nothing"
    assert {p.name: p.read_bytes() for p in (tmp_path / "run-a").iterdir()} == after
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "no temporary file left"


def test_an_artifact_without_the_user_is_left_untouched(tmp_path: Path) -> None:
    matrix = _matrix()
    fitted = families.fit(matrix, AlsParams(factors=4, iterations=2), num_threads=1)
    ids = np.arange(matrix.shape[0], dtype=np.int64)
    path = save_model(tmp_path, "run", fitted, ids, np.arange(matrix.shape[1]), {})
    before = (path / ID_MAPS_FILE).stat().st_mtime_ns
    assert forget_in_artifacts(tmp_path, 10_000) == 0
    assert (path / ID_MAPS_FILE).stat().st_mtime_ns == before
