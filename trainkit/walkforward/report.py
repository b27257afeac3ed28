"""A walk-forward in MLflow (:mod:`trainkit.store.evaluations` does the writing): one parent
run per symbol in experiment ``trainkit-walkforward`` — params, aggregate metrics, a markdown
description, ``equity_curve.png``, ``folds.csv``, ``equity.csv`` — with a nested child run per
fold and seed pointing at its cached backtest, its description linking to the fold's model.
Each fold's out-of-sample metrics are also logged against its LoggedModel, all folds against one
dataset (:func:`oos_dataset`). Written only for a result no identical walk-forward has logged
(the caller checks :func:`~trainkit.store.evaluations.find_walkforward` first)."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trainkit.store import ModelStore
    from trainkit.walkforward.result import WalkForward

__all__ = ["log_parent_run", "oos_dataset", "plot"]


def log_parent_run(store: ModelStore, wf: WalkForward, stitched: pd.DataFrame) -> str:
    """Log ``wf`` as a parent run with its fold children and return the parent's id
    (``stitched``: the frame of :func:`~trainkit.walkforward.stitch.aggregate`, as ``equity.csv``)."""
    import pandas as pd

    from trainkit.store import contract as C
    from trainkit.store.evaluations import FoldRun, WalkForwardRun, log_walkforward
    from trainkit.version import __version__

    plan = wf.plan
    many = len(plan.seeds) > 1
    dataset_name, dataset_digest = oos_dataset(plan)
    cache_experiment = store.experiment_id_if_exists()  # the fold models' experiment, for their links
    fold_runs = []
    rows = []
    for f in wf.folds:
        bt = f.backtest
        tags = {
            C.TAG_SYMBOL: plan.symbol, C.TAG_MODEL_URI: f.model_uri, C.TAG_SOURCE_RUN_ID: f.training_run_id,
            C.TAG_SOURCE_CONFIG_HASH: f.config_hash, C.TAG_BACKTEST_KEY: f.backtest_key,
            C.TAG_BACKTEST_RUN_ID: bt.run_id or "", C.TAG_VERSION: __version__,
            C.TAG_NOTE: _fold_description(wf, f, cache_experiment),
        }
        if f.model_id:
            tags[C.TAG_MODEL_ID] = f.model_id
        params = dict(zip(C.FOLD_PARAMS, (
            str(f.index), str(f.seed), f.train_start, f.train_end, f.test_start, f.test_end, bt.first_day,
            bt.last_day, str(bt.n_days), f.model_uri, f.config_hash, f.status,
        ), strict=True))
        fold_runs.append(FoldRun(
            run_name=f"{plan.symbol}-fold{f.index:02d}" + (f"-seed{f.seed}" if many else ""), params=params,
            tags=tags, metrics=dict(f.metrics), model_id=f.model_id, dataset_name=dataset_name,
            dataset_digest=dataset_digest,
        ))
        rows.append(_folds_row(params, f.metrics, bt.run_id))
    tags = {
        C.TAG_SYMBOL: plan.symbol, C.TAG_VERSION: __version__, C.TAG_WALKFORWARD_KEY: wf.key,
        C.TAG_SOURCE: plan.base.data_source, C.TAG_SOURCE_EFFECTIVE: plan.data_source_effective,
        C.TAG_NOTE: _description(wf),
    }
    with tempfile.TemporaryDirectory(prefix="trainkit-walkforward-") as tmp:
        folds_csv = os.path.join(tmp, "folds.csv")
        pd.DataFrame(rows).to_csv(folds_csv, index=False)
        equity_csv = os.path.join(tmp, "equity.csv")
        out = stitched.copy()
        out["date"] = [str(pd.Timestamp(x).date()) for x in out["date"]]
        out.to_csv(equity_csv, index=False)
        png = os.path.join(tmp, "equity_curve.png")
        plot(wf, png)
        return log_walkforward(store, WalkForwardRun(
            run_name=f"{plan.symbol}-walkforward-{plan.anchor}..{plan.end}-{wf.key[:8]}", params=plan.params(),
            tags=tags, metrics=wf.metrics, folds=fold_runs,
            artifacts={"equity_curve.png": png, "folds.csv": folds_csv, "equity.csv": equity_csv},
        ))


def oos_dataset(plan: Any) -> tuple[str, str]:
    """``(name, digest)`` of the dataset the fold models' out-of-sample metrics are logged
    against: one for every test window of the walk-forward, and the same for every config walked
    forward on those days — the window of honest selection
    (:func:`~trainkit.walkforward.evidence.window_key`, its digest). So MLflow's Models view shows
    one column per metric (``sharpe``, …) where configs tried on the same days compare, not a
    column group per fold. Which window a value is from stays on the metric's run, the fold run
    (params ``test_start``, ``test_end``), which ``trainkit list --oos-window`` ranks by."""
    from trainkit.walkforward.evidence import window_key

    name = (f"{plan.symbol} out of sample: walk-forward {plan.start}..{plan.end}, {plan.train_window} train / "
            f"{plan.test_window} test")
    return name, window_key(plan.params(), plan.data_source_effective)[:32]


def _fold_description(wf: WalkForward, f: Any, cache_experiment: str | None) -> str:
    """A fold run's note (``mlflow.note.content``), the first thing its page shows: the days, the
    result, and the model it measured, linked. MLflow 3.17's "Logged models" table on a run page
    lists only models of the run's own experiment, so the fold's model (in the cache experiment)
    is reached from here (:func:`~trainkit.store.contract.linked_model`)."""
    from trainkit.store.contract import linked_model

    p, m, nan = wf.plan, f.metrics, float("nan")
    model, trained_by = linked_model(f.model_uri, f.model_id, f.training_run_id, cache_experiment)
    seed = f", seed {f.seed}" if len(p.seeds) > 1 else ""
    lines = [
        f"### {p.symbol} fold {f.index}{seed}: out of sample {f.test_start} → {f.test_end}",
        "",
        f"* model: {model}",
        f"* trained on {f.train_start} → {f.train_end} by run {trained_by}, config `{f.config_hash[:8]}`",
        (f"* total return **{m.get('total_return', nan):+.2%}** vs buy-and-hold "
         f"{m.get('buy_and_hold_return', nan):+.2%}; Sharpe {m.get('sharpe', nan):.2f}, max drawdown "
         f"{m.get('max_drawdown', nan):.2%}"),  # a metric that was not finite was never logged
    ]
    if f.fallback_reason:
        lines.append(f"* ⚠ trained on SYNTHETIC fallback prices: {f.fallback_reason}")
    return "\n".join(lines)


def _folds_row(params: dict[str, str], metrics: dict[str, float], backtest_run_id: str | None) -> dict[str, Any]:
    """One row of ``folds.csv`` in the order a person reads it (MLflow's artifact viewer shows
    the left columns): the windows, the out-of-sample metrics, the days, then ids and URIs."""
    first = ("fold", "seed", "train_start", "train_end", "test_start", "test_end")
    ids = ("config_hash", "model_uri")
    rest = {k: v for k, v in params.items() if k not in first + ids}
    lead = {k: metrics[k] for k in ("sharpe", "total_return") if k in metrics}  # what a quant reads first
    return {**{k: params[k] for k in first}, **lead, **metrics, **rest, **{k: params[k] for k in ids},
            "backtest_run_id": backtest_run_id}


def _description(wf: WalkForward) -> str:
    """The parent run's note (``mlflow.note.content``): the result in a few lines, readable in
    the MLflow UI without opening an artifact."""
    p, m = wf.plan, wf.metrics
    lines = [
        (f"### Walk-forward of {p.symbol} ({p.base.algo.upper()}), {len(p.windows)} folds, {p.mode} "
         f"{p.train_window} train / {p.test_window} test, embargo {p.embargo}, seeds {', '.join(map(str, p.seeds))}"),
        "",
        (f"* out of sample {wf.equity.index[0].date()} → {wf.equity.index[-1].date()}: total return "
         f"**{m['total_return']:+.2%}** vs buy-and-hold {m['buy_and_hold_return']:+.2%}; Sharpe {m['sharpe']:.2f}, "
         f"max drawdown {m['max_drawdown']:.2%}"),
        (f"* fold Sharpe mean {m['fold_sharpe_mean']:.2f}, median {m['fold_sharpe_median']:.2f}, min "
         f"{m['fold_sharpe_min']:.2f}; {m['folds_beating_buy_and_hold']:.0%} of folds beat buy-and-hold"),
    ]
    if len(p.seeds) > 1:
        lines.append(f"* across seeds: Sharpe {m['seed_sharpe_min']:.2f} … {m['seed_sharpe_max']:.2f} "
                     f"(std {m['seed_sharpe_std']:.2f})")
    lines += [f"* ⚠ {w}" for w in p.warnings]
    return "\n".join(lines)


def _prices_note(p: Any) -> str:
    """What the title says about the prices when they are not the market's: synthetic ones, by
    choice or by fallback (a quant reading "AAPL" must not believe it), or the user's own file."""
    requested, effective = p.base.data_source, p.data_source_effective
    if effective == "synthetic":
        return " — SYNTHETIC prices" + (f" (fallback: {requested} failed)" if requested != "synthetic" else "")
    if effective != "yfinance":
        return f" — prices: {effective.split(':', 1)[0]} file {os.path.basename(effective.split(':', 1)[-1])}"
    return ""


