"""What the daily run runs, in order, and as which warehouse role."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import httpx

from moovitamix import exit_codes, roles
from moovitamix.publication import PublishFailed, publish
from moovitamix.step import RunContext, Step, StepFailed, StepReport

# How long the publish waits for readers holding locks on the published tables (an analyst's
# open transaction on a mart) before the run fails and yesterday's state stays.
PUBLISH_LOCK_TIMEOUT_S = 120.0
Steps = tuple[tuple[str, Step], ...]  # (name, step function), in the order they run
# The role of each step: it connects as that role's own login (moovitamix/logins.py). `source`
# needs no warehouse; the run's ledger is written as the publisher.
STEP_ROLES = {
    "erase": roles.PRIVACY,  # pending erasure requests (privacy/)
    "ingest": roles.LOADER,  # dlt's loader and the step's own connections
    "transform": roles.TRANSFORMER,  # dbt's profile; the candidate's state as the publisher
    "validate": roles.TRANSFORMER,  # reads raw, owns the candidate marts, writes monitoring
    "train": roles.ML,
    "audit_recs": roles.ML,  # owns the staged lists, reads the candidate marts
    "report": roles.ANALYST,  # reads monitoring only
    "publish": roles.PUBLISHER,  # owns the marts schemas, a member of mvx_ml (the lists)
}


def check_source(ctx: RunContext) -> StepReport:
    """Ask each endpoint for its first page: reachable, and how many records it will serve."""
    from ingestion.moovitamix_source.contract import ENDPOINTS

    totals: dict[str, int] = {}
    with httpx.Client(base_url=ctx.api_url, timeout=httpx.Timeout(30, connect=5)) as client:
        for endpoint in ENDPOINTS:
            try:
                response = client.get(f"/{endpoint}", params={"page": 1, "size": 1})
                response.raise_for_status()
                totals[endpoint] = int(response.json().get("total") or 0)
            except (httpx.HTTPError, ValueError) as exc:
                raise StepFailed(
                    f"GET /{endpoint} at {ctx.api_url}: {exc}", exit_codes.SOURCE_UNREACHABLE
                ) from None
    summary = ", ".join(f"{name} {count:,}" for name, count in totals.items())
    return StepReport(f"API totals: {summary}", rows_out=sum(totals.values()), details=totals)


def publish_step(ctx: RunContext) -> StepReport:
    """Write-audit-publish's last step: the audited candidate marts and staged lists replace the
    published ones in one transaction."""
    if ctx.publication is None:
        raise StepFailed("nothing to publish: this run has no publication")
    try:
        figures = publish(ctx.warehouse, ctx.publication, lock_timeout_s=PUBLISH_LOCK_TIMEOUT_S)
    except PublishFailed as exc:
        raise StepFailed(str(exc)) from None
    return StepReport(f"published {', '.join(figures)} of run {ctx.run_id}", details=figures)


@dataclass(frozen=True)
class LazyStep:
    """A step function of a package imported when the step starts: each package pulls in its
    heavy tool (dlt, dbt, Great Expectations, implicit), which its step pays for, not the run's
    start."""

    module: str
    function: str

    def load(self) -> Step:
        return getattr(importlib.import_module(self.module), self.function)

    def __call__(self, ctx: RunContext) -> StepReport:
        return self.load()(ctx)


def pipeline_steps() -> Steps:
    """The daily run's steps, in order."""
    return (
        ("source", check_source),
        ("erase", LazyStep("privacy.step", "erase")),  # pending erasure requests (privacy/)
        ("ingest", LazyStep("ingestion.step", "ingest")),
        ("transform", LazyStep("dbt_project.step", "transform")),
        ("validate", LazyStep("expectations.step", "validate_data")),
        ("train", LazyStep("ml.step", "train")),
        ("audit_recs", LazyStep("expectations.step", "validate_recommendations")),
        ("publish", publish_step),
    )


@dataclass(frozen=True)
class EarlyStart:
    """A step that may start while an earlier step (a dbt build) runs, in a thread of its own,
    once the models it reads are built: the rest of the build, and the steps between, run
    beside it. A failure of either fails the run, which waits for both before discarding."""

    during: str  # the step whose build reports its models (RunContext.build_progress)
    models: tuple[str, ...]  # the models the step reads, all built before it starts
    # a later step that starts only once this one ended (None: its own turn): their peaks of
    # memory would add up
    ends_before: str | None = None


# Training reads these marts alone (ml/interactions.py, ml/sequences.py): it starts once they are
# built, beside `user_genre_features`, the other marts and dbt's remaining tests; `validate`
# waits for it (at a million users, training's lists and GX's checks side by side took the run
# past 2 GB of memory: bench/bench_daily.py).
TRAIN_READS = ("dim_users", "dim_tracks", "bridge_track_genres", "fct_listens")


def early_starts(engine: str) -> dict[str, EarlyStart]:
    """The pipeline's steps that may start early, by name. On Postgres only: on Spark, dbt's
    build and training share the run's one Spark session."""
    if engine != "postgres":
        return {}
    return {"train": EarlyStart("transform", TRAIN_READS, ends_before="validate")}


def closing_steps() -> Steps:
    """The steps that run once the run is recorded as finished, whether it failed or not."""
    return (("report", LazyStep("expectations.step", "health_report")),)


def while_the_simulator_starts() -> None:
    """What the daily run imports while its simulator starts (a child process, on another
    core): the packages of the steps that read the API (source, ingest), dlt's."""
    importlib.import_module("ingestion.step")
