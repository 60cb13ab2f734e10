"""The stores outside Postgres that can hold a user: the recommender's artifacts (their factor
row and id-map entry) and dlt's load packages not loaded yet. Each is idempotent: erasing a
user that is no longer there removes nothing."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import Settings

log = logging.getLogger(__name__)

DEAD_ID = -1  # an id-map entry of an erased user: no id, so nothing can be looked up or served
ID_MAPS_FILE = "id_maps.npz"  # ml.registry's layout


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Replace `path` atomically (a reader loads the old file or the new, never half of one)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    tmp = path.with_name(f".{path.name}.erasing")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def forget_in_artifact(directory: Path, user_id: int) -> int:
    """Mark the user dead in one artifact: their id-map entry becomes DEAD_ID and their rows of
    every per-user array (`user_*`: implicit's user factors) are zeroed. Returns 1 if the user
    was in it, else 0. The tracks' arrays, which serving and fold-in use, are untouched."""
    maps_path = directory / ID_MAPS_FILE
    with np.load(maps_path, allow_pickle=False) as maps:
        arrays = {name: maps[name] for name in maps.files}
    rows = np.flatnonzero(arrays["user_ids"] == user_id)
    if rows.size == 0:
        return 0
    n_users = len(arrays["user_ids"])
    for model_file in sorted(directory.glob("*.npz")):
        if model_file.name == ID_MAPS_FILE:
            continue
        with np.load(model_file, allow_pickle=False) as saved:
            model = {name: saved[name] for name in saved.files}
        touched = [
            name
            for name, array in model.items()
            if name.startswith("user") and array.ndim >= 1 and array.shape[0] == n_users
        ]
        for name in touched:
            model[name] = model[name].copy()
            model[name][rows] = 0
        if touched:
            _write_npz(model_file, model)
    user_ids = arrays["user_ids"].copy()
    user_ids[rows] = DEAD_ID
    _write_npz(maps_path, {**arrays, "user_ids": user_ids})
    return 1


def forget_in_artifacts(root: Path, user_id: int) -> int:
    """Every artifact under `root` (the champion's and those retention keeps)."""
    if not root.is_dir():
        return 0
    return sum(
        forget_in_artifact(path, user_id)
        for path in sorted(root.iterdir())
        if (path / ID_MAPS_FILE).is_file()
    )


def drop_pending_packages(settings: Settings, warehouse: ConnectionURL) -> int:
    """dlt's packages extracted or normalized but not loaded hold the records as served, and
    dropping them (dlt's `drop_pending_packages`) keeps their files as an aborted package: so
    the whole local working dir goes, by dlt's public `Pipeline.drop()` (packages, trace, local
    state and schemas). The next ingestion restores state and schema from the destination and
    reads the API whole again. Returns how many pending packages there were."""
    from ingestion.config import IngestionConfig
    from ingestion.pipeline import make_pipeline

    kind = "filesystem" if settings.engine == "spark" else "postgres"
    pipeline, _ = make_pipeline(settings, warehouse, IngestionConfig(progress=False), kind)
    pending = pipeline.list_extracted_load_packages() + pipeline.list_normalized_load_packages()
    pipeline.drop()
    return len(pending)


def outer_stores(settings: Settings, warehouse: ConnectionURL) -> dict[str, Callable]:
    """The stores outside Postgres, by the name the audit gives them."""
    from ml.config import load_config

    root = load_config().artifacts.root_path(settings.data_dir)
    stores: dict[str, Callable] = {
        "artifacts (model files)": lambda s: forget_in_artifacts(root, s.user_id),
        "dlt pending load packages": lambda s: drop_pending_packages(settings, warehouse),
    }
    if settings.engine == "spark":  # the lake's snapshots and lists, Spark's own tables
        from privacy.lake import forget_in_parquet

        def parquet(url: str) -> Callable:
            return lambda s: forget_in_parquet(url, s.user_id, s.salt, set(s.email_hashes))

        stores["the lake (Parquet)"] = parquet(settings.lake)
        stores["Spark's tables (Parquet)"] = parquet(str(settings.spark_dir / "warehouse"))
    return stores
