"""The OHLCV contract every data source meets, and the one place that enforces it.

Whatever a source delivers (a yfinance frame, a user's CSV, a generated path), the rest of
trainkit sees the same thing: a daily frame with columns exactly ``Open High Low Close Volume``
(all float64), a tz-naive, midnight-normalised, sorted, unique ``DatetimeIndex`` named ``Date``
(nanosecond unit), no NaN, and ``High >= max(Open, Close) >= min(Open, Close) >= Low > 0``.
:func:`validate_ohlcv` turns a raw frame into that or raises :class:`~trainkit.errors.DataError`
naming the source and the problem, so features and the environment never guard against bad data.

:func:`frame_digest` fingerprints a clean frame (logged as ``trainkit.data_digest``) so two runs
can tell whether they saw the same prices, on any machine.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from trainkit.signals_core import OHLCVProblem, apply_adj_close, check_ohlc  # one set of rules, shared with served models

from trainkit.config import parse_date
from trainkit.errors import ConfigError, DataError

log = logging.getLogger("trainkit")

#: The columns of a clean frame, in this order.
OHLCV_COLUMNS: tuple[str, ...] = ("Open", "High", "Low", "Close", "Volume")
PRICE_COLUMNS: tuple[str, ...] = ("Open", "High", "Low", "Close")

#: Fewest rows a fetch may return; stricter limits (an episode's length) are the caller's business.
MIN_ROWS = 2

_DIGEST_TAG = b"trainkit-ohlcv-v1\n"


@runtime_checkable
class DataFetcher(Protocol):
    """A source of daily OHLCV bars. ``fetch`` is inclusive at both ends and returns a frame that
    passed :func:`validate_ohlcv`, with at least :data:`MIN_ROWS` rows, or raises ``DataError``."""

    name: str

    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame: ...


def canonical_name(name: object) -> str:
    """A column name reduced to lower-case letters and digits (``Adj_Close`` → ``adjclose``)."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


_ALIASES = {
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "volume": "Volume",
    "adjclose": "Adj Close",
    "adjustedclose": "Adj Close",
}


def standardize_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename OHLCV-like columns case- and punctuation-insensitively (``adj_close``,
    ``ADJ CLOSE`` → ``Adj Close``); other columns are left alone."""
    mapping = {}
    for col in frame.columns:
        target = _ALIASES.get(canonical_name(col))
        if target is not None and col != target:
            mapping[col] = target
    return frame.rename(columns=mapping) if mapping else frame


def _first_dates(index: pd.Index, mask: np.ndarray, k: int = 3) -> str:
    dates = [str(pd.Timestamp(d).date()) if isinstance(d, (pd.Timestamp, _dt.date)) else str(d)
             for d in index[mask][:k]]
    more = int(mask.sum()) - len(dates)
    return ", ".join(dates) + (f" and {more} more" if more > 0 else "")


def to_date_index(index: pd.Index, source_label: str) -> pd.DatetimeIndex:
    """A tz-naive, midnight-normalised ``datetime64[ns]`` index named ``Date``. A tz-aware
    index keeps its *local* calendar date (a Yahoo bar stamped 00:00 America/New_York is that
    day, not the previous one in UTC)."""
    if isinstance(index, pd.DatetimeIndex):
        idx = index
    else:
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(index))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source_label}: dates could not be parsed ({exc})") from None
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    if len(idx) and idx.isna().any():
        raise DataError(f"{source_label}: {int(idx.isna().sum())} row(s) have no date")
    return idx.normalize().as_unit("ns").rename("Date")


def validate_ohlcv(frame: pd.DataFrame, source_label: str, *, drop_blank_rows: bool = False) -> pd.DataFrame:
    """Clean and check a daily OHLCV frame; return a new frame that meets the contract above.

    * Columns are matched case-insensitively; ``Adj Close``, if present, adjusts the prices
      (:func:`apply_adj_close`); anything else is dropped.
    * Unsorted dates are sorted; a date that occurs twice is a ``DataError``.
    * ``drop_blank_rows`` drops rows whose four prices are all missing (placeholders such as a
      vendor's holiday rows); any other missing or non-numeric value is a ``DataError``.
    * Prices must be > 0 and Volume >= 0. ``High``/``Low`` are widened to contain ``Open`` and
      ``Close`` (vendors round adjusted prices independently, so a High a cent below the Close is
      common and harmless); ``High < Low`` is a ``DataError``.

    Raises ``DataError`` (message starts with ``source_label``) for anything unusable,
    including an empty frame.

    The steps run in this order on purpose: the first problem a user sees is the first one a
    reader of their file would hit (columns, then values, then dates, then prices).
    """
    df = _ohlcv_columns(frame, source_label)
    df = _as_float64(df, source_label)
    df = _complete_rows(df, source_label, drop_blank_rows)
    df = _sorted_unique_dates(df, source_label)
    return _checked_prices(df, source_label)


def _ohlcv_columns(frame: pd.DataFrame, source_label: str) -> pd.DataFrame:
    """The five OHLCV columns of ``frame`` (``Adj Close`` applied) on a clean date index; the
    columns' problems are reported before any value's, naming what was found instead."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{source_label}: expected a table of prices, got {type(frame).__name__}")
    if frame.empty:
        raise DataError(f"{source_label}: no rows")
    df = apply_adj_close(standardize_columns(frame))
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        found = ", ".join(str(c) for c in frame.columns) or "none"
        raise DataError(f"{source_label}: missing column(s) {', '.join(missing)} (found: {found})")
    if df.columns.duplicated().any():
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise DataError(f"{source_label}: column(s) {', '.join(dup)} appear more than once")

    df = df.loc[:, list(OHLCV_COLUMNS)]
    df.index = to_date_index(df.index, source_label)
    return df


