"""The Spark engine's Parquet without Spark (privacy/lake.py): a lake laid out as dlt writes it
(a snapshot per load) and a Spark-managed table; the files holding the erased user are rewritten
without them (by id, by users' `id`, quarantined records by key or e-mail), the others are
left as they were, nothing temporary stays, and a second pass removes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from privacy.lake import forget_in_parquet
from privacy.subjects import EMAIL, subject_hash

SALT, USER, OTHER = b"s" * 32, 4242, 4343


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_the_files_with_the_user_are_rewritten_without_them(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for load in ("1.1", "2.2"):
        snapshot = f"load_id={load}"
        _write(lake / "raw" / "users" / snapshot / "a.parquet",
               [{"id": USER, "email": "me@x.org"}, {"id": OTHER, "email": "o@x.org"}])  # fmt: skip
        _write(lake / "raw" / "tracks" / snapshot / "a.parquet", [{"id": USER, "name": "t"}])
        _write(lake / "raw" / "listen_history__items" / snapshot / "a.parquet",
               [{"user_id": USER, "track_id": 1}, {"user_id": OTHER, "track_id": 2}])  # fmt: skip
    _write(lake / "raw" / "_rejected" / "load_id=2.2" / "a.parquet", [
        {"endpoint": "users", "record_key": str(USER), "payload": "{}"},
        {"endpoint": "users", "record_key": None, "payload": json.dumps({"email": "ME@x.org"})},
        {"endpoint": "tracks", "record_key": str(USER), "payload": "{}"},
    ])  # fmt: skip
    _write(lake / "raw" / "_rejected" / "load_id=1.1" / "a.parquet",
           [{"endpoint": "tracks", "record_key": None, "payload": "{}"}])  # fmt: skip
    _write(lake / "raw" / "users" / "load_id=0.0" / "empty.parquet", [])  # an empty table
    warehouse = tmp_path / "spark" / "warehouse" / "staging.db" / "users_changelog"
    _write(warehouse / "part-0.parquet", [{"id": USER}, {"id": OTHER}])
    (warehouse / ".part-0.parquet.crc").write_bytes(b"old")  # Hadoop's checksum of the old file
    tracks_before = (lake / "raw" / "tracks" / "load_id=1.1" / "a.parquet").read_bytes()
    emails = {subject_hash(SALT, EMAIL, "me@x.org")}

    assert forget_in_parquet(lake.as_uri(), USER, SALT, emails) == 2 + 2 + 2
    assert forget_in_parquet(str(tmp_path / "spark"), USER, SALT, emails) == 1
    for path in [*lake.rglob("*.parquet"), *(tmp_path / "spark").rglob("*.parquet")]:
        rows = pq.read_table(path).to_pylist()
        if path.name == "empty.parquet":
            assert rows == []
        elif "tracks" in path.parts:
            assert rows == [{"id": USER, "name": "t"}], "a track's id is no user's"
        elif "_rejected" in path.parts:
            assert [r["endpoint"] for r in rows] == ["tracks"], "a null key column is fine"
        else:
            assert all(USER not in r.values() for r in rows) and rows, path
    assert (lake / "raw" / "tracks" / "load_id=1.1" / "a.parquet").read_bytes() == tracks_before
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "no temporary or stale file"
    assert forget_in_parquet(lake.as_uri(), USER, SALT, emails) == 0
