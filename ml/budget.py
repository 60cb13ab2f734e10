"""The train step's time budget (`[train] time_budget_s`): which optional phases still fit, from
what this run measured so far and the phase timings the last runs recorded in ml.model_runs.

Optional phases are given up in the order of OPTIONAL (the first goes first): a phase runs
when the time spent, plus its estimate, plus the estimates of the phases still to come that
rank above it (the required ones and the optional ones given up later) fit in the budget."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# the phases of ml.train in the order they run (the names of its timings)
READ, EVALUATE, TEST = "read marts", "evaluate", "test"
REFIT, SAVE, PLAY_NEXT = "refit on all data", "save artifact", "play next"
LISTS, CHURN, STAGE = "build lists", "churn", "stage"
PHASES = (READ, EVALUATE, TEST, REFIT, SAVE, PLAY_NEXT, LISTS, CHURN, STAGE)
CHALLENGERS = "challengers"
# given up first to last: the search beyond the champion's refit, the churn figure (a
# guardrail's input, not a list), play next's refresh (yesterday's lists stay, completed)
OPTIONAL = (CHALLENGERS, CHURN, PLAY_NEXT)
# phases whose time tracks the data's size and the machine's speed: today's over their
# recorded time scales the recorded time of a phase still to come (the search's is its budget)
SCALING = (READ, TEST, REFIT, SAVE, PLAY_NEXT, LISTS)


class Stopped(RuntimeError):
    """The run failed beside the step (it started early: orchestrator/daily.py): the step
    stopped before its next phase. The message is one line."""


# what comes after each decision point, given up later than it (or never)
_AFTER_CHALLENGERS = (TEST, REFIT, SAVE, PLAY_NEXT, LISTS, CHURN, STAGE)


@dataclass
class StepBudget:
    """`seconds` (0: no limit) from `started` by `clock`; `recorded`: each phase's seconds in
    the latest run that timed it (ml.registry.recent_step_timings). `timings` is this run's.
    `stop`: once set, the next phase raises Stopped instead of starting."""

    seconds: float
    recorded: Mapping[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.perf_counter
    started: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    stop: threading.Event | None = None

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    @property
    def limited(self) -> bool:
        return self.seconds > 0

    def elapsed(self) -> float:
        assert self.started is not None
        return self.clock() - self.started

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a phase into `timings` (seconds, rounded to ms) and log it."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped(f"stopped before {name}: the run failed beside training")
        started = self.clock()
        yield
        self.timings[name] = round(self.clock() - started, 3)
        log.info("%s: %.1fs", name, self.timings[name])

    def pace(self) -> float:
        """Today's time over the recorded one, on the scaling phases timed so far (1 without
        any: the recorded times as they are)."""
        done = [p for p in SCALING if p in self.timings and self.recorded.get(p, 0) > 0]
        if not done:
            return 1.0
        return sum(self.timings[p] for p in done) / sum(self.recorded[p] for p in done)

    def estimate(self, phases: Iterable[str]) -> float:
        """The expected seconds of `phases` today (a phase never recorded: 0)."""
        pace = self.pace()
        return sum(self.recorded.get(phase, 0.0) * pace for phase in phases)

    def left_for_challengers(self) -> float | None:
        """The search's seconds for challengers once the phases after it are set aside (None:
        no limit)."""
        if not self.limited:
            return None
        return max(0.0, self.seconds - self.elapsed() - self.estimate(_AFTER_CHALLENGERS))

    def fits(self, phase: str, then: Iterable[str]) -> bool:
        """Whether optional `phase`, and `then` (what still has to run after it), fit; if not,
        it is recorded as skipped (and logged)."""
        if not self.limited:
            return True
        then = list(then)
        needed = self.estimate([phase, *then])
        if self.elapsed() + needed <= self.seconds:
            return True
        log.warning(
            "time budget %gs: %.1fs spent, %s and %s expected to take %.1fs: %s does not fit",
            self.seconds,
            self.elapsed(),
            phase,
            ", ".join(then) or "nothing else",
            needed,
            phase,
        )
        return False

    def skip(self, what: str) -> None:
        """Record what was given up, as the summary and the ledger say it."""
        self.skipped.append(what)
