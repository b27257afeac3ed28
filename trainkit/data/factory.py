"""Choosing a data source, and falling back when Yahoo does not answer.

``DataFetcherFactory.create`` maps a source string to a fetcher: the one its row of the source
registry (:mod:`trainkit.sources`) names, built with the options of the request that its
constructor declares (:data:`FETCHER_OPTIONS`). ``DataFetcherFactory.fetch`` is what the
manager and backtests call: it fetches, falls back to synthetic data when a source that
``may_fall_back`` (yfinance) fails (unless told not to), and returns a :class:`FetchResult`
that says which source was asked for, which one delivered, why it fell back, and the digest of
the frame actually used — everything the MLflow tags record. The fallback is loud: a warning
on the ``trainkit`` logger and the reason in the result. A CSV never falls back (the user's own
file is broken: that is an error to fix, not to paper over), and synthetic data has nothing to
fall back to.

:func:`cached_digest` answers "what digest would that fetch have today?" without the network
(the local download cache, the file, or the synthetic generator), so a cache hit can tell the
user that a model's training data have changed since it was trained.

``DataFetcherFactory.probe`` answers "does the requested source deliver now?" once per process
per (source, symbol), so a model trained on fallback data can be retrained once Yahoo is back
(docs/ARCHITECTURE.md, "The cache") without re-asking on every cache hit.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import threading
from typing import Any

from trainkit.config import default_data_seed, validate_symbol
from trainkit.data.base import DataFetcher, check_window, frame_digest
from trainkit.errors import DataError
from trainkit.provenance import FetchResult
from trainkit.sources import FALLBACK_KIND, canonical_source, parse_data_source, source_spec

log = logging.getLogger("trainkit")

#: Seconds a probe of Yahoo may take (shorter than a fetch: it only decides whether to retrain).
PROBE_TIMEOUT = 5.0


#: The options of a request a fetcher's constructor may declare, by keyword: ``path`` (the
#: absolute path of a source that ``takes_path``), ``sha256`` (the content that file must have),
#: ``data_seed`` (of generated data; ``None``: the symbol's default) and ``timeout`` (seconds a
#: network call may take; ``None``: the source's default). A fetcher gets those it declares.
FETCHER_OPTIONS: tuple[str, ...] = ("path", "sha256", "data_seed", "timeout")


def build_fetcher(source: str, **options: Any) -> DataFetcher:
    """The fetcher of ``source``'s registry row, given the :data:`FETCHER_OPTIONS` its
    constructor declares (an option it does not declare does not apply to it)."""
    kind, path = parse_data_source(canonical_source(source))
    unknown = set(options) - set(FETCHER_OPTIONS)
    if unknown:
        raise TypeError(f"unknown fetcher option(s): {', '.join(sorted(unknown))}")
    cls = source_spec(kind).fetcher_class()
    declared = inspect.signature(cls).parameters
    given = {"path": path, **options}
    return cls(**{k: v for k, v in given.items() if k in declared})


class DataFetcherFactory:
    """Source strings → fetchers; fetch with fallback; probe once per process."""

    _probes: dict[tuple[str, str], bool] = {}
    _probe_lock = threading.Lock()

    @staticmethod
    def create(
        source: str, *, data_seed: int | None = None, timeout: float | None = None, csv_sha256: str | None = None
    ) -> DataFetcher:
        """A fetcher for a source string (``"yfinance"``, ``"synthetic"``, ``"csv:<path>"`` …:
        :func:`build_fetcher`). ``data_seed`` applies to synthetic data (``None``: the symbol's
        default), ``timeout`` to yfinance (``None``: ``TRAINKIT_YF_TIMEOUT`` or 10 s),
        ``csv_sha256`` to a source read from a file (``DataError`` when the file's content is not
        that one any more, e.g. the config's ``csv_sha256``)."""
        return build_fetcher(source, data_seed=data_seed, timeout=timeout, sha256=csv_sha256)

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
        """Fetch ``[start, end]`` of ``symbol`` from ``source``; when a source that
        ``may_fall_back`` (yfinance) fails, use the synthetic path of ``(symbol, data_seed or
        default_data_seed(symbol))`` instead, log a warning and say why in the result.
        ``no_fallback=True`` makes that failure a ``DataError``. Errors of the other sources
        (CSV, synthetic) are raised as they are; ``csv_sha256`` pins a CSV's content (see
        :meth:`create`). ``data_seed`` of the result: what the fetcher that delivered says
        (``seed_for``), for generated data only."""
        requested = canonical_source(source)
        sym = validate_symbol(symbol)
        s, e = check_window(start, end)
        fetcher = cls.create(requested, data_seed=data_seed, timeout=timeout, csv_sha256=csv_sha256)
        try:
            frame = fetcher.fetch(sym, s, e)
        except DataError as exc:
            if not source_spec(parse_data_source(requested)[0]).may_fall_back:
                raise
            reason = str(exc)
            if no_fallback:
                raise DataError(f"{reason}; not falling back to synthetic data because --no-fallback was given") from None
            seed = default_data_seed(sym) if data_seed is None else int(data_seed)
            log.warning(
                "%s failed for %s (%s); falling back to synthetic data (data_seed=%d) — "
                "these are simulated prices, not market data",
                requested, sym, reason, seed,
            )
            frame = build_fetcher(FALLBACK_KIND, data_seed=seed).fetch(sym, s, e)
            return FetchResult(requested, FALLBACK_KIND, reason, frame_digest(frame), seed, frame=frame)
        return FetchResult(requested, requested, None, frame_digest(frame), _seed_of(fetcher, sym), frame=frame)

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

    * a network source (``yfinance``; its fetcher has a ``cached(symbol, start, end)`` method):
      from what that method answers offline — for yfinance the local download cache only (its
      stored rows, the ones a fetch serves: see :mod:`trainkit.data.yahoo`); ``None`` when it
      does not cover the window.
    * any other source, whose fetch is local: from the fetch — ``csv:PATH`` from the file as it
      is now, ``synthetic`` from the generator (deterministic for ``(symbol, data_seed)``;
      ``None`` means the symbol's default seed).

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
        fetcher: Any = build_fetcher(requested, data_seed=data_seed)
        offline = getattr(fetcher, "cached", None)  # a network source's offline answer
        frame = offline(sym, s, e) if offline is not None else fetcher.fetch(sym, s, e)
    except DataError as exc:
        log.debug("no local digest of %s %s %s..%s (%s)", requested, sym, s, e, exc)
        return None
    return None if frame is None else frame_digest(frame)


def _seed_of(fetcher: Any, symbol: str) -> int | None:
    """The seed a fetcher of generated data used for ``symbol`` (its ``seed_for``); ``None``
    for market data."""
    seed_for = getattr(fetcher, "seed_for", None)
    return None if seed_for is None else int(seed_for(symbol))
