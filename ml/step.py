"""Training as a step of the daily run: `train` (also `python -m ml train`)."""

from __future__ import annotations

from ml.budget import Stopped
from ml.config import MlConfig
from ml.registry import finite_json
from ml.train import TrainingFailed, run_training
from moovitamix.step import RunContext, StepFailed, StepReport

__all__ = ["train"]


def train(
    ctx: RunContext, config: MlConfig | None = None, champion_from_config: bool = False
) -> StepReport:
    """Evaluate, select, refit, and publish (or, in the daily run, stage the lists for the
    run's publication); a failure leaves yesterday's recommendations."""
    try:
        result = run_training(
            ctx.settings,
            ctx.run_id,
            warehouse=ctx.warehouse,
            config=config,
            champion_from_config=champion_from_config,
            publication=ctx.publication,
            stop=ctx.stop,
        )
    except (TrainingFailed, Stopped) as exc:
        raise StepFailed(str(exc)) from None
    for alert in result.alerts:  # ALS lost to the baselines: published, but say so
        ctx.alert(alert.severity, alert.title, alert.step, **alert.details)
    run = result.serving_model_run_id
    facts = {
        "source": result.source,
        "model_run_id": run,
        "promoted": result.promoted,
        "split": result.split,
        "play_next": result.play_next,
    }
    served = finite_json(result.test.get("model") or result.test.get(result.source) or {})
    test = served.get(result.metric)
    ctx.facts["recommendations"] = {
        **facts,
        f"{result.metric}@{result.k}": round(result.metrics[result.metric], 4),
        **({f"test_{result.metric}@{result.k}": test} if test else {}),
    }
    return StepReport(
        result.summary,
        rows_in=result.model_runs[0].n_interactions if result.model_runs else None,
        rows_out=sum(result.rows_published.values()),
        details=finite_json(  # the run ledger's JSON has no NaN (a first day's churn)
            {
                **facts,
                "reason": result.reason,
                "metrics": result.metrics,
                "test": served,
                "baseline_metrics": result.baseline_metrics,
                "candidates": {run.model_run_id: run.status for run in result.model_runs},
                "challengers_passed_over": result.passed_over,
                "time_budget_s": result.time_budget_s,
                "skipped": result.skipped,  # what the step's time budget gave up
                "rows_published"
                if ctx.publication is None
                else "rows_staged": result.rows_published,
                "timings_s": result.timings,
                "seconds": round(result.seconds, 1),
            }
        ),
    )
