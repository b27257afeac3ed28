"""Market data: daily OHLCV frames from Yahoo (yfinance), a user's CSV or a synthetic path.

Every source returns the same clean frame (see :mod:`trainkit.data.base`). Callers normally use
:meth:`DataFetcherFactory.fetch`, which also handles the fallback from yfinance to synthetic data
and reports what was actually used (:class:`FetchResult`).

Importing this package imports pandas and numpy, never yfinance (only a live fetch does).
"""

from __future__ import annotations

from trainkit.data.base import (
    MIN_ROWS,
    OHLCV_COLUMNS,
    DataFetcher,
    frame_digest,
    slice_window,
    validate_ohlcv,
)
from trainkit.data.csv import CsvFetcher
from trainkit.data.factory import DataFetcherFactory, FetchResult, canonical_source
from trainkit.data.synthetic import SyntheticFetcher, synthetic_ohlcv
from trainkit.data.yahoo import YahooFetcher

__all__ = [
    "MIN_ROWS",
    "OHLCV_COLUMNS",
    "CsvFetcher",
    "DataFetcher",
    "DataFetcherFactory",
    "FetchResult",
    "SyntheticFetcher",
    "YahooFetcher",
    "canonical_source",
    "frame_digest",
    "slice_window",
    "synthetic_ohlcv",
    "validate_ohlcv",
]