def plot(wf: WalkForward, path: str) -> None:
    """``equity_curve.png``: the stitched strategy vs buy-and-hold (each seed faintly when there
    are several), each fold's start as a dashed line labelled with its out-of-sample return, the
    drawdowns below, and in the title the prices when they are not the market's (Agg, no pyplot)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from trainkit.metrics import plot_drawdowns

    p, m = wf.plan, wf.metrics
    dates = wf.equity.index.to_numpy()
    fig = Figure(figsize=(11, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if len(p.seeds) > 1:
        for i, s in enumerate(p.seeds):
            top.plot(dates, wf.seed_equity[s].to_numpy(), color="tab:blue", lw=0.6, alpha=0.35,
                     label="each seed" if i == 0 else None)
    top.plot(dates, wf.equity.to_numpy(), color="tab:blue", lw=1.5,
             label=f"strategy, out of sample ({m['total_return']:+.1%}, Sharpe {m['sharpe']:.2f})")
    top.plot(dates, wf.buy_and_hold.to_numpy(), color="tab:gray", lw=1.0,
             label=f"buy and hold ({m['buy_and_hold_return']:+.1%})")
    top.axhline(1.0, color="black", lw=0.5, alpha=0.5)
    by_fold: dict[int, list[Any]] = {}
    for f in wf.folds:
        by_fold.setdefault(f.index, []).append(f)
    for i, (k, folds) in enumerate(sorted(by_fold.items())):
        start = np.datetime64(min(f.backtest.first_day for f in folds))
        for ax in (top, bottom):
            ax.axvline(start, color="tab:green", lw=0.9, ls="--", alpha=0.8,
                       label="fold start (its out-of-sample return)" if (i == 0 and ax is top) else None)
        ret = float(np.mean([f.metrics["total_return"] for f in folds]))
        top.annotate(f"fold {k}: {ret:+.1%}", xy=(start, 0.0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                     textcoords="offset points", va="bottom", ha="left", fontsize=7, color="darkgreen")
    top.set_ylabel("equity (start = 1)")
    seeds = f", seeds {','.join(map(str, p.seeds))}" if len(p.seeds) > 1 else ""
    top.set_title(f"{p.symbol} walk-forward: {len(p.windows)} folds, {p.mode} {p.train_window} train / "
                  f"{p.test_window} test{seeds}{_prices_note(p)}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    plot_drawdowns(bottom, dates, wf.equity.to_numpy(), wf.buy_and_hold.to_numpy())
    fig.tight_layout()
    fig.savefig(path, format="png")

