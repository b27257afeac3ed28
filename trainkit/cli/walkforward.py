"""``trainkit walkforward``: walk-forward evaluation with cached folds — a thin command over
:mod:`trainkit.walkforward` (plan every symbol, then run the plans through an executor).

Only click and trainkit's stdlib-only modules at import time: ``trainkit --help`` stays fast.
"""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any, TextIO

import click

from trainkit.cli.exit import EXIT_OK
from trainkit.cli.group import Settings
from trainkit.cli.options import (
    DATE,
    EXECUTOR_OPTION,
    FORCE_OPTION,
    RAY_ADDRESS_OPTION,
    WORKERS_OPTION,
    ListCommand,
    ListOption,
    Parsed,
    model_options,
    train_options,
)
from trainkit.cli.output import (
    emit_json,
    error_row,
    fold_progress,
    print_walkforward,
    print_walkforward_dry_run,
    stdout_for,
)
from trainkit.errors import ConfigError, TrainkitError
from trainkit.walkforward import MODES, parse_window

__all__ = ["walkforward"]


def _window(value: str, flag: str) -> str:
    """A window (checked now, kept as given: the plan resolves it against the calendar)."""
    parse_window(value, flag)
    return value


def _gap(value: str, flag: str) -> str:
    """A window that may be empty (``--embargo 0d``)."""
    parse_window(value, flag, allow_zero=True)
    return value


def _seeds(raw: str) -> tuple[int, ...]:
    """One ``--seeds`` value: a seed, or several separated by commas."""
    out: list[int] = []
    for part in (p.strip() for p in str(raw).split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) >= 2**31:
            raise ConfigError(f"{part!r} is not a seed: use integers 0..2147483647, e.g. --seeds 0 1 2")
        out.append(int(part))
    return tuple(out)


WINDOW = Parsed(_window, "window", flag=True)
_WINDOW_HELP = "a duration (30d, 2w, 6m, 3y) or a number of trading days (126)"


@click.command("walkforward", cls=ListCommand, short_help="Walk-forward evaluation with cached folds and backtests.")
@model_options(windows=False)
@click.option("--start", type=DATE, required=True, metavar="DATE",
              help="First day of the first training window: folds are anchored here (YYYY-MM-DD).")
@click.option("--end", type=DATE, default=None, metavar="DATE", help="Last day tested (YYYY-MM-DD) [default: today].")
@click.option("--train-window", type=WINDOW, default="3y", show_default=True, metavar="WINDOW",
              help=f"Training window: {_WINDOW_HELP}.")
@click.option("--test-window", type=WINDOW, default="6m", show_default=True, metavar="WINDOW",
              help=f"Out-of-sample window of each fold: {_WINDOW_HELP}.")
@click.option("--step", type=WINDOW, default=None, metavar="WINDOW",
              help="How far each fold moves on [default: the test window, so test windows tile the range].")
@click.option("--mode", type=click.Choice(MODES, case_sensitive=False), default="sliding", show_default=True,
              help="sliding: train on the train window before each test window; expanding: train from the anchor.")
@click.option("--embargo", type=Parsed(_gap, "window", flag=True), default="0d", show_default=True, metavar="WINDOW",
              help="Gap between a fold's last training day and its first test day.")
@click.option("--seeds", cls=ListOption, type=Parsed(_seeds, "seeds"), metavar="SEED [SEED…]",
              help="Train each fold once per seed and report the spread (--seeds 0 1 2) [default: --seed].")
