"""Daily prices from Yahoo Finance through yfinance, with an on-disk cache.

yfinance is imported here only, and only inside functions, so ``import trainkit`` and the CLI's
``--help`` never pay for it.

What this module copes with (yfinance 1.x):

* ``yf.download`` returns ``(Price, Ticker)`` MultiIndex columns by default (``(Ticker, Price)``
  with ``group_by="ticker"``, flat columns with ``multi_level_index=False``); all are accepted.
* Prices are requested split/dividend-adjusted (``auto_adjust=True``). A frame that still carries
  ``Adj Close`` (older yfinance, ``auto_adjust=False``) is adjusted here the same way.
* The index is tz-aware in the exchange's zone (or naive); each bar keeps its *local* date.
* Offline, rate-limited or for an unknown symbol yfinance does not raise: it logs and returns an
  EMPTY frame. That becomes a :class:`~trainkit.errors.DataError` with the reason yfinance logged.
* yfinance's own timeouts do not bound a whole call (its cookie request alone may wait 30 s), so
  the call runs in a worker thread and is abandoned after ``timeout`` seconds (default 10,
  ``TRAINKIT_YF_TIMEOUT`` overrides).
* yfinance's ``end`` is exclusive; trainkit's windows are inclusive.

Proxy: ``TRAINKIT_YF_PROXY`` (a URL such as ``http://proxy.corp:3128`` or ``socks5h://host:1080``)
routes every request yfinance makes through that proxy; nothing else in trainkit (MLflow's HTTP
calls in particular) uses it. An explicit ``session`` given to :class:`YahooFetcher` is used as
it is and ignores the variable. A failed fetch names the proxy it went through. trainkit's tests
point it at a closed port on 127.0.0.1, so Yahoo is unreachable on purpose in every test.

The download cache
------------------
:meth:`YahooFetcher.fetch` answers from the local download cache
(:class:`~trainkit.data.download_cache.DownloadCache`, re-exported here) when it covers the
window, and otherwise downloads the union of the requested and covered windows once and merges
it there; stored rows are never rewritten by a download, Yahoo's revisions are kept beside them
until adopted with ``DownloadCache().refresh(symbol)``. The rules are in
:mod:`trainkit.data.download_cache`. The one cache decision taken here is what "today" is
(:func:`_today`): a window reaching today is covered only up to yesterday (today's bar is not
final), so such rows are returned but not stored.

yfinance's own small caches (time zones, cookies) are kept under ``<cache>/yfinance`` as well.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import threading
import warnings
from typing import Any

import pandas as pd

from trainkit import settings
from trainkit.config import validate_symbol
from trainkit.data.base import (
    OHLCV_COLUMNS,
    check_window,
    slice_window,
    standardize_columns,
    validate_ohlcv,
)
from trainkit.data.download_cache import (  # re-exported: importable from here as before the split
    LOCK_TIMEOUT,
    REFRESH_HINT,
    DownloadCache,
    MergeOutcome,
    cache_dir,
)
from trainkit.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_TIMEOUT",
    "LOCK_TIMEOUT",
    "REFRESH_HINT",
    "DownloadCache",
    "MergeOutcome",
    "YahooFetcher",
    "cache_dir",
    "clean_download",
    "default_timeout",
    "normalize_download",
    "yf_proxy",
]

log = logging.getLogger("trainkit")

DEFAULT_TIMEOUT = settings.TRAINKIT_YF_TIMEOUT.default
_yf_cache_location: str | None = None
_yf_lock = threading.Lock()


# ---------------------------------------------------------------------------------- settings
def default_timeout() -> float:
    """Seconds a live Yahoo call may take: ``TRAINKIT_YF_TIMEOUT`` or 10."""
    return settings.TRAINKIT_YF_TIMEOUT.get()


def yf_proxy() -> str | None:
    """The proxy every yfinance request goes through: ``TRAINKIT_YF_PROXY`` (a URL
    ``scheme://host[:port]`` with scheme http, https, socks4, socks4a, socks5 or socks5h), or
    ``None`` when unset. ``ConfigError`` (one line) for anything else."""
    return settings.TRAINKIT_YF_PROXY.get()


_redact = settings.redact_url


# ------------------------------------------------------------------------ shape of a download
def normalize_download(raw: Any, symbol: str) -> pd.DataFrame:
    """Flatten whatever ``yf.download``/``Ticker.history`` returned for ``symbol`` to single-level
    columns (``Open``, ``High``, …, maybe ``Adj Close``); no validation yet. An empty or ``None``
    result, or one without the symbol, raises ``DataError``."""
    if raw is None or not isinstance(raw, pd.DataFrame):
        raise DataError(f"yfinance returned nothing usable for {symbol} ({type(raw).__name__})")
    frame = raw
    if isinstance(frame.columns, pd.MultiIndex):
        fields = {"open", "high", "low", "close", "adjclose", "volume"}
        price_level = None
        for lvl in range(frame.columns.nlevels):
            names = {"".join(ch for ch in str(v).lower() if ch.isalnum()) for v in frame.columns.get_level_values(lvl)}
            if names & fields:
                price_level = lvl
                break
        if price_level is None:
            raise DataError(f"yfinance returned columns without prices for {symbol}: {list(frame.columns)[:6]}")
        other = [lvl for lvl in range(frame.columns.nlevels) if lvl != price_level]
        if other:
            tickers = frame.columns.droplevel(price_level)
            keys = [t if isinstance(t, tuple) else (t,) for t in tickers]
            wanted = [i for i, k in enumerate(keys) if any(str(x).upper() == symbol for x in k)]
            if not wanted:
                distinct = sorted({" ".join(map(str, k)) for k in keys})
                if len(distinct) != 1:
                    raise DataError(f"yfinance returned {', '.join(distinct)} but not {symbol}")
                wanted = list(range(len(keys)))
            frame = frame.iloc[:, wanted]
        frame = frame.copy()
        frame.columns = [str(c) for c in frame.columns.get_level_values(price_level)]
    frame = standardize_columns(frame)
    if frame.empty or not any(c in frame.columns for c in OHLCV_COLUMNS):
        raise DataError(f"yfinance returned no rows for {symbol}")
    prices = [c for c in ("Open", "High", "Low", "Close", "Adj Close") if c in frame.columns]
    if frame[prices].isna().all().all():
        raise DataError(f"yfinance returned no prices for {symbol}")
    return frame


def clean_download(raw: Any, symbol: str) -> pd.DataFrame:
    """:func:`normalize_download` + :func:`~trainkit.data.base.validate_ohlcv`: a clean frame."""
    return validate_ohlcv(normalize_download(raw, symbol), f"yfinance data for {symbol}", drop_blank_rows=True)


# ---------------------------------------------------------------------------- live download
def _today() -> _dt.date:
    """The local calendar date (a seam for tests)."""
    return _dt.date.today()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # pragma: no cover - a malformed record must not break the fetch
            pass


def _reason(messages: list[str], symbol: str) -> str:
    """The most telling thing yfinance logged, on one short line."""
    text = [" ".join(m.split()) for m in messages if m and "Failed download" not in m]
    text = [re.sub(r"\s*See https?://\S+ first for more details\.?", "", t) for t in text]
    text = [t.replace(f"['{symbol}']: ", "") for t in text]
    for t in reversed(text):
        if any(k in t for k in ("Error", "error", "delisted", "not found", "No data", "Rate", "Too Many")):
            return t[:240]
    return text[-1][:240] if text else ""


def _set_yf_cache(yf: Any, root: str) -> None:
    global _yf_cache_location
    location = os.path.join(root, "yfinance")
    if location != _yf_cache_location:
        try:
            os.makedirs(location, exist_ok=True)
            yf.set_tz_cache_location(location)
            _yf_cache_location = location
        except Exception as exc:  # yfinance then uses its default location; harmless
            log.debug("could not move yfinance's cache to %s (%s)", location, exc)


def _set_yf_proxy(yf: Any, proxy: str | None) -> None:
    """Point yfinance's requests at ``proxy`` (``None``: no proxy of trainkit's; a session's own
    proxies and the standard proxy variables then apply as usual). Process-wide in yfinance, so
    it is set under ``_yf_lock`` before every download."""
    config = getattr(yf, "config", None)
    network = getattr(config, "network", None) if config is not None else None
    if network is not None:
        network.proxy = proxy
    elif hasattr(yf, "set_config"):
        yf.set_config(proxy=proxy)
    elif proxy is not None:
        raise ConfigError("TRAINKIT_YF_PROXY needs yfinance >= 0.2.54 (yf.set_config); upgrade yfinance or unset it")


class YahooFetcher:
    """Daily bars from Yahoo Finance (see the module docstring).

    ``timeout``: seconds one live call may take (default :func:`default_timeout`).
    ``cache_root``: trainkit cache directory (default :func:`cache_dir`, read per call).
    ``session``: a ``requests``/``curl_cffi`` session handed to yfinance (its own proxies, or a
    recorded transport in tests); with a session, ``TRAINKIT_YF_PROXY`` is not applied.
    ``use_cache=False`` neither reads nor writes the disk cache.
    """

    name = "yfinance"

    def __init__(
        self,
        *,
        timeout: float | None = None,
        cache_root: str | None = None,
        session: Any = None,
        use_cache: bool = True,
    ) -> None:
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout <= 600):
            raise ConfigError(f"yfinance timeout must be in (0, 600] seconds, got {timeout!r}")
        self._timeout = None if timeout is None else float(timeout)
        self._cache_root = cache_root
        self.session = session
        self.use_cache = use_cache

    @property
    def timeout(self) -> float:
        return default_timeout() if self._timeout is None else self._timeout

    @property
    def cache(self) -> DownloadCache:
        return DownloadCache(self._cache_root)

    # -------------------------------------------------------------- public
    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        """Bars within ``[start, end]``: from the disk cache when it covers the window, else
        downloaded and merged into the cache (stored rows are never rewritten: see the module
        docstring). ``DataError`` when Yahoo does not deliver."""
        sym = validate_symbol(symbol)
        s, e = check_window(start, end)
        label = f"yfinance data for {sym}"
        stored = self.cache.read(sym) if self.use_cache else None
        lo, hi = s, e
        if stored is not None:
            hit = self._from_stored(sym, stored, s, e)
            if hit is not None:
                return hit
            lo, hi = min(s, stored[1]), max(e, stored[2])
        frame = self.download(sym, lo, hi)
        if self.use_cache:
            # a window reaching today or later is not final yet: cover it only up to yesterday
            covered_end = min(hi, _today() - _dt.timedelta(days=1))
            if covered_end >= lo:
                frame = self._merge(sym, frame, lo, covered_end, stored)
        return slice_window(frame, s, e, label)

    def _merge(
        self, sym: str, frame: pd.DataFrame, lo: _dt.date, covered_end: _dt.date,
        stored: tuple[pd.DataFrame, _dt.date, _dt.date] | None,
    ) -> pd.DataFrame:
        """The rows to answer with after merging a download into the cache: the stored rows where
        there are any, downloaded rows elsewhere (today's bar included, though not stored)."""
        try:
            outcome = self.cache.merge(sym, frame, lo, covered_end)
            base, cs, ce = outcome.frame, outcome.start, outcome.end
        except Exception as exc:  # the answer must not depend on whether the cache is writable
            log.warning("could not cache yfinance data for %s in %s (%s)", sym, self.cache.root, exc)
            if stored is None:
                return frame
            base, cs, ce = stored
        rest = frame[(frame.index < pd.Timestamp(cs)) | (frame.index > pd.Timestamp(ce))]
        return pd.concat([base, rest]).sort_index() if len(rest) else base

    def cached(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame | None:
        """The window from the disk cache if a stored download covers it, else ``None``.
        Never touches the network. ``DataError`` if it is covered but has too few rows."""
        if not self.use_cache:
            return None
        sym = validate_symbol(symbol)
        s, e = check_window(start, end)
        stored = self.cache.read(sym)
        return None if stored is None else self._from_stored(sym, stored, s, e)

    def _from_stored(
        self, sym: str, stored: tuple[pd.DataFrame, _dt.date, _dt.date], s: _dt.date, e: _dt.date
    ) -> pd.DataFrame | None:
        frame, cs, ce = stored
        if not (cs <= s and e <= ce):
            return None
        log.debug("yfinance data for %s %s..%s served from %s", sym, s, e, self.cache.path_for(sym))
        return slice_window(frame, s, e, f"yfinance data for {sym} (cached {cs}..{ce})")

    def download(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        """One live ``yf.download`` of ``[start, end]`` (inclusive), cleaned; no disk cache.
        Every failure — empty answer, timeout, an exception inside yfinance — is a ``DataError``."""
        window = f"{symbol} {start}..{end}"
        timeout = self.timeout
        proxy = None if self.session is not None else yf_proxy()
        via = f" (through TRAINKIT_YF_PROXY={_redact(proxy)})" if proxy else ""
        outcome: dict[str, Any] = {}
        capture = _Capture()

        def run() -> None:
            try:
                import yfinance as yf  # before the filter below: its import adds filters of its own

                with warnings.catch_warnings():
                    # yfinance's own use of deprecated pandas API is not the user's business
                    warnings.filterwarnings("ignore", module=r"yfinance")
                    with _yf_lock:
                        _set_yf_cache(yf, self._cache_root or cache_dir())
                        _set_yf_proxy(yf, proxy)
                    outcome["frame"] = yf.download(
                        symbol,
                        start=start.isoformat(),
                        end=(end + _dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                        interval="1d",
                        auto_adjust=True,
                        actions=False,
                        repair=False,
                        keepna=False,
                        progress=False,
                        threads=False,
                        timeout=timeout,
                        session=self.session,
                    )
            except BaseException as exc:  # reported to the caller's thread below
                outcome["error"] = exc

        yf_logger = logging.getLogger("yfinance")
        yf_logger.addHandler(capture)
        propagate, yf_logger.propagate = yf_logger.propagate, False
        try:
            worker = threading.Thread(target=run, name=f"trainkit-yfinance-{symbol}", daemon=True)
            worker.start()
            worker.join(timeout)
        finally:
            yf_logger.removeHandler(capture)
            yf_logger.propagate = propagate
        if worker.is_alive():
            raise DataError(
                f"yfinance did not answer within {timeout:g} s for {window} "
                f"(network slow or blocked; TRAINKIT_YF_TIMEOUT sets the limit){via}"
            )
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise exc
            if isinstance(exc, ConfigError):
                raise exc
            raise DataError(f"yfinance failed for {window}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}{via}")
        raw = outcome.get("frame")
        reason = _reason(capture.messages, symbol)
        try:
            frame = normalize_download(raw, symbol)
        except DataError:
            raise DataError(
                f"yfinance returned no rows for {window} (offline, rate-limited or unknown symbol)"
                + (f": {reason}" if reason else "") + via
            ) from None
        return validate_ohlcv(frame, f"yfinance data for {window}", drop_blank_rows=True)

    def __repr__(self) -> str:
        return f"YahooFetcher(timeout={self._timeout!r}, cache_root={self._cache_root!r})"
