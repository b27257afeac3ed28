"""The numbers of a walk-forward: its folds stitched into one out-of-sample series, the
aggregate metrics, and the key that names the result.

**Stitching.** Each fold trades its test window starting flat. The stitched out-of-sample
equity is the product of the fold equities (fold ``k``'s curve continues where fold ``k-1``'s
ended); with several seeds, the stitched series is the equal-weight portfolio of the seeds
(each seed's own stitched curve is kept too, and the metrics report the spread across seeds).
When test windows overlap (``step < test``) a fold's days stop where the next fold's begin.

**Metrics**: the backtest metrics (:data:`trainkit.metrics.METRIC_NAMES`) computed on the
stitched series (buy-and-hold stitched the same way; ``n_trades``, ``turnover`` and
``exposure`` summed/averaged from the folds), the fold-level mean, median and minimum Sharpe,
the share of (fold, seed) backtests that beat buy-and-hold, and the spread of the stitched
Sharpe and return across seeds (:data:`FOLD_METRICS`).

**The key** (:func:`walkforward_key`) names a result by what it is a pure function of, so an
identical walk-forward finds its logged parent run instead of logging another: it must stay
byte-identical for walk-forwards logged before to be found (bump :data:`WALKFORWARD_VERSION`
when the numbers change).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trainkit.walkforward.plan import WalkForwardPlan
    from trainkit.walkforward.result import Fold

__all__ = ["FOLD_METRICS", "METRIC_DIRECTIONS", "WALKFORWARD_VERSION", "aggregate", "stitch", "walkforward_key"]

#: Part of every walk-forward key: bumped when stitching or the aggregate metrics change.
WALKFORWARD_VERSION = 1

#: The backtest metrics (of a fold, or of the stitched series) that judge a model, and which
#: way is better (``max_drawdown`` is negative: higher is better). Counts and exposures that
#: describe behaviour rather than judge it (``n_trades``, ``exposure``, ``buy_and_hold_return``)
#: are not here. The one rule for ranking models (``trainkit list --sort``) and for a search's
#: objectives.
METRIC_DIRECTIONS: dict[str, str] = {
    "sharpe": "maximize", "sortino": "maximize", "total_return": "maximize", "annualized_return": "maximize",
    "excess_return": "maximize", "max_drawdown": "maximize", "annualized_volatility": "minimize",
    "turnover": "minimize",
}

#: Metrics of a walk-forward beyond the backtest metrics of the stitched series.
FOLD_METRICS = (
    "fold_sharpe_mean", "fold_sharpe_median", "fold_sharpe_min", "folds_beating_buy_and_hold", "n_folds",
    "seed_sharpe_mean", "seed_sharpe_std", "seed_sharpe_min", "seed_sharpe_max", "seed_total_return_std",
)


def stitch(equities: Sequence[pd.DataFrame], folds: Sequence[int] | None = None) -> pd.DataFrame:
    """One seed's folds (their backtest ``equity`` frames, in fold order) stitched into one
    daily series: ``date``, ``fold``, ``net_return`` (0 on each fold's first day: it starts
    flat), ``held`` (the position held into the day), ``buy_and_hold_return``, and the
    ``strategy_equity`` / ``buy_and_hold_equity`` (cumulative products: the product of the fold
    equities) with the strategy's ``drawdown``. Overlapping windows: a fold's days end where
    the next fold's begin."""
    import numpy as np
    import pandas as pd

    from trainkit.metrics import drawdowns

    folds = list(range(len(equities))) if folds is None else list(folds)
    parts = []
    for i, eq in enumerate(equities):
        if i + 1 < len(equities):
            eq = eq[eq["date"] < equities[i + 1]["date"].iloc[0]]
        close = eq["close"].to_numpy(dtype=np.float64)
        pos = eq["position"].to_numpy(dtype=np.float64)
        net = eq["net_return"].to_numpy(dtype=np.float64).copy()
        net[0] = 0.0
        parts.append(pd.DataFrame({
            "date": pd.to_datetime(eq["date"]).to_numpy(),
            "fold": folds[i],
            "net_return": net,
            "held": np.concatenate(([0.0], pos[:-1])),
            "buy_and_hold_return": np.concatenate(([0.0], close[1:] / close[:-1] - 1.0)),
        }))
    out = pd.concat(parts, ignore_index=True)
    out["strategy_equity"] = np.cumprod(1.0 + out["net_return"].to_numpy())
    out["buy_and_hold_equity"] = np.cumprod(1.0 + out["buy_and_hold_return"].to_numpy())
    out["drawdown"] = drawdowns(out["strategy_equity"].to_numpy())
    return out


