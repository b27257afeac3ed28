"""A user's own daily prices from a CSV file (``data_source="csv:PATH"``).

The file is one instrument (the symbol is a label, except as below). What is accepted:

* Dates: a column named ``Date`` (also ``Datetime``, ``Timestamp``, ``Time``; any case) or else
  the first column. ISO dates are best; anything pandas parses works, and offsets such as
  ``2020-01-02 00:00:00-05:00`` keep their local date.
* Columns ``Open High Low Close Volume``, matched case- and punctuation-insensitively; other
  columns are ignored.
* ``Adj Close`` (optional) is *used*: Open/High/Low are scaled by ``Adj Close / Close`` and Close
  becomes ``Adj Close``, the same split/dividend adjustment the yfinance source applies
  (``auto_adjust=True``), so a file exported from Yahoo trains on the same prices as a download.
  Drop the column to train on raw prices.
* A ``Symbol``/``Ticker`` column, if present, selects the rows of the requested symbol.
* Unsorted dates are sorted. Everything else that is wrong — a missing or empty file, missing
  columns, an unparseable date, a duplicate date, a missing or non-numeric value, a non-positive
  price, too few rows in the window — is a :class:`~trainkit.errors.DataError` naming the file.
  A broken CSV never falls back to another source: the user asked for *this* file.

Parsed files are cached per process on their *content* (the sha256 of the bytes, the same
:func:`trainkit.config.file_sha256` that names the file in the config hash), never on the file's
modification time or size: an edit is seen at once, however quickly it follows the last read.
The hash is taken again after parsing; a file that changed while it was read is read again.
``CsvFetcher(path, sha256=...)`` also refuses content other than the one a config was hashed on.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections import OrderedDict

import pandas as pd

from trainkit.config import file_sha256, validate_symbol
from trainkit.data.base import (
    canonical_name,
    check_window,
    slice_window,
    to_date_index,
    validate_ohlcv,
)
from trainkit.errors import DataError
from trainkit.sources import canonical_source, parse_data_source

_DATE_NAMES = ("date", "datetime", "timestamp", "time")
_SYMBOL_NAMES = ("symbol", "ticker")
_OFFSET_RE = r"\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})$"


def _read(path: str) -> pd.DataFrame:
    label = f"CSV {path}"
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{label}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise DataError(f"{label}: not a readable CSV ({msg})") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    if raw.empty:
        raise DataError(f"{label}: the file has a header but no rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _date_column(raw: pd.DataFrame) -> str:
    for col in raw.columns:
        if canonical_name(col) in _DATE_NAMES:
            return col
    return raw.columns[0]


def _parse_dates(values: pd.Series, label: str, column: str) -> pd.DatetimeIndex:
    text = values.astype("string").str.strip()
    empty = text.isna() | (text == "")
    if empty.any():
        line = int(empty.to_numpy().nonzero()[0][0]) + 2  # 1-based, after the header line
        raise DataError(f"{label}: empty date in column {column!r} on line {line}")
    try:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    except (ValueError, TypeError):
        # UTC offsets that change within the file (daylight saving in an export such as
        # "2020-01-02 00:00:00-05:00"): each row's local wall-clock date is the one meant
        local = text.str.replace(_OFFSET_RE, "", regex=True)
        try:
            parsed = pd.to_datetime(local, errors="coerce", format="mixed")
        except (ValueError, TypeError) as exc:
            raise DataError(f"{label}: dates in column {column!r} could not be parsed ({exc})") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise DataError(
            f"{label}: unparseable date {text.iloc[i]!r} in column {column!r} on line {i + 2} "
            "(use YYYY-MM-DD, or name the date column 'Date')"
        )
    return to_date_index(pd.DatetimeIndex(parsed), label)


#: Parsed files kept per process, keyed on (path, content sha256, symbol); least recently used goes.
_CACHE_SIZE = 16
_cache: OrderedDict[tuple[str, str, str], pd.DataFrame] = OrderedDict()
_cache_lock = threading.Lock()
#: Reads of a file that keeps changing while it is read, before giving up.
_ATTEMPTS = 3


def _cached(key: tuple[str, str, str]) -> pd.DataFrame | None:
    with _cache_lock:
        frame = _cache.get(key)
        if frame is not None:
            _cache.move_to_end(key)
        return frame


def _remember(key: tuple[str, str, str], frame: pd.DataFrame) -> None:
    with _cache_lock:
        _cache[key] = frame
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every parsed file (tests; a long-lived process that wants to free memory)."""
    with _cache_lock:
        _cache.clear()


