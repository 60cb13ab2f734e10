"""The FastAPI app: `create_app(settings)`. Routes (the design's interface):

GET  /users/{user_id}/recommendations?k=   the user's published list (unknown user: fallback)
GET  /tracks/{track_id}/next?k=            the track's published play-next list
POST /users/{user_id}/recommendations      fold-in of {"recent_track_ids": [...], "k": n}
GET  /health                               open; 503 while the lists or the database are not there
GET  /metrics                              Prometheus text format

Every route but /health needs a bearer token (serving.auth)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import anyio
import psycopg
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from threadpoolctl import threadpool_limits

from ml.config import load_config
from moovitamix.logins import open_logins
from moovitamix.roles import APP
from moovitamix.settings import Settings, load_settings
from serving.auth import BearerAuth
from serving.config import ServingConfig, from_env
from serving.impressions import Impression, ImpressionLog
from serving.metrics import Metrics
from serving.published import Item, PublishedList, listens, next_list, user_list
from serving.schemas import (
    MAX_ID,
    MAX_K,
    FoldInRequest,
    Health,
    Source,
    TrackList,
    UserList,
)
from serving.watcher import ModelWatcher

UserId = Annotated[int, Path(ge=0, le=MAX_ID)]
TrackId = Annotated[int, Path(ge=0, le=MAX_ID)]
KQuery = Annotated[int, Query(ge=1, le=MAX_K)]
USER_ROUTE = "/users/{user_id}/recommendations"
NEXT_ROUTE = "/tracks/{track_id}/next"


def create_app(settings: Settings, config: ServingConfig | None = None) -> FastAPI:
    """The API on the warehouse of `settings`, as its own login mvx_app_login (role mvx_app);
    `config` by default from the environment (serving.config.from_env)."""
    config = config or from_env(root=settings.project_root)
    artifacts = config.artifacts or load_config().artifacts.root_path(settings.data_dir)
    metrics = Metrics()
    auth = [Depends(BearerAuth(config.tokens))]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = (await anyio.to_thread.run_sync(open_logins, settings)).url(APP)  # its own login
        pool = AsyncConnectionPool(
            url.url(),
            min_size=2,
            max_size=config.pool_size,
            open=False,
            timeout=5,
            kwargs={"autocommit": True},
        )  # no connection within `timeout` seconds: 503, not a hung request
        await pool.open()
        # one BLAS thread for fold-in (ml.families.base.single_threaded_blas per request costs more
        # than the fold-in): the workers are the parallelism
        blas = threadpool_limits(limits=1, user_api="blas")
        watcher = ModelWatcher(
            url, artifacts, metrics, poll_s=config.poll_s, webhook_url=settings.alert_webhook_url
        )
        await anyio.to_thread.run_sync(watcher.start)
        log = ImpressionLog(
            pool,
            metrics,
            flush_s=config.flush_s,
            flush_rows=config.flush_rows,
            queue_rows=config.queue_rows,
        )
        log.start()
        app.state.pool, app.state.watcher, app.state.impressions = pool, watcher, log
        try:
            yield
        finally:
            await log.stop()
            await anyio.to_thread.run_sync(watcher.stop)
            await pool.close()
            blas.restore_original_limits()

    app = FastAPI(title="MooVitamix recommendations", lifespan=lifespan)
    app.add_middleware(metrics.middleware)

    @app.exception_handler(psycopg.Error)
    @app.exception_handler(PoolTimeout)
    async def warehouse_down(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return JSONResponse({"detail": "nothing published yet"}, status_code=503)
        return JSONResponse({"detail": "the warehouse is unavailable"}, status_code=503)

    def served(
        request: Request,
        envelope: UserList | TrackList,
        route: str,
        k: int,
        *,
        user_id: int | None = None,
        track_id: int | None = None,
    ) -> None:
        log: ImpressionLog = request.app.state.impressions
        log.add(
            Impression(
                user_id,
                track_id,
                envelope.model_run_id,
                envelope.source,
                route,
                k,
                [item.track_id for item in envelope.items],
            )
        )

    def fallback(request: Request, k: int, exclude: Iterable[int] = ()) -> PublishedList:
        """The cold-start list of the last publish, without `exclude`; 503 before any."""
        publication = request.app.state.watcher.current.publication
        if publication is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "nothing published yet")
        skip = set(exclude)
        kept = [item for item in publication.fallback if item.track_id not in skip][:k]
        items = tuple(Item(i.track_id, i.score, rank) for rank, i in enumerate(kept, 1))
        return PublishedList(publication.model_run_id, publication.generated_at, False, items)

    def envelope_fields(found: PublishedList, source: Source | None = None) -> dict[str, object]:
        return {
            "model_run_id": found.model_run_id,
            "generated_at": found.generated_at,
            "source": source or ("model" if found.is_model else "fallback"),
            "items": [vars(item) for item in found.items],
        }

    @app.get(USER_ROUTE, dependencies=auth)
    async def user_recommendations(request: Request, user_id: UserId, k: KQuery = 10) -> UserList:
        async with request.app.state.pool.connection() as conn:
            found = await user_list(conn, user_id, k)
        body = UserList(user_id=user_id, **envelope_fields(found or fallback(request, k)))
        served(request, body, f"GET {USER_ROUTE}", k, user_id=user_id)
        return body

    @app.get(NEXT_ROUTE, dependencies=auth)
    async def play_next(request: Request, track_id: TrackId, k: KQuery = 10) -> TrackList:
        async with request.app.state.pool.connection() as conn:
            found = await next_list(conn, track_id, k)
        found = found or fallback(request, k, exclude=[track_id])
        body = TrackList(track_id=track_id, **envelope_fields(found))
        served(request, body, f"GET {NEXT_ROUTE}", k, track_id=track_id)
        return body

    @app.post(USER_ROUTE, dependencies=auth)
    async def fold_in(request: Request, user_id: UserId, body: FoldInRequest) -> UserList:
        model = request.app.state.watcher.current.model  # this request's model, throughout
        async with request.app.state.pool.connection() as conn:
            history = await listens(conn, user_id)
        ranked = None if model is None else model.fold_in(history, body.recent_track_ids, body.k)
        if model is None or ranked is None:  # no model, or none of the user's tracks in it
            found = fallback(request, body.k, exclude=[*history, *body.recent_track_ids])
            result = UserList(user_id=user_id, **envelope_fields(found))
        else:
            items = [
                {"track_id": track, "score": score, "rank": rank}
                for rank, (track, score) in enumerate(ranked, 1)
            ]
            result = UserList(
                user_id=user_id,
                model_run_id=model.model_run_id,
                generated_at=datetime.now(UTC),
                source="fold_in",
                items=items,
            )
        served(request, result, f"POST {USER_ROUTE}", body.k, user_id=user_id)
        return result

    @app.get("/health")
    async def health(request: Request, response: Response) -> Health:
        snapshot = request.app.state.watcher.current
        try:
            async with request.app.state.pool.connection(timeout=2) as conn:
                await conn.execute("select 1")
            database = True
        except (psycopg.Error, PoolTimeout):
            database = False
        pub = snapshot.publication
        age = (datetime.now(UTC) - pub.generated_at).total_seconds() if pub else None
        ok = database and pub is not None
        response.status_code = status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(
            status="ok" if ok else "degraded",
            database=database,
            lists_model_run_id=pub.model_run_id if pub else None,
            lists_generated_at=pub.generated_at if pub else None,
            lists_age_s=age,
            fold_in_model_run_id=snapshot.model.model_run_id if snapshot.model else None,
            checked_at=snapshot.checked_at,
        )

    @app.get("/metrics", dependencies=auth)
    async def prometheus() -> Response:
        return metrics.exposition()

    return app


def app_from_env() -> FastAPI:
    """The app of the environment's settings: uvicorn's factory (`python -m serving`)."""
    return create_app(load_settings())