def _series_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """The backtest metrics of a stitched series, by the backtest's own function: a stitched
    Sharpe means what one backtest's does."""
    from trainkit.metrics import compute_metrics

    metrics, _curve = compute_metrics(frame["net_return"].to_numpy()[1:], frame["held"].to_numpy()[1:],
                                      frame["buy_and_hold_equity"].to_numpy())
    return metrics


def aggregate(plan: WalkForwardPlan, folds: Sequence[Fold]) -> tuple[pd.Series, pd.Series, pd.DataFrame, dict[str, float], pd.DataFrame]:
    """``(equity, buy_and_hold, seed_equity, metrics, stitched frame)`` of the folds (module
    docstring, *Stitching* and *Metrics*)."""
    import numpy as np
    import pandas as pd

    from trainkit.metrics import drawdowns

    per_seed: dict[int, pd.DataFrame] = {}
    for seed in plan.seeds:
        mine = sorted((f for f in folds if f.seed == seed), key=lambda f: f.index)
        per_seed[seed] = stitch([f.equity for f in mine], [f.index for f in mine])
    first = per_seed[plan.seeds[0]]
    ens = first[["date", "fold", "buy_and_hold_return", "buy_and_hold_equity"]].copy()
    ens["net_return"] = np.mean([per_seed[s]["net_return"].to_numpy() for s in plan.seeds], axis=0)
    ens["held"] = np.mean([per_seed[s]["held"].to_numpy() for s in plan.seeds], axis=0)
    ens["strategy_equity"] = np.cumprod(1.0 + ens["net_return"].to_numpy())
    ens["drawdown"] = drawdowns(ens["strategy_equity"].to_numpy())
    if len(plan.seeds) == 1:
        ens = first

    metrics = _series_metrics(ens)
    n = len(plan.seeds)
    metrics["n_trades"] = sum(f.metrics["n_trades"] for f in folds) / n
    if n == 1:
        metrics["n_trades"] = int(metrics["n_trades"])
    metrics["turnover"] = float(sum(f.metrics["turnover"] for f in folds) / n)
    days = np.array([max(f.backtest.n_days - 1, 0) for f in folds], dtype=np.float64)
    metrics["exposure"] = float(np.dot([f.metrics["exposure"] for f in folds], days) / max(days.sum(), 1.0))
    sharpes = np.array([f.metrics["sharpe"] for f in folds], dtype=np.float64)
    metrics["fold_sharpe_mean"] = float(sharpes.mean())
    metrics["fold_sharpe_median"] = float(np.median(sharpes))
    metrics["fold_sharpe_min"] = float(sharpes.min())
    metrics["folds_beating_buy_and_hold"] = float(np.mean([f.metrics["excess_return"] > 0 for f in folds]))
    metrics["n_folds"] = len(plan.windows)
    seed_m = [_series_metrics(per_seed[s]) for s in plan.seeds]
    ss = np.array([m["sharpe"] for m in seed_m])
    metrics["seed_sharpe_mean"] = float(ss.mean())
    metrics["seed_sharpe_std"] = float(ss.std(ddof=1)) if n > 1 else 0.0
    metrics["seed_sharpe_min"] = float(ss.min())
    metrics["seed_sharpe_max"] = float(ss.max())
    tr = np.array([m["total_return"] for m in seed_m])
    metrics["seed_total_return_std"] = float(tr.std(ddof=1)) if n > 1 else 0.0

    index = pd.DatetimeIndex(ens["date"], name="date")
    equity = pd.Series(ens["strategy_equity"].to_numpy(), index=index, name="strategy")
    bh = pd.Series(ens["buy_and_hold_equity"].to_numpy(), index=index, name="buy_and_hold")
    seed_eq = pd.DataFrame({s: per_seed[s]["strategy_equity"].to_numpy() for s in plan.seeds}, index=index)
    seed_eq.columns.name = "seed"
    return equity, bh, seed_eq, metrics, ens


def walkforward_key(plan: WalkForwardPlan, folds: Sequence[Fold]) -> str:
    """sha256 naming a walk-forward's result: the spec (symbol, dates, anchor, windows, mode,
    embargo, seeds, train options) and every fold's backtest key (which names its model, prices,
    window and costs). Equal keys, equal results: the parent run is reused."""
    options = plan.base.hash_dict()
    for k in ("train_start", "train_end", "seed"):
        options.pop(k, None)
    doc = {
        "walkforward_version": WALKFORWARD_VERSION,
        "symbol": plan.symbol, "start": plan.start, "end": plan.end, "anchor": plan.anchor,
        "train_window": str(plan.train_window), "test_window": str(plan.test_window), "step": str(plan.step),
        "mode": plan.mode, "embargo": str(plan.embargo), "seeds": list(plan.seeds), "options": options,
        "folds": [[f.index, f.seed, f.backtest_key] for f in sorted(folds, key=lambda f: (f.index, f.seed))],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

