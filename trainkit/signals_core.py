"""Daily price bars in, target positions out: the part of trainkit a logged model carries.

This module stands on its own — it imports numpy, pandas and ``ta``, never ``trainkit`` —
because it travels *inside* every model: :mod:`trainkit.store.flavor` copies this very file
into the model as the artifact ``signals_core.py``, and ``trainkit/pyfunc_model.py`` loads it
from there. So ``mlflow.pyfunc.load_model(uri).predict(bars)`` and ``mlflow models serve``
turn bars into positions wherever the model's pip requirements are installed, trainkit or not.

What is here, and why here:

* **The feature catalog and its formulas** (:data:`CATALOG`, :func:`compute`,
  :func:`catalog`, :func:`scale`). :mod:`trainkit.features` imports them from this module, so
  there is one copy of the formulas: a served model computes, bit for bit, the features trainkit
  trained and backtests on. See :mod:`trainkit.features` for the design of the catalog.
* **Bars from a caller** (:func:`clean_bars`): a DataFrame of daily OHLCV, read the way a CSV
  data source reads its file (a ``Date`` column or a date index, column names matched case- and
  punctuation-insensitively, ``Adj Close`` applied, High/Low widened to contain Open/Close),
  except that bars must already be sorted: a serving client that sends them out of order has a
  bug worth hearing about. Anything unusable is a :class:`BarsError` naming the problem.
* **The walk** (:func:`signals`): the deterministic policy walked through the requested days
  from a starting position, exactly as a backtest walks it (``trainkit.agents.run_policy``):
  the observation of a day is its scaled feature row followed by the position held coming into
  it, and every (day, held position) pair is evaluated in one batch, then walked in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
from ta.trend import MACD, ADXIndicator, CCIIndicator, EMAIndicator, SMAIndicator
from ta.volatility import AverageTrueRange, BollingerBands
from ta.volume import MFIIndicator, OnBalanceVolumeIndicator

__all__ = [
    "CATALOG", "CLIP", "FEATURE_NAMES", "FEATURE_VERSION", "LOOKBACKS", "OHLCV", "OUTPUT_COLUMNS",
    "WARMUP_BARS", "BarsError", "Feature", "SpecError", "catalog", "clean_bars", "compute",
    "looks_like_bars", "position_levels", "read_spec", "scale", "signals"
]

#: Bumped whenever a formula, a window or the order of the catalog changes (it is in the spec
#: stored with every model, so a model never silently gets features it was not trained on).
FEATURE_VERSION = 1

#: Scaled values are clipped to this many standard deviations.
CLIP = 10.0

#: The bar columns the features read, in this order.
OHLCV: tuple[str, ...] = ("Open", "High", "Low", "Close", "Volume")

#: The columns :func:`signals` returns.
OUTPUT_COLUMNS: tuple[str, ...] = ("date", "action", "position", "previous_position")


class BarsError(ValueError):
    """Bars, or a request parameter, that a model cannot use; the message names the problem."""


class SpecError(ValueError):
    """A feature spec this catalog did not make (another feature version or catalog)."""


class Feature(NamedTuple):
    name: str
    doc: str
    lookback: int  # rows before the first valid value (first valid row index on a fresh frame)
    neutral: float  # value after warm-up when the formula is 0/0 (flat prices, zero volume)


# The catalog. Order matters (see trainkit.features); lookbacks are checked by the tests.
CATALOG: tuple[Feature, ...] = (
    # -- the first 21: the default feature set ------------------------------------------------
    Feature("logret_1", "log return of the close over 1 day", 1, 0.0),
    Feature("logret_5", "log return of the close over 5 days (a week)", 5, 0.0),
    Feature("logret_21", "log return of the close over 21 days (a month)", 21, 0.0),
    Feature("logret_63", "log return of the close over 63 days (a quarter)", 63, 0.0),
    Feature("vol_21", "realised volatility: std of daily log returns over 21 days (not annualised)", 21, 0.0),
    Feature("vol_63", "realised volatility: std of daily log returns over 63 days (not annualised)", 63, 0.0),
    Feature("rsi_14", "RSI over 14 days (Wilder smoothing), 0..100", 84, 50.0),
    Feature("macd_hist", "MACD histogram (12/26/9: MACD minus its signal) divided by the close", 104, 0.0),
    Feature("bb_pctb_20", "Bollinger %B: where the close sits in the 20-day, 2-sigma bands (0 = lower, 1 = upper)", 19, 0.5),
    Feature("atr_14", "average true range over 14 days divided by the close", 84, 0.0),
    Feature("adx_14", "ADX over 14 days: trend strength regardless of direction, 0..100", 126, 0.0),
    Feature("sma_ratio_50", "log of close / 50-day simple moving average", 49, 0.0),
    Feature("sma_ratio_200", "log of close / 200-day simple moving average", 199, 0.0),
    Feature("volume_z_21", "z-score of log(1 + volume) against the last 21 days", 20, 0.0),
    Feature("hl_range", "intraday range: log of high / low of the day", 0, 0.0),
    Feature("gap", "overnight gap: log of open / previous close", 1, 0.0),
    Feature("stoch_k_14", "stochastic %K: close within the 14-day high-low range, 0..100", 13, 50.0),
    Feature("cci_20", "commodity channel index over 20 days (typical price vs its mean deviation)", 19, 0.0),
    Feature("mfi_14", "money flow index over 14 days (volume-weighted RSI), 0..100", 14, 50.0),
    Feature("obv_flow_21", "21-day change of on-balance volume divided by the 21-day volume, -1..1", 21, 0.0),
    Feature("drawdown_63", "log of close / highest close of the last 63 days (<= 0)", 62, 0.0),
    # -- the rest: variations on the above ----------------------------------------------------
    Feature("logret_10", "log return of the close over 10 days (two weeks)", 10, 0.0),
    Feature("vol_10", "realised volatility: std of daily log returns over 10 days (not annualised)", 10, 0.0),
    Feature("macd", "MACD line (12-day EMA minus 26-day EMA) divided by the close", 104, 0.0),
    Feature("macd_signal", "MACD signal line (9-day EMA of the MACD) divided by the close", 104, 0.0),
    Feature("bb_width_20", "Bollinger band width over 20 days: (upper - lower) / middle, in percent", 19, 0.0),
    Feature("stoch_d_14_3", "stochastic %D: 3-day mean of the 14-day %K, 0..100", 15, 50.0),
    Feature("williams_r_21", "Williams %R over 21 days, -100..0", 20, -50.0),
    Feature("sma_ratio_10", "log of close / 10-day simple moving average", 9, 0.0),
    Feature("ema_ratio_20", "log of close / 20-day exponential moving average", 80, 0.0),
    Feature("ema_ratio_50", "log of close / 50-day exponential moving average", 150, 0.0),
    Feature("close_location", "where the close sits in the day's range: -1 at the low, +1 at the high", 0, 0.0),
)

#: The ordered catalog; ``feature_count=k`` selects ``FEATURE_NAMES[:k]``.
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in CATALOG)
#: Bars of history the slowest feature needs before its first valid value.
WARMUP_BARS: int = max(f.lookback for f in CATALOG)
#: Each feature's lookback and neutral value, as arrays in catalog order.
LOOKBACKS = np.array([f.lookback for f in CATALOG], dtype=np.int64)
NEUTRAL = np.array([f.neutral for f in CATALOG], dtype=np.float64)


# ---------------------------------------------------------------------------------- formulas
def compute(frame: pd.DataFrame) -> np.ndarray:
    """Every catalog feature for every row, float64 ``[N, 32]``, exactly as ``ta`` and the
    formulas give them (warm-up not yet masked, degenerate values not yet neutralised)."""
    o, h, lo, c, v = (frame[name].astype("float64") for name in OHLCV)
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


def catalog(frame: pd.DataFrame) -> np.ndarray:
    """:func:`compute` with the structural warm-up applied (NaN before each lookback) and any
    later NaN/inf (0/0 on degenerate bars) replaced by the feature's neutral value."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = compute(frame)
    bad = ~np.isfinite(raw)
    if bad.any():
        raw = np.where(bad, NEUTRAL, raw)
    rows = np.arange(raw.shape[0])[:, None]
    raw[rows < LOOKBACKS[None, :]] = np.nan
    return raw


