"""`python -m ml train|evaluate`: the recommender's commands (make train, make evaluate).

Exit codes: 0 ok; 1 the run failed (one line on stderr says why; yesterday's recommendations
stay); 2 bad arguments or config; 3 the warehouse is unreachable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ml.config import ConfigError, load_config
from ml.evaluate import format_table
from ml.train import TrainingFailed, run_evaluation, run_training
from moovitamix import exit_codes
from moovitamix.alerts import send_alert
from moovitamix.run_context import current_run_id, setup_logging
from moovitamix.settings import apply_offline_defaults, load_settings
from moovitamix.warehouse import WarehouseUnreachable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="config file (default: ml/config.toml)")
    common.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key for this run, e.g. -o model.factors=128 (repeatable)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug output")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        parents=[common],
        help="evaluate, select, refit, save and publish (the daily step)",
    )
    train.add_argument(
        "--champion-from-config",
        action="store_true",
        help="take the config's [model] parameters as the champion instead of the registry's",
    )
    sub.add_parser(
        "evaluate",
        parents=[common],
        help="print baselines vs the champion and the config's parameters; writes nothing",
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    settings = load_settings()
    run_id = current_run_id()
    log_file = setup_logging(run_id, settings.logs_dir, verbose=args.verbose)
    logging.getLogger(__name__).info("ml train, run %s, log %s", run_id, log_file)
    config = load_config(args.config, args.override)
    result = run_training(
        settings, run_id, config=config, champion_from_config=args.champion_from_config
    )
    for alert in result.alerts:
        send_alert(alert, settings.alert_webhook_url)
    print(f"train OK in {result.seconds:.1f}s: {result.summary}")
    return exit_codes.OK


def _evaluate(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    config = load_config(args.config, args.override)
    results, data = run_evaluation(load_settings(), config=config)
    sizes = data.holdout.sizes()
    print(
        f"holdout: {sizes['eval_users']:,} users evaluated ({sizes['eligible_users']:,} "
        f"eligible), {config.evaluation.holdout_per_user} held-out tracks each, k={data.k}"
    )
    print(format_table(results, data.k, config.selection.metric))
    return exit_codes.OK


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    args = build_parser().parse_args(argv)
    try:
        return _train(args) if args.command == "train" else _evaluate(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except WarehouseUnreachable as exc:
        print(f"FAILED step '{args.command}': {exc}", file=sys.stderr)
        return exit_codes.WAREHOUSE_UNREACHABLE
    except TrainingFailed as exc:
        print(f"FAILED step '{args.command}': {exc}", file=sys.stderr)
        return exit_codes.STEP_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
