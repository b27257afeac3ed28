"""``trainkit tune``: hyperparameter search whose trials are cache entries — a thin command over
:meth:`TrainingManager.tune <trainkit.manager.TrainingManager.tune>` (:mod:`trainkit.search`).

Everything a user can get wrong is checked before any training and before any run or trial is
created (exit 2): the space file, ``--trials``, the objective, a study that exists as a study
of something else. Only click and trainkit's stdlib-only modules at import time.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click

from trainkit.cli.exit import EXIT_OK
from trainkit.cli.group import Settings
from trainkit.cli.options import (
    ListCommand,
    model_options,
    train_options,
    walkforward_options,
    walkforward_span,
)
from trainkit.cli.output import emit_json, per_symbol, print_tune, print_tune_dry_run, stdout_for, ui_link
from trainkit.store.contract import UI_RUN

__all__ = ["tune"]


@click.command("tune", cls=ListCommand, short_help="Search hyperparameters; every trial is a cached walk-forward.")
@model_options(windows=False)
@walkforward_options(end_required=True)
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="The study's total of finished trials: a rerun adds only what is missing.")
@click.option("--study", default=None, metavar="NAME",
              help="The study's name [default: SYMBOL-algo-train-test]; with several symbols, NAME-SYMBOL each.")
@click.option("--space", "space_file", default=None, metavar="FILE",
              help="Search space (YAML or JSON): hyperparameter: {type: float|int|categorical, low, high, log, step, "
                   "choices} [default: the algorithm's own space].")
@click.option("--objective", default="sharpe", show_default=True, metavar="METRIC",
              help="Stitched out-of-sample metric to optimise (sharpe, sortino, total_return, max_drawdown, …).")
@click.option("--sampler-seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the sampler: a fresh study with the same options asks for the same configs.")
@click.option("--pruner", type=click.Choice(["none", "median"], case_sensitive=False), default="none",
              show_default=True, help="median: stop a trial whose running value falls below the median at a fold.")
@click.option("--dry-run", is_flag=True, help="Print the next trials and what of them is cached; train nothing.")
@click.pass_context
def tune(ctx: click.Context, start: str, end: str | None, train_window: str, test_window: str, step: str | None,
         mode: str, embargo: str, seeds: tuple[int, ...], workers: int, executor: str, ray_address: str | None,
         trials: int, study: str | None, space_file: str | None, objective: str, sampler_seed: int, pruner: str,
         dry_run: bool, **opts: Any) -> None:
    """Search hyperparameters with Optuna: each trial is one config walked forward over cached
    folds, valued by its stitched out-of-sample --objective.

    \b
    A rerun, a resumed study, a second terminal or a second machine trains only what the store
    lacks: --trials N is the study's total, so rerunning the same command trains nothing and
    --trials N+k adds k new configs. Trials run --workers at a time.

    \b
    One run per study in experiment trainkit-tune, a nested run per trial (its values, value and
    walk-forward run), the best trial and Optuna's pictures on the study run.

    \b
    Example:
      trainkit tune --symbols AAPL --start 2012-01-01 --end 2023-12-31 \\
          --train-window 3y --test-window 6m --trials 40 --workers 2
    """
    from trainkit.executors import make_executor
    from trainkit.search import check_options, remaining

    settings: Settings = ctx.obj
    symbols, json_mode = opts["symbols"], opts["json_mode"]
    check_options(objective=objective, pruner=pruner.lower(), sampler_seed=sampler_seed, name=study, trials=trials)
    options = train_options(opts)
    seeds, end = walkforward_span(ctx, options, start, end, seeds)
    reader = settings.reader()  # one store connection for every read before the run (None: no store yet)
    specs = _specs(reader, symbols, study, start, end, train_window, test_window, step, mode.lower(), embargo, seeds,
                   space_file, objective, sampler_seed, pruner.lower(), opts["no_fallback"], options, dry_run)
    with stdout_for(json_mode) as out:
        if dry_run:
            _dry_run(reader, specs, trials, out, json_mode)
            return
        # a rerun of complete studies starts no worker pool (it would outlive the command, holding its output open)
        busy = any(remaining(reader, spec, trials) for _plan, spec in specs)
        runner = make_executor(executor, workers=max(1, workers) if busy else 1, verbose=settings.verbose,
                               address=ray_address)
        manager = settings.manager()
        from trainkit.search import tune as run_study

        def run(item: tuple[Any, Any]) -> Any:
            plan, spec = item
            return run_study(manager, plan, spec, trials, runner, parallel=max(1, workers),
                             on_trial=None if json_mode else _progress(spec.symbol))

        def render(o: TextIO, res: Any) -> None:  # with the best trial's walk-forward in the UI (from its evidence)
            ev = res.evidence
            print_tune(o, res, ui_link(manager.tracking_uri, UI_RUN, experiment_id=ev.experiment_id if ev else "",
                                       run_id=ev.walkforward_run_id if ev else ""))

        with runner:
            code = per_symbol(out, specs, lambda item: item[1].symbol, run, render, json_mode=json_mode,
                              verbose=settings.verbose)
    if code != EXIT_OK:
        raise click.exceptions.Exit(code)


def _specs(reader: Any, symbols: tuple[str, ...], study: str | None, *args: Any) -> list[tuple[Any, Any]]:
    """Every symbol's plan and study, checked before anything is trained or written: the
    space, the objective, and a study that exists as a study of something else (reads the store)."""
    from trainkit.search import check_study, default_space, load_space, make_spec
    from trainkit.walkforward import plan_walk_forward

    (start, end, train_window, test_window, step, mode, embargo, seeds, space_file, objective, sampler_seed, pruner,
     no_fallback, options, dry_run) = args
    space = load_space(space_file, options["algo"]) if space_file else None
    out = []
    for sym in symbols:
        plan = plan_walk_forward(sym, start, end, train_window, test_window, step, mode, embargo, seeds,
                                 no_fallback=no_fallback, **options)
        name = None if study is None else (study if len(symbols) == 1 else f"{study}-{plan.symbol}")
        spec = make_spec(plan, space or default_space(plan.base.algo, plan.base.hyperparams), objective, name,
                         sampler_seed=sampler_seed, pruner=pruner)
        check_study(reader, spec)
        out.append((plan, spec))
    return out


def _progress(symbol: str) -> Any:
    """One line per finished trial on stderr (a terminal's progress; never with --json)."""
    def on_trial(t: Any) -> None:
        value = "" if t.value is None else f" value {t.value:.3f}"
        sys.stderr.write(f"{symbol} trial {t.number}: {t.state}{value} ({t.trained} trained)\n")
        sys.stderr.flush()
    return on_trial


def _dry_run(reader: Any, specs: list[tuple[Any, Any]], trials: int, out: TextIO, json_mode: bool) -> None:
    from trainkit.search import preview

    docs = [preview(reader, plan, spec, trials) for plan, spec in specs]
    if json_mode:
        emit_json(out, docs)
    else:
        print_tune_dry_run(out, docs)
