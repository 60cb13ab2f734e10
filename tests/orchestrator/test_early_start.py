"""A step that starts during an earlier step's build, once the models it reads are built
(orchestrator.steps.EarlyStart): in process, with the test's own steps and a real ledger. What
the run records, says and exits with when either side fails."""

from __future__ import annotations

import itertools
import threading
import time

import psycopg
import pytest

from moovitamix import exit_codes
from moovitamix.build_progress import BuildProgress
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from moovitamix.step import RunContext, StepFailed, StepReport
from orchestrator import daily
from orchestrator.daily import run
from orchestrator.steps import TRAIN_READS, EarlyStart, early_starts

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # generous: a stuck thread fails the test instead of hanging it
EARLY = {"train": EarlyStart("build", ("dim_a", "fct_b"))}
TICKS = itertools.count()  # the order of events across the run's threads (no clock)


class Build:
    """A fake build: reports `models` to the run's progress, then waits for the early step to
    start (so the two provably overlap) unless `wait` is off, then passes or raises `fails`."""

    def __init__(self, models: tuple[str, ...], wait: bool = True, fails: str = "") -> None:
        self.models, self.wait, self.fails = models, wait, fails
        self.ended_at = 0

    def __call__(self, ctx: RunContext) -> StepReport:
        for model in self.models:  # (the real build reports only where the run asks it to)
            if ctx.build_progress is not None:
                ctx.build_progress.built(model)
        if self.wait:
            assert train_started.wait(WAIT_S), "the early step did not start"
        self.ended_at = next(TICKS)
        if self.fails:
            raise StepFailed(self.fails)
        return StepReport("built")


train_started = threading.Event()


class Train:
    def __init__(self, fails: str = "", seconds: float = 0.0) -> None:
        self.fails, self.seconds = fails, seconds
        self.started_at = self.ended_at = 0

    def __call__(self, ctx: RunContext) -> StepReport:
        self.started_at = next(TICKS)
        train_started.set()
        time.sleep(self.seconds)  # sleep: still running when the build fails beside it
        self.ended_at = next(TICKS)
        if self.fails:
            raise StepFailed(self.fails)
        return StepReport("trained")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:1")  # no step asks it
    train_started.clear()


def _steps(url: ConnectionURL, run_id: str) -> dict[str, tuple[int, str, str | None]]:
    with psycopg.connect(url.url()) as conn:
        rows = conn.execute(
            "select step, step_order, status, error_message from monitoring.pipeline_run_steps"
            " where run_id = %s",
            (run_id,),
        ).fetchall()
    return {step: (order, status, error) for step, order, status, error in rows}


def _build_check_train(build: Build, train: Train, checked: list[bool]) -> tuple:
    """The steps of most tests: the build, a step between that notes it ran, then training."""
    return (
        ("build", build),
        ("check", lambda ctx: checked.append(True) or StepReport("checked")),
        ("train", train),
    )


def _measured(run_id: str = "run-before") -> None:
    """A run in which training ran in its turn and recorded how far it took the memory: the
    next runs may start it beside the build (orchestrator.daily._fits_beside)."""
    steps = (("train", lambda ctx: StepReport("trained")),)
    assert run(load_settings(), run_id, steps, (), {"train": EarlyStart("none", ())}) == 0


def test_the_step_starts_during_the_build_once_its_models_are_built(
    warehouse_env: ConnectionURL, capsys: pytest.CaptureFixture
) -> None:
    _measured()
    build, train = Build(("dim_a", "other", "fct_b")), Train()
    checked: list[bool] = []
    steps = _build_check_train(build, train, checked)
    assert run(load_settings(), "run-early", steps, (), EARLY) == exit_codes.OK
    assert train.started_at < build.ended_at  # beside the build, not after it
    assert checked == [True]
    # the ledger keeps the pipeline's order, whatever the order they started in
    assert _steps(warehouse_env, "run-early") == {
        "build": (1, "success", None),
        "check": (2, "success", None),
        "train": (3, "success", None),
    }
    summary = capsys.readouterr().out
    assert "Run run-early: OK" in summary and "trained (beside build)" in summary