def scale(x: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """``(x - mean) / std`` as float32, clipped to ``[-CLIP, CLIP]``; a std of 0 only centres."""
    arr = np.asarray(x, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sd = np.asarray(std, dtype=np.float64)
    sd = np.where(sd == 0.0, 1.0, sd)
    out = np.clip((arr - mu) / sd, -CLIP, CLIP)
    return np.ascontiguousarray(out, dtype=np.float32)


def position_levels(allow_short: bool) -> np.ndarray:
    """The position each action index stands for: ``{0,1,2} -> {-1,0,+1}`` with shorting,
    ``{0,1} -> {0,+1}`` without (the same table as ``trainkit.env.position_levels``)."""
    return np.array([-1.0, 0.0, 1.0]) if allow_short else np.array([0.0, 1.0])


def read_spec(spec: Mapping[str, Any]) -> tuple[int, np.ndarray, np.ndarray]:
    """A model's feature spec back as ``(feature_count, scaler mean, scaler std)``, after
    checking that this catalog made it (same version, same names). :class:`SpecError` if not."""
    try:
        version = spec["feature_version"]
        count = int(spec["feature_count"])
        names = list(spec["feature_names"])
        mean = np.asarray(spec["scaler"]["mean"], dtype=np.float64)
        std = np.asarray(spec["scaler"]["std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"malformed feature spec: missing or invalid {exc}") from None
    if version != FEATURE_VERSION:
        raise SpecError(f"the model's features are version {version}, these formulas are version {FEATURE_VERSION}")
    if not 1 <= count <= len(FEATURE_NAMES) or names != list(FEATURE_NAMES[:count]) or mean.shape != (count,) \
            or std.shape != (count,):
        raise SpecError("the model's feature spec does not match this feature catalog")
    return count, mean, std


# ---------------------------------------------------------------------------------- bars
_DATE_NAMES = ("date", "datetime", "timestamp", "time")
_SYMBOL_NAMES = ("symbol", "ticker")
_ALIASES = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume",
            "adjclose": "Adj Close", "adjustedclose": "Adj Close"}
_OFFSET_RE = r"\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})$"
_NEED = "Date, Open, High, Low, Close, Volume"


def _canon(name: object) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def looks_like_bars(frame: Any) -> bool:
    """Whether a DataFrame is meant as price bars (it names a date or an OHLCV column) rather
    than as observation vectors (anonymous numeric columns)."""
    if not isinstance(frame, pd.DataFrame):
        return False
    names = {_canon(c) for c in frame.columns}
    return bool(names & (set(_ALIASES) | set(_DATE_NAMES))) or isinstance(frame.index, pd.DatetimeIndex)


def _is_number(x: Any) -> bool:  # a bool is no number: True is neither a price nor a date
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _show(value: Any, limit: int = 40) -> str:  # a value for a message, cut short
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[:limit] + "…"


def _days(index: pd.Index | np.ndarray, mask: np.ndarray, k: int = 3) -> str:
    picked = [str(d)[:10] for d in np.asarray(index)[mask][:k]]
    more = int(np.count_nonzero(mask)) - len(picked)
    return ", ".join(picked) + (f" and {more} more" if more > 0 else "")


def _date_index(values: Any, where: str) -> pd.DatetimeIndex:
    if isinstance(values, pd.DatetimeIndex) or pd.api.types.is_datetime64_any_dtype(values):
        idx = pd.DatetimeIndex(values)
    else:
        series = pd.Series(np.asarray(values, dtype=object))
        numeric = series.map(lambda x: _is_number(x) and pd.notna(x))  # NaN (a JSON null): an empty date
        if numeric.any():
            first = series[numeric].iloc[0]
            raise BarsError(
                f"bars: the dates in {where} must be dates such as '2024-01-02', got the number {_show(first)} "
                "(pandas: to_json(..., date_format='iso'))"
            )
        text = series.astype("string").str.strip()
        empty = (text.isna() | (text == "")).to_numpy()
        if empty.any():
            raise BarsError(f"bars: empty date in {where} on row {int(empty.nonzero()[0][0])}")
        try:
            parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        except (ValueError, TypeError):  # UTC offsets that change within the data: each row's local date
            parsed = pd.to_datetime(text.str.replace(_OFFSET_RE, "", regex=True), errors="coerce", format="mixed")
        bad = parsed.isna().to_numpy()
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise BarsError(f"bars: unparseable date {_show(text.iloc[i])} in {where} on row {i} (use YYYY-MM-DD)")
        idx = pd.DatetimeIndex(parsed)
    if idx.tz is not None:  # the exchange's local calendar day, not UTC's
        idx = idx.tz_localize(None)
    if idx.isna().any():
        raise BarsError(f"bars: {int(idx.isna().sum())} row(s) have no date")
    return idx.normalize().as_unit("ns").rename("Date")


def apply_adj_close(df: pd.DataFrame) -> pd.DataFrame:
    """Split- and dividend-adjust a frame that carries ``Adj Close`` (the ``auto_adjust=True``
    convention of yfinance): Open/High/Low are scaled by ``Adj Close / Close`` and ``Close``
    becomes ``Adj Close``. Without ``Adj Close`` the frame is returned unchanged; with
    ``Adj Close`` but no ``Close`` the adjusted close is the close (O/H/L taken as given). A row
    without a usable ratio keeps its raw prices (its NaN or zero is reported later). The data
    sources use this very function (:mod:`trainkit.data.base`), so served bars are adjusted
    exactly as training data were."""
    if "Adj Close" not in df.columns:
        return df
    out = df.copy()
    adj = pd.to_numeric(out["Adj Close"], errors="coerce").astype("float64")
    if "Close" not in out.columns:
        out["Close"] = adj
    else:
        close = pd.to_numeric(out["Close"], errors="coerce").astype("float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (adj / close).to_numpy()
        ratio = np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
        for col in ("Open", "High", "Low"):
            if col in out.columns:
                out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64") * ratio
        out["Close"] = adj.where(adj.notna(), close)
    return out.drop(columns=["Adj Close"])


def clean_bars(bars: Any) -> pd.DataFrame:
    """A caller's daily bars as a clean frame: float64 ``Open High Low Close Volume`` on a
    sorted, unique, tz-naive ``DatetimeIndex`` named ``Date`` — the frame a data source would
    have produced from the same rows, so features built on it are the ones trainkit builds.

    Accepted: a ``Date`` column (also ``Datetime``, ``Timestamp``, ``Time``; any case) or else a
    date index; OHLCV columns in any case or punctuation; an ``Adj Close`` column adjusts the
    prices as the data sources do; a ``Symbol``/``Ticker`` column must name one instrument;
    other columns are ignored. Raises :class:`BarsError` naming the problem: missing columns,
    unparseable or missing dates, unsorted or duplicate dates, missing (NaN), infinite or
    non-numeric values (a bool is none), and the bar rules of :func:`check_ohlc`.

    The checks run in a fixed order (what the bars are, then their columns, values, dates and
    prices) so a client always hears about the first problem a reader of its bars would hit."""
    if not isinstance(bars, pd.DataFrame):
        raise BarsError(f"bars must be a pandas DataFrame of daily {_NEED}, got {type(bars).__name__}")
    if bars.empty:
        raise BarsError("bars: no rows")
    df = bars.copy()
    df.columns = [str(c).strip() for c in df.columns]
    found = (", ".join(df.columns) or "none")[:200]
    df, index = _bars_dates(df, found)
    df = _bars_ohlcv(df, found)
    df = _bars_values(df, index)
    _check_bar_dates(index)
    return _bars_checked(df, index)


def _bars_dates(df: pd.DataFrame, found: str) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """The bars' dates (a date column, else the index) and ``df`` without its date and symbol
    columns; bars of more than one symbol are refused, since one walk is one instrument."""
    symbols = [c for c in df.columns if _canon(c) in _SYMBOL_NAMES]
    if symbols:
        names = sorted(df[symbols[0]].dropna().astype(str).str.strip().str.upper().unique())
        if len(names) > 1:
            raise BarsError(f"bars hold {len(names)} symbols in column {symbols[0]!r} ({', '.join(names[:5])}): "
                            "send the bars of one instrument")
    dates = [c for c in df.columns if _canon(c) in _DATE_NAMES]
    if dates:
        index = _date_index(df[dates[0]], f"column {dates[0]!r}")
    elif isinstance(df.index, pd.DatetimeIndex) or not isinstance(df.index, pd.RangeIndex):
        index = _date_index(df.index, "the index")
    else:
        raise BarsError(f"bars have no dates: add a Date column (found: {found}) or use a date index")
    return df.drop(columns=dates + symbols), index


def _bars_ohlcv(df: pd.DataFrame, found: str) -> pd.DataFrame:
    """The OHLCV (and ``Adj Close``) columns of ``df`` under their canonical names; other
    columns are dropped, a missing or doubled one is refused (``Adj Close`` stands in for Close)."""
    mapping = {}
    for col in df.columns:
        target = _ALIASES.get(_canon(col))
        if target is not None:
            mapping[col] = target
    df = df[list(mapping)].rename(columns=mapping)
    if df.columns.duplicated().any():
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise BarsError(f"bars: column(s) {', '.join(dup)} appear more than once")
    missing = [c for c in OHLCV if c not in df.columns and not (c == "Close" and "Adj Close" in df.columns)]
    if missing:
        raise BarsError(f"bars lack column(s) {', '.join(missing)}: need {_NEED} (found: {found})")
    return df


def _bars_values(df: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """``df`` as float64 OHLCV on ``index``, ``Adj Close`` applied (once it too is a number) as the
    data sources apply it. A value present but no number (text, a bool, a list), missing (NaN, null)
    or infinite is refused with its column and days (a client sends no blank rows: no drop)."""
    cols = [c for c in (*OHLCV, "Adj Close") if c in df.columns]
    numeric = {}
    for col in cols:
        raw = df[col]
        values = pd.to_numeric(raw.map(_plain) if raw.dtype.kind in "bO" else raw, errors="coerce")
        values = values.astype("float64").to_numpy()
        bad = np.isnan(values) & raw.notna().to_numpy()
        if bad.any():
            raise BarsError(f"bars: column {col} has non-numeric value {_show(raw[bad].iloc[0])} on {_days(index, bad, 1)}")
        numeric[col] = values
    values = np.column_stack([numeric[c] for c in cols])
    for mask, what in ((np.isnan(values), "missing values in {} on {} (NaN or null)"),
                       (np.isinf(values), "infinite values in {} on {}")):
        if mask.any():
            names = ", ".join(c for c, m in zip(cols, mask.any(axis=0)) if m)
            raise BarsError("bars: " + what.format(names, _days(index, mask.any(axis=1))))
    return apply_adj_close(pd.DataFrame(numeric, index=index, columns=cols))[list(OHLCV)]


def _plain(x: Any) -> Any:  # a cell for pd.to_numeric: a bool is no number, an int beyond float64 is inf
    if isinstance(x, (bool, np.bool_)):
        return None
    try:
        return float(x) if isinstance(x, int) else x
    except OverflowError:
        return np.inf if x > 0 else -np.inf


def _check_bar_dates(index: pd.DatetimeIndex) -> None:
    """Refuse duplicate or unsorted dates. Unlike a data source this does not sort: a serving
    client that sends bars out of order has a bug worth hearing about."""
    dup = index.duplicated(keep=False)
    if dup.any():
        raise BarsError(f"bars: duplicate dates {_days(index, dup)}: send one bar per day")
    if not index.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(index.asi8) < 0)[0])
        raise BarsError(f"bars: dates are not sorted ({str(index[i + 1])[:10]} comes after {str(index[i])[:10]}): "
                        "send the bars oldest first")


def _bars_checked(df: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """``df`` after the bar rules shared with the data sources (:func:`check_ohlc`), with High
    and Low widened to contain Open and Close exactly as training data were."""
    values = df.to_numpy()
    prices = values[:, :4]
    try:
        hi, lo = check_ohlc(prices, values[:, 4], lambda mask: _days(index, mask))
    except OHLCVProblem as exc:
        raise BarsError(f"bars: {exc}") from None
    if ((hi != prices[:, 1]) | (lo != prices[:, 2])).any():
        df["High"] = hi
        df["Low"] = lo
    return df


class OHLCVProblem(ValueError):
    """A row no price source may deliver; the message names it (without a source prefix)."""


#: No price or volume is above this, and no price below its inverse: no instrument trades out
#: there, and inside it no feature (a ratio or a product of two values) can leave float64's range.
BAR_LIMIT = 1e15


def check_ohlc(prices: np.ndarray, volume: np.ndarray, days: Callable[[np.ndarray], str]) -> tuple[np.ndarray, np.ndarray]:
    """The rules every daily bar meets, for the data sources and served models alike: prices
    (Open, High, Low, Close columns) positive, volume not negative, values within :data:`BAR_LIMIT`,
    High not below Low. Returns High and Low widened to contain Open and Close (vendors round
    adjusted prices independently); :class:`OHLCVProblem` names the days (``days(mask)``) and columns."""
    values = np.column_stack([prices, volume])
    price = np.arange(values.shape[1]) < 4
    rules = (((values <= 0) & price, "non-positive prices", ""), ((values < 0) & ~price, "negative volume", ""),
             ((values > BAR_LIMIT) | ((values < 1 / BAR_LIMIT) & price), "implausible values",
              f": prices lie within [{1 / BAR_LIMIT:g}, {BAR_LIMIT:g}] and volumes below {BAR_LIMIT:g}"))
    for mask, what, why in rules:
        if mask.any():
            cols = ", ".join(c for c, m in zip(OHLCV, mask.any(axis=0)) if m)
            raise OHLCVProblem(f"{what} on {days(mask.any(axis=1))} ({cols}){why}")
    o, h, low, c = (prices[:, i] for i in range(4))
    inverted = h < low
    if inverted.any():
        raise OHLCVProblem(f"High below Low on {days(inverted)}")
    return np.maximum(h, np.maximum(o, c)), np.minimum(low, np.minimum(o, c))


def _day(value: Any, name: str) -> np.datetime64:
    try:
        ts = None if _is_number(value) else pd.Timestamp(value)
    except (ValueError, TypeError):
        ts = None
    if ts is None or pd.isna(ts):
        raise BarsError(f"{name} must be a date such as '2024-01-02', got {_show(value)}")
    return np.datetime64(ts.date(), "D")


def _start_index(levels: np.ndarray, position: Any) -> int:
    allowed = ", ".join(f"{int(v):+d}" if v else "0" for v in levels)
    try:
        p = float(position)
    except (TypeError, ValueError):
        raise BarsError(f"position must be one of {allowed}, got {_show(position)}") from None
    hits = np.flatnonzero(levels == p)
    if not hits.size:
        why = "" if p != -1.0 else " (this model was trained without shorting)"
        raise BarsError(f"position must be one of {allowed}, got {_show(position)}{why}")
    return int(hits[0])


def walk(matrix: np.ndarray, predict: Callable[[np.ndarray], Any], allow_short: bool,
         held: int | None = None) -> np.ndarray:
    """**The policy walk**, the one place it is written (served models and backtests both run
    it, so they cannot drift): the action index of every day of the deterministic policy
    walked over the scaled feature rows ``matrix`` [T, count], starting from action index
    ``held`` (default: flat) coming into day 0. A day's observation is its row followed by the
    position held coming into it (the one chosen the day before), so every (held position,
    day) pair is evaluated in one ``predict`` batch (float32 ``[n_pos * T, count + 1]``) and
    then walked in order: a few forward passes instead of T. ``ValueError`` for actions
    outside ``0..n_pos - 1``."""
    levels = position_levels(allow_short)
    if held is None:
        held = int(np.flatnonzero(levels == 0.0)[0])
    n_pos, (n_days, count) = len(levels), matrix.shape
    obs = np.empty((n_pos, n_days, count + 1), dtype=np.float32)
    obs[:, :, :count] = matrix[None]
    obs[:, :, count] = levels[:, None]
    acts = np.asarray(predict(obs.reshape(n_pos * n_days, count + 1)), dtype=np.int64).reshape(n_pos, n_days)
    if acts.size and (acts.min() < 0 or acts.max() >= n_pos):
        raise ValueError(f"the policy answered actions outside 0..{n_pos - 1}: its action space does not match allow_short")
    table = acts.tolist()
    actions = np.empty(n_days, dtype=np.int64)
    for t in range(n_days):
        held = table[held][t]
        actions[t] = held
    return actions


def signals(
    bars: Any,
    *,
    spec: Mapping[str, Any],
    predict: Callable[[np.ndarray], Any],
    allow_short: bool,
    start: Any = None,
    position: Any = None,
) -> pd.DataFrame:
    """Walk the deterministic policy through ``bars`` and return one row per requested day.

    ``spec``: the model's feature spec (feature count, training scaler); ``predict``: float32
    observations ``[N, feature_count + 1]`` → N action indices (the deterministic policy);
    ``allow_short``: the model's action table. The requested days run from ``start`` (default:
    the first bar whose features are all warm) to the last bar; the walk starts from
    ``position`` (default flat), the position held coming into the first requested day.

    Returns columns :data:`OUTPUT_COLUMNS`: ``date`` (``YYYY-MM-DD``), ``action`` (the action
    index), ``position`` (the target position chosen on that day's close and held to the next
    one: -1, 0 or +1) and ``previous_position`` (the one held coming into the day). The last
    row is tomorrow's target. The same bars and start give the positions a backtest over those
    days gives.

    Raises :class:`BarsError` for bars or parameters it cannot use (too little history among
    them) and :class:`SpecError` for a spec of another catalog."""
    count, mean, std = read_spec(spec)
    frame = clean_bars(bars)
    days = frame.index.values.astype("datetime64[D]")
    n = len(days)
    need = int(LOOKBACKS[:count].max())
    if start is None or (isinstance(start, str) and not start.strip()):
        lo = need
        if n <= need:
            raise BarsError(
                f"bars: too little history: {n} bar(s), but the model's features need {need} bars of warm-up "
                f"before the first day they describe: send at least {need + 1} bars (the last {need} trading "
                "days before the first day you want a position for, and that day)"
            )
    else:
        first = _day(start, "start")
        lo = int(np.searchsorted(days, first, side="left"))
        if lo >= n:
            raise BarsError(f"start {first} is after the last bar ({days[-1]})")
        if lo < need:
            raise BarsError(
                f"bars: too little history before start {first}: {lo} bar(s) before it, but the model's features "
                f"need {need}: send {need - lo} more trading day(s) of bars before {days[0]}"
            )
    levels = position_levels(allow_short)
    held = int(np.flatnonzero(levels == 0.0)[0]) if position is None else _start_index(levels, position)

    raw = catalog(frame)[lo:, :count]
    if not np.isfinite(raw).all():  # cannot happen after the checks above; never hand out NaN
        raise BarsError("bars: the features of the requested days contain NaN: the prices are unusable")
    matrix = scale(raw, mean, std)
    before = levels[held]
    actions = walk(matrix, predict, allow_short, held)
    positions = levels[actions]
    previous = np.concatenate(([before], positions[:-1]))
    return pd.DataFrame({
        "date": np.datetime_as_string(days[lo:], unit="D").astype(object),
        "action": actions,
        "position": positions.astype(np.int64),
        "previous_position": previous.astype(np.int64),
    }, columns=list(OUTPUT_COLUMNS))

