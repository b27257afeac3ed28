"""The performance metrics of a strategy's daily returns: what a backtest reports for its
window and a walk-forward for its stitched out-of-sample series — one definition for both
(:mod:`trainkit.backtest`, :mod:`trainkit.walkforward.stitch`), so their numbers compare.

Metrics (all from the strategy's *daily simple returns* ``r_t`` net of costs, over the
``n = T - 1`` trading days of a window of ``T`` closes; 252 trading days a year; risk-free
rate 0):

* ``total_return``: ``E_n - 1`` where the equity ``E_0 = 1``, ``E_k = prod_{t<k} (1 + r_t)``.
* ``annualized_return``: ``E_n ** (252 / n) - 1`` (geometric; ``-1`` if equity hit zero).
* ``annualized_volatility``: ``std(r, ddof=1) * sqrt(252)``.
* ``sharpe``: ``mean(r) / std(r, ddof=1) * sqrt(252)``; 0 when ``r`` is constant (always flat).
* ``sortino``: ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(252)`` (downside deviation
  against 0 over all days); 0 when no day lost money.
* ``max_drawdown``: ``min_k (E_k / max_{j<=k} E_j - 1)``, a number in ``[-1, 0]``
  (``-0.25``: the equity once stood 25% below its previous peak).
* ``n_trades``: days on which the position changed (entering from flat on the first day
  counts; a long→short flip is one trade).
* ``turnover``: ``sum |Δposition|`` over the window, in multiples of equity (a flip is 2);
  the costs paid are ``turnover * cost_bps / 1e4`` of (then-current) equity.
* ``exposure``: the fraction of the ``n`` days on which a position (long or short) was held.
* ``buy_and_hold_return``: ``close[last] / close[first] - 1`` over the window's trading days,
  without costs.
* ``excess_return``: ``total_return - buy_and_hold_return``.

Plain numpy: the same inputs give the same numbers, bit for bit, in every process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["COUNT_METRICS", "METRIC_NAMES", "TRADING_DAYS", "compute_metrics", "drawdowns", "plot_drawdowns"]

#: Trading days per year used to annualise.
TRADING_DAYS = 252

#: Every metric a backtest reports, in the order they are shown.
METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "annualized_return",
    "annualized_volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "turnover",
    "exposure",
    "buy_and_hold_return",
    "excess_return",
)

#: The metrics that are counts: ints (MLflow stores every metric as a float, read back as int).
COUNT_METRICS: tuple[str, ...] = ("n_trades",)


def drawdowns(equity: np.ndarray) -> np.ndarray:
    """Each day's fall from the highest equity so far (0 at a new high, -0.25 a quarter below it)."""
    equity = np.asarray(equity, dtype=np.float64)
    return equity / np.maximum.accumulate(equity) - 1.0


def compute_metrics(
    net_returns: np.ndarray, positions: np.ndarray, closes: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """The metrics of the module docstring, and the equity curve ``E_0..E_n``.

    ``net_returns`` [n]: the strategy's daily simple returns net of costs; ``positions`` [n] or
    [n + 1]: the position held over each of those days (a trailing extra one is ignored);
    ``closes`` [n + 1]: the window's closes (for buy-and-hold)."""
    r = np.asarray(net_returns, dtype=np.float64)
    closes = np.asarray(closes, dtype=np.float64)
    n = int(r.shape[0])
    if n < 2 or closes.shape[0] != n + 1:
        raise ValueError(f"need at least 2 daily returns and one more close than returns, got {n} and {closes.shape[0]}")
    held = np.asarray(positions, dtype=np.float64)[:n]
    equity = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    final = float(equity[-1])
    total = final - 1.0
    annual = final ** (TRADING_DAYS / n) - 1.0 if final > 0 else -1.0
    sd = float(np.std(r, ddof=1))
    mean = float(np.mean(r))
    root = math.sqrt(TRADING_DAYS)
    constant = float(np.ptp(r)) == 0.0  # e.g. always flat: no risk taken, no ratio to speak of
    sharpe = 0.0 if constant else mean / sd * root
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    sortino = mean / downside * root if downside > 0 else 0.0
    drawdown = drawdowns(equity)
    steps = np.abs(np.diff(np.concatenate(([0.0], held))))
    bh = float(closes[-1] / closes[0] - 1.0)
    metrics = {
        "total_return": total,
        "annualized_return": float(annual),
        "annualized_volatility": sd * root,
        "sharpe": float(sharpe),
        "sortino": float(sortino),
        "max_drawdown": float(drawdown.min()),
        "n_trades": int(np.count_nonzero(steps)),  # a count (an int; MLflow stores it as a float)
        "turnover": float(steps.sum()),
        "exposure": float(np.count_nonzero(held) / n),
        "buy_and_hold_return": bh,
        "excess_return": total - bh,
    }
    return metrics, equity


def plot_drawdowns(ax: Any, dates: Any, strategy_equity: np.ndarray, buy_and_hold_equity: np.ndarray) -> None:
    """The panel under an equity chart (a backtest's, a walk-forward's): the strategy's
    drawdown filled, buy and hold's as a line — drawn once here so both charts read alike."""
    ax.fill_between(dates, drawdowns(strategy_equity), 0.0, color="tab:red", alpha=0.4, label="strategy")
    ax.plot(dates, drawdowns(buy_and_hold_equity), color="tab:gray", lw=0.8, label="buy and hold")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_ylabel("drawdown")
    ax.grid(alpha=0.3)
