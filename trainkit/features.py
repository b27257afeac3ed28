"""The feature catalog: daily OHLCV bars in, a causal, scaled float32 matrix out.

Why it looks the way it does:

* **One ordered catalog** (:data:`FEATURE_NAMES`, documented in :data:`FEATURE_DOCS`). A model
  trained with ``feature_count=k`` sees the first ``k`` columns, so the order is part of the
  contract: the most basic features (returns, volatility) come first, the first 21 (the default
  ``feature_count``) are the most useful set, the rest are variations. Appending is safe;
  reordering or changing a formula must bump :data:`FEATURE_VERSION`.
* **Scale-free.** Every feature is a log return, a ratio to price, or a bounded oscillator, so a
  policy trained on a $20 stock means the same thing on a $2,000 one.
* **Causal.** The row of day ``t`` depends only on bars up to and including ``t``: every
  indicator is trailing (``ta`` with ``fillna=False``: warm-up stays NaN, nothing is back-filled
  from the future). Truncating the frame never changes an earlier row.
* **Structural warm-up.** Each feature declares how many bars it needs before its first valid
  value (its ``lookback``); rows before that are invalid whatever ``ta`` returned there (``ta``'s
  ADX and ATR return zeros, not NaN, while they warm up). Exponentially smoothed indicators
  (RSI, MACD, ATR, ADX, EMA ratios) get three to nine spans of burn-in, so their first valid
  value no longer depends on where the data happened to begin (within ~1% of a std on GOOG).
  :data:`WARMUP_BARS` is the largest lookback; :func:`warmup_start` turns it into a date to
  fetch from.
* **Degenerate data** (zero volume on an index, a halted stock with flat prices) makes some
  ratios 0/0. After warm-up such values become the feature's neutral value (RSI 50, a z-score
  0, …) rather than failing: the market said "nothing happened", and that is what the feature
  says too.
* **Scaling travels with the model.** :class:`Scaler` is fitted on the *training window only*
  and stored in the model's feature spec (:meth:`FeatureSet.spec`); a backtest passes it back to
  :func:`build_features` so test-window features are scaled with training statistics.

pandas and ``ta`` are used only while building; the result is plain numpy (the environment's
hot path indexes it). Building ten years of daily bars takes about 70 ms.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
from ta.trend import MACD, ADXIndicator, CCIIndicator, EMAIndicator, SMAIndicator
from ta.volatility import AverageTrueRange, BollingerBands
from ta.volume import MFIIndicator, OnBalanceVolumeIndicator

from trainkit.config import FEATURE_CATALOG_SIZE, parse_date
from trainkit.errors import ConfigError, DataError

__all__ = [
    "FEATURE_DOCS",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "MIN_WINDOW_ROWS",
    "WARMUP_BARS",
    "FeatureSet",
    "Scaler",
    "build_features",
    "parse_spec",
    "raw_features",
    "warmup_start",
]

#: Bumped whenever a formula, a window or the order of the catalog changes (it is in the spec
#: stored with every model, so a model never silently gets features it was not trained on).
FEATURE_VERSION = 1

#: Fewest rows a feature window may have.
MIN_WINDOW_ROWS = 30

#: Scaled values are clipped to this many standard deviations (one crash day must not dominate
#: the observation).
CLIP = 10.0

_OHLCV = ("Open", "High", "Low", "Close", "Volume")


class _Feature(NamedTuple):
    name: str
    doc: str
    lookback: int  # rows before the first valid value (first valid row index on a fresh frame)
    neutral: float  # value after warm-up when the formula is 0/0 (flat prices, zero volume)


# The catalog. Order matters (see the module docstring); lookbacks are checked by the tests.
_CATALOG: tuple[_Feature, ...] = (
    # -- the first 21: the default feature set ------------------------------------------------
    _Feature("logret_1", "log return of the close over 1 day", 1, 0.0),
    _Feature("logret_5", "log return of the close over 5 days (a week)", 5, 0.0),
    _Feature("logret_21", "log return of the close over 21 days (a month)", 21, 0.0),
    _Feature("logret_63", "log return of the close over 63 days (a quarter)", 63, 0.0),
    _Feature("vol_21", "realised volatility: std of daily log returns over 21 days (not annualised)", 21, 0.0),
    _Feature("vol_63", "realised volatility: std of daily log returns over 63 days (not annualised)", 63, 0.0),
    _Feature("rsi_14", "RSI over 14 days (Wilder smoothing), 0..100", 84, 50.0),
    _Feature("macd_hist", "MACD histogram (12/26/9: MACD minus its signal) divided by the close", 104, 0.0),
    _Feature("bb_pctb_20", "Bollinger %B: where the close sits in the 20-day, 2-sigma bands (0 = lower, 1 = upper)", 19, 0.5),
    _Feature("atr_14", "average true range over 14 days divided by the close", 84, 0.0),
    _Feature("adx_14", "ADX over 14 days: trend strength regardless of direction, 0..100", 126, 0.0),
    _Feature("sma_ratio_50", "log of close / 50-day simple moving average", 49, 0.0),
    _Feature("sma_ratio_200", "log of close / 200-day simple moving average", 199, 0.0),
    _Feature("volume_z_21", "z-score of log(1 + volume) against the last 21 days", 20, 0.0),
    _Feature("hl_range", "intraday range: log of high / low of the day", 0, 0.0),
    _Feature("gap", "overnight gap: log of open / previous close", 1, 0.0),
    _Feature("stoch_k_14", "stochastic %K: close within the 14-day high-low range, 0..100", 13, 50.0),
    _Feature("cci_20", "commodity channel index over 20 days (typical price vs its mean deviation)", 19, 0.0),
    _Feature("mfi_14", "money flow index over 14 days (volume-weighted RSI), 0..100", 14, 50.0),
    _Feature("obv_flow_21", "21-day change of on-balance volume divided by the 21-day volume, -1..1", 21, 0.0),
    _Feature("drawdown_63", "log of close / highest close of the last 63 days (<= 0)", 62, 0.0),
    # -- the rest: variations on the above ----------------------------------------------------
    _Feature("logret_10", "log return of the close over 10 days (two weeks)", 10, 0.0),
    _Feature("vol_10", "realised volatility: std of daily log returns over 10 days (not annualised)", 10, 0.0),
    _Feature("macd", "MACD line (12-day EMA minus 26-day EMA) divided by the close", 104, 0.0),
    _Feature("macd_signal", "MACD signal line (9-day EMA of the MACD) divided by the close", 104, 0.0),
    _Feature("bb_width_20", "Bollinger band width over 20 days: (upper - lower) / middle, in percent", 19, 0.0),
    _Feature("stoch_d_14_3", "stochastic %D: 3-day mean of the 14-day %K, 0..100", 15, 50.0),
    _Feature("williams_r_21", "Williams %R over 21 days, -100..0", 20, -50.0),
    _Feature("sma_ratio_10", "log of close / 10-day simple moving average", 9, 0.0),
    _Feature("ema_ratio_20", "log of close / 20-day exponential moving average", 80, 0.0),
    _Feature("ema_ratio_50", "log of close / 50-day exponential moving average", 150, 0.0),
    _Feature("close_location", "where the close sits in the day's range: -1 at the low, +1 at the high", 0, 0.0),
)

#: The ordered catalog; ``feature_count=k`` selects ``FEATURE_NAMES[:k]``.
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in _CATALOG)
#: One line per feature: what it measures and over which horizon.
FEATURE_DOCS: dict[str, str] = {f.name: f.doc for f in _CATALOG}
#: Bars of history the slowest feature needs before its first valid value.
WARMUP_BARS: int = max(f.lookback for f in _CATALOG)

_LOOKBACKS = np.array([f.lookback for f in _CATALOG], dtype=np.int64)
_NEUTRAL = np.array([f.neutral for f in _CATALOG], dtype=np.float64)

assert len(FEATURE_NAMES) == FEATURE_CATALOG_SIZE, (
    f"the feature catalog has {len(FEATURE_NAMES)} features but config.FEATURE_CATALOG_SIZE is {FEATURE_CATALOG_SIZE}"
)
assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES), "feature names must be unique"


def warmup_start(start: _dt.date | str) -> _dt.date:
    """The calendar date to fetch from so that the first trading day on or after ``start`` has
    every feature: :data:`WARMUP_BARS` business days before ``start`` plus slack for exchange
    holidays and missing bars (about 10% plus two weeks)."""
    day = parse_date(start, "start")
    slack = WARMUP_BARS // 10 + 10
    back = np.busday_offset(np.datetime64(day, "D"), -(WARMUP_BARS + slack), roll="forward")
    return back.astype(_dt.date)


# ---------------------------------------------------------------------------------- scaler
@dataclass(frozen=True)
class Scaler:
    """Per-feature standardisation fitted on a training window; plain floats, so it serialises
    to JSON and travels with the model. ``transform`` returns ``(x - mean) / std`` as float32,
    clipped to ``[-10, 10]``; a feature that was constant in training (std 0) is only centred."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if not mean or len(mean) != len(std):
            raise ConfigError(f"scaler needs as many means as stds (got {len(mean)} and {len(std)})")
        if not all(math.isfinite(v) for v in mean + std) or any(v < 0 for v in std):
            raise ConfigError("scaler means and stds must be finite and stds >= 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def __len__(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        """Column means and (population) standard deviations of ``x`` ``[T, F]``; a column whose
        spread is zero or lost in rounding gets std 1."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"Scaler.fit needs a non-empty [T, F] array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("Scaler.fit got NaN or inf")
        mean = arr.mean(axis=0)
        std = arr.std(axis=0)
        tiny = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
        std = np.where(tiny, 1.0, std)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` ``[T, F]`` (or one row ``[F]``) to float32, clipped to ``[-10, 10]``."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.shape[-1] != len(self.mean):
            raise ConfigError(
                f"the scaler has {len(self.mean)} features but the input has {arr.shape[-1]}: "
                "build features with the model's feature_count"
            )
        mean = np.asarray(self.mean)
        std = np.asarray(self.std)
        std = np.where(std == 0.0, 1.0, std)
        out = np.clip((arr - mean) / std, -CLIP, CLIP)
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scaler:
        try:
            return cls(tuple(d["mean"]), tuple(d["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"malformed scaler {d!r:.80}: expected {{'mean': [...], 'std': [...]}}") from None


# ---------------------------------------------------------------------------------- feature set
@dataclass(frozen=True)
class FeatureSet:
    """Scaled features of a window of days, ready for :class:`trainkit.env.TradingEnv`.

    ``matrix`` float32 ``[T, F]`` (C-contiguous, finite), ``closes`` float64 ``[T]`` and
    ``dates`` datetime64[ns] ``[T]`` describe the same days; ``scaler`` is the one applied (the
    training window's)."""

    matrix: np.ndarray
    closes: np.ndarray
    dates: np.ndarray
    names: tuple[str, ...]
    scaler: Scaler

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def spec(self) -> dict[str, Any]:
        """What a model must carry to rebuild its observations (JSON-ready)."""
        return {
            "feature_names": list(self.names),
            "feature_count": len(self.names),
            "scaler": self.scaler.to_dict(),
            "warmup_bars": WARMUP_BARS,
            "feature_version": FEATURE_VERSION,
        }


def parse_spec(spec: Mapping[str, Any]) -> tuple[int, Scaler]:
    """Read a model's feature spec (:meth:`FeatureSet.spec`) back: ``(feature_count, scaler)``,
    after checking it was made by this catalog (same version, same names)."""
    try:
        version = spec["feature_version"]
        count = int(spec["feature_count"])
        names = list(spec["feature_names"])
        scaler = Scaler.from_dict(spec["scaler"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"malformed feature spec: missing or invalid {exc}") from None
    if version != FEATURE_VERSION:
        raise ConfigError(
            f"the model's features are version {version} but this trainkit builds version {FEATURE_VERSION}: "
            "retrain the model (train --force) with this version"
        )
    if not 1 <= count <= len(FEATURE_NAMES) or names != list(FEATURE_NAMES[:count]) or len(scaler) != count:
        raise ConfigError("the model's feature spec does not match this trainkit's feature catalog: retrain the model")
    return count, scaler


# ---------------------------------------------------------------------------------- computation
def _check_frame(frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"features need a pandas DataFrame of daily bars, got {type(frame).__name__}")
    missing = [c for c in _OHLCV if c not in frame.columns]
    if missing:
        raise DataError(f"the price frame lacks column(s) {', '.join(missing)}: need {' '.join(_OHLCV)}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError("the price frame needs a DatetimeIndex of trading days")
    if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise DataError("the price frame's dates must be sorted and unique")


def _dates_of(frame: pd.DataFrame) -> np.ndarray:
    idx = frame.index
    if idx.tz is not None:  # the exchange's local calendar day, not UTC's
        idx = idx.tz_localize(None)
    return idx.values.astype("datetime64[ns]")


def _compute(frame: pd.DataFrame) -> np.ndarray:
    """Every catalog feature for every row, float64 ``[N, 32]``, exactly as ``ta`` and the
    formulas give them (warm-up not yet masked, degenerate values not yet neutralised)."""
    o, h, lo, c, v = (frame[name].astype("float64") for name in _OHLCV)
    close = c.to_numpy()
    log_c = np.log(close)
    cols: dict[str, np.ndarray] = {}

    def ret(n: int) -> np.ndarray:
        out = np.full(len(close), np.nan)
        out[n:] = log_c[n:] - log_c[:-n]
        return out

    for n in (1, 5, 10, 21, 63):
        cols[f"logret_{n}"] = ret(n)
    r1 = pd.Series(cols["logret_1"])
    for n in (10, 21, 63):
        cols[f"vol_{n}"] = r1.rolling(n, min_periods=n).std().to_numpy()

    def rel(series: pd.Series) -> np.ndarray:  # log(close / level)
        return log_c - np.log(series.to_numpy())

    cols["rsi_14"] = RSIIndicator(c, window=14, fillna=False).rsi().to_numpy()
    macd = MACD(c, window_slow=26, window_fast=12, window_sign=9, fillna=False)
    cols["macd"] = macd.macd().to_numpy() / close
    cols["macd_signal"] = macd.macd_signal().to_numpy() / close
    cols["macd_hist"] = macd.macd_diff().to_numpy() / close
    bb = BollingerBands(c, window=20, window_dev=2, fillna=False)
    cols["bb_pctb_20"] = bb.bollinger_pband().to_numpy()
    cols["bb_width_20"] = bb.bollinger_wband().to_numpy()
    cols["atr_14"] = AverageTrueRange(h, lo, c, window=14, fillna=False).average_true_range().to_numpy() / close
    cols["adx_14"] = ADXIndicator(h, lo, c, window=14, fillna=False).adx().to_numpy()
    for n in (10, 50, 200):
        cols[f"sma_ratio_{n}"] = rel(SMAIndicator(c, window=n, fillna=False).sma_indicator())
    for n in (20, 50):
        cols[f"ema_ratio_{n}"] = rel(EMAIndicator(c, window=n, fillna=False).ema_indicator())

    log_v = pd.Series(np.log1p(v.to_numpy()))
    roll = log_v.rolling(21, min_periods=21)
    cols["volume_z_21"] = ((log_v - roll.mean()) / roll.std()).to_numpy()
    high, low, open_ = h.to_numpy(), lo.to_numpy(), o.to_numpy()
    cols["hl_range"] = np.log(high) - np.log(low)
    gap = np.full(len(close), np.nan)
    gap[1:] = np.log(open_[1:]) - log_c[:-1]
    cols["gap"] = gap
    cols["close_location"] = (2.0 * close - high - low) / (high - low)

    stoch = StochasticOscillator(h, lo, c, window=14, smooth_window=3, fillna=False)
    cols["stoch_k_14"] = stoch.stoch().to_numpy()
    cols["stoch_d_14_3"] = stoch.stoch_signal().to_numpy()
    cols["williams_r_21"] = WilliamsRIndicator(h, lo, c, lbp=21, fillna=False).williams_r().to_numpy()
    cols["cci_20"] = CCIIndicator(h, lo, c, window=20, constant=0.015, fillna=False).cci().to_numpy()
    cols["mfi_14"] = MFIIndicator(h, lo, c, v, window=14, fillna=False).money_flow_index().to_numpy()
    obv = OnBalanceVolumeIndicator(c, v, fillna=False).on_balance_volume()
    cols["obv_flow_21"] = (obv.diff(21) / v.rolling(21, min_periods=21).sum()).to_numpy()
    cols["drawdown_63"] = rel(c.rolling(63, min_periods=63).max())

    assert set(cols) == set(FEATURE_NAMES), set(cols) ^ set(FEATURE_NAMES)
    return np.column_stack([cols[name] for name in FEATURE_NAMES])


def _catalog(frame: pd.DataFrame) -> np.ndarray:
    """:func:`_compute` with the structural warm-up applied (NaN before each lookback) and any
    later NaN/inf (0/0 on degenerate bars) replaced by the feature's neutral value."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = _compute(frame)
    bad = ~np.isfinite(raw)
    if bad.any():
        raw = np.where(bad, _NEUTRAL, raw)
    rows = np.arange(raw.shape[0])[:, None]
    raw[rows < _LOOKBACKS[None, :]] = np.nan
    return raw


def raw_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The whole catalog, unscaled, one row per bar of ``frame`` (NaN during each feature's
    warm-up). For inspection and notebooks; training uses :func:`build_features`."""
    _check_frame(frame)
    _check_prices(frame)
    return pd.DataFrame(_catalog(frame), index=frame.index, columns=list(FEATURE_NAMES))


def _check_prices(frame: pd.DataFrame) -> None:
    values = frame.loc[:, list(_OHLCV)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError("the price frame has NaN or infinite values: clean the data first")
    if (values[:, :4] <= 0).any() or (values[:, 4] < 0).any():
        raise DataError("the price frame has non-positive prices or negative volume")


def _check_count(feature_count: Any) -> int:
    n = len(FEATURE_NAMES)
    if isinstance(feature_count, bool) or not isinstance(feature_count, (int, np.integer)):
        raise ConfigError(f"feature_count must be an integer in 1..{n}, got {feature_count!r}")
    if not 1 <= int(feature_count) <= n:
        raise ConfigError(f"feature_count {feature_count} is out of range: use 1..{n}")
    return int(feature_count)


def build_features(
    frame: pd.DataFrame,
    feature_count: int = 21,
    scaler: Scaler | None = None,
    start: _dt.date | str | None = None,
    end: _dt.date | str | None = None,
) -> FeatureSet:
    """Scaled features of the days ``start..end`` (inclusive) of ``frame``.

    ``frame``: daily bars (``Open High Low Close Volume``, sorted DatetimeIndex) that include
    a warm-up margin before ``start`` (fetch from :func:`warmup_start`). The catalog is computed
    over the whole frame, the first ``feature_count`` features are kept and the rows are cut to
    the window; with ``start=None`` the window begins at the first row where every selected
    feature is valid. The window is scaled with ``scaler`` when given (a backtest uses the
    training statistics) or with a new :class:`Scaler` fitted on the window's rows (training).

    Raises ``ConfigError`` for a ``feature_count`` outside ``1..32`` or a reversed window, and
    ``DataError`` when the window lacks warm-up history or has fewer than 30 rows.
    """
    count = _check_count(feature_count)
    if scaler is not None and len(scaler) != count:
        raise ConfigError(
            f"the scaler has {len(scaler)} features but feature_count is {count}: use the model's feature_count"
        )
    start_d = None if start is None else parse_date(start, "start")
    end_d = None if end is None else parse_date(end, "end")
    if start_d is not None and end_d is not None and start_d > end_d:
        raise ConfigError(f"start {start_d} is after end {end_d}")
    _check_frame(frame)

    dates = _dates_of(frame)
    days = dates.astype("datetime64[D]")
    need = int(_LOOKBACKS[:count].max())
    lo = need if start_d is None else int(np.searchsorted(days, np.datetime64(start_d, "D"), side="left"))
    hi = len(days) if end_d is None else int(np.searchsorted(days, np.datetime64(end_d, "D"), side="right"))
    span = f"{start_d or 'the first complete row'}..{end_d or 'the last row'}"
    have = f"the data covers {days[0]}..{days[-1]}" if len(days) else "the data is empty"
    if hi - lo < MIN_WINDOW_ROWS:
        raise DataError(
            f"only {max(hi - lo, 0)} trading days in {span} ({have}): a window needs at least {MIN_WINDOW_ROWS}"
        )
    if lo < need:
        raise DataError(
            f"not enough history before {start_d}: the features need {need} bars before the first day but "
            f"{have}; fetch from {warmup_start(start_d)} (warmup_start) or start on or after {days[need]}"
        )

    _check_prices(frame)
    raw = _catalog(frame.iloc[:hi])[lo:hi, :count]
    if not np.isfinite(raw).all():  # cannot happen after the checks above; never hand out NaN
        raise DataError(f"features of {span} contain NaN: the price data is unusable")
    scaler = scaler if scaler is not None else Scaler.fit(raw)
    matrix = scaler.transform(raw)
    closes = np.ascontiguousarray(frame["Close"].to_numpy(dtype=np.float64)[lo:hi])
    return FeatureSet(
        matrix=matrix,
        closes=closes,
        dates=np.ascontiguousarray(dates[lo:hi]),
        names=FEATURE_NAMES[:count],
        scaler=scaler,
    )

