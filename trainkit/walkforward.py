"""Walk-forward evaluation with cached folds: train on a window, trade the next window out of
sample, roll forward, and stitch the out-of-sample results together.

**Folds are anchored at ``start``.** With windows given as durations (``30d``, ``2w``, ``6m``,
``3y``) or trading-day counts (``126`` or ``126td``), every boundary is computed from the anchor
in one step — never by adding windows one after the other — so month ends do not drift
(``2012-01-31 + 1m = 2012-02-29``, ``+ 2m = 2012-03-31``) and a later ``end`` only appends folds:
the earlier ones keep their windows, hence their config hashes, hence their cached models and
backtests. Fold ``k`` (half-open windows, ``A`` the anchor):

* test ``[A + train + embargo + k·step, A + train + embargo + k·step + test)``, clipped to ``end``
  (``step`` defaults to ``test``: the test windows tile the range without gaps or overlap);
* train ``[A + k·step, A + train + k·step)`` (``sliding``) or ``[A, A + train + k·step)``
  (``expanding``): it ends ``embargo`` before the test window.

A window's bounds are calendar dates: a ``TrainConfig`` of fold ``k`` is the window a user would
type (``2012-01-01..2014-12-31``), so folds share models with plain ``trainkit train`` requests.
Trading-day counts are counted on the symbol's own trading calendar (the fetched prices). A
test day is never on or before its fold's last training day: checked for every fold.

When the data start later than ``start`` (a CSV, a young stock), the anchor moves to the first
day on which every feature is warm (``WARMUP_BARS`` trading days into the data), and the plan
says so. A last test window with fewer than 30 trading days (the backtest minimum) is left out,
and the plan says so too. Bad windows — start not before end, a test window longer than the
data, a train window too short to train on, a test window too short to backtest, zero folds —
are :class:`~trainkit.errors.ConfigError` (exit 2) before anything is trained.

**Each fold** is :meth:`TrainingManager.get_config` (the model cache, leases and all) plus a
backtest of that model on its test window (:func:`trainkit.backtest.run_backtest`, itself cached
by (model, data digest, window, costs)). A fold whose model and backtest are both cached is
answered without loading the model. Folds are independent tasks for an executor (``--workers
2`` trains two folds at once); identical folds asked by two processes train once.

**Stitching.** Each fold trades its test window starting flat. The stitched out-of-sample
equity is the product of the fold equities (fold ``k``'s curve continues where fold ``k-1``'s
ended); with several seeds, the stitched series is the equal-weight portfolio of the seeds
(each seed's own stitched curve is kept too, and the metrics report the spread across seeds).
When test windows overlap (``step < test``) a fold's days stop where the next fold's begin.

**Metrics**: the backtest metrics (``METRIC_NAMES``) of :mod:`trainkit.backtest`
computed on the stitched series (buy-and-hold stitched the same way; ``n_trades``,
``turnover`` and ``exposure`` summed/averaged from the folds), the fold-level mean, median and
minimum Sharpe, the share of (fold, seed) backtests that beat buy-and-hold, and the spread of
the stitched Sharpe and return across seeds (:data:`FOLD_METRICS`).

**In MLflow** (:mod:`trainkit.store.evaluations`): one parent run per symbol in experiment
``trainkit-walkforward`` (params, aggregate metrics, ``equity_curve.png``, ``folds.csv``,
``equity.csv``) with a nested child run per fold and seed; an identical walk-forward finds that
run and creates none. Each fold's out-of-sample metrics are also logged against its LoggedModel.

Stdlib only at import time (the CLI parses windows before anything heavy is imported).
"""

from __future__ import annotations

import bisect
import calendar as _calendar
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from trainkit.config import MIN_WINDOW_DAYS, TrainConfig, parse_date, validate_symbol
from trainkit.errors import ConfigError, TrainkitError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trainkit.backtest import BacktestResult

log = logging.getLogger("trainkit")

__all__ = [
    "FOLD_METRICS", "MODES", "Calendar", "Fold", "FoldTask", "FoldWindow", "WalkForward", "WalkForwardPlan",
    "Window", "dry_run", "fold_windows", "parse_window", "plan_walk_forward", "run_plan", "stitch", "walk_forward",
]

MODES = ("sliding", "expanding")
#: Fewest trading days of a test window (= ``trainkit.backtest.MIN_TEST_DAYS``).
MIN_TEST_DAYS = 30
#: Fewest trading days of a training window (= ``trainkit.features.MIN_WINDOW_ROWS``).
MIN_TRAIN_DAYS = 30
#: Part of every walk-forward key: bumped when stitching or the aggregate metrics change.
WALKFORWARD_VERSION = 1

