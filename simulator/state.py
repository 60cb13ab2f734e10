"""The running simulator: the current day's world, the faults, and pages rendered on request."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from simulator import faults, hostile
from simulator.evolve import World, build_world
from simulator.follow import Following
from simulator.generate import WorldSpec
from simulator.hashing import key64
from simulator.render import RENDERERS, record_ids, view
from simulator.responses import DroppedResponse, error_response

JSON = "application/json"


def render_page(
    world: World,
    endpoint: str,
    page: int,
    size: int,
    *,
    shift: int = 0,
    null_totals: bool = False,
    bad_records: float = 0.0,
    hostile_mb: float | None = None,
    missing_records: float = 0.0,
) -> bytes:
    """The JSON body of one page: {"items", "total", "page", "size", "pages"}."""
    rows_all = view(world, endpoint)
    if missing_records > 0:
        ids = record_ids(world, endpoint, rows_all)
        rows_all = rows_all[faults.served_rows(world.spec.seed, endpoint, ids, missing_records)]
    total = len(rows_all)
    start = (page - 1) * size
    if start < total:
        positions = np.arange(start, min(start + size, total))
        if shift:
            positions = (positions + shift) % total
        rows = rows_all[positions]
    else:
        rows = rows_all[:0]
    items = RENDERERS[endpoint](world, rows)
    if bad_records > 0:
        ids = record_ids(world, endpoint, rows)
        faults.break_records(world.spec.seed, endpoint, items, ids, bad_records)
    if hostile_mb is not None:
        hostile.make_hostile(endpoint, items, hostile_mb)
    envelope = {
        "items": items,
        "total": None if null_totals else total,
        "page": page,
        "size": size,
        "pages": None if null_totals else math.ceil(total / size),
    }
    # orjson refuses a page number beyond 64 bits and lone surrogates: slower, still served
    return hostile.dumps(envelope)


@dataclass(frozen=True)
class Snapshot:
    """What one request reads: swapped whole by the admin endpoint, never mutated."""

    world: World
    faults: faults.FaultConfig


class Simulator:
    def __init__(
        self,
        spec: WorldSpec,
        day: int = 0,
        fault_config: faults.FaultConfig | None = None,
        following: Following | None = None,
    ) -> None:
        self.spec = spec
        self.following = following
        world = build_world(spec, day, following)
        self.snapshot = Snapshot(world, fault_config or faults.FaultConfig())
        self.attempts: Counter[tuple[str, int, int]] = Counter()
        self._admin_lock: asyncio.Lock | None = None

    @property
    def day(self) -> int:
        return self.snapshot.world.day

    async def serve(self, endpoint: str, page: int, size: int) -> Response:
        snap = self.snapshot
        f = snap.faults.for_endpoint(endpoint)
        if not f.active:
            return Response(render_page(snap.world, endpoint, page, size), media_type=JSON)
        key = (endpoint, page, size)
        attempt = self.attempts[key]
        self.attempts[key] += 1
        seed = self.spec.seed
        plan = faults.plan_request(seed, snap.world.day, endpoint, page, size, attempt, f)
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if plan.status is not None:
            return error_response(plan.status, plan.retry_after_s)
        body = render_page(
            snap.world,
            endpoint,
            page,
            size,
            shift=plan.shift,
            null_totals=plan.null_totals,
            bad_records=f.bad_records,
            hostile_mb=f.hostile_mb if f.hostile == page else None,
            missing_records=f.missing_records,
        )
        if plan.drop:
            return DroppedResponse(body)
        if plan.malformed:
            salt = key64(seed, endpoint, page, size, attempt)
            body = faults.malformed_body(body, plan.malformed, salt)
        if f.oversized == page:
            chunks = hostile.oversized_chunks(body, f.oversized_mb)
            return StreamingResponse(chunks, 200, media_type=JSON)
        return Response(body, media_type=JSON)

    def describe(self) -> dict[str, Any]:
        world = self.snapshot.world
        return {
            "seed": self.spec.seed,
            "profile": self.spec.profile,
            "users": self.spec.users,
            "tracks": self.spec.tracks,
            "day": world.day,
            "totals": {
                "tracks": len(world.track_view),
                "users": len(world.user_view),
                "listen_history": len(world.user_view),
            },
            "listens": int(world.listens.counts()[world.user_view].sum()),
            "events": world.events,
            "faults": self.snapshot.faults.to_dict(),
        }

    async def update(
        self,
        *,
        day: int | None = None,
        fault_config: faults.FaultConfig | None = None,
        reset_attempts: bool = True,
    ) -> dict[str, Any]:
        """Move to another day and/or replace the faults; readers switch at once, atomically."""
        if self._admin_lock is None:
            self._admin_lock = asyncio.Lock()
        async with self._admin_lock:
            world = self.snapshot.world
            if day is not None and day != world.day:
                world = await run_in_threadpool(build_world, self.spec, day, self.following)
            config = self.snapshot.faults if fault_config is None else fault_config
            self.snapshot = Snapshot(world, config)
            if reset_attempts:
                self.attempts.clear()
        return self.describe()
