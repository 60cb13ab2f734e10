"""The FastAPI application: the contract's three endpoints, plus a hidden admin endpoint.

Pages are rendered straight to JSON bytes (simulator.state.render_page); the response models
only describe them in /openapi.json, exactly as the reference server's fastapi-pagination pages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from simulator import faults
from simulator.schemas import (
    DEFAULT_SIZE,
    MAX_SIZE,
    PAGE_DESCRIPTION,
    SIZE_DESCRIPTION,
    ListenHistoryOut,
    Page,
    TracksOut,
    UsersOut,
)
from simulator.state import Simulator

PageNumber = Annotated[int, Query(ge=1, description=PAGE_DESCRIPTION)]
PageSize = Annotated[int, Query(ge=1, le=MAX_SIZE, description=SIZE_DESCRIPTION)]


class AdminUpdate(BaseModel):
    """POST /_admin/state: any subset of the fields."""

    day: int | None = Field(default=None, ge=0, description="serve this day's data")
    faults: dict[str, dict[str, Any]] | list[str] | None = Field(
        default=None,
        description='replaces all faults: {"tracks": {"http_5xx": 0.1}} or '
        '["tracks:http_5xx=0.1"]; {} or [] turns them off',
    )
    reset_attempts: bool = Field(default=True, description="forget the per-page attempt counts")


def create_app(simulator: Simulator) -> FastAPI:
    app = FastAPI()
    app.state.simulator = simulator

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    @app.get("/tracks", response_model=Page[TracksOut])
    async def get_tracks(
        page: PageNumber = 1,
        size: PageSize = DEFAULT_SIZE,
    ) -> Response:
        return await simulator.serve("tracks", page, size)

    @app.get("/users", response_model=Page[UsersOut])
    async def get_users(
        page: PageNumber = 1,
        size: PageSize = DEFAULT_SIZE,
    ) -> Response:
        return await simulator.serve("users", page, size)

    @app.get("/listen_history", response_model=Page[ListenHistoryOut])
    async def get_listen_history(
        page: PageNumber = 1,
        size: PageSize = DEFAULT_SIZE,
    ) -> Response:
        return await simulator.serve("listen_history", page, size)

    @app.get("/_admin/state", include_in_schema=False)
    async def admin_state() -> dict[str, Any]:
        return simulator.describe()

    @app.post("/_admin/state", include_in_schema=False)
    async def admin_update(update: Annotated[AdminUpdate, Body()]) -> dict[str, Any]:
        config = None
        try:
            if isinstance(update.faults, list):
                config = faults.FaultConfig.from_specs(update.faults)
            elif isinstance(update.faults, dict):
                config = faults.FaultConfig.from_mapping(update.faults)
        except faults.FaultSpecError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return await simulator.update(
            day=update.day, fault_config=config, reset_attempts=update.reset_attempts
        )

    return app
