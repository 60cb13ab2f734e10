"""Every list served, logged to monitoring.recommendation_impressions in batches.

A request only puts a row on an in-memory queue (never waits); one task writes what is
waiting with psycopg's COPY every `flush_s`, or as soon as `flush_rows` wait. A failed write
is logged and counted, its rows are lost, and requests go on. A full queue drops new rows
(counted): serving lists matters more than logging them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from moovitamix.errors import one_line
from serving.metrics import Metrics

log = logging.getLogger(__name__)

COPY_SQL = (
    "copy monitoring.recommendation_impressions "
    "(served_at, user_id, track_id, model_run_id, source, route, k, track_ids) "
    "from stdin (format binary)"
)
COPY_TYPES = ["timestamptz", "int8", "int8", "text", "text", "text", "int4", "int8[]"]


@dataclass(frozen=True)
class Impression:
    user_id: int | None
    track_id: int | None
    model_run_id: str | None
    source: str
    route: str
    k: int
    track_ids: list[int]
    served_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> tuple[object, ...]:
        """The COPY row, in COPY_SQL's column order."""
        return (
            self.served_at,
            self.user_id,
            self.track_id,
            self.model_run_id,
            self.source,
            self.route,
            self.k,
            self.track_ids,
        )


class ImpressionLog:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        metrics: Metrics,
        *,
        flush_s: float,
        flush_rows: int,
        queue_rows: int,
    ) -> None:
        self.pool, self.metrics = pool, metrics
        self.flush_s, self.flush_rows = flush_s, flush_rows
        self.queue: asyncio.Queue[Impression] = asyncio.Queue(maxsize=queue_rows)
        self._task: asyncio.Task[None] | None = None

    def add(self, impression: Impression) -> None:
        try:
            self.queue.put_nowait(impression)
        except asyncio.QueueFull:
            self.metrics.impressions.labels("dropped").inc()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="impressions")

    async def stop(self) -> None:
        """Stop the writer, then write what is still waiting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self.queue.empty():
            await self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + self.flush_s
            while self.queue.qsize() < self.flush_rows and loop.time() < deadline:
                await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))
            await self.flush()

    async def flush(self) -> int:
        """Write up to `flush_rows` waiting impressions; rows written."""
        batch = [self.queue.get_nowait() for _ in range(min(self.queue.qsize(), self.flush_rows))]
        if not batch:
            return 0
        try:
            async with (
                self.pool.connection() as conn,
                conn.cursor() as cur,
                cur.copy(COPY_SQL) as copy,
            ):
                copy.set_types(COPY_TYPES)
                for impression in batch:
                    await copy.write_row(impression.row())
        except (psycopg.Error, OSError) as exc:
            self.metrics.impressions.labels("failed").inc(len(batch))
            log.error("serving: %d impressions not written: %s", len(batch), one_line(exc))
            return 0
        self.metrics.impressions.labels("flushed").inc(len(batch))
        return len(batch)
