"""Ranking models out of sample (``trainkit list --sort METRIC --oos-window START..END``): the
models a walk-forward — or a search's trials — measured on one out-of-sample window, best first.

Why one window: a Sharpe ratio from 2019 against one from 2020 ranks markets, not models. The
configs a search tried on the same fold were judged on the same days, so they can be compared.
The figures are the fold runs' metrics in ``trainkit-walkforward`` (one per model: a model
measured twice on one window has one cached backtest, so one set of numbers). Reads only.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError
from trainkit.walkforward.stitch import METRIC_DIRECTIONS

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.store import ModelStore

__all__ = ["RankedModel", "check_metric", "parse_oos_window", "rank_models"]


def check_metric(name: Any) -> str:
    """A metric models can be ranked by (:data:`METRIC_DIRECTIONS`), or :class:`ConfigError`."""
    text = str(name or "").strip().lower()
    if text not in METRIC_DIRECTIONS:
        raise ConfigError(f"cannot rank by {name!r}: choose one of {', '.join(METRIC_DIRECTIONS)}")
    return text


def parse_oos_window(text: Any) -> tuple[str, str]:
    """``START..END`` (ISO dates, a fold's test window as walk-forwards print it), or :class:`ConfigError`."""
    start, sep, end = str(text or "").partition("..")
    try:
        a, b = _dt.date.fromisoformat(start.strip()), _dt.date.fromisoformat(end.strip())
    except ValueError:
        a = b = None
    if not sep or a is None or b is None or a > b:
        raise ConfigError(f"--oos-window {text!r} is not a window: use START..END, e.g. 2020-01-01..2020-06-30 "
                          "(a fold's test window, as `trainkit walkforward` prints it)")
    return a.isoformat(), b.isoformat()


@dataclass(frozen=True)
class RankedModel:
    """A model measured on the window: its out-of-sample ``value`` of ``metric`` and where it came from."""

    symbol: str
    model_uri: str
    config_hash: str
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    metric: str
    value: float
    metrics: dict[str, float]
    walkforward_run_id: str
    prices: str = ""  #: the prices measured on: ``synthetic (data seed 3)``, ``csv 1a2b3c4d``, ``yfinance``

    def to_dict(self) -> dict[str, Any]:
        """A ``--json`` row: the metric under its own name (``"sharpe": 1.2``), the others under ``metrics``."""
        return {"symbol": self.symbol, "model_uri": self.model_uri, "config_hash": self.config_hash,
                "train_start": self.train_start, "train_end": self.train_end, "test_start": self.test_start,
                "test_end": self.test_end, self.metric: self.value, "metrics": dict(self.metrics),
                "prices": self.prices, "walkforward_run_id": self.walkforward_run_id}


def _prices(store: ModelStore, parent_run_id: str, cache: dict[str, str]) -> str:
    """What prices a walk-forward measured on, in a few words (one read per walk-forward)."""
    if parent_run_id not in cache:
        from trainkit.store.contract import TAG_SOURCE_EFFECTIVE
        from trainkit.store.evaluations import get_walkforward

        wf = get_walkforward(store, parent_run_id)
        p, t = (wf.params, wf.tags) if wf is not None else ({}, {})
        kind = t.get(TAG_SOURCE_EFFECTIVE, p.get("data_source", "?")).split(":", 1)[0]
        if kind == "synthetic":
            cache[parent_run_id] = f"synthetic (data seed {p.get('data_seed', '?')})"
        elif p.get("csv_sha256"):
            cache[parent_run_id] = f"{kind} {p['csv_sha256'][:8]}"
        else:
            cache[parent_run_id] = kind
    return cache[parent_run_id]


def rank_models(store: ModelStore, metric: str, window: tuple[str, str], symbol: str | None = None) -> list[RankedModel]:
    """The models measured out of sample on ``window``, best first by ``metric`` (ties: by config
    hash). Each says what prices it was measured on: compare models of the same prices."""
    from trainkit.store.contract import TAG_PARENT_RUN, TAG_SYMBOL
    from trainkit.store.evaluations import folds_on

    metric = check_metric(metric)
    seen: dict[str, RankedModel] = {}
    prices: dict[str, str] = {}
    for run in sorted(folds_on(store, window[0], window[1], symbol), key=lambda r: r.info.start_time or 0):
        p, m = run.data.params, run.data.metrics
        if metric not in m or p["model_uri"] in seen:
            continue
        parent = run.data.tags[TAG_PARENT_RUN]
        seen[p["model_uri"]] = RankedModel(
            symbol=run.data.tags.get(TAG_SYMBOL, ""), model_uri=p["model_uri"], config_hash=p.get("config_hash", ""),
            train_start=p.get("train_start", ""), train_end=p.get("train_end", ""), test_start=p["test_start"],
            test_end=p["test_end"], metric=metric, value=float(m[metric]), metrics=dict(m),
            walkforward_run_id=parent, prices=_prices(store, parent, prices))
    sign = 1.0 if METRIC_DIRECTIONS[metric] == "maximize" else -1.0
    return sorted(seen.values(), key=lambda r: (-sign * r.value, r.config_hash))
