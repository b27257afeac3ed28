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

* **The formulas travel with the model.** The catalog, its formulas and the scaling live in
  :mod:`trainkit.signals_core`, a self-contained module (numpy, pandas, ``ta``) that every
  logged model carries, so a model served without trainkit computes these features bit for bit.
  This module adds what training and backtests need around them (windows, fitting the scaler,
  trainkit's errors).

pandas and ``ta`` are used only while building; the result is plain numpy (the environment's
hot path indexes it). Building ten years of daily bars takes about 70 ms.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainkit import signals_core as _core
from trainkit.config import FEATURE_CATALOG_SIZE, MIN_WINDOW_ROWS, parse_date
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
FEATURE_VERSION = _core.FEATURE_VERSION


#: Scaled values are clipped to this many standard deviations (one crash day must not dominate
#: the observation).
CLIP = _core.CLIP

_OHLCV = _core.OHLCV

# The catalog and its formulas live in trainkit.signals_core, a self-contained module that
# travels inside every logged model (so a served model computes these very features); order
# matters (see the module docstring); lookbacks are checked by the tests.
_Feature = _core.Feature
_CATALOG: tuple[_Feature, ...] = _core.CATALOG

#: The ordered catalog; ``feature_count=k`` selects ``FEATURE_NAMES[:k]``.
FEATURE_NAMES: tuple[str, ...] = _core.FEATURE_NAMES
#: One line per feature: what it measures and over which horizon.
FEATURE_DOCS: dict[str, str] = {f.name: f.doc for f in _CATALOG}
#: Bars of history the slowest feature needs before its first valid value.
WARMUP_BARS: int = _core.WARMUP_BARS

_LOOKBACKS = _core.LOOKBACKS
_NEUTRAL = _core.NEUTRAL

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
        return _core.scale(arr, self.mean, self.std)

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


#: every catalog feature for every row, float64 [N, 32], warm-up not masked (see signals_core)
_compute = _core.compute
#: _compute with the structural warm-up applied and degenerate values neutralised
_catalog = _core.catalog


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

