"""``trainkit walkforward``: walk-forward evaluation with cached folds (:mod:`trainkit.walkforward`).

Registered on the group when this module is imported (``trainkit.cli.app`` imports it last).
Only click and trainkit's stdlib-only modules at import time: ``trainkit --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from trainkit.cli.app import (
    EXIT_OK,
    EXECUTOR_OPTION,
    FORCE_OPTION,
    RAY_ADDRESS_OPTION,
    WORKERS_OPTION,
    Settings,
    SymbolsCommand,
    cli,
    date_callback,
    emit_json,
    error_row,
    model_options,
    print_rich,
    stdout_for,
    train_options,
)
from trainkit.errors import ConfigError, TrainkitError
from trainkit.walkforward import MODES, parse_window


class _Command(SymbolsCommand):
    multi_value_options = ("--symbols", "--seeds")


def _window_callback(allow_zero: bool = False) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_window(value, "--" + (param.name or "window").replace("_", "-"), allow_zero=allow_zero)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return callback


def _seeds_callback(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[int, ...]:
    out: list[int] = []
    for raw in value or ():
        for part in (p.strip() for p in str(raw).split(",")):
            if not part:
                continue
            if not part.isdigit() or int(part) >= 2**31:
                raise click.BadParameter(f"{part!r} is not a seed: use integers 0..2147483647, e.g. --seeds 0 1 2")
            if int(part) not in out:
                out.append(int(part))
    return tuple(out)


_WINDOW_HELP = "a duration (30d, 2w, 6m, 3y) or a number of trading days (126)"


@cli.command("walkforward", cls=_Command, short_help="Walk-forward evaluation with cached folds and backtests.")
@model_options(windows=False)
@click.option("--start", required=True, callback=date_callback, metavar="DATE",
              help="First day of the first training window: folds are anchored here (YYYY-MM-DD).")
@click.option("--end", default=None, callback=date_callback, metavar="DATE",
              help="Last day tested (YYYY-MM-DD) [default: today].")
@click.option("--train-window", default="3y", show_default=True, callback=_window_callback(), metavar="WINDOW",
              help=f"Training window: {_WINDOW_HELP}.")
@click.option("--test-window", default="6m", show_default=True, callback=_window_callback(), metavar="WINDOW",
              help=f"Out-of-sample window of each fold: {_WINDOW_HELP}.")
@click.option("--step", default=None, callback=_window_callback(), metavar="WINDOW",
              help="How far each fold moves on [default: the test window, so test windows tile the range].")
@click.option("--mode", type=click.Choice(MODES, case_sensitive=False), default="sliding", show_default=True,
              help="sliding: train on the train window before each test window; expanding: train from the anchor.")
@click.option("--embargo", default="0d", show_default=True, callback=_window_callback(allow_zero=True),
              metavar="WINDOW", help="Gap between a fold's last training day and its first test day.")
@click.option("--seeds", multiple=True, callback=_seeds_callback, metavar="SEED [SEED…]",
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
    import datetime as _dt

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
        from trainkit.executors import make_executor

        # made before the store is opened: local workers warm up meanwhile (none for a dry run);
        # the manager tells a Ray executor its store when it submits
        tasks = max(len(p.tasks) for p in plans)
        runner = make_executor(executor, workers=1 if dry_run else max(1, min(workers, tasks)),
                               verbose=settings.verbose, address=ray_address)
        manager = settings.manager()
        if dry_run:
            _dry_run(manager, plans, out, json_mode)
            return

        docs: list[dict[str, Any]] = []
        codes: list[int] = []
        with runner:  # Ray: one connection for every symbol's plan
            for plan in plans:
                try:
                    wf = _run(manager, plan, runner, force=force, no_fallback=no_fallback, show=not json_mode)
                except TrainkitError as exc:
                    docs.append(error_row(plan.symbol, exc))
                    codes.append(exc.exit_code)
                    if not json_mode:
                        sys.stderr.write(f"error: {plan.symbol}: {docs[-1]['error']}\n")
                    continue
                docs.append(wf.to_dict())
                codes.append(EXIT_OK)
                if not json_mode:
                    _print_result(out, wf)
        if json_mode:
            emit_json(out, docs)
    if any(codes):
        raise click.exceptions.Exit(max(codes))


def _run(manager: Any, plan: Any, executor: Any, *, force: bool, no_fallback: bool, show: bool) -> Any:
    """Run one symbol's plan, with a progress bar over its folds on a terminal (stderr)."""
    from trainkit.walkforward import run_plan

    if not (show and sys.stderr.isatty()):
        return run_plan(manager, plan, executor, force=force, no_fallback=no_fallback)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as progress:
        bar = progress.add_task(f"{plan.symbol} folds", total=len(plan.tasks), last="")

        def on_fold(fold: Any) -> None:
            progress.update(bar, advance=1, last=f"fold {fold.index} seed {fold.seed}: {fold.status}")

        return run_plan(manager, plan, executor, force=force, no_fallback=no_fallback, on_fold=on_fold)


