import numpy as np
import pandas as pd
import pytest

from ml import families, lists
from ml.config import Publish
from ml.interactions import build_interactions, catalog_from_frames
from ml.params import AlsParams
from ml.play_next import PlayNext
from ml.rerank import reranked
from ml.sequences import track_features
from tests.ml.synthetic import SyntheticMarts, catalog_frames

DEPTH = 50


@pytest.fixture(scope="module")
def inputs(structured_marts: SyntheticMarts):
    """The synthetic marts as ml.train reads them, and an ALS fit on all their listens."""
    m = structured_marts
    interactions = build_interactions(m.listen_user, m.listen_track, m.listen_count)
    users, bridge = catalog_frames(m)
    catalog = catalog_from_frames(interactions, users, bridge, len(m.track_ids))
    tracks = track_features(
        m.track_ids,
        pd.Series([None] * len(m.track_ids), dtype="string"),
        bridge["track_id"].to_numpy(),
        bridge["genre"],
    )
    empty = np.zeros((0, 10))
    play_next = PlayNext(
        "none", "none", "", {}, np.zeros(0, np.int64), empty.astype(np.int64), empty,
        empty.astype(np.int8),
    )  # fmt: skip
    model = families.fit(interactions.matrix, AlsParams(factors=16, iterations=5))
    return interactions, catalog, tracks, play_next, model


def test_users_are_ranked_in_chunks_with_the_same_lists(inputs, monkeypatch) -> None:
    model = inputs[-1]
    config = Publish()
    whole, _ = lists.build_lists(*inputs[:4], config, model=model, depth=DEPTH)
    monkeypatch.setattr(lists, "USER_CHUNK", 7)
    chunked, _ = lists.build_lists(*inputs[:4], config, model=model, depth=DEPTH)
    for name in ("user_id", "rank", "track_id", "source"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), name)
    np.testing.assert_allclose(chunked.score, whole.score, rtol=1e-6)  # float32 BLAS blocks


def test_the_published_model_slots_follow_the_favorite_genre_rerank(inputs) -> None:
    interactions, catalog, _, _, model = inputs
    config = Publish(new_track_slots=0, blend_until=0)  # every listener: the model's list
    got, _ = lists.build_lists(*inputs[:4], config, model=model, depth=DEPTH)
    rows = interactions.rows_of(catalog.user_ids)
    listened = np.flatnonzero(rows >= 0)
    # the model's top DEPTH by brute force: every score, the heard ones dropped, a full sort
    # by score then track column (both descending, ml.topk's order among ties)
    users, items = model.model.user_factors[rows[listened]], model.model.item_factors
    scores = (users @ items.T).astype(np.float64)
    scores[interactions.matrix[rows[listened]].toarray() != 0] = -np.inf
    columns = np.broadcast_to(np.arange(items.shape[0]), scores.shape)
    ids = np.lexsort((-columns, -scores), axis=1)[:, :DEPTH]
    assert np.isfinite(np.take_along_axis(scores, ids, axis=1)).all()
    genre = catalog.favorite_genre[listened]
    expected = interactions.track_ids[reranked(ids, genre, catalog.track_genres, 10, DEPTH)]
    served = pd.DataFrame({"user": got.user_id, "track": got.track_id}).groupby("user")["track"]
    published = np.stack(served.apply(np.array).loc[catalog.user_ids[listened]].to_list())
    np.testing.assert_array_equal(published, expected)
    assert not np.array_equal(expected, interactions.track_ids[ids[:, :10]])  # it moved some
