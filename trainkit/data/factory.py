"""Choosing a data source, and falling back when Yahoo does not answer.

``DataFetcherFactory.create`` maps a source string to a fetcher. ``DataFetcherFactory.fetch`` is
what the manager and backtests call: it fetches, falls back from yfinance to synthetic data when
Yahoo fails (unless told not to), and returns a :class:`FetchResult` that says which source was
asked for, which one delivered, why it fell back, and the digest of the frame actually used —
everything the MLflow tags record. The fallback is loud: a warning on the ``trainkit`` logger
and the reason in the result. A CSV never falls back (the user's own file is broken: that is
an error to fix, not to paper over), and synthetic data has nothing to fall back to.

:func:`cached_digest` answers "what digest would that fetch have today?" without the network
(the local download cache, the file, or the synthetic generator), so a cache hit can tell the
user that a model's training data have changed since it was trained.

``DataFetcherFactory.probe`` answers "does the requested source deliver now?" once per process
per (source, symbol), so a model trained on fallback data can be retrained once Yahoo is back
(docs/ARCHITECTURE.md, "The cache") without re-asking on every cache hit.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import pandas as pd

from trainkit.config import default_data_seed, parse_data_source, validate_symbol
from trainkit.data.base import DataFetcher, check_window, frame_digest
from trainkit.data.csv import CsvFetcher
from trainkit.data.synthetic import SyntheticFetcher
from trainkit.data.yahoo import YahooFetcher
from trainkit.errors import DataError

log = logging.getLogger("trainkit")

#: Seconds a probe of Yahoo may take (shorter than a fetch: it only decides whether to retrain).
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class FetchResult:
    """The frame a run used and where it came from.

    ``requested_source``: ``"yfinance"``, ``"synthetic"`` or ``"csv:/abs/path"``;
    ``effective_source``: the one that delivered ``frame``; ``fallback_reason``: why it differs
    (``None`` when it does not); ``digest``: :func:`~trainkit.data.base.frame_digest` of ``frame``;
    ``data_seed``: the synthetic seed when synthetic data was used, else ``None``.
    """

    frame: pd.DataFrame
    requested_source: str
    effective_source: str
    fallback_reason: str | None
    digest: str
    data_seed: int | None = None

    @property
    def fell_back(self) -> bool:
        return self.effective_source != self.requested_source


def canonical_source(source: str) -> str:
    """``yfinance``, ``synthetic`` or ``csv:/absolute/path`` (``ConfigError`` if unknown)."""
    kind, path = parse_data_source(source)
    if kind == "csv":
        return f"csv:{os.path.abspath(os.path.expanduser(path))}"  # type: ignore[arg-type]
    return kind


class DataFetcherFactory:
    """Source strings → fetchers; fetch with fallback; probe once per process."""

    _probes: dict[tuple[str, str], bool] = {}
    _probe_lock = threading.Lock()

    @staticmethod
    def create(
        source: str, *, data_seed: int | None = None, timeout: float | None = None, csv_sha256: str | None = None
    ) -> DataFetcher:
        """A fetcher for ``"yfinance"``, ``"synthetic"`` or ``"csv:<path>"``. ``data_seed``
        applies to synthetic data (``None``: the symbol's default), ``timeout`` to yfinance
        (``None``: ``TRAINKIT_YF_TIMEOUT`` or 10 s), ``csv_sha256`` to a CSV (``DataError`` when
        the file's content is not that one any more, e.g. the config's ``csv_sha256``)."""
        kind, path = parse_data_source(source)
        if kind == "yfinance":
            return YahooFetcher(timeout=timeout)
        if kind == "synthetic":
            return SyntheticFetcher(data_seed=data_seed)
        return CsvFetcher(path, sha256=csv_sha256)  # type: ignore[arg-type]

    @classmethod
    def fetch(
        cls,
        source: str,
        symbol: str,
        start: _dt.date,
        end: _dt.date,
        *,
        data_seed: int | None = None,
        no_fallback: bool = False,
        timeout: float | None = None,
        csv_sha256: str | None = None,
    ) -> FetchResult:
        """Fetch ``[start, end]`` of ``symbol`` from ``source``; when yfinance fails, use the
        synthetic path of ``(symbol, data_seed or default_data_seed(symbol))`` instead, log a
        warning and say why in the result. ``no_fallback=True`` makes that failure a
        ``DataError``. Errors of CSV and synthetic sources are raised as they are;
        ``csv_sha256`` pins a CSV's content (see :meth:`create`)."""
        requested = canonical_source(source)
        sym = validate_symbol(symbol)
        s, e = check_window(start, end)
        fetcher = cls.create(requested, data_seed=data_seed, timeout=timeout, csv_sha256=csv_sha256)
        try:
            frame = fetcher.fetch(sym, s, e)
        except DataError as exc:
            if requested != "yfinance":
                raise
            reason = str(exc)
            if no_fallback:
                raise DataError(f"{reason}; not falling back to synthetic data because --no-fallback was given") from None
            seed = default_data_seed(sym) if data_seed is None else int(data_seed)
            log.warning(
                "yfinance failed for %s (%s); falling back to synthetic data (data_seed=%d) — "
                "these are simulated prices, not market data",
                sym, reason, seed,
            )
            frame = SyntheticFetcher(data_seed=seed).fetch(sym, s, e)
            return FetchResult(frame, requested, "synthetic", reason, frame_digest(frame), seed)
        seed_used = fetcher.seed_for(sym) if isinstance(fetcher, SyntheticFetcher) else None
        return FetchResult(frame, requested, requested, None, frame_digest(frame), seed_used)

    @classmethod
    def probe(cls, source: str, symbol: str, start: _dt.date, end: _dt.date) -> bool:
        """Does ``source`` deliver ``[start, end]`` of ``symbol`` now? Asked at most once per
        process per (source, symbol); a covering download in the disk cache counts as answering
        (and a successful probe fills that cache, so the retrain that follows is offline).
        Never raises for data problems: ``False`` then."""
        requested = canonical_source(source)
        sym = validate_symbol(symbol)
        s, e = check_window(start, end)
        key = (requested, sym)
        with cls._probe_lock:
            if key in cls._probes:
                return cls._probes[key]
        answer = cls._ask(requested, sym, s, e)
        with cls._probe_lock:
            return cls._probes.setdefault(key, answer)

    @classmethod
    def _ask(cls, source: str, symbol: str, start: _dt.date, end: _dt.date) -> bool:
        fetcher: Any = cls.create(source, timeout=PROBE_TIMEOUT)
        try:
            fetcher.fetch(symbol, start, end)
        except DataError as exc:
            log.info("probe of %s for %s %s..%s: no answer (%s)", source, symbol, start, end, exc)
            return False
        return True

    @classmethod
    def reset_probes(cls) -> None:
        """Forget every probe answer (tests; a long-lived process that wants to ask again)."""
        with cls._probe_lock:
            cls._probes.clear()


def cached_digest(
    source: str, symbol: str, start: _dt.date, end: _dt.date, data_seed: int | None = None
) -> str | None:
    """The :func:`~trainkit.data.base.frame_digest` that ``DataFetcherFactory.fetch(source,
    symbol, start, end, data_seed=data_seed).digest`` would have today when ``source``
    delivers, computed WITHOUT any network call:

    * ``yfinance``: from the local download cache only (its stored rows, the ones a fetch
      serves: see :mod:`trainkit.data.yahoo`); ``None`` when the cache does not cover the window.
    * ``csv:PATH``: from the file as it is now.
    * ``synthetic``: from the generator (deterministic for ``(symbol, data_seed)``; ``None``
      means the symbol's default seed).

    ``None`` also when the data cannot be read or the window has too few rows (the fetch would
    fail; there is nothing to compare). For a model, pass the source that delivered its data
    (tag ``trainkit.data_source_effective``: a fallback model's digest is the synthetic one),
    its ``data_seed`` and the window it was fetched for (``warmup_start(train_start)..train_end``),
    and compare with its ``trainkit.data_digest``. ``ConfigError`` for an invalid source,
    symbol or window."""
    requested = canonical_source(source)
    sym = validate_symbol(symbol)
    s, e = check_window(start, end)
    try:
        if requested == "yfinance":
            frame = YahooFetcher().cached(sym, s, e)
        else:
            frame = DataFetcherFactory.create(requested, data_seed=data_seed).fetch(sym, s, e)
    except DataError as exc:
        log.debug("no local digest of %s %s %s..%s (%s)", requested, sym, s, e, exc)
        return None
    return None if frame is None else frame_digest(frame)
