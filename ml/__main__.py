"""`python -m ml train|evaluate`: the recommender's commands (make train, make evaluate). A
failed train says why in one line and exits 1; yesterday's recommendations stay."""

from __future__ import annotations

from pathlib import Path

from ml.config import ConfigError, load_config
from ml.evaluate import format_table
from ml.step import train
from ml.train import TrainingFailed, run_evaluation
from moovitamix.command import Command, Commands
from moovitamix.roles import ML


def _train(cmd: Command) -> None:
    config = load_config(cmd.args.config, cmd.args.override)
    report = train(cmd.context(ML), config, cmd.args.champion_from_config)
    print(f"train OK in {report.details['seconds']}s: {report.summary}")


def _evaluate(cmd: Command) -> None:
    config = load_config(cmd.args.config, cmd.args.override)
    results, data = run_evaluation(cmd.settings, config=config, warehouse=cmd.login(ML))
    metric = config.selection.metric
    print(f"split: {data.split.reason}")
    print(
        f"validation: {len(data.split.valid_rows):,} users judged, k={data.k}; gains are "
        f"paired bootstrap intervals ({config.evaluation.confidence:.0%}) over those users"
    )
    baselines = [r for r in results if r.params is None]
    best = max(baselines, key=lambda r: r.score(metric))
    gains = {
        r.name: data.gain(r, best, metric) for r in results if r is not best and r.error is None
    }
    print(format_table(results, data.k, metric, gains, best.name))


def main(argv: list[str] | None = None) -> int:
    commands = Commands(
        "python -m ml", __doc__, usage_errors=(ConfigError,), step_errors=(TrainingFailed,)
    )
    train_command = commands.add(
        "train", _train, "evaluate, select, refit, save and publish (the daily step)", run_log=True
    )
    train_command.add_argument(
        "--champion-from-config",
        action="store_true",
        help="take the config's [model] parameters as the champion instead of the registry's",
    )
    evaluate = commands.add(
        "evaluate",
        _evaluate,
        "print the split, then baselines vs the champion, the config's [model] and each searched "
        "family's defaults on validation, with gains over the best baseline; writes nothing",
        run_log=True,
    )
    for parser in (train_command, evaluate):
        parser.add_argument("--config", type=Path, help="config file (default: ml/config.toml)")
        parser.add_argument(
            "-o",
            "--override",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config key for this run, e.g. -o model.factors=128 (repeatable)",
        )
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
