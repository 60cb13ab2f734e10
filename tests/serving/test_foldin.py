"""Fold-in serves whichever family the artifact holds, from the files ml.registry writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ml import families
from ml.families import (
    AlsParams,
    BprParams,
    EaseParams,
    ItemKnnParams,
    LmfParams,
    Recommender,
)
from ml.families.base import MODEL_FILE
from ml.families.factors import confidence
from ml.interactions import build_interactions
from ml.params import ModelParams
from ml.registry import ID_MAPS_FILE, META_FILE
from serving.foldin import ServedModel
from tests.ml.synthetic import generate

FAMILIES = [
    AlsParams(factors=16, iterations=8, alpha=5.0, regularization=1.0),
    BprParams(factors=16, iterations=30),
    LmfParams(factors=16, iterations=10),
    ItemKnnParams(neighbours=50),
    EaseParams(regularization=100.0),
]


@pytest.fixture(scope="module")
def listens():
    marts = generate(n_users=500, n_tracks=200, seed=9, clusters_per_genre=3)
    return build_interactions(marts.listen_user, marts.listen_track, marts.listen_count)


def artifact(path: Path, model: Recommender, user_ids: np.ndarray, track_ids: np.ndarray) -> Path:
    """What ml.registry writes around a model: id maps and meta.json with the params."""
    model.save(path)
    np.savez(path / ID_MAPS_FILE, user_ids=user_ids, track_ids=track_ids)
    (path / META_FILE).write_text(json.dumps({"params": model.params.to_json()}), encoding="utf-8")
    return path


@pytest.mark.parametrize("params", FAMILIES, ids=lambda p: p.family)
def test_every_family_folds_in_a_listener_without_what_they_heard(
    listens, tmp_path, params
) -> None:
    counts, track_ids = listens.matrix, np.asarray(listens.track_ids)
    model = families.fit(counts, params, num_threads=1)
    served = ServedModel.load(artifact(tmp_path / "run", model, listens.user_ids, track_ids))
    assert type(served.recommender) is type(model) and served.recommender.params == params

    row = counts[11]
    history = dict(zip(track_ids[row.indices].tolist(), row.data.astype(int).tolist(), strict=True))
    recent = [int(track_ids[c]) for c in np.setdiff1d(np.arange(40), row.indices)[:2]]
    ranked = served.fold_in(history, recent, 10)
    assert ranked is not None and len(ranked) == 10
    got = [track for track, _ in ranked]
    assert not set(got) & (set(history) | set(recent))
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)

    # the family's own fold-in of the same counts, in track ids
    both = counts[[11]].tolil()
    both[0, np.searchsorted(track_ids, recent)] = 1.0
    ids, _ = model.fold_in(both.tocsr(), 10)
    assert got == track_ids[ids[ids >= 0]].tolist()


def test_an_als_artifact_saved_before_families_still_serves(listens, tmp_path) -> None:
    counts = listens.matrix
    params = ModelParams(factors=16, iterations=8, confidence="bm25")
    als = families.fit(counts, AlsParams(**params.model_dump()), num_threads=1).model
    # the layout ml.registry wrote before families: implicit's model.npz, the id maps, and
    # meta.json whose params are {"model": "als", ...}: no family key, no params.json
    path = tmp_path / "old"
    path.mkdir()
    als.save(str(path / MODEL_FILE))
    np.savez(path / ID_MAPS_FILE, user_ids=listens.user_ids, track_ids=listens.track_ids)
    (path / META_FILE).write_text(json.dumps({"params": params.to_json()}), encoding="utf-8")
    served = ServedModel.load(path)
    assert served.recommender.params == AlsParams(**params.model_dump())

    track_ids = np.asarray(listens.track_ids)
    row = counts[5]
    history = dict(zip(track_ids[row.indices].tolist(), row.data.astype(int).tolist(), strict=True))
    ranked = served.fold_in(history, [], 10)
    # the oracle: implicit's recalculate_user on log confidences (one row has no bm25 corpus)
    weights = confidence(
        sp.csr_matrix(counts[[5]]), params.model_copy(update={"confidence": "log"})
    )
    ids, scores = als.recommend(0, weights, N=10, recalculate_user=True)
    assert [t for t, _ in ranked] == track_ids[ids].tolist()
    np.testing.assert_allclose([s for _, s in ranked], scores, rtol=1e-5)


def test_unknown_tracks_fold_in_nothing_and_a_mismatched_artifact_refuses_to_load(
    listens, tmp_path
) -> None:
    model = families.fit(listens.matrix, EaseParams(), num_threads=1)
    track_ids = np.asarray(listens.track_ids)
    served = ServedModel.load(artifact(tmp_path / "ok", model, listens.user_ids, track_ids))
    assert served.fold_in({-5: 3}, [-7], 10) is None
    with pytest.raises(ValueError, match="disagree"):
        ServedModel.load(artifact(tmp_path / "bad", model, listens.user_ids, track_ids[:-1]))