#: Metrics of a walk-forward beyond the backtest metrics of the stitched series.
FOLD_METRICS = (
    "fold_sharpe_mean", "fold_sharpe_median", "fold_sharpe_min", "folds_beating_buy_and_hold", "n_folds",
    "seed_sharpe_mean", "seed_sharpe_std", "seed_sharpe_min", "seed_sharpe_max", "seed_total_return_std",
)


# ============================================================================ windows
_WINDOW_RE = re.compile(r"^(\d+)\s*(td|d|w|m|y)?$")


@dataclass(frozen=True)
class Window:
    """A window length: calendar months, calendar days and trading days (any mix, from sums).
    ``3y`` is 36 months, ``2w`` 14 days, a bare number or ``126td`` 126 trading days."""

    months: int = 0
    days: int = 0
    trading_days: int = 0

    def __add__(self, other: Window) -> Window:
        return Window(self.months + other.months, self.days + other.days, self.trading_days + other.trading_days)

    def __mul__(self, k: int) -> Window:
        return Window(self.months * k, self.days * k, self.trading_days * k)

    __rmul__ = __mul__

    @property
    def is_zero(self) -> bool:
        return not (self.months or self.days or self.trading_days)

    def __str__(self) -> str:
        parts = []
        if self.months:
            parts.append(f"{self.months // 12}y" if self.months % 12 == 0 else f"{self.months}m")
        if self.days:
            parts.append(f"{self.days}d")
        if self.trading_days:
            parts.append(f"{self.trading_days}td")
        return "+".join(parts) or "0d"


def parse_window(value: Any, name: str = "window", *, allow_zero: bool = False) -> Window:
    """A :class:`Window` from ``30d``, ``2w``, ``6m``, ``3y``, ``126td`` or a trading-day count
    (``126`` or an int); :class:`ConfigError` (exit 2) otherwise, saying what works."""
    if isinstance(value, Window):
        w = value
    elif isinstance(value, bool):
        w = None
    elif isinstance(value, int):
        w = Window(trading_days=value) if value >= 0 else None
    else:
        m = _WINDOW_RE.match(str(value).strip().lower()) if isinstance(value, str) else None
        if m is None:
            w = None
        else:
            n, unit = int(m.group(1)), m.group(2) or "td"
            w = {"d": Window(days=n), "w": Window(days=7 * n), "m": Window(months=n), "y": Window(months=12 * n),
                 "td": Window(trading_days=n)}[unit]
    if w is None:
        raise ConfigError(f"{name} {value!r} is not a window: use a duration such as 30d, 2w, 6m or 3y, "
                          "or a number of trading days such as 126")
    if w.is_zero and not allow_zero:
        raise ConfigError(f"{name} {value!r} is empty: use a positive window such as 6m or 126")
    if w.months > 12 * 200 or w.days > 366 * 200 or w.trading_days > 252 * 200:
        raise ConfigError(f"{name} {value!r} is longer than 200 years: use a shorter window")
    return w


