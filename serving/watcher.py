"""The model in service, swapped when a daily run publishes.

A thread polls the published run every few seconds. A new one is loaded whole (its artifact
and its cold-start list), then put in service by replacing one reference: a request that took
the old snapshot finishes on it, the next one gets the new. An artifact that fails to load
keeps the previous model in service, is counted in /metrics and raises one alert. A publish
without an artifact (a baseline won the run) keeps the last model for fold-in."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from moovitamix.alerts import Alert, send_alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.warehouse import WarehouseUnreachable, connect
from serving.foldin import ServedModel
from serving.metrics import Metrics
from serving.published import Publication, publication, published_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    publication: Publication | None = None
    model: ServedModel | None = None
    checked_at: datetime | None = None
    database_ok: bool = False


class ModelWatcher:
    def __init__(
        self,
        url: ConnectionURL,
        artifacts: Path,
        metrics: Metrics,
        *,
        poll_s: float,
        webhook_url: str | None,
    ) -> None:
        self.url, self.artifacts, self.metrics = url, artifacts, metrics
        self.poll_s, self.webhook_url = poll_s, webhook_url
        self.current = Snapshot()
        self._failed: set[str] = set()  # broken artifacts already reported
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def refresh(self) -> None:
        """Check the published run once; load and swap in what changed."""
        now = self.current
        try:
            with connect(self.url) as conn:
                run = published_run(conn)
                known = now.publication.model_run_id if now.publication else None
                pub = now.publication
                if run is not None and run[0] != known:
                    pub = publication(conn)
        except (WarehouseUnreachable, psycopg.Error) as exc:
            if now.database_ok or now.checked_at is None:
                log.error("serving: the warehouse is unreachable: %s", one_line(exc))
            self.current = replace(now, checked_at=datetime.now(UTC), database_ok=False)
            return
        model = self._model_for(pub.model_run_id if pub else None, now.model)
        if pub is not now.publication or model is not now.model:
            log.info(
                "serving lists of %s, fold-in with %s",
                pub.model_run_id if pub else None,
                model.model_run_id if model else None,
            )
        if model is not now.model:
            self.metrics.model_swaps.inc()
        self.current = Snapshot(pub, model, datetime.now(UTC), True)

    def _model_for(self, run_id: str | None, serving: ServedModel | None) -> ServedModel | None:
        """The model for the published `run_id`: its artifact if it has one, else the one in
        service, else (at start) the newest artifact on disk."""
        path = self.artifacts / run_id if run_id else None
        if path is None or not path.is_dir():
            if serving is not None:
                return serving
            newest = sorted(p for p in self._artifact_dirs())
            path = newest[-1] if newest else None
            if path is None:
                return None
        if serving is not None and serving.model_run_id == path.name:
            return serving
        if path.name in self._failed:
            return serving
        try:
            return ServedModel.load(path)
        except Exception as exc:  # any broken file: numpy, zip, json, shapes
            self._failed.add(path.name)
            self.metrics.model_load_failures.inc()
            kept = serving.model_run_id if serving else "none"
            send_alert(
                Alert(
                    "error",
                    f"serving cannot load model {path.name}; keeping {kept}",
                    run_id=path.name,
                    step="serving",
                    details={"reason": one_line(exc)},
                ),
                self.webhook_url,
            )
            return serving

    def _artifact_dirs(self) -> list[Path]:
        if not self.artifacts.is_dir():
            return []
        return [p for p in self.artifacts.iterdir() if p.is_dir() and not p.name.startswith(".")]
