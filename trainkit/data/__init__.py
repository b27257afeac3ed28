"""Market data: daily OHLCV frames from Yahoo (yfinance), a user's CSV or a synthetic path.

Every source returns the same clean frame (see :mod:`trainkit.data.base`). Callers normally use
:meth:`DataFetcherFactory.fetch`, which also handles the fallback from yfinance to synthetic data
and reports what was actually used (:class:`FetchResult`); :func:`cached_digest` tells, without
the network, whether the data of a window are still the ones a model was trained on.

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
from trainkit.data.factory import DataFetcherFactory, FetchResult, build_fetcher, cached_digest
from trainkit.data.synthetic import SyntheticFetcher, synthetic_ohlcv
from trainkit.data.yahoo import DownloadCache, YahooFetcher
from trainkit.sources import canonical_source  # the registry's, re-exported for callers of trainkit.data

__all__ = [
    "MIN_ROWS",
    "OHLCV_COLUMNS",
    "CsvFetcher",
    "DataFetcher",
    "DataFetcherFactory",
    "DownloadCache",
    "FetchResult",
    "SyntheticFetcher",
    "YahooFetcher",
    "build_fetcher",
    "cached_digest",
    "canonical_source",
    "frame_digest",
    "slice_window",
    "synthetic_ohlcv",
    "validate_ohlcv",
]