def add_months(day: _dt.date, months: int) -> _dt.date:
    """``day`` plus whole months, clipped to the month's end (Jan 31 + 1 month = Feb 28/29)."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return _dt.date(year, month, min(day.day, _calendar.monthrange(year, month)[1]))


class Calendar:
    """A symbol's trading days (sorted dates): counting days in a window and stepping by
    trading days. Beyond its last day it continues on weekdays (a boundary after the data)."""

    def __init__(self, days: Iterable[_dt.date]) -> None:
        self.days = sorted(set(days))
        if not self.days:
            raise ConfigError("no trading days: the data are empty")

    @classmethod
    def business_days(cls, first: Any, last: Any) -> Calendar:
        """Monday-to-Friday days (the synthetic calendar), for fold arithmetic without data."""
        a, b = parse_date(first, "first"), parse_date(last, "last")
        return cls(a + _dt.timedelta(days=i) for i in range((b - a).days + 1)
                   if (a + _dt.timedelta(days=i)).weekday() < 5)

    @property
    def first(self) -> _dt.date:
        return self.days[0]

    @property
    def last(self) -> _dt.date:
        return self.days[-1]

    def index(self, day: _dt.date) -> int:
        """Position of the first trading day on or after ``day``."""
        return bisect.bisect_left(self.days, day)

    def count(self, a: _dt.date, b: _dt.date) -> int:
        """Trading days in ``[a, b)``."""
        return max(0, self.index(b) - self.index(a))

    def span(self, a: _dt.date, b: _dt.date) -> tuple[_dt.date, _dt.date] | None:
        """First and last trading day in ``[a, b)``, or ``None``."""
        i, j = self.index(a), self.index(b)
        return (self.days[i], self.days[j - 1]) if j > i else None

    def day(self, i: int) -> _dt.date:
        """The ``i``-th trading day, continuing on weekdays past the last one."""
        if i < len(self.days):
            return self.days[i]
        day, left = self.last, i - len(self.days) + 1
        while left:
            day += _dt.timedelta(days=1)
            if day.weekday() < 5:
                left -= 1
        return day

    def advance(self, origin: _dt.date, w: Window) -> _dt.date:
        """``origin + w``: months (clipped to month ends), then days, then trading days counted
        from the first trading day on or after that date."""
        day = add_months(origin, w.months) + _dt.timedelta(days=w.days)
        if w.trading_days:
            day = self.day(self.index(day) + w.trading_days)
        return day


@dataclass(frozen=True)
class FoldWindow:
    """The windows of fold ``index``: inclusive calendar bounds (what the model's config and the
    backtest are given) and the trading days inside them."""

    index: int
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    train_first_day: str
    train_last_day: str
    test_first_day: str
    test_last_day: str
    train_days: int
    test_days: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DAY = _dt.timedelta(days=1)


def fold_windows(cal: Calendar, anchor: Any, end: Any, train: Window, test: Window, step: Window | None = None,
                 embargo: Window | None = None, mode: str = "sliding") -> tuple[list[FoldWindow], str | None]:
    """Every fold of a walk-forward anchored at ``anchor`` with test windows up to ``end``
    (module docstring), and a note when a last, short test window was left out. Pure: the
    calendar says which days trade. :class:`ConfigError` for windows that cannot work."""
    a0, end_d = parse_date(anchor, "anchor"), parse_date(end, "end")
    step = test if step is None else step
    embargo = embargo or Window()
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is unknown: use sliding or expanding")
    if step.is_zero or test.is_zero or train.is_zero:
        raise ConfigError("the train window, the test window and the step must be positive")
    last = min(end_d, cal.last)
    if cal.advance(a0, test) > last + _DAY:  # not even one test window fits between the anchor and the end
        raise ConfigError(
            f"the test window {test} is longer than the data: from {a0} the prices run to {last} "
            f"({cal.count(a0, last + _DAY)} trading days); use a shorter --test-window or a later --end")
    folds: list[FoldWindow] = []
    tail: str | None = None
    for k in range(100_000):
        lo = a0 if mode == "expanding" else cal.advance(a0, step * k)
        b = cal.advance(a0, train + step * k)
        t = cal.advance(a0, train + embargo + step * k)
        u = cal.advance(a0, train + embargo + step * k + test)
        if t > last:
            break
        test_end = min(u - _DAY, end_d)
        n_test = cal.count(t, test_end + _DAY)
        if n_test == 0:  # nothing left to test (the end falls on a weekend or a holiday)
            break
        if n_test < MIN_TEST_DAYS:
            full = cal.count(t, u)
            if full >= MIN_TEST_DAYS or u - _DAY > last:  # cut short by end (or by the data): leave it out
                tail = (f"the last {n_test} trading day(s) ({t}..{test_end}) are not tested: a test window needs "
                        f"at least {MIN_TEST_DAYS}")
                break
            raise ConfigError(
                f"the test window {test} holds only {full} trading days ({t}..{u - _DAY}): a backtest needs at "
                f"least {MIN_TEST_DAYS}; use --test-window 2m or more")
        train_end = b - _DAY
        n_train = cal.count(lo, b)
        if n_train < MIN_TRAIN_DAYS or (train_end - lo).days < MIN_WINDOW_DAYS:
            raise ConfigError(
                f"the train window {train} of fold {k} ({lo}..{train_end}) is too short: {(train_end - lo).days} days, "
                f"{n_train} trading days; a model needs at least {MIN_WINDOW_DAYS} days and {MIN_TRAIN_DAYS} trading "
                "days (and the features' warm-up before them): use a longer --train-window (a year or more trains better)")
        train_span, test_span = cal.span(lo, b), cal.span(t, test_end + _DAY)
        assert train_span is not None and test_span is not None  # counted above
        if not (t > train_end and test_span[0] > train_span[1]):  # the one rule a walk-forward must never break
            raise ConfigError(f"fold {k}: its test window starts on {test_span[0]}, not after its last training day "
                              f"{train_span[1]}")
        folds.append(FoldWindow(
            index=k, train_start=lo.isoformat(), train_end=train_end.isoformat(), test_start=t.isoformat(),
            test_end=test_end.isoformat(), train_first_day=train_span[0].isoformat(),
            train_last_day=train_span[1].isoformat(), test_first_day=test_span[0].isoformat(),
            test_last_day=test_span[1].isoformat(), train_days=n_train, test_days=n_test,
        ))
    return folds, tail


# ============================================================================ the plan
@dataclass(frozen=True)
class FoldTask:
    """One unit of work (picklable: it crosses process boundaries): a fold's windows, a seed
    and the resolved config of its model."""

    window: FoldWindow
    seed: int
    config: TrainConfig


@dataclass(frozen=True)
class WalkForwardPlan:
    """What a walk-forward will do, before it does anything: its folds, each fold's config (and
    hash) per seed, the anchor and what the plan had to say (``warnings``)."""

    symbol: str
    start: str
    end: str
    anchor: str
    train_window: Window
    test_window: Window
    step: Window
    mode: str
    embargo: Window
    seeds: tuple[int, ...]
    base: TrainConfig  # the train options (its own window and seed mean nothing)
    windows: tuple[FoldWindow, ...]
    tasks: tuple[FoldTask, ...]
    data_source_effective: str
    warnings: tuple[str, ...] = ()

    def params(self) -> dict[str, str]:
        """The parent run's params: the walk-forward's own, then the train options."""
        from trainkit.store.contract import WALKFORWARD_PARAMS

        own = dict(zip(WALKFORWARD_PARAMS, (
            self.symbol, self.start, self.end, self.anchor, str(self.train_window), str(self.test_window),
            str(self.step), self.mode, str(self.embargo), ",".join(map(str, self.seeds)), str(len(self.windows)),
        ), strict=True))
        options = {k: v for k, v in self.base.to_params().items() if k not in ("symbol", "train_start", "train_end", "seed")}
        return {**own, **options}

    def options(self) -> dict[str, Any]:
        """The train options as a JSON-ready dict (what every fold's config shares)."""
        d = self.base.to_dict()
        for k in ("symbol", "train_start", "train_end", "seed"):
            d.pop(k, None)
        return d


def _seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (int, str)) and not isinstance(seeds, bool):
        seeds = [seeds]
    out: list[int] = []
    for s in seeds or ():
        try:
            if isinstance(s, bool):
                raise TypeError
            v = int(s)
        except (TypeError, ValueError):
            raise ConfigError(f"seed {s!r} is not an integer: use e.g. seeds 0 1 2") from None
        if not 0 <= v < 2**31:
            raise ConfigError(f"seed {v} is out of range: use 0..2147483647")
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError("give at least one seed, e.g. seeds 0 1 2")
    return tuple(out)


