"""What a step of the daily run is: a function of a `RunContext` that returns a `StepReport`,
or raises `StepFailed` with one line for the user. Each package exposes its step functions;
the orchestrator lists them in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moovitamix import exit_codes
from moovitamix.alerts import Alert, Severity, send_alert
from moovitamix.build_progress import BuildProgress
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import LIVE, Publication, Relations
from moovitamix.roles import as_role
from moovitamix.settings import Settings

if TYPE_CHECKING:
    from moovitamix.logins import Logins


class StepFailed(RuntimeError):
    """A step failed; the message is one line for the user."""

    def __init__(self, reason: str, code: int = exit_codes.STEP_FAILED) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class RunContext:
    settings: Settings
    run_id: str
    warehouse: ConnectionURL
    api_url: str
    api_is_simulator: bool
    alerts: list[Alert] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)  # what steps tell the summary
    # write-audit-publish (moovitamix/publication.py): set by the daily run, None when a step
    # runs on its own and writes the live tables directly
    publication: Publication | None = None
    # the project logins (moovitamix/logins.py): set by the daily run, where each step connects
    # as its own login; None: `warehouse` is one URL that acts as each role by SET ROLE
    logins: Logins | None = None
    # the transform's progress, set by the daily run when a later step may start during it
    # (orchestrator/daily.py): the transform reports each model it built
    build_progress: BuildProgress | None = None
    # set when the run failed beside a step that started early: it stops at its next safe
    # point (training: before its next phase) instead of running to its end
    stop: threading.Event | None = None

    def url_as(self, role: str) -> ConnectionURL:
        """Where to connect to act as `role`: its own login, or the run's URL as that role."""
        if self.logins is not None:
            return self.logins.url(role)
        return as_role(self.warehouse, role)

    @property
    def relations(self) -> Relations:
        """Where this run's marts and recommendations are (candidates under a publication)."""
        return self.publication.relations if self.publication is not None else LIVE

    def alert(
        self, severity: Severity, title: str, step: str | None = None, **details: object
    ) -> None:
        alert = Alert(severity, title, self.run_id, step, details)
        self.alerts.append(alert)
        send_alert(alert, self.settings.alert_webhook_url)


@dataclass
class StepReport:
    summary: str  # one line for the run's summary
    rows_in: int | None = None
    rows_out: int | None = None
    details: dict[str, object] = field(default_factory=dict)


Step = Callable[[RunContext], StepReport]
