"""The models a running transform has built so far, for a step that reads only some of them:
it may start once those are built while the rest of the build goes on (the daily run starts
training when the marts it reads are built, and the rest of dbt's build runs beside it)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

BUILT = "success"  # dbt's status of a model built without error


class BuildProgress:
    """Thread-safe: the build's threads report models, a waiting step's thread waits."""

    def __init__(self) -> None:
        self._built: set[str] = set()
        self._ended = False
        self._changed = threading.Condition()

    def built(self, model: str) -> None:
        with self._changed:
            self._built.add(model)
            self._changed.notify_all()

    def end(self) -> None:
        """The build is over (passed or failed): nothing more will be built."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, models: Iterable[str]) -> bool:
        """Block until every one of `models` is built (True) or the build ended without them."""
        wanted = set(models)
        with self._changed:
            self._changed.wait_for(lambda: wanted <= self._built or self._ended)
            return wanted <= self._built

    def dbt_callback(self, event: object) -> None:
        """A dbtRunner callback: a model node that finished successfully is built (its hooks,
        the foreign keys among them, ran in its transaction, which committed)."""
        if getattr(getattr(event, "info", None), "name", None) != "NodeFinished":
            return
        node = event.data.node_info  # type: ignore[attr-defined]
        if node.resource_type == "model" and node.node_status == BUILT:
            self.built(node.node_name)