def test_a_build_that_ends_without_the_models_runs_the_step_in_its_turn(
    warehouse_env: ConnectionURL,
) -> None:
    _measured()
    build, train = Build(("dim_a",), wait=False), Train()
    order: list[str] = []
    steps = (
        ("build", build),
        ("check", lambda ctx: order.append("check") or StepReport("checked")),
        ("train", lambda ctx: order.append("train") or train(ctx)),
    )
    assert run(load_settings(), "run-late", steps, (), EARLY) == exit_codes.OK
    assert order == ["check", "train"]
    assert train.started_at > build.ended_at


def test_a_build_that_fails_beside_the_step_fails_the_run_once_the_step_ended(
    warehouse_env: ConnectionURL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Nothing is discarded while the step may still stage something: the run waits for it."""
    _measured()
    build, train = Build(("dim_a", "fct_b"), fails="a test of fct_b failed"), Train(seconds=1.0)
    discarded_at: list[int] = []
    monkeypatch.setattr(daily, "_discard", lambda ctx: discarded_at.append(next(TICKS)))
    steps = (("build", build), ("check", lambda ctx: StepReport("")), ("train", train))
    assert run(load_settings(), "run-build-fails", steps, (), EARLY) == exit_codes.STEP_FAILED
    assert discarded_at and discarded_at[0] >= train.ended_at
    assert _steps(warehouse_env, "run-build-fails") == {
        "build": (1, "failed", "a test of fct_b failed"),
        "train": (3, "success", None),  # it ran to its end; the run publishes nothing
    }
    err = capsys.readouterr().err
    assert "FAILED in step 'build'" in err and "build      failed: a test of fct_b failed" in err


def test_a_failed_build_stops_the_step_beside_it_at_its_next_safe_point(
    warehouse_env: ConnectionURL,
) -> None:
    """The step sees RunContext.stop set (training checks it before each phase)."""
    _measured()
    stopped: list[bool] = []

    def train(ctx: RunContext) -> StepReport:
        train_started.set()
        assert ctx.stop is not None
        stopped.append(ctx.stop.wait(WAIT_S))
        raise StepFailed("stopped before evaluate: the run failed beside training")

    build = Build(("dim_a", "fct_b"), fails="a model failed")
    steps = (("build", build), ("train", train))
    assert run(load_settings(), "run-stop", steps, (), EARLY) == exit_codes.STEP_FAILED
    assert stopped == [True]
    assert _steps(warehouse_env, "run-stop") == {
        "build": (1, "failed", "a model failed"),  # the run's failure, not the stopped step
        "train": (2, "failed", "stopped before evaluate: the run failed beside training"),
    }


def test_a_step_that_fails_beside_the_build_fails_the_run_in_its_name(
    warehouse_env: ConnectionURL, capsys: pytest.CaptureFixture
) -> None:
    _measured()
    build, train = Build(("dim_a", "fct_b")), Train(fails="training failed: no listens")
    checked: list[bool] = []
    steps = _build_check_train(build, train, checked)
    assert run(load_settings(), "run-train-fails", steps, (), EARLY) == exit_codes.STEP_FAILED
    assert checked == [True]  # the steps between ran; the failure is reported in its turn
    assert _steps(warehouse_env, "run-train-fails")["train"] == (
        3, "failed", "training failed: no listens",
    )  # fmt: skip
    assert "FAILED in step 'train'" in capsys.readouterr().err


def test_a_step_that_waits_for_the_early_one_starts_once_it_ended(
    warehouse_env: ConnectionURL,
) -> None:
    """`ends_before`: the step between (validate, in the pipeline) does not run beside it."""
    _measured()
    build, train = Build(("dim_a", "fct_b")), Train(seconds=0.5)
    checked_at: list[int] = []
    steps = (
        ("build", build),
        ("check", lambda ctx: checked_at.append(next(TICKS)) or StepReport("checked")),
        ("train", train),
    )
    early = {"train": EarlyStart("build", ("dim_a", "fct_b"), ends_before="check")}
    assert run(load_settings(), "run-waits", steps, (), early) == exit_codes.OK
    assert train.started_at < build.ended_at
    assert checked_at and checked_at[0] >= train.ended_at
    assert _steps(warehouse_env, "run-waits") == {
        "build": (1, "success", None),
        "check": (2, "success", None),
        "train": (3, "success", None),
    }


def test_an_early_step_that_failed_fails_the_run_before_the_step_waiting_for_it(
    warehouse_env: ConnectionURL, capsys: pytest.CaptureFixture
) -> None:
    _measured()
    build, train = Build(("dim_a", "fct_b")), Train(fails="training failed: no listens")
    checked: list[bool] = []
    steps = _build_check_train(build, train, checked)
    early = {"train": EarlyStart("build", ("dim_a", "fct_b"), ends_before="check")}
    assert run(load_settings(), "run-fails-first", steps, (), early) == exit_codes.STEP_FAILED
    assert checked == []
    assert _steps(warehouse_env, "run-fails-first") == {
        "build": (1, "success", None),
        "train": (3, "failed", "training failed: no listens"),
    }
    assert "FAILED in step 'train'" in capsys.readouterr().err


def test_progress_waits_for_every_model_or_the_build_end() -> None:
    progress = BuildProgress()
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(progress.wait_for(["a", "b"])))
    waiter.start()
    progress.built("a")
    time.sleep(0.05)  # sleep: time for the waiter to return too early (it must not)
    assert waiter.is_alive(), "one of two models is not enough"
    progress.built("b")
    waiter.join(WAIT_S)
    assert waited == [True]
    ended = BuildProgress()
    ended.built("a")
    ended.end()
    assert ended.wait_for(["a", "b"]) is False  # the build is over without b


def test_training_starts_early_on_postgres_only_and_waits_for_every_mart_it_reads() -> None:
    from ml.interactions import MARTS_READ

    assert set(TRAIN_READS) == set(MARTS_READ)
    assert early_starts("postgres") == {
        "train": EarlyStart("transform", TRAIN_READS, ends_before="validate")
    }
    assert early_starts("spark") == {}


def test_the_step_runs_in_its_turn_until_a_run_measured_it_or_when_it_would_not_fit(
    warehouse_env: ConnectionURL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No record of training's memory yet: in its turn (and now measured). A budget that the
    build and training's last rise would pass: in its turn, and the log says why."""
    order: list[str] = []
    steps = (
        ("build", Build(("dim_a", "fct_b"), wait=False)),
        ("check", lambda ctx: order.append("check") or StepReport("checked")),
        ("train", lambda ctx: order.append("train") or StepReport("trained")),
    )
    assert run(load_settings(), "run-first", steps, (), EARLY) == exit_codes.OK
    assert order == ["check", "train"]
    with psycopg.connect(warehouse_env.url()) as conn:
        (rise,) = conn.execute(
            "select details ->> 'rss_rise_mb' from monitoring.pipeline_run_steps"
            " where run_id = 'run-first' and step = 'train'"
        ).fetchone()
    assert float(rise) >= 0
    order.clear()
    monkeypatch.setenv("MOOVITAMIX_MEMORY_BUDGET_MB", "100")  # less than the process has
    with caplog.at_level("INFO", logger="orchestrator.daily"):
        assert run(load_settings(), "run-small", steps, (), EARLY) == exit_codes.OK
    assert order == ["check", "train"]
    assert "train starts after the build: beside it the run would reach" in caplog.text
    assert "above MOOVITAMIX_MEMORY_BUDGET_MB=100" in caplog.text
