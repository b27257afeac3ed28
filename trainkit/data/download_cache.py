"""The local download cache of daily prices: stored rows, their covered window, and the
revisions Yahoo makes to them.

It is kept apart from the yfinance adapter (:mod:`trainkit.data.yahoo`) because it is a
different room: it never talks to the network and never imports yfinance. It only decides which
rows are stored, which are revised, and how a revision is adopted, so it can be read, tested and
refreshed offline (``trainkit.data.yahoo.DownloadCache`` and ``trainkit.data.DownloadCache`` are
this class, re-exported).

Each symbol has one file ``<cache>/yfinance/<SYMBOL>.parquet`` (``<cache>`` is
``TRAINKIT_CACHE_DIR`` or ``platformdirs.user_cache_dir("trainkit")``) holding the *stored rows*
and the *covered window* ``[covered_start, covered_end]`` they were downloaded for. Semantics:

1. **A request inside the covered window is answered from the stored rows, without the
   network** (also by :meth:`~trainkit.data.yahoo.YahooFetcher.cached` and
   ``trainkit.data.cached_digest``).
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

pyarrow and filelock are imported inside the methods that need them, so importing this module
(and ``trainkit.data``) costs pandas and numpy only.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainkit import settings
from trainkit.config import validate_symbol
from trainkit.data.base import OHLCV_COLUMNS, validate_ohlcv

log = logging.getLogger("trainkit")

#: Version of the cache files' layout; a file of another version is a miss.
_CACHE_FORMAT = 1
_META_KEY = b"trainkit"


# ---------------------------------------------------------------------------------- where
def cache_dir() -> str:
    """trainkit's cache directory (``TRAINKIT_CACHE_DIR`` or the platform's user cache dir)."""
    env = settings.TRAINKIT_CACHE_DIR.get()
    if env:
        return os.path.abspath(os.path.expanduser(env))
    import platformdirs

    return platformdirs.user_cache_dir("trainkit")


# ------------------------------------------------------------------------------- disk cache
#: How a revision is adopted, named in the warning (the CLI may offer a command for it).
REFRESH_HINT = "trainkit.data.yahoo.DownloadCache().refresh({symbol!r})"
#: Seconds a merge waits for another process's merge of the same symbol.
LOCK_TIMEOUT = 60.0
#: Relative difference below which two prices are the same number (float noise, not a revision).
_RTOL = 1e-9
_REVISION_COLUMNS = (*OHLCV_COLUMNS, "change", "seen")


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
