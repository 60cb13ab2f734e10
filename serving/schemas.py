"""The API's request and response bodies (the design's envelope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

MAX_ID = 2**63 - 1  # ids are Postgres bigints
MAX_K = 100
MAX_RECENT = 500
Id = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
K = Annotated[int, Field(ge=1, le=MAX_K)]
Source = Literal["model", "fallback", "fold_in"]


class Item(BaseModel):
    track_id: int
    score: float
    rank: int


class Envelope(BaseModel):
    model_run_id: str | None
    generated_at: datetime | None
    source: Source
    items: list[Item]


class UserList(Envelope):
    user_id: int


class TrackList(Envelope):
    track_id: int


class FoldInRequest(BaseModel):
    recent_track_ids: Annotated[list[Id], Field(max_length=MAX_RECENT)] = []
    k: Annotated[int, Field(strict=True, ge=1, le=MAX_K)] = 10


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    lists_model_run_id: str | None
    lists_generated_at: datetime | None
    lists_age_s: float | None
    fold_in_model_run_id: str | None
    checked_at: datetime | None
