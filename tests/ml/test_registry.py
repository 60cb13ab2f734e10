import json
import zipfile
from pathlib import Path

import numpy as np

from ml.config import ModelParams
from ml.interactions import build_interactions
from ml.model import fit, recommend
from ml.registry import ID_MAPS_FILE, MODEL_FILE, apply_retention, load_model, save_model


def test_artifacts_are_plain_npz_and_reload_to_the_same_recommendations(
    tmp_path: Path, structured_marts
) -> None:
    m = structured_marts
    interactions = build_interactions(m.listen_user, m.listen_track, m.listen_count)
    fitted = fit(interactions.matrix, ModelParams(factors=8, iterations=3), num_threads=1)
    path = save_model(
        tmp_path,
        "run-m00",
        fitted.als,
        interactions.user_ids,
        interactions.track_ids,
        {"model_run_id": "run-m00"},
    )
    assert sorted(p.name for p in path.iterdir()) == ["id_maps.npz", "meta.json", "model.npz"]
    for name in (MODEL_FILE, ID_MAPS_FILE):
        with zipfile.ZipFile(path / name) as archive:  # only .npy arrays inside
            assert all(member.endswith(".npy") for member in archive.namelist())
        with np.load(path / name, allow_pickle=False) as data:
            assert all(data[key].dtype != object for key in data.files)
    loaded = load_model(path)
    assert json.loads((path / "meta.json").read_text())["model_run_id"] == "run-m00"
    np.testing.assert_array_equal(loaded.user_ids, interactions.user_ids)
    np.testing.assert_array_equal(loaded.track_ids, interactions.track_ids)
    rows = np.arange(50)
    before = recommend(fitted.als, rows, interactions.matrix, 10)
    after = recommend(loaded.als, rows, interactions.matrix, 10)
    np.testing.assert_array_equal(before[0], after[0])
    assert not list(tmp_path.glob(".*.tmp"))


def test_retention_keeps_the_newest_and_the_protected(tmp_path: Path) -> None:
    for name in (
        "20260101T000000Z-a-m00",
        "20260102T000000Z-b-m01",
        "20260103T000000Z-c-m00",
        "20260104T000000Z-d-m02",
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / MODEL_FILE).write_bytes(b"")
    (tmp_path / "notes").mkdir()  # not an artifact: never touched
    removed = apply_retention(tmp_path, keep=2, protect={"20260101T000000Z-a-m00"})
    assert [p.name for p in removed] == ["20260102T000000Z-b-m01"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "20260101T000000Z-a-m00",
        "20260103T000000Z-c-m00",
        "20260104T000000Z-d-m02",
        "notes",
    ]