def _as_float64(df: pd.DataFrame, source_label: str) -> pd.DataFrame:
    """``df`` as float64; a value that is present but not a number is a ``DataError`` naming it
    and its day (a missing value is left as NaN for :func:`_complete_rows` to judge)."""
    numeric = {}
    for col in OHLCV_COLUMNS:
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = values.isna().to_numpy() & raw.notna().to_numpy()
        if bad.any():
            first = raw[bad].iloc[0]
            raise DataError(
                f"{source_label}: column {col} has non-numeric value {first!r} on {_first_dates(df.index, bad, 1)}"
            )
        numeric[col] = values.to_numpy()
    return pd.DataFrame(numeric, index=df.index, columns=list(OHLCV_COLUMNS))


def _complete_rows(df: pd.DataFrame, source_label: str, drop_blank_rows: bool) -> pd.DataFrame:
    """``df`` without its blank rows (only when ``drop_blank_rows``: a vendor's placeholders);
    any other missing or infinite value is a ``DataError`` naming its columns and days."""
    if drop_blank_rows:
        blank = np.isnan(df[list(PRICE_COLUMNS)].to_numpy()).all(axis=1)
        if blank.any():
            df = df[~blank]
    if df.empty:
        raise DataError(f"{source_label}: no rows with prices")
    values = df.to_numpy()
    nan = np.isnan(values)
    if nan.any():
        rows = nan.any(axis=1)
        cols = [c for c, m in zip(OHLCV_COLUMNS, nan.any(axis=0)) if m]
        raise DataError(
            f"{source_label}: missing values in {', '.join(cols)} on {_first_dates(df.index, rows)}"
        )
    if not np.isfinite(values).all():
        rows = (~np.isfinite(values)).any(axis=1)
        raise DataError(f"{source_label}: infinite values on {_first_dates(df.index, rows)}")
    return df


def _sorted_unique_dates(df: pd.DataFrame, source_label: str) -> pd.DataFrame:
    """``df`` in date order (a stable sort: files are often newest first); a date that occurs
    twice is a ``DataError``, since which of the two bars is right cannot be guessed."""
    if not df.index.is_monotonic_increasing:
        df = df.sort_index(kind="mergesort")
    dup = df.index.duplicated(keep=False)
    if dup.any():
        raise DataError(f"{source_label}: duplicate dates {_first_dates(df.index, dup)}")
    return df


def _checked_prices(df: pd.DataFrame, source_label: str) -> pd.DataFrame:
    """``df`` after the bar rules shared with served models (:func:`check_ohlc`), with High and
    Low widened to contain Open and Close where a vendor's rounding left them a cent short."""
    prices = df[list(PRICE_COLUMNS)].to_numpy()
    try:
        hi, lo = check_ohlc(prices, df["Volume"].to_numpy(), lambda mask: _first_dates(df.index, mask))
    except OHLCVProblem as exc:
        raise DataError(f"{source_label}: {exc}") from None
    widened = int(((hi != prices[:, 1]) | (lo != prices[:, 2])).sum())
    if widened:
        log.debug("%s: widened High/Low to contain Open/Close on %d row(s)", source_label, widened)
        df["High"] = hi
        df["Low"] = lo
    return df


def slice_window(frame: pd.DataFrame, start: _dt.date, end: _dt.date, source_label: str) -> pd.DataFrame:
    """Rows of a clean frame within ``[start, end]`` (inclusive), as a new frame; ``DataError``
    when fewer than :data:`MIN_ROWS` remain."""
    lo = np.datetime64(pd.Timestamp(start).normalize().as_unit("ns").to_datetime64())
    hi = np.datetime64(pd.Timestamp(end).normalize().as_unit("ns").to_datetime64())
    idx = frame.index.to_numpy()
    i, j = np.searchsorted(idx, lo, "left"), np.searchsorted(idx, hi, "right")
    out = frame.iloc[i:j].copy()
    if len(out) < MIN_ROWS:
        span = f"{frame.index[0].date()}..{frame.index[-1].date()}" if len(frame) else "nothing"
        raise DataError(
            f"{source_label}: only {len(out)} trading day(s) in {start}..{end} "
            f"(the data covers {span}); need at least {MIN_ROWS}"
        )
    return out


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 (hex) of a clean frame's canonical bytes: a tag, the row count, the index as
    little-endian int64 nanoseconds and the five columns as little-endian float64, column by
    column. Independent of pandas' index unit, memory layout and the machine's byte order."""
    idx = pd.DatetimeIndex(frame.index)
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    h = hashlib.sha256(_DIGEST_TAG)
    h.update(len(frame).to_bytes(8, "little"))
    h.update(np.ascontiguousarray(idx.as_unit("ns").asi8, dtype="<i8").tobytes())
    for col in OHLCV_COLUMNS:
        h.update(np.ascontiguousarray(frame[col].to_numpy(), dtype="<f8").tobytes())
    return h.hexdigest()


def as_date(value: object, name: str) -> _dt.date:
    """A ``datetime.date`` from a date, datetime, pandas Timestamp or ISO string."""
    if isinstance(value, pd.Timestamp):
        return value.date()
    return parse_date(value, name)


def check_window(start: object, end: object) -> tuple[_dt.date, _dt.date]:
    """Parse and order-check a fetch window (``start <= end``; ``ConfigError`` otherwise)."""
    s, e = as_date(start, "start"), as_date(end, "end")
    if s > e:
        raise ConfigError(f"start {s} is after end {e}: swap them")
    return s, e