def _check_request(symbol: Any, start: Any, end: Any, train_window: Any, test_window: Any, step: Any, mode: Any,
                   embargo: Any, seeds: Any) -> tuple[str, _dt.date, _dt.date, Window, Window, Window, str, Window, tuple[int, ...]]:
    """Everything that can be checked without I/O (exit 2)."""
    sym = validate_symbol(symbol)
    s, e = parse_date(start, "start"), parse_date(end, "end")
    if s >= e:
        raise ConfigError(f"start {s} must be before end {e}")
    today = _dt.date.today()
    if e > today:
        raise ConfigError(f"end {e} is in the future: use a date up to today ({today})")
    train = parse_window(train_window, "train window")
    test = parse_window(test_window, "test window")
    stp = test if step in (None, "") else parse_window(step, "step")
    emb = parse_window(embargo if embargo not in (None, "") else "0d", "embargo", allow_zero=True)
    m = str(mode).strip().lower()
    if m not in MODES:
        raise ConfigError(f"mode {mode!r} is unknown: use sliding or expanding")
    return sym, s, e, train, test, stp, m, emb, _seeds(seeds)


def plan_walk_forward(symbol: str, start: Any, end: Any, train_window: Any = "3y", test_window: Any = "6m",
                      step: Any = None, mode: str = "sliding", embargo: Any = "0d", seeds: Any = (0,), *,
                      no_fallback: bool = False, **options: Any) -> WalkForwardPlan:
    """The folds of a walk-forward and the config of every (fold, seed) — fetches the prices
    (for the trading calendar) and trains nothing. ``options``: the train options of
    ``TrainingManager.get_model`` (``timesteps``, ``algo``, ``feature_count``, ``data_source``,
    hyperparameters, ``cost_bps``…), not the window or ``seed``. :class:`ConfigError` (exit 2)
    for anything a user must change."""
    if "seed" in options:
        raise ConfigError("a walk-forward takes seeds=(…) (--seeds), not seed")
    for k in ("train_start", "train_end", "force", "progress", "project_run_id", "on_wait"):
        if k in options:
            raise ConfigError(f"{k} is not an option of a walk-forward")
    sym, s, e, train, test, stp, m, emb, seed_list = _check_request(symbol, start, end, train_window, test_window,
                                                                     step, mode, embargo, seeds)
    # the train options are validated (and a CSV hashed) before any price is fetched
    base = TrainConfig.create(sym, "2000-01-03", "2000-12-29", seed=seed_list[0], **options)

    from trainkit.data import DataFetcherFactory
    from trainkit.features import WARMUP_BARS, warmup_start

    fetch = DataFetcherFactory.fetch(base.data_source, sym, warmup_start(s), e, data_seed=base.data_seed,
                                     no_fallback=no_fallback, csv_sha256=base.csv_sha256)
    warnings: list[str] = []
    if fetch.fallback_reason:
        warnings.append(f"{fetch.requested_source} failed ({fetch.fallback_reason}): the folds are planned on "
                        "SYNTHETIC data and will train on it")
    cal = Calendar(ts.date() for ts in fetch.frame.index)
    anchor = s
    if cal.index(s) < WARMUP_BARS:  # the data begin too late to warm the features up before start
        if len(cal.days) <= WARMUP_BARS:
            raise ConfigError(f"the prices of {sym} cover only {len(cal.days)} trading days up to {e} "
                              f"({cal.first}..{cal.last}): the features alone need {WARMUP_BARS} days of warm-up")
        anchor = cal.days[WARMUP_BARS]
        warnings.append(f"the prices of {sym} begin on {cal.first}: after the features' warm-up of {WARMUP_BARS} "
                        f"trading days the folds are anchored at {anchor}, not at {s}")
    windows, tail = fold_windows(cal, anchor, e, train, test, stp, emb, m)
    if not windows:
        t0 = cal.advance(anchor, train + emb)
        why = tail or f"it would start on {t0}, after the last day with prices ({min(e, cal.last)})"
        raise ConfigError(
            f"no fold fits in {anchor}..{e}: the first test window needs the train window {train} and the embargo "
            f"{emb} before it, and {why}; use an earlier --start, a later --end or shorter windows")
    if tail:
        warnings.append(tail)
    tasks = []
    for w in windows:
        for seed in seed_list:
            try:
                cfg = dataclasses.replace(base, train_start=w.train_start, train_end=w.train_end, seed=seed)
            except ConfigError as exc:
                raise ConfigError(f"fold {w.index} ({w.train_start}..{w.train_end}): {exc}") from None
            tasks.append(FoldTask(w, seed, cfg))
    for msg in warnings:
        log.warning("%s: %s", sym, msg)
    return WalkForwardPlan(
        symbol=sym, start=s.isoformat(), end=e.isoformat(), anchor=anchor.isoformat(), train_window=train,
        test_window=test, step=stp, mode=m, embargo=emb, seeds=seed_list, base=base, windows=tuple(windows),
        tasks=tuple(tasks), data_source_effective=fetch.effective_source, warnings=tuple(warnings),
    )