@FORCE_OPTION
@WORKERS_OPTION
@EXECUTOR_OPTION
@RAY_ADDRESS_OPTION
@click.option("--dry-run", is_flag=True, help="Print the folds, their config hashes and what is cached; train nothing.")
@click.pass_context
def walkforward(ctx: click.Context, start: str, end: str | None, train_window: str, test_window: str, step: str | None,
                mode: str, embargo: str, seeds: tuple[int, ...], force: bool, workers: int, executor: str,
                ray_address: str | None, dry_run: bool, **opts: Any) -> None:
    """Walk-forward evaluation: train on a window, trade the next window out of sample, roll
    forward, and stitch the out-of-sample results — for each symbol.

    \b
    Folds are anchored at --start: fold k tests on
      [start + train-window + embargo + k·step, + test-window), clipped to --end,
    and trains on the train window that ends --embargo before it (sliding) or on everything
    from --start (expanding). A later --end keeps the earlier folds, so it trains only new ones.

    Each fold is a cached model (as `train`) plus a cached backtest: a rerun trains nothing and
    logs nothing. One parent run per symbol in experiment trainkit-walkforward, folds nested.

    \b
    Example:
      trainkit walkforward --symbols AAPL MSFT --start 2012-01-01 --end 2023-12-31 \\
          --train-window 3y --test-window 6m --seeds 0 1 2 --workers 2
    """
    from trainkit.executors import make_executor
    from trainkit.walkforward import plan_walk_forward

    settings: Settings = ctx.obj
    symbols, json_mode, no_fallback = opts["symbols"], opts["json_mode"], opts["no_fallback"]
    options = train_options(opts)
    seed = options.pop("seed")
    if seeds and ctx.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE:
        raise click.BadParameter("give either --seed or --seeds, not both", param_hint="'--seed'")
    seeds = seeds or (seed,)
    end = end or _dt.date.today().isoformat()
    if start >= end:
        raise click.BadParameter(f"--start {start} must be before --end {end}", param_hint="'--start'")

    with stdout_for(json_mode) as out:
        # every symbol is planned first: a bad window is exit 2 before anything is trained
        plans = [plan_walk_forward(sym, start, end, train_window, test_window, step, mode.lower(), embargo, seeds,
                                   no_fallback=no_fallback, **options) for sym in symbols]
        # made before the store is opened: local workers warm up meanwhile (none for a dry run);
        # the manager tells a Ray executor its store when it submits
        tasks = max(len(p.tasks) for p in plans)
        runner = make_executor(executor, workers=1 if dry_run else max(1, min(workers, tasks)),
                               verbose=settings.verbose, address=ray_address)
        if dry_run:
            _dry_run(settings, plans, out, json_mode)
            return
        manager = settings.manager()

        docs: list[dict[str, Any]] = []
        codes: list[int] = []
        with runner:  # Ray: one connection for every symbol's plan
            for plan in plans:
                try:
                    wf = _run(manager, plan, runner, force=force, no_fallback=no_fallback, show=not json_mode)
                except TrainkitError as exc:
                    docs.append(error_row(plan.symbol, exc, settings.verbose))
                    codes.append(exc.exit_code)
                    if not json_mode:
                        sys.stderr.write(f"error: {plan.symbol}: {docs[-1]['error']}\n")
                    continue
                docs.append(wf.to_dict())
                codes.append(EXIT_OK)
                if not json_mode:
                    print_walkforward(out, wf)
        if json_mode:
            emit_json(out, docs)
    if any(codes):
        raise click.exceptions.Exit(max(codes))


def _run(manager: Any, plan: Any, executor: Any, *, force: bool, no_fallback: bool, show: bool) -> Any:
    """Run one symbol's plan, with a progress bar over its folds on a terminal (stderr)."""
    from trainkit.walkforward import run_plan

    with fold_progress(plan.symbol, len(plan.tasks), show) as on_fold:
        return run_plan(manager, plan, executor, force=force, no_fallback=no_fallback, on_fold=on_fold)


def _dry_run(settings: Settings, plans: list[Any], out: TextIO, json_mode: bool) -> None:
    from trainkit.walkforward import dry_run

    manager = settings.reader()
    docs = []
    for p in plans:
        rows = dry_run(manager, p)
        docs.append({
            "symbol": p.symbol, "anchor": p.anchor, "start": p.start, "end": p.end, "n_folds": len(p.windows),
            "seeds": list(p.seeds), "would_train": sum(not r["cached"] for r in rows),
            "backtests_cached": sum(r["backtest_cached"] for r in rows), "folds": rows, "warnings": list(p.warnings),
        })
    if json_mode:
        emit_json(out, docs)
    else:
        print_walkforward_dry_run(out, docs, plans)