def _pct(v: float) -> str:
    return f"{v:+.1%}"


def _print_result(out: Any, wf: Any) -> None:
    from rich.table import Table

    p, m = wf.plan, wf.metrics
    many = len(p.seeds) > 1
    out.write(f"{p.symbol}: {len(p.windows)} folds{f' × {len(p.seeds)} seeds' if many else ''}, {p.mode} "
              f"{p.train_window} train / {p.test_window} test, step {p.step}, embargo {p.embargo}, anchored at "
              f"{p.anchor}; {wf.trained} trained, {len(wf.folds) - wf.trained} cached\n")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("fold", "right"), ("seed", "right"), ("train", "left"), ("test", "left"),
                          ("model", "left"), ("return", "right"), ("buy&hold", "right"), ("sharpe", "right"),
                          ("max dd", "right"), ("trades", "right")):
        if name == "seed" and not many:
            continue
        table.add_column(name, justify=justify, no_wrap=True)
    for f in wf.folds:
        fm = f.metrics
        cells = [str(f.index)] + ([str(f.seed)] if many else []) + [
            f"{f.train_start}..{f.train_end}", f"{f.test_start}..{f.test_end}", f.status,
            _pct(fm["total_return"]), _pct(fm["buy_and_hold_return"]), f"{fm['sharpe']:.2f}",
            f"{fm['max_drawdown']:.1%}", str(fm["n_trades"]),
        ]
        table.add_row(*cells)
    first, last = wf.equity.index[0].date(), wf.equity.index[-1].date()
    n = m["n_trades"]
    trades = str(int(n)) if float(n).is_integer() else f"{n:.1f}"
    table.add_row(*(["stitched"] + ([""] if many else []) + [
        "", f"{first}..{last}", f"{len(p.seeds)} seeds" if many else "", _pct(m["total_return"]),
        _pct(m["buy_and_hold_return"]), f"{m['sharpe']:.2f}", f"{m['max_drawdown']:.1%}", str(trades),
    ]), style="bold")
    print_rich(out, table)
    line = (f"fold Sharpe mean {m['fold_sharpe_mean']:.2f}, median {m['fold_sharpe_median']:.2f}, min "
            f"{m['fold_sharpe_min']:.2f}; {m['folds_beating_buy_and_hold']:.0%} of folds beat buy-and-hold")
    if many:
        line += (f"; stitched Sharpe across seeds {m['seed_sharpe_min']:.2f}..{m['seed_sharpe_max']:.2f} "
                 f"(std {m['seed_sharpe_std']:.2f}); the stitched line trades the seeds equally weighted")
    out.write(line + "\n")
    if wf.run_existed:
        out.write(f"identical to walk-forward run {wf.run_id} in experiment trainkit-walkforward (nothing new logged)\n")
    else:
        out.write(f"logged as run {wf.run_id} in experiment trainkit-walkforward\n")
    out.flush()


def _dry_run(manager: Any, plans: list[Any], out: Any, json_mode: bool) -> None:
    from trainkit.walkforward import dry_run

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
        return
    for d, p in zip(docs, plans):
        out.write(f"{p.symbol}: {d['n_folds']} folds × {len(p.seeds)} seed(s), {p.mode} {p.train_window} train / "
                  f"{p.test_window} test, step {p.step}, embargo {p.embargo}, anchored at {p.anchor}; "
                  f"{len(d['folds']) - d['would_train']} model(s) cached, {d['would_train']} to train; "
                  f"{d['backtests_cached']} backtest(s) cached\n")
        for r in d["folds"]:
            what = f"cached  {r['model_uri']}" if r["cached"] else "not cached (would train)"
            bt = "  backtest cached" if r["backtest_cached"] else ""
            out.write(f"  fold {r['fold']:>2} seed {r['seed']}  train {r['train_start']}..{r['train_end']}  "
                      f"test {r['test_start']}..{r['test_end']}  {r['config_hash']}  {what}{bt}\n")
    out.flush()