# ============================================================================ running folds
@dataclass(frozen=True)
class Fold:
    """One fold (and seed) done: its windows, its model (cached or trained now) and its
    out-of-sample backtest (``metrics``, daily ``equity``)."""

    index: int
    seed: int
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    config_hash: str
    model_uri: str
    model_id: str | None
    training_run_id: str
    status: str  # a RequestStatus: cached | trained | fallback
    backtest: BacktestResult = field(compare=False, repr=False)
    backtest_key: str = ""
    seconds: float = 0.0
    fallback_reason: str | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.backtest.metrics

    @property
    def equity(self) -> pd.DataFrame:
        return self.backtest.equity

    @property
    def backtest_cached(self) -> bool:
        return self.backtest.cached

    def to_dict(self) -> dict[str, Any]:
        bt = self.backtest
        return {
            "fold": self.index, "seed": self.seed,
            "train_start": self.train_start, "train_end": self.train_end,
            "test_start": self.test_start, "test_end": self.test_end,
            "first_day": bt.first_day, "last_day": bt.last_day, "n_days": bt.n_days,
            "config_hash": self.config_hash, "model_uri": self.model_uri, "model_id": self.model_id,
            "training_run_id": self.training_run_id, "status": self.status, "fallback_reason": self.fallback_reason,
            "backtest_run_id": bt.run_id, "backtest_cached": bt.cached,
            "metrics": {k: (v if isinstance(v, int) else float(v)) for k, v in bt.metrics.items()},
            "seconds": round(self.seconds, 3),
        }


def _fold_key(bt: BacktestResult, config: TrainConfig) -> str:
    from trainkit.backtest import backtest_key

    return backtest_key(model_uri=bt.model_uri, model_id=bt.model_id or bt.source_run_id,
                        config_hash=config.config_hash, data_digest=bt.data_digest or "", start=bt.start, end=bt.end,
                        cost_bps=config.cost_bps, allow_short=config.allow_short)


