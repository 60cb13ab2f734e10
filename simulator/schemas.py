"""The contract's response models, for the OpenAPI schema (pages are rendered without them).

The page envelope is fastapi-pagination's `Page`, customised as the reference server's: size
defaults to 100 (1..100) and total/page/size/pages are nullable, only `items` is required.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from fastapi import Query
from fastapi_pagination import Page as _Page
from fastapi_pagination.customization import (
    CustomizedPage,
    UseName,
    UseOptionalFields,
    UseParamsFields,
)
from pydantic import BaseModel

T = TypeVar("T")

PAGE_DESCRIPTION = "Page number"
SIZE_DESCRIPTION = "Page size"
DEFAULT_SIZE = 100
MAX_SIZE = 100

Page = CustomizedPage[
    _Page[T],
    UseName("Page"),
    UseParamsFields(size=Query(DEFAULT_SIZE, ge=1, le=MAX_SIZE, description=SIZE_DESCRIPTION)),
    UseOptionalFields(),
]


class TracksOut(BaseModel):
    id: int
    name: str
    artist: str
    songwriters: str
    duration: str
    genres: str
    album: str
    created_at: datetime
    updated_at: datetime


class UsersOut(BaseModel):
    id: int
    first_name: str
    last_name: str
    email: str
    gender: str
    favorite_genres: str
    created_at: datetime
    updated_at: datetime


class ListenHistoryOut(BaseModel):
    user_id: int | None
    items: list[int] | None
    created_at: datetime
    updated_at: datetime


RECORD_MODELS: dict[str, type[BaseModel]] = {
    "tracks": TracksOut,
    "users": UsersOut,
    "listen_history": ListenHistoryOut,
}
