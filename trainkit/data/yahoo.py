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
Each symbol has one file ``<cache>/yfinance/<SYMBOL>.parquet`` (``<cache>`` is
``TRAINKIT_CACHE_DIR`` or ``platformdirs.user_cache_dir("trainkit")``) holding the *stored rows*
and the *covered window* ``[covered_start, covered_end]`` they were downloaded for. Semantics:

1. **A request inside the covered window is answered from the stored rows, without the
   network** (also by :meth:`YahooFetcher.cached` and ``trainkit.data.cached_digest``).
2. **A request outside it** downloads the union of both windows once and merges it into the
   file under a file lock (``<SYMBOL>.lock``): days outside the old covered window are
   *appended* and the covered window grows. A window reaching today is covered only up to
   yesterday (today's bar is not final): such rows are returned but not stored.
3. **Stored rows are never rewritten by a download.** Where the new download disagrees with a
   stored row inside the old covered window (a price or volume differs — Yahoo revises adjusted
   history at every dividend and split —, a day was added, or a day is gone), the stored row
   stays as it is: existing models were trained on it, and every fetch, a new training, a
   ``--force`` retrain and a backtest alike, keeps seeing it, on this machine, until the user
   adopts the revision. The new version is kept beside the file in
   ``<SYMBOL>.revisions.parquet`` (one row per revised day: Yahoo's latest differing values,
   NaN prices for a day Yahoo no longer lists, the kind of change, and when that version was
   first seen), and one warning line names the symbol, the number of revised rows, their date
   range and how to adopt them. A revision Yahoo takes back (its download agrees with the
   stored row again) is dropped from that file. Revisions are noticed only when a download
   happens (rule 2); a request inside the covered window never asks Yahoo.
4. **Adopting a revision is explicit**: :meth:`DownloadCache.refresh` replaces the revised
   stored rows by the recorded versions (offline) and clears the revisions file. From then on
   fetches see the revised prices: a cache hit on a model trained before reports that its
   training data differ today from its recorded ``trainkit.data_digest``, and ``--force``
   retrains it on the revised prices.
5. A damaged cache file is a miss (the download replaces it); a failure to write the cache only
   logs a warning. :meth:`DownloadCache.write` is the low-level "store exactly these rows".

yfinance's own small caches (time zones, cookies) are kept under ``<cache>/yfinance`` as well.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import tempfile
import threading
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
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
from trainkit.errors import ConfigError, DataError

log = logging.getLogger("trainkit")

DEFAULT_TIMEOUT = settings.TRAINKIT_YF_TIMEOUT.default
_CACHE_FORMAT = 1
_META_KEY = b"trainkit"
_yf_cache_location: str | None = None
_yf_lock = threading.Lock()


# ---------------------------------------------------------------------------------- settings
def cache_dir() -> str:
    """trainkit's cache directory (``TRAINKIT_CACHE_DIR`` or the platform's user cache dir)."""
    env = settings.TRAINKIT_CACHE_DIR.get()
    if env:
        return os.path.abspath(os.path.expanduser(env))
    import platformdirs

    return platformdirs.user_cache_dir("trainkit")


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


# ------------------------------------------------------------------------------- disk cache
#: How a revision is adopted, named in the warning (the CLI may offer a command for it).
REFRESH_HINT = "trainkit.data.yahoo.DownloadCache().refresh({symbol!r})"
#: Seconds a merge waits for another process's merge of the same symbol.
LOCK_TIMEOUT = 60.0
#: Relative difference below which two prices are the same number (float noise, not a revision).
_RTOL = 1e-9
_REVISION_COLUMNS = (*OHLCV_COLUMNS, "change", "seen")


def _today() -> _dt.date:
    """The local calendar date (a seam for tests)."""
    return _dt.date.today()


def _now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _within(frame: pd.DataFrame, start: _dt.date, end: _dt.date) -> pd.DataFrame:
    """Rows of ``frame`` within ``[start, end]`` (possibly none)."""
    idx = frame.index
    return frame[(idx >= pd.Timestamp(start)) & (idx <= pd.Timestamp(end))]


def _differs(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Per date of two frames with the same index: does any OHLCV value differ (NaN == NaN)?"""
    x, y = a[list(OHLCV_COLUMNS)].to_numpy(), b[list(OHLCV_COLUMNS)].to_numpy()
    both_nan = np.isnan(x) & np.isnan(y)
    with np.errstate(invalid="ignore"):
        same = np.isclose(x, y, rtol=_RTOL, atol=0.0) | both_nan
    return pd.Series(~same.all(axis=1), index=a.index)


@dataclass(frozen=True)
class MergeOutcome:
    """What :meth:`DownloadCache.merge` did: the stored rows and covered window after it,
    how many days it appended, and the revisions it newly recorded (empty when none)."""

    frame: pd.DataFrame
    start: _dt.date
    end: _dt.date
    appended: int
    new_revisions: pd.DataFrame


class DownloadCache:
    """Per-symbol stored rows with their covered window, and the revisions Yahoo made to them
    (the semantics are in the module docstring)."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.join(root or cache_dir(), "yfinance")

    def _stem(self, symbol: str) -> str:
        return os.path.join(self.root, urllib.parse.quote(symbol, safe=""))

    def path_for(self, symbol: str) -> str:
        return self._stem(symbol) + ".parquet"

    def revisions_path_for(self, symbol: str) -> str:
        return self._stem(symbol) + ".revisions.parquet"

    def lock(self, symbol: str, timeout: float = LOCK_TIMEOUT) -> Any:
        """The inter-process lock every read-modify-write of ``symbol``'s files holds."""
        from filelock import FileLock

        os.makedirs(self.root, exist_ok=True)
        return FileLock(self._stem(symbol) + ".lock", timeout=timeout)

    # ------------------------------------------------------------------ stored rows
    def read(self, symbol: str) -> tuple[pd.DataFrame, _dt.date, _dt.date] | None:
        """``(stored rows, covered_start, covered_end)``, or ``None`` when absent or unreadable.
        Rows outside the covered window (an older trainkit stored today's unfinished bar) are
        not part of the stored rows."""
        path = self.path_for(symbol)
        try:
            found = self._read_own(path, symbol)
            if found is None:
                return None
            table, meta = found
            start, end = _dt.date.fromisoformat(meta["start"]), _dt.date.fromisoformat(meta["end"])
            frame = validate_ohlcv(table.to_pandas(), f"cached yfinance data {path}")
            return _within(frame, start, end), start, end
        except Exception as exc:  # a damaged cache file is a miss, never a failure
            log.warning("ignoring unreadable yfinance cache file %s (%s)", path, exc)
            return None

    def write(self, symbol: str, frame: pd.DataFrame, start: _dt.date, end: _dt.date) -> None:
        """Store exactly ``frame`` as the rows covering ``[start, end]``, replacing what was
        stored and forgetting its pending revisions (atomically: temporary file +
        ``os.replace``, under the symbol's lock); failures only log a warning. This is the
        low-level primitive: downloads go through :meth:`merge`, which never rewrites stored rows."""
        try:
            with self.lock(symbol):
                self._write_table(self.path_for(symbol), frame, {
                    "format": _CACHE_FORMAT, "symbol": symbol, "start": start.isoformat(), "end": end.isoformat(),
                    "fetched_at": _now_utc(),
                })
                self._remove(self.revisions_path_for(symbol))
        except Exception as exc:
            log.warning("could not cache yfinance data for %s in %s (%s)", symbol, self.root, exc)

    # ------------------------------------------------------------------ revisions
    def revisions(self, symbol: str) -> pd.DataFrame | None:
        """The pending revisions of ``symbol``'s stored rows, or ``None`` when there are none:
        one row per revised day with Yahoo's latest differing ``Open High Low Close Volume``
        (NaN when Yahoo no longer lists the day), ``change`` (``changed``, ``added`` or
        ``removed``) and ``seen`` (UTC time that version was first downloaded). Offline."""
        path = self.revisions_path_for(symbol)
        try:
            found = self._read_own(path, symbol)
            if found is None:
                return None
            frame = found[0].to_pandas()
            frame.index = pd.DatetimeIndex(frame.index).as_unit("ns").rename("Date")
            frame = frame.loc[:, list(_REVISION_COLUMNS)]
            return frame if len(frame) else None
        except Exception as exc:
            log.warning("ignoring unreadable yfinance revisions file %s (%s)", path, exc)
            return None

    def refresh(self, symbol: str) -> int:
        """Adopt the pending revisions of ``symbol`` (see :meth:`revisions`): the revised stored
        rows are replaced by Yahoo's latest version (a day Yahoo no longer lists is dropped, a
        day it added is inserted), the covered window stays, the revisions file is removed.
        Offline: it uses what downloads already recorded. Returns the number of rows adopted
        (0 when nothing is pending).

        This is the only way stored rows change. Afterwards every fetch — new trainings,
        ``--force`` retrains, backtests — sees the revised prices, and a cache hit on a model
        trained on the old rows reports that its training data differ today from its
        ``trainkit.data_digest``. ``DataError`` if the revised rows do not form a clean frame."""
        sym = validate_symbol(symbol)
        with self.lock(sym):
            pending = self.revisions(sym)
            stored = self.read(sym)
            if pending is None:
                return 0
            if stored is None:
                self._remove(self.revisions_path_for(sym))
                return 0
            frame, start, end = stored
            pending = _within(pending, start, end)
            if not len(pending):
                self._remove(self.revisions_path_for(sym))
                return 0
            removed = pending.index[pending["change"] == "removed"]
            upserts = pending[pending["change"] != "removed"][list(OHLCV_COLUMNS)].astype("float64")
            kept = frame.drop(index=frame.index.intersection(removed).union(upserts.index.intersection(frame.index)))
            label = f"yfinance data for {sym} with its revisions adopted"
            adopted = validate_ohlcv(pd.concat([kept, upserts]).sort_index(), label)
            self._write_table(self.path_for(sym), adopted, {
                "format": _CACHE_FORMAT, "symbol": sym, "start": start.isoformat(), "end": end.isoformat(),
                "fetched_at": _now_utc(), "revisions_adopted_at": _now_utc(),
            })
            self._remove(self.revisions_path_for(sym))
        log.info("adopted %d revised row(s) of %s (%s..%s): fetches now see Yahoo's revised prices",
                 len(pending), sym, pending.index[0].date(), pending.index[-1].date())
        return len(pending)

    # ------------------------------------------------------------------ merging a download
    def merge(self, symbol: str, downloaded: pd.DataFrame, start: _dt.date, end: _dt.date) -> MergeOutcome:
        """Merge a clean download covering ``[start, end]`` into the stored rows, under the
        symbol's lock: days outside the stored covered window are appended (the window becomes
        the union), stored rows are kept as they are, and rows of the download that disagree
        with them are recorded as revisions (with one warning line when any is new). The
        download's window must meet the stored one (the fetcher downloads their union):
        ``ValueError`` for a gap. Raises ``filelock.Timeout`` when another merge holds the lock
        for :data:`LOCK_TIMEOUT` s, and whatever writing raises."""
        sym = validate_symbol(symbol)
        if start > end:
            raise ValueError(f"merge window {start}..{end} is empty")
        new = _within(downloaded, start, end)
        with self.lock(sym):
            stored = self.read(sym)
            if stored is None and not len(new):  # no trading day in the window: nothing to keep
                return MergeOutcome(new, start, end, 0, new.iloc[0:0])
            if stored is None:
                self._write_table(self.path_for(sym), new, {
                    "format": _CACHE_FORMAT, "symbol": sym, "start": start.isoformat(), "end": end.isoformat(),
                    "fetched_at": _now_utc(),
                })
                self._remove(self.revisions_path_for(sym))  # revisions of rows that are gone
                return MergeOutcome(new, start, end, len(new), new.iloc[0:0])
            old, cs, ce = stored
            if start > ce + _dt.timedelta(days=1) or end < cs - _dt.timedelta(days=1):
                raise ValueError(f"a download of {start}..{end} leaves a gap to the stored window {cs}..{ce}")
            outside = new[(new.index < pd.Timestamp(cs)) | (new.index > pd.Timestamp(ce))]
            observed = (max(start, cs), min(end, ce))  # the stored days this download saw
            diff = self._diff(_within(old, *observed), _within(new, *observed))
            lo, hi = min(start, cs), max(end, ce)
            merged = pd.concat([old, outside]).sort_index() if len(outside) else old
            if len(outside) or (lo, hi) != (cs, ce):
                self._write_table(self.path_for(sym), merged, {
                    "format": _CACHE_FORMAT, "symbol": sym, "start": lo.isoformat(), "end": hi.isoformat(),
                    "fetched_at": _now_utc(),
                })
            fresh = self._record(sym, diff, observed, (cs, ce)) if observed[0] <= observed[1] else diff.iloc[0:0]
        if len(fresh):
            log.warning(
                "yfinance revised %d stored row(s) of %s between %s and %s (%s): trainkit keeps the stored "
                "prices that existing models were trained on, and new trainings, --force retrains and "
                "backtests use them too until the revision is adopted with %s; the revised rows are kept in %s",
                len(fresh), sym, fresh.index[0].date(), fresh.index[-1].date(), _describe(fresh),
                REFRESH_HINT.format(symbol=sym), self.revisions_path_for(sym),
            )
        return MergeOutcome(merged, lo, hi, len(outside), fresh)

    @staticmethod
    def _diff(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``new`` that revise ``old`` (same window), in the revisions layout without ``seen``."""
        common = old.index.intersection(new.index)
        changed = common[_differs(old.loc[common], new.loc[common]).to_numpy()] if len(common) else common
        added = new.index.difference(old.index)
        removed = old.index.difference(new.index)
        parts = []
        if len(changed):
            parts.append(new.loc[changed].assign(change="changed"))
        if len(added):
            parts.append(new.loc[added].assign(change="added"))
        if len(removed):
            gone = pd.DataFrame(np.nan, index=removed, columns=list(OHLCV_COLUMNS))
            parts.append(gone.assign(change="removed"))
        if not parts:
            empty = pd.DataFrame(columns=[*OHLCV_COLUMNS, "change"], index=pd.DatetimeIndex([], name="Date"))
            return empty.astype({c: "float64" for c in OHLCV_COLUMNS})
        out = pd.concat(parts).sort_index()
        out.index = pd.DatetimeIndex(out.index).as_unit("ns").rename("Date")
        return out

    def _record(self, sym: str, diff: pd.DataFrame, observed: tuple[_dt.date, _dt.date], window: tuple[_dt.date, _dt.date]) -> pd.DataFrame:
        """Make the revisions file hold, for the days ``observed`` by this download, exactly
        ``diff`` (its disagreements with the stored rows), keeping the first-seen time of a
        version already recorded; pending revisions of other days stay. Returns the revisions
        that are new (not recorded before with the same values)."""
        pending = self.revisions(sym)
        diff = diff.assign(seen=_now_utc())
        fresh = diff
        combined = diff
        if pending is not None:
            lo, hi = (pd.Timestamp(d) for d in observed)
            others = pending[(pending.index < lo) | (pending.index > hi)]
            known = diff.index.intersection(pending.index)
            if len(known):
                prev = pending.loc[known]
                same = ~_differs(diff.loc[known], prev).to_numpy() & (diff.loc[known, "change"] == prev["change"]).to_numpy()
                again = known[same]
                diff.loc[again, "seen"] = prev.loc[again, "seen"].to_numpy()
                fresh = diff.drop(index=again)
            combined = pd.concat([others, diff]).sort_index() if len(others) else diff
        path = self.revisions_path_for(sym)
        if len(combined):
            self._write_table(path, combined.loc[:, list(_REVISION_COLUMNS)], {
                "format": _CACHE_FORMAT, "symbol": sym, "start": window[0].isoformat(), "end": window[1].isoformat(),
            })
        elif pending is not None:
            self._remove(path)  # Yahoo took its revisions back
        return fresh

    # ------------------------------------------------------------------ files
    @staticmethod
    def _read_own(path: str, symbol: str) -> tuple[Any, dict[str, Any]] | None:
        """``(arrow table, trainkit metadata)`` of a cache file of ``symbol`` in this format, or
        ``None`` when there is none (absent, another format, another symbol); raises when the
        file is damaged."""
        import pyarrow.parquet as pq

        if not os.path.isfile(path):
            return None
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[_META_KEY])
        if meta.get("format") != _CACHE_FORMAT or meta.get("symbol") != symbol:
            return None
        return table, meta

    def _write_table(self, path: str, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Write ``frame`` with trainkit's metadata atomically (temporary file + ``os.replace``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        os.makedirs(self.root, exist_ok=True)
        table = pa.Table.from_pandas(frame, preserve_index=True)
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[_META_KEY] = json.dumps(meta).encode()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(table.replace_schema_metadata(schema_meta), tmp)
            os.replace(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                self._remove(tmp)

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _describe(revisions: pd.DataFrame) -> str:
    counts = revisions["change"].value_counts()
    return ", ".join(f"{int(counts[k])} {k}" for k in ("changed", "added", "removed") if k in counts)


# ---------------------------------------------------------------------------- live download
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