def run_fold(manager: Any, task: FoldTask, *, force: bool = False, no_fallback: bool = False,
             cached_only: bool = False) -> Fold | None:
    """One fold in this process: its model (``get_config``) and its backtest. When both are
    cached the model is not even loaded (:func:`trainkit.backtest.cached_backtest`);
    ``cached_only``: that, or ``None``."""
    from trainkit.backtest import cached_backtest, run_backtest
    from trainkit.store.contract import RequestStatus

    t0 = time.perf_counter()
    cfg, w = task.config, task.window

    def fold(bt: Any, status: str, model_uri: str, model_id: str | None, run_id: str, reason: str | None) -> Fold:
        return Fold(index=w.index, seed=task.seed, train_start=w.train_start, train_end=w.train_end,
                    test_start=w.test_start, test_end=w.test_end, config_hash=cfg.config_hash, model_uri=model_uri,
                    model_id=model_id, training_run_id=run_id, status=status, backtest=bt,
                    backtest_key=_fold_key(bt, cfg), seconds=time.perf_counter() - t0, fallback_reason=reason)

    if not force:
        rec = manager.lookup(cfg)
        if rec is not None and rec.model_id and not rec.fell_back:  # a fallback model asks its source again first
            bt = cached_backtest(manager.store, model_uri=rec.model_uri, model_id=rec.model_id, config=cfg,
                                 start=w.test_start, end=w.test_end)
            if bt is not None:
                return fold(bt, RequestStatus.CACHED, rec.model_uri, rec.model_id, rec.run_id, None)
        if cached_only:
            return None
    res = manager.get_config(cfg, force=force, no_fallback=no_fallback, progress=False)
    bt = run_backtest(res.model_uri, w.test_start, w.test_end, store=manager.store)
    return fold(bt, res.status, res.model_uri, res.record.model_id, res.run_id, res.fallback_reason)


_worker_managers: dict[tuple[str, str], Any] = {}


def _run_fold_in_worker(tracking_uri: str, experiment_name: str, force: bool, no_fallback: bool,
                        task: FoldTask) -> Fold | None:
    """:func:`run_fold` in an executor's worker process (one manager per process, reused)."""
    key = (tracking_uri, experiment_name)
    if key not in _worker_managers:
        from trainkit.manager import TrainingManager

        _worker_managers[key] = TrainingManager(tracking_uri, experiment_name)
    return run_fold(_worker_managers[key], task, force=force, no_fallback=no_fallback)


