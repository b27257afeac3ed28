"""The window grammar and the fold arithmetic of a walk-forward: pure functions of a trading
calendar, stdlib only (the CLI parses windows before anything heavy is imported).

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

A last test window with fewer than 30 trading days (the backtest minimum) is left out, and the
plan says so. Bad windows — a test window longer than the data, a train window too short to
train on, a test window too short to backtest — are :class:`~trainkit.errors.ConfigError`
(exit 2) before anything is trained.
"""

from __future__ import annotations

import bisect
import calendar as _calendar
import dataclasses
import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainkit.config import MIN_WINDOW_DAYS, MIN_WINDOW_ROWS, parse_date
from trainkit.errors import ConfigError

__all__ = [
    "MIN_TEST_DAYS", "MIN_TRAIN_DAYS", "MODES", "Calendar", "FoldWindow", "Window", "add_months", "fold_windows",
    "latest_train_window", "parse_window",
]

#: How the train window moves: it slides with the test window, or grows from the anchor.
MODES = ("sliding", "expanding")
#: Fewest trading days of a test window and of a training window (``config.MIN_WINDOW_ROWS``).
MIN_TEST_DAYS = MIN_TRAIN_DAYS = MIN_WINDOW_ROWS

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
    """Every fold of a walk-forward anchored at ``anchor`` with test windows up to ``end`` (the
    module docstring: each boundary is one step from the anchor, so a later ``end`` only appends
    folds), and a note when a last, short test window was left out. Pure: the calendar says
    which days trade. :class:`ConfigError` for windows that cannot work."""
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


def latest_train_window(cal: Calendar, anchor: Any, end: Any, train: Window, step: Window,
                        mode: str = "sliding") -> tuple[str, str]:
    """The training window of the fold grid anchored at ``anchor`` that ends last on or before
    ``end``: where the model a walk-forward chose is trained to be
    used from ``end`` on. With the step equal to the test window and no embargo it is the
    window of the fold a later ``end`` would add next, so a longer walk-forward finds it cached
    (and the other way round). ``(train_start, train_end)``, inclusive dates."""
    a0, last = parse_date(anchor, "anchor"), parse_date(end, "end")
    best: tuple[str, str] | None = None
    for k in range(100_000):
        lo = a0 if mode == "expanding" else cal.advance(a0, step * k)
        b = cal.advance(a0, train + step * k)
        if b - _DAY > last:
            break
        best = (lo.isoformat(), (b - _DAY).isoformat())
    if best is None:
        raise ConfigError(f"no training window of {train} fits between {a0} and {last}")
    return best