def _parse(path: str, symbol: str) -> pd.DataFrame:
    """The whole file, validated (no caching)."""
    label = f"CSV {path}"
    raw = _read(path)
    sym_cols = [c for c in raw.columns if canonical_name(c) in _SYMBOL_NAMES]
    if sym_cols:
        col = sym_cols[0]
        keep = raw[col].astype("string").str.strip().str.upper() == symbol
        if not keep.any():
            have = sorted(raw[col].dropna().astype(str).str.strip().str.upper().unique())[:5]
            raise DataError(f"{label}: no rows for {symbol} in column {col!r} (found {', '.join(have)})")
        raw = raw[keep.fillna(False).to_numpy()].reset_index(drop=True)
    date_col = _date_column(raw)
    index = _parse_dates(raw[date_col], label, date_col)
    frame = raw.drop(columns=[date_col] + sym_cols)
    frame.index = index
    return validate_ohlcv(frame, label)


class CsvFetcher:
    """Prices from one CSV file (see the module docstring for the accepted format)."""

    name = "csv"

    def __init__(self, path: str, *, sha256: str | None = None) -> None:
        if not isinstance(path, str) or not path.strip():
            raise DataError("csv data source needs a file path, e.g. csv:prices/AAPL.csv")
        #: the canonical source string, ``csv:/absolute/path`` (the registry's one spelling)
        self.source: str = canonical_source(f"{self.name}:{path}")
        self.path: str = parse_data_source(self.source)[1]  # type: ignore[assignment]
        self.expected_sha256 = sha256.lower() if sha256 else None

    def sha256(self) -> str:
        """The sha256 of the file's content now (``DataError`` if it cannot be read)."""
        try:
            if os.path.isdir(self.path):
                raise DataError(f"CSV {self.path}: is a directory, not a file")
            return file_sha256(self.path)
        except FileNotFoundError:
            raise DataError(f"CSV file not found: {self.path}") from None
        except OSError as exc:
            raise DataError(f"CSV {self.path}: cannot be read ({exc.strerror or exc})") from None

    def load(self, symbol: str) -> pd.DataFrame:
        """The whole file as a clean frame (a copy), parsed once per content."""
        sym = validate_symbol(symbol)
        for _ in range(_ATTEMPTS):
            digest = self.sha256()
            if self.expected_sha256 is not None and digest != self.expected_sha256:
                raise DataError(
                    f"CSV {self.path}: the file changed since its hash was taken "
                    f"(sha256 {self.expected_sha256[:12]}… expected, {digest[:12]}… now)"
                )
            key = (self.path, digest, sym)
            frame = _cached(key)
            if frame is not None:
                return frame.copy()
            frame = _parse(self.path, sym)
            if self.sha256() == digest:  # not rewritten while it was parsed
                _remember(key, frame)
                return frame.copy()
        raise DataError(f"CSV {self.path}: the file kept changing while it was read; try again when it is written")

    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        s, e = check_window(start, end)
        frame = self.load(symbol)
        return slice_window(frame, s, e, f"CSV {self.path}")

    def __repr__(self) -> str:
        extra = f", sha256={self.expected_sha256!r}" if self.expected_sha256 else ""
        return f"CsvFetcher({self.path!r}{extra})"