# ============================================================================ the result
@dataclass(frozen=True)
class WalkForward:
    """A walk-forward's outcome: its folds (in fold, then seed, order), the stitched
    out-of-sample daily ``equity`` (a Series indexed by date; with several seeds, their
    equal-weight portfolio), ``buy_and_hold`` stitched the same way, each seed's own stitched
    equity (``seed_equity``, one column per seed), the aggregate ``metrics`` and the MLflow
    parent run (``run_id``; ``run_existed``: an identical walk-forward had logged it)."""

    plan: WalkForwardPlan = field(repr=False)
    folds: tuple[Fold, ...]
    equity: pd.Series = field(compare=False, repr=False)
    buy_and_hold: pd.Series = field(compare=False, repr=False)
    seed_equity: pd.DataFrame = field(compare=False, repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    run_existed: bool = False
    key: str = ""

    @property
    def symbol(self) -> str:
        return self.plan.symbol

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.plan.seeds

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.plan.warnings

    @property
    def trained(self) -> int:
        """Folds whose model was trained by this call."""
        return sum(f.status != "cached" for f in self.folds)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object of one symbol."""
        from trainkit.store.contract import WALKFORWARD_EXPERIMENT

        p = self.plan
        return {
            "symbol": p.symbol,
            "run_id": self.run_id,
            "experiment": WALKFORWARD_EXPERIMENT if self.run_id else None,
            "run_existed": self.run_existed,
            "start": p.start, "end": p.end, "anchor": p.anchor,
            "train_window": str(p.train_window), "test_window": str(p.test_window), "step": str(p.step),
            "mode": p.mode, "embargo": str(p.embargo), "seeds": list(p.seeds),
            "first_day": str(self.equity.index[0].date()), "last_day": str(self.equity.index[-1].date()),
            "n_days": len(self.equity),
            "metrics": {k: (v if isinstance(v, int) else float(v)) for k, v in self.metrics.items()},
            "folds": [f.to_dict() for f in self.folds],
            "trained": self.trained,
            "options": p.options(),
            "data_source_effective": p.data_source_effective,
            "warnings": list(p.warnings),
        }


# ============================================================================ stitching and metrics
def stitch(equities: Sequence[pd.DataFrame], folds: Sequence[int] | None = None) -> pd.DataFrame:
    """One seed's folds (their backtest ``equity`` frames, in fold order) stitched into one
    daily series: ``date``, ``fold``, ``net_return`` (0 on each fold's first day: it starts
    flat), ``held`` (the position held into the day), ``buy_and_hold_return``, and the
    ``strategy_equity`` / ``buy_and_hold_equity`` (cumulative products: the product of the fold
    equities) with the strategy's ``drawdown``. Overlapping windows: a fold's days end where
    the next fold's begin."""
    import numpy as np
    import pandas as pd

    from trainkit.backtest import drawdowns

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
    from trainkit.backtest import compute_metrics

    metrics, _curve = compute_metrics(frame["net_return"].to_numpy()[1:], frame["held"].to_numpy()[1:],
                                      frame["buy_and_hold_equity"].to_numpy())
    return metrics


def aggregate(plan: WalkForwardPlan, folds: Sequence[Fold]) -> tuple[pd.Series, pd.Series, pd.DataFrame, dict[str, float], pd.DataFrame]:
    """``(equity, buy_and_hold, seed_equity, metrics, stitched frame)`` of the folds (module
    docstring, *Stitching* and *Metrics*)."""
    import numpy as np
    import pandas as pd

    from trainkit.backtest import drawdowns

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


# ============================================================================ the entry points
def walk_forward(manager: Any, symbol: str, start: Any, end: Any, train_window: Any = "3y", test_window: Any = "6m",
                 step: Any = None, mode: str = "sliding", embargo: Any = "0d", seeds: Any = (0,), executor: Any = None,
                 *, force: bool = False, no_fallback: bool = False, log_run: bool = True,
                 on_fold: Callable[[Fold], Any] | None = None, **options: Any) -> WalkForward:
    """Walk ``symbol`` forward over ``start..end`` (module docstring): plan the folds (exit 2 on
    bad windows, before anything is trained), get each fold's model and backtest — through
    ``executor`` (``in_process`` and ``map_unordered``, e.g.
    :class:`trainkit.executors.LocalExecutor`; default: one after the other here) — stitch,
    and log the parent run (unless an identical one exists, or ``log_run=False``).
    ``options``: the train options of ``get_model``. ``on_fold(fold)`` is called as each
    finishes (a progress bar)."""
    plan = plan_walk_forward(symbol, start, end, train_window, test_window, step, mode, embargo, seeds,
                             no_fallback=no_fallback, **options)
    return run_plan(manager, plan, executor, force=force, no_fallback=no_fallback, log_run=log_run, on_fold=on_fold)


def run_plan(manager: Any, plan: WalkForwardPlan, executor: Any = None, *, force: bool = False,
             no_fallback: bool = False, log_run: bool = True, on_fold: Callable[[Fold], Any] | None = None) -> WalkForward:
    """Run a :class:`WalkForwardPlan`: every (fold, seed) task, then the stitched result and
    the parent run. A fold's failure does not stop the others; the first failure is raised
    once all have ended (nothing is logged for the walk-forward then)."""
    from trainkit.executors import LocalExecutor

    executor = executor or LocalExecutor(1)
    if executor.in_process:
        fn: Callable[[FoldTask], Fold | None] = partial(_run_in_process, manager, force, no_fallback)
    else:  # a manager per worker process (or cluster task)
        fn = partial(_run_fold_in_worker, manager.tracking_uri, manager.experiment_name, force, no_fallback)
    done: dict[tuple[int, int], Fold] = {}
    pending: list[FoldTask] = []
    for task in plan.tasks:  # folds whose model and backtest are cached are answered here: no worker needed
        cached = None if force else run_fold(manager, task, cached_only=True)
        if cached is None:
            pending.append(task)
            continue
        done[(cached.index, cached.seed)] = cached
        if on_fold is not None:
            on_fold(cached)
    failures: list[tuple[FoldTask, BaseException]] = []
    if pending:
        use_store = None if executor.in_process else getattr(executor, "use_store", None)
        if use_store is not None:  # Ray: the store its workers must reach (checked before submitting)
            use_store(manager.tracking_uri)
        results = executor.map_unordered(fn, pending)
        try:
            for task, value in results:
                if isinstance(value, Fold):
                    done[(value.index, value.seed)] = value
                    if on_fold is not None:
                        on_fold(value)
                elif isinstance(value, TrainkitError):
                    log.error("%s fold %d (seed %d, %s..%s): %s", plan.symbol, task.window.index, task.seed,
                              task.window.test_start, task.window.test_end,
                              (str(value).splitlines() or [type(value).__name__])[0])
                    failures.append((task, value))
                else:
                    raise value
        finally:
            close = getattr(results, "close", None)
            if close is not None:  # stopped early (Ctrl-C, a bug): the executor cancels its work now
                close()
    if failures:
        raise failures[0][1]
    folds = tuple(done[(t.window.index, t.seed)] for t in plan.tasks)
    equity, bh, seed_eq, metrics, stitched = aggregate(plan, folds)
    wf = WalkForward(plan=plan, folds=folds, equity=equity, buy_and_hold=bh, seed_equity=seed_eq, metrics=metrics,
                     key=walkforward_key(plan, folds))
    if not log_run:
        return wf
    from trainkit.store.evaluations import find_walkforward

    existing = find_walkforward(manager.store, wf.key)
    if existing is not None:
        return dataclasses.replace(wf, run_id=existing, run_existed=True)
    return dataclasses.replace(wf, run_id=_log(manager.store, wf, stitched))


def _run_in_process(manager: Any, force: bool, no_fallback: bool, task: FoldTask) -> Fold | None:
    return run_fold(manager, task, force=force, no_fallback=no_fallback)


def dry_run(manager: Any, plan: WalkForwardPlan) -> list[dict[str, Any]]:
    """What a walk-forward would do (``--dry-run``): per (fold, seed) its windows, config hash,
    whether its model is cached (URI) and whether its backtest is. Reads only; writes nothing."""
    from trainkit.backtest import cached_backtest

    rows = []
    for t in plan.tasks:
        rec = manager.lookup(t.config)
        bt = None
        if rec is not None and rec.model_id:
            bt = cached_backtest(manager.store, model_uri=rec.model_uri, model_id=rec.model_id, config=t.config,
                                 start=t.window.test_start, end=t.window.test_end)
        rows.append({
            "fold": t.window.index, "seed": t.seed,
            "train_start": t.window.train_start, "train_end": t.window.train_end,
            "test_start": t.window.test_start, "test_end": t.window.test_end,
            "train_days": t.window.train_days, "test_days": t.window.test_days,
            "config_hash": t.config.config_hash, "cached": rec is not None,
            "model_uri": rec.model_uri if rec else None, "status": rec.status if rec else None,
            "backtest_cached": bt is not None, "backtest_run_id": bt.run_id if bt else None,
        })
    return rows


# ============================================================================ MLflow
def _log(store: Any, wf: WalkForward, stitched: pd.DataFrame) -> str:
    """The parent run with its fold children (see :mod:`trainkit.store.evaluations`)."""
    import pandas as pd

    from trainkit import __version__
    from trainkit.store import contract as C
    from trainkit.store.evaluations import FoldRun, WalkForwardRun, log_walkforward

    plan = wf.plan
    many = len(plan.seeds) > 1
    fold_runs = []
    rows = []
    for f in wf.folds:
        bt = f.backtest
        tags = {
            C.TAG_SYMBOL: plan.symbol, C.TAG_MODEL_URI: f.model_uri, C.TAG_SOURCE_RUN_ID: f.training_run_id,
            C.TAG_SOURCE_CONFIG_HASH: f.config_hash, C.TAG_BACKTEST_KEY: f.backtest_key,
            C.TAG_BACKTEST_RUN_ID: bt.run_id or "", C.TAG_VERSION: __version__,
        }
        if f.model_id:
            tags[C.TAG_MODEL_ID] = f.model_id
        params = dict(zip(C.FOLD_PARAMS, (
            str(f.index), str(f.seed), f.train_start, f.train_end, f.test_start, f.test_end, bt.first_day,
            bt.last_day, str(bt.n_days), f.model_uri, f.config_hash, f.status,
        ), strict=True))
        fold_runs.append(FoldRun(
            run_name=f"{plan.symbol}-fold{f.index:02d}" + (f"-seed{f.seed}" if many else ""), params=params,
            tags=tags, metrics=dict(f.metrics), model_id=f.model_id,
            dataset_name=f"{plan.symbol} {f.test_start}..{f.test_end} (out of sample)",
            dataset_digest=(bt.data_digest or "")[:32] or None,
        ))
        rows.append({**params, "backtest_run_id": bt.run_id, **f.metrics})
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


def _description(wf: WalkForward) -> str:
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


def plot(wf: WalkForward, path: str) -> None:
    """``equity_curve.png``: the stitched strategy vs buy-and-hold (each seed faintly when there
    are several), fold boundaries as dotted lines, and the drawdowns below (Agg, no pyplot)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from trainkit.backtest import plot_drawdowns

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
    starts = sorted({f.backtest.first_day for f in wf.folds})
    for i, d in enumerate(starts):
        for ax in (top, bottom):
            ax.axvline(np.datetime64(d), color="tab:green", lw=0.7, ls=":", alpha=0.8,
                       label="fold start" if (i == 0 and ax is top) else None)
    top.set_ylabel("equity (start = 1)")
    seeds = f", seeds {','.join(map(str, p.seeds))}" if len(p.seeds) > 1 else ""
    top.set_title(f"{p.symbol} walk-forward: {len(p.windows)} folds, {p.mode} {p.train_window} train / "
                  f"{p.test_window} test{seeds}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    plot_drawdowns(bottom, dates, wf.equity.to_numpy(), wf.buy_and_hold.to_numpy())
    fig.tight_layout()
    fig.savefig(path, format="png")

