"""Synthetic daily OHLCV: the offline source, and the fallback when Yahoo does not answer.

One fixed price path per ``(symbol, data_seed)`` over a fixed business-day
calendar (:data:`CALENDAR_START` .. :data:`CALENDAR_END`). A fetch is a slice of that path, so a
training window, its indicator warm-up and a later backtest all see the same prices, and the same
request gives the same bytes on any machine: the seed is derived from ``(symbol, data_seed)`` by
sha256 (never Python's salted ``hash()``) and drives numpy's PCG64 through ``default_rng``.

The path is meant to look like a stock, not to be one: log returns follow a GARCH(1,1) process
with Student-t shocks (volatility clustering, fat tails) and a small drift; each day's return is
split into an overnight gap (Open vs previous Close) and an intraday move; High/Low extend beyond
Open/Close by a range that scales with the day's volatility; volume rises with the size of the
day's move relative to its volatility. Per-symbol parameters (price level, drift, volatility,
volume level) are drawn from the same seed, so symbols differ from each other.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainkit.config import default_data_seed, validate_symbol
from trainkit.data.base import OHLCV_COLUMNS, check_window, slice_window
from trainkit.errors import DataError

#: The fixed calendar every synthetic path is laid on (pandas business days, no holidays).
CALENDAR_START = _dt.date(1970, 1, 1)
CALENDAR_END = _dt.date(2045, 12, 31)

_TRADING_DAYS = 252.0
#: The date whose Close is the path's drawn price level (see :func:`synthetic_ohlcv`).
ANCHOR_DATE = _dt.date(2015, 1, 2)
#: Bumped if the generator changes: old paths (and their digests) then no longer match.
GENERATOR_VERSION = 1


def derive_seed(symbol: str, data_seed: int) -> int:
    """The 128-bit generator seed of ``(symbol, data_seed)``, the same on every machine."""
    digest = hashlib.sha256(f"trainkit-synthetic-v{GENERATOR_VERSION}|{symbol}|{int(data_seed)}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def _garch_variance(z: np.ndarray, omega: float, alpha: float, beta: float, var0: float) -> np.ndarray:
    """Conditional variances of a GARCH(1,1) driven by unit shocks ``z``:
    ``var[t] = omega + alpha * var[t-1] * z[t-1]**2 + beta * var[t-1]``. A plain loop over
    Python floats: ~20k steps take a few milliseconds, and it is run once per path."""
    n = len(z)
    out = np.empty(n)
    zz = (z * z).tolist()
    v = var0
    for t in range(n):
        out[t] = v
        v = omega + (alpha * zz[t] + beta) * v
    return out


def synthetic_ohlcv(
    dates: int | Sequence[object] | pd.DatetimeIndex,
    seed: int,
    *,
    start_price: float | None = None,
    annual_drift: float | None = None,
    annual_vol: float | None = None,
    anchor: object | None = None,
) -> pd.DataFrame:
    """Generate a clean OHLCV frame (see :mod:`trainkit.data.base`) over ``dates`` — a
    ``DatetimeIndex``/sequence of dates, or a row count laid on business days from 2000-01-03 —
    deterministically from ``seed`` (any non-negative int). Parameters left ``None`` are drawn
    from the seed: price level 20..300, annual log drift 0..8 %, annual volatility 15..40 %.
    The price level is the Close on ``anchor`` (a date; the first date when ``None`` or outside
    ``dates``): anchoring a long path near the present keeps the prices of realistic windows
    realistic however far back the calendar reaches."""
    if isinstance(dates, (int, np.integer)):
        if dates < 1:
            raise ValueError("synthetic_ohlcv needs at least one date")
        index = pd.bdate_range("2000-01-03", periods=int(dates))
    else:
        index = pd.DatetimeIndex(pd.to_datetime(list(dates) if not isinstance(dates, pd.Index) else dates))
    index = index.normalize().as_unit("ns").rename("Date")
    n = len(index)
    rng = np.random.default_rng(int(seed))

    p0 = float(rng.uniform(20.0, 300.0)) if start_price is None else float(start_price)
    mu = float(rng.uniform(0.0, 0.08)) if annual_drift is None else float(annual_drift)
    sigma = float(rng.uniform(0.15, 0.40)) if annual_vol is None else float(annual_vol)
    log_volume0 = float(rng.uniform(np.log(2e5), np.log(5e7)))
    alpha, beta = float(rng.uniform(0.05, 0.09)), float(rng.uniform(0.85, 0.90))  # alpha + beta < 1
    overnight_share = float(rng.uniform(0.2, 0.4))
    if p0 <= 0 or sigma <= 0:
        raise ValueError("start_price and annual_vol must be > 0")

    target_var = sigma * sigma / _TRADING_DAYS
    omega = target_var * (1.0 - alpha - beta)
    dof = 5.0
    z = rng.standard_t(dof, n) * np.sqrt((dof - 2.0) / dof)  # unit-variance fat-tailed shocks
    var = _garch_variance(z, omega, alpha, beta, target_var)
    vol = np.sqrt(var)
    ret = np.clip(mu / _TRADING_DAYS + vol * z, -0.35, 0.35)
    gap = ret * overnight_share + vol * 0.1 * rng.standard_normal(n)

    log_close = np.cumsum(ret)
    at = 0
    if anchor is not None:
        at = int(min(max(index.searchsorted(pd.Timestamp(anchor)), 0), n - 1))
    log_close += np.log(p0) - log_close[at]
    close = np.exp(log_close)
    prev_close = np.exp(log_close - ret)
    open_ = prev_close * np.exp(gap)
    # intraday extremes beyond the body, proportional to the day's volatility
    up = np.abs(rng.standard_normal(n)) * vol * 0.6
    down = np.abs(rng.standard_normal(n)) * vol * 0.6
    high = np.maximum(open_, close) * np.exp(up)
    low = np.minimum(open_, close) * np.exp(-down)
    # volume: a slow-moving level plus a response to the size of the surprise
    level = np.cumsum(rng.standard_normal(n)) * 0.01
    level -= np.linspace(0.0, level[-1], n) if n > 1 else 0.0  # a bridge: no long-run trend
    volume = np.round(np.exp(log_volume0 + level + 0.45 * np.abs(z) + 0.25 * rng.standard_normal(n)))

    # Prices on a 1/10000 grid: numpy's exp/log may differ in the last bit between CPUs (SIMD
    # paths) and C libraries; rounding makes such a difference show up in the output only if a
    # value sits within ~1e-14 of a grid midpoint, so the bytes are the same everywhere in practice.
    # Rounding and the floor are monotonic, so High >= max(Open, Close) >= min(...) >= Low holds.
    o, h, lo, c = (np.maximum(np.round(x, 4), 1e-4) for x in (open_, high, low, close))
    frame = pd.DataFrame(
        {"Open": o, "High": h, "Low": lo, "Close": c, "Volume": volume.astype("float64")},
        index=index,
        columns=list(OHLCV_COLUMNS),
    )
    return frame


@functools.lru_cache(maxsize=1)
def calendar() -> pd.DatetimeIndex:
    """The fixed business-day calendar of every synthetic path."""
    return pd.bdate_range(CALENDAR_START, CALENDAR_END, name="Date").as_unit("ns")


@functools.lru_cache(maxsize=32)
def full_path(symbol: str, data_seed: int) -> pd.DataFrame:
    """The whole path of ``(symbol, data_seed)``, generated once per process. Callers must not
    mutate it (``fetch`` returns copies)."""
    return synthetic_ohlcv(calendar(), derive_seed(symbol, data_seed), anchor=ANCHOR_DATE)


class SyntheticFetcher:
    """Slices of the fixed synthetic path. ``data_seed=None`` uses the symbol's default seed
    (:func:`trainkit.config.default_data_seed`), the same one :class:`~trainkit.config.TrainConfig`
    resolves to."""

    name = "synthetic"

    def __init__(self, data_seed: int | None = None) -> None:
        if data_seed is not None and (isinstance(data_seed, bool) or int(data_seed) != data_seed or data_seed < 0):
            raise DataError(f"synthetic data_seed must be a non-negative integer, got {data_seed!r}")
        self.data_seed = None if data_seed is None else int(data_seed)

    def seed_for(self, symbol: str) -> int:
        return default_data_seed(symbol) if self.data_seed is None else self.data_seed

    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        sym = validate_symbol(symbol)
        s, e = check_window(start, end)
        seed = self.seed_for(sym)
        return slice_window(full_path(sym, seed), s, e, f"synthetic data for {sym} (data_seed={seed})")

    def __repr__(self) -> str:
        return f"SyntheticFetcher(data_seed={self.data_seed!r})"
