"""``trainkit walkforward``: walk-forward evaluation with cached folds — a thin command over
:mod:`trainkit.walkforward` (plan every symbol, then run the plans through an executor).

Only click and trainkit's stdlib-only modules at import time: ``trainkit --help`` stays fast.
"""

from __future__ import annotations

from typing import Any, TextIO

import click

from trainkit.cli.exit import EXIT_OK
from trainkit.cli.group import Settings
from trainkit.cli.options import (
    FORCE_OPTION,
    ListCommand,
    model_options,
    train_options,
    walkforward_options,
    walkforward_span,
)
from trainkit.cli.output import (
    emit_json,
    fold_progress,
    per_symbol,
    print_walkforward,
    print_walkforward_dry_run,
    stdout_for,
    ui_link,
)
from trainkit.store.contract import UI_RUN

__all__ = ["walkforward"]


@click.command("walkforward", cls=ListCommand, short_help="Walk-forward evaluation with cached folds and backtests.")
@model_options(windows=False)
@walkforward_options()
@FORCE_OPTION
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
    seeds, end = walkforward_span(ctx, options, start, end, seeds)

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
        with runner:  # Ray: one connection for every symbol's plan
            code = per_symbol(out, plans, lambda p: p.symbol,
                              lambda p: _run(manager, p, runner, force=force, no_fallback=no_fallback, show=not json_mode),
                              lambda o, wf: print_walkforward(o, wf, ui_link(
                                  manager.tracking_uri, UI_RUN, experiment_id=wf.experiment_id or "", run_id=wf.run_id or "")),
                              json_mode=json_mode, verbose=settings.verbose)
    if code != EXIT_OK:
        raise click.exceptions.Exit(code)


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
