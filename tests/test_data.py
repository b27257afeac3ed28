"""Tests of the data layer: OHLCV contract, synthetic path, CSV files, yfinance, fallback.

The yfinance tests run yfinance's real code. Where Yahoo has to answer, a recorded transport
answers in Yahoo's chart-API JSON schema, built at test time from real GOOG prices
(``backtesting.test.GOOG``): it is mounted on a real ``requests.Session`` handed to yfinance,
so yfinance's cookie/crumb handshake, time-zone lookup, JSON parsing, adjustment and frame
building all run as they do against Yahoo. Everywhere else Yahoo is unreachable ON PURPOSE,
whatever the machine's network: tests/conftest.py points ``TRAINKIT_YF_PROXY`` at a closed port
on 127.0.0.1, so yfinance's real code is refused at once and the failure names the proxy. The
one test against the real Yahoo runs only when asked (``TRAINKIT_TEST_LIVE_YAHOO=1``).
Speed is measured in bench/bench_data.py; the tests check causes, not the clock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pandas as pd
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from trainkit.config import default_data_seed
from trainkit.data import (
    CsvFetcher,
    DataFetcher,
    DataFetcherFactory,
    FetchResult,
    SyntheticFetcher,
    YahooFetcher,
    cached_digest,
    frame_digest,
    synthetic_ohlcv,
    validate_ohlcv,
)
from trainkit.data import csv as csv_source
from trainkit.data import synthetic as synth
from trainkit.data.yahoo import DownloadCache, clean_download, yf_proxy
from trainkit.errors import ConfigError, DataError

NY = "America/New_York"
D = dt.date

#: numpy's silent NaN/overflow warnings are bugs here (e.g. a negative GARCH variance).
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache dir and a short Yahoo timeout; probes are forgotten."""
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "8")
    DataFetcherFactory.reset_probes()
    yield
    DataFetcherFactory.reset_probes()
    # yfinance memoizes responses per process: recorded answers must not leak into other tests
    yf_data = sys.modules.get("yfinance.data")
    if yf_data is not None:
        yf_data.YfData.cache_get.cache_clear()


@pytest.fixture(scope="module")
def goog() -> pd.DataFrame:
    from backtesting.test import GOOG

    frame = GOOG.copy()
    frame.index.name = "Date"
    return frame


def assert_clean(frame: pd.DataFrame) -> None:
    """The OHLCV contract of trainkit.data.base, checked independently of validate_ohlcv."""
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert all(str(t) == "float64" for t in frame.dtypes)
    idx = frame.index
    assert isinstance(idx, pd.DatetimeIndex) and idx.tz is None and idx.name == "Date"
    assert str(idx.dtype) == "datetime64[ns]"
    assert idx.is_monotonic_increasing and idx.is_unique
    assert (idx == idx.normalize()).all()
    v = frame.to_numpy()
    assert not np.isnan(v).any()
    o, h, lo, c = frame.Open, frame.High, frame.Low, frame.Close
    assert (h >= np.maximum(o, c)).all() and (np.minimum(o, c) >= lo).all() and (lo > 0).all()
    assert (frame.Volume >= 0).all()


# ------------------------------------------------------------------- a recorded Yahoo
def chart_document(symbol: str, frame: pd.DataFrame, adj: np.ndarray, query: dict[str, str]) -> dict:
    """A Yahoo chart-API (v8) response for ``frame``, in Yahoo's schema: bars stamped at the
    09:30 New York open, ``period1 <= t < period2`` as Yahoo selects them, ``range=1d`` giving the
    last bar only (what yfinance asks for to learn the exchange time zone), an ``adjclose``
    series of ``Close * adj``."""
    ts = (frame.index.tz_localize(NY) + pd.Timedelta(hours=9, minutes=30)).tz_convert("UTC").as_unit("s").asi8
    keep = np.ones(len(ts), dtype=bool)
    if "range" in query:
        keep[:-1] = False
    else:
        keep &= (ts >= int(query["period1"])) & (ts < int(query["period2"]))
    f, t = frame[keep], ts[keep]
    period = {"timezone": "EST", "start": int(ts[-1]), "end": int(ts[-1]) + 23400, "gmtoffset": -18000}
    meta = {
        "currency": "USD", "symbol": symbol, "exchangeName": "NMS", "fullExchangeName": "NasdaqGS",
        "instrumentType": "EQUITY", "firstTradeDate": int(ts[0]), "regularMarketTime": int(ts[-1]),
        "hasPrePostMarketData": True, "gmtoffset": -18000, "timezone": "EST",
        "exchangeTimezoneName": NY, "regularMarketPrice": float(frame.Close.iloc[-1]),
        "chartPreviousClose": float(frame.Close.iloc[0]), "priceHint": 2,
        "currentTradingPeriod": {k: dict(period) for k in ("pre", "regular", "post")},
        "dataGranularity": "1d", "range": "",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }
    quote = {
        "open": f.Open.tolist(), "high": f.High.tolist(), "low": f.Low.tolist(),
        "close": f.Close.tolist(), "volume": [int(v) for v in f.Volume],
    }
    result = {
        "meta": meta,
        "timestamp": [int(x) for x in t],
        "indicators": {"quote": [quote], "adjclose": [{"adjclose": (f.Close * adj[keep]).round(6).tolist()}]},
    }
    return {"chart": {"result": [result], "error": None}}


class RecordedYahoo(BaseAdapter):
    """A transport answering yfinance's requests as Yahoo does, from recorded prices."""

    def __init__(self, data: dict[str, tuple[pd.DataFrame, np.ndarray]], delay: float = 0.0) -> None:
        super().__init__()
        self.data = data
        self.delay = delay
        self.calls: list[tuple[str, dict[str, str]]] = []

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' adapter interface
        url = urllib.parse.urlsplit(request.url)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.calls.append((url.path, query))
        if self.delay:
            delay, self.delay = self.delay, 0.0
            time.sleep(delay)  # a network that hangs on the first request
        status, body, ctype = 404, b"<html>Not Found</html>", "text/html"
        if url.path == "/v1/test/getcrumb":
            status, body, ctype = 200, b"RecordedCrumb", "text/plain"
        elif url.path.startswith("/v8/finance/chart/"):
            symbol = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
            ctype = "application/json"
            if symbol in self.data:
                status = 200
                doc = chart_document(symbol, *self.data[symbol], query)
            else:
                doc = {"chart": {"result": None, "error": {
                    "code": "Not Found", "description": "No data found, symbol may be delisted"}}}
            body = json.dumps(doc).encode()
        resp = requests.Response()
        resp.status_code, resp._content, resp.url, resp.request = status, body, request.url, request
        resp.headers = CaseInsensitiveDict({"Content-Type": ctype})
        resp.encoding, resp.reason = "utf-8", "OK" if status == 200 else "Not Found"
        return resp

    def close(self) -> None:
        pass

    def chart_calls(self) -> list[dict[str, str]]:
        return [q for path, q in self.calls if path.startswith("/v8/finance/chart/") and "period1" in q]


class Unplugged(BaseAdapter):
    """A transport that must not be used (proves an answer came from the disk cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def send(self, request, **kwargs):  # noqa: ANN001
        self.calls += 1
        raise requests.ConnectionError("unplugged")

    def close(self) -> None:
        pass


def session_with(adapter: BaseAdapter) -> requests.Session:
    s = requests.Session()
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s


#: A dividend-style adjustment: everything before 2010-01-04 scaled by 0.98.
def goog_adjustment(frame: pd.DataFrame) -> np.ndarray:
    return np.where(frame.index < pd.Timestamp("2010-01-04"), 0.98, 1.0)


def expected_adjusted(goog: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    adj = goog_adjustment(goog)
    exp = goog[["Open", "High", "Low", "Close"]].mul(adj, axis=0)
    exp["Volume"] = goog.Volume.astype("float64")
    return exp.loc[start:end]


# ======================================================================== base contract
def test_validate_ohlcv_cleans_vendor_shapes():
    idx = pd.DatetimeIndex(["2021-01-05", "2021-01-04", "2021-01-06"]).tz_localize(NY).as_unit("us")
    raw = pd.DataFrame(
        {"close": [11, 10, 12], "OPEN": [10.5, 9.5, 11.5], "high": [11.2, 10.1, 12.4],
         "Low": [10.4, 9.4, 11.3], "volume": [100, 200, 300], "Dividends": [0, 0, 0]},
        index=idx,
    )
    out = validate_ohlcv(raw, "test")
    assert_clean(out)
    assert list(out.index.strftime("%Y-%m-%d")) == ["2021-01-04", "2021-01-05", "2021-01-06"]
    assert out.Close.tolist() == [10.0, 11.0, 12.0] and out.Volume.tolist() == [200.0, 100.0, 300.0]


def test_validate_ohlcv_widens_rounded_high_low_and_applies_adj_close():
    idx = pd.bdate_range("2021-01-04", periods=2)
    raw = pd.DataFrame({"Open": [10.0, 20.0], "High": [10.5, 19.99], "Low": [9.0, 19.0],
                        "Close": [10.2, 19.5], "Adj Close": [5.1, 19.5], "Volume": [1, 2]}, index=idx)
    out = validate_ohlcv(raw, "test")
    assert_clean(out)
    assert out.loc["2021-01-04"].tolist() == pytest.approx([5.0, 5.25, 4.5, 5.1, 1.0])  # halved by Adj Close
    assert out.loc["2021-01-05", "High"] == 20.0  # widened to the Open


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.iloc[0:0], "no rows"),
        (lambda f: f.drop(columns=["Volume"]), "missing column(s) Volume"),
        (lambda f: f.assign(Close=[1.0, np.nan, 1.0]), "missing values in Close on 2021-01-05"),
        (lambda f: f.assign(Low=[1.0, 0.0, 1.0]), "non-positive prices on 2021-01-05"),
        (lambda f: f.assign(High=[1.0, 0.5, 1.0], Open=[1.0, 0.6, 1.0], Close=[1.0, 0.6, 1.0]), "High below Low"),
        (lambda f: f.set_axis(pd.DatetimeIndex(["2021-01-04", "2021-01-04", "2021-01-06"])), "duplicate dates 2021-01-04"),
        (lambda f: f.assign(Volume=["1", "x", "3"]), "non-numeric value 'x'"),
        (lambda f: f.assign(Volume=[1.0, -5.0, 1.0]), "negative volume"),
    ],
)
def test_validate_ohlcv_rejects_bad_data_naming_source_and_problem(mutate, message):
    idx = pd.bdate_range("2021-01-04", periods=3)
    good = pd.DataFrame({"Open": 1.0, "High": 1.0, "Low": 0.9, "Close": 1.0, "Volume": 1.0}, index=idx)
    validate_ohlcv(good, "src")  # the unmutated frame is fine
    with pytest.raises(DataError) as err:
        validate_ohlcv(mutate(good), "my source")
    assert str(err.value).startswith("my source:") and message in str(err.value)


def test_frame_digest_is_canonical():
    idx = pd.DatetimeIndex(["2020-01-02", "2020-01-03"], name="Date")
    frame = pd.DataFrame({"Open": [1.0, 2.0], "High": [1.5, 2.5], "Low": [0.5, 1.5],
                          "Close": [1.25, 2.25], "Volume": [100.0, 200.0]}, index=idx.as_unit("ns"))
    digest = frame_digest(frame)
    assert digest == "6a22d8184e17ba3e88f9436fa1b30b7b68a045ebdccea504bd70ceca318e49be"  # same on every machine
    assert digest == frame_digest(frame.copy())
    # independent of the index's unit and of memory layout, sensitive to one ulp and to dates
    same = pd.DataFrame(np.asfortranarray(frame.to_numpy()), index=idx.as_unit("s"), columns=frame.columns)
    assert frame_digest(same) == digest
    bumped = frame.copy()
    bumped.iloc[1, 3] = np.nextafter(2.25, 3.0)
    assert frame_digest(bumped) != digest
    assert frame_digest(frame.set_axis(idx.as_unit("ns") + pd.Timedelta(days=1))) != digest
    # the canonical bytes spelled out: this is what other machines compute
    import hashlib

    h = hashlib.sha256(b"trainkit-ohlcv-v1\n" + (2).to_bytes(8, "little"))
    h.update((np.array([1577923200, 1578009600], dtype="<i8") * 10**9).astype("<i8").tobytes())
    for col in ["Open", "High", "Low", "Close", "Volume"]:
        h.update(frame[col].to_numpy().astype("<f8").tobytes())
    assert digest == h.hexdigest()


def test_fetchers_meet_the_protocol(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,1,1\n")
    for f in (YahooFetcher(), SyntheticFetcher(), CsvFetcher(str(p))):
        assert isinstance(f, DataFetcher) and isinstance(f.name, str)


# ============================================================================ synthetic
def test_synthetic_is_one_fixed_path_sliced_by_windows():
    f = SyntheticFetcher(data_seed=7)
    train = f.fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31))
    warm = f.fetch("AAPL", D(2019, 6, 1), D(2020, 12, 31))
    later = f.fetch("AAPL", D(2020, 6, 1), D(2021, 6, 30))
    assert_clean(train)
    assert train.index[0] == pd.Timestamp("2020-01-01") and train.index[-1] == pd.Timestamp("2020-12-31")
    pd.testing.assert_frame_equal(warm.loc["2020"], train)
    pd.testing.assert_frame_equal(later.loc["2020-06-01":"2020-12-31"], train.loc["2020-06-01":])
    # the same request gives the same bytes; golden digest pins the generator across machines
    assert frame_digest(SyntheticFetcher(data_seed=7).fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31))) == frame_digest(train)
    assert frame_digest(train) == SYNTHETIC_AAPL_7_2020
    # and fetches return copies: mutating one does not change the cached path
    train.iloc[:, :] = 1.0
    assert frame_digest(f.fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31))) == SYNTHETIC_AAPL_7_2020


SYNTHETIC_AAPL_7_2020 = "39e7067e1c3b1a66259de4700b1f89f7468ae0685b2f3dbbe9f5f69cbe0a2209"


def test_synthetic_depends_on_symbol_and_seed_and_defaults_to_config_seed():
    a = SyntheticFetcher(data_seed=1).fetch("AAPL", D(2020, 1, 1), D(2020, 3, 31))
    b = SyntheticFetcher(data_seed=2).fetch("AAPL", D(2020, 1, 1), D(2020, 3, 31))
    c = SyntheticFetcher(data_seed=1).fetch("MSFT", D(2020, 1, 1), D(2020, 3, 31))
    assert len({frame_digest(x) for x in (a, b, c)}) == 3
    dflt = SyntheticFetcher().fetch("msft", D(2020, 1, 1), D(2020, 3, 31))
    explicit = SyntheticFetcher(data_seed=default_data_seed("MSFT")).fetch("MSFT", D(2020, 1, 1), D(2020, 3, 31))
    pd.testing.assert_frame_equal(dflt, explicit)


def test_synthetic_path_looks_like_a_stock_and_is_generated_once():
    synth.full_path.cache_clear()
    for sym in ("AAA", "BBB", "CCC"):
        path = synth.full_path(sym, 3)
    # the cause of cheap fetches (timed in bench/bench_data.py): one path per process, then slices
    assert synth.full_path("CCC", 3) is path
    SyntheticFetcher(data_seed=3).fetch("CCC", D(2020, 1, 1), D(2020, 3, 31))
    info = synth.full_path.cache_info()
    assert (info.misses, info.hits) == (3, 2)
    assert path.index[0] == pd.Timestamp("1970-01-01") and path.index[-1] == pd.Timestamp("2045-12-29")
    assert_clean(path)
    window = path.loc["2000":"2025"]
    r = np.diff(np.log(window.Close.to_numpy()))
    ann_vol = r.std() * np.sqrt(252)
    assert 0.1 < ann_vol < 0.6
    clustering = np.corrcoef(np.abs(r[1:]), np.abs(r[:-1]))[0, 1]
    assert clustering > 0.05  # volatility clustering (i.i.d. returns give ~0)
    assert abs(np.corrcoef(r[1:], r[:-1])[0, 1]) < 0.1  # but returns themselves barely predictable
    assert np.corrcoef(np.abs(r), window.Volume.to_numpy()[1:])[0, 1] > 0.2  # volume follows |return|
    assert ((window.High - window.Low) / window.Close).mean() > 0.005  # a real intraday range
    assert (window.Open != window.Close.shift()).mean() > 0.9  # overnight gaps
    assert 1 < window.Close.iloc[0] < 5000 and 1 < window.Close.iloc[-1] < 5000  # a plausible level


def test_synthetic_paths_are_clean_for_many_symbols_and_seeds():
    for i in range(25):
        path = synth.full_path(f"S{i}", i * 7919)
        assert_clean(path)
        assert len(path) == len(synth.calendar())
    synth.full_path.cache_clear()


def test_synthetic_ohlcv_helper_and_too_few_rows():
    a = synthetic_ohlcv(50, seed=11)
    assert_clean(a)
    assert len(a) == 50
    pd.testing.assert_frame_equal(a, synthetic_ohlcv(pd.bdate_range("2000-01-03", periods=50), seed=11))
    assert a.Close.iloc[0] == pytest.approx(synthetic_ohlcv(50, seed=11, start_price=a.Close.iloc[0]).Close.iloc[0])
    with pytest.raises(DataError, match=r"only 0 trading day\(s\) in 2020-01-04..2020-01-05"):
        SyntheticFetcher(data_seed=1).fetch("AAPL", D(2020, 1, 4), D(2020, 1, 5))  # a weekend
    with pytest.raises(DataError, match="only 1 trading day"):
        SyntheticFetcher(data_seed=1).fetch("AAPL", D(2020, 1, 3), D(2020, 1, 5))
    with pytest.raises(ConfigError):
        SyntheticFetcher(data_seed=1).fetch("AAPL", D(2020, 2, 1), D(2020, 1, 1))


# ================================================================================== CSV
def write_goog_csv(goog: pd.DataFrame, path) -> str:
    goog.to_csv(path)
    return str(path)


def test_csv_round_trips_goog(goog, tmp_path):
    path = write_goog_csv(goog, tmp_path / "goog.csv")
    frame = CsvFetcher(path).fetch("GOOG", D(2004, 1, 1), D(2013, 12, 31))
    assert_clean(frame)
    expected = goog.astype("float64")
    expected.index = expected.index.as_unit("ns")
    pd.testing.assert_frame_equal(frame, expected)
    window = CsvFetcher(path).fetch("GOOG", D(2010, 1, 4), D(2010, 1, 8))
    assert len(window) == 5 and window.index[-1] == pd.Timestamp("2010-01-08")


def test_csv_flexible_format(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text(
        "close , Volume,HIGH,low,open,Timestamp,adj_close,Ticker\n"
        "11,100,11.5,10.5,10.8,2020-01-03 00:00:00-05:00,5.5,AAPL\n"
        "10,200,10.5,9.5,9.8,2020-01-02 00:00:00-05:00,5,AAPL\n"
        "99,999,99,99,99,2020-01-02 00:00:00-05:00,99,MSFT\n"
        "12,300,12.5,11.5,11.8,2020-07-06 00:00:00-04:00,6,aapl\n"
    )
    frame = CsvFetcher(str(p)).fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31))
    assert_clean(frame)
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-07-06"]
    assert frame.Close.tolist() == [5.0, 5.5, 6.0]  # Adj Close is used ...
    assert frame.Open.tolist() == pytest.approx([4.9, 5.4, 5.9])  # ... and adjusts the other prices
    with pytest.raises(DataError, match="no rows for IBM in column 'Ticker'"):
        CsvFetcher(str(p)).fetch("IBM", D(2020, 1, 1), D(2020, 12, 31))


HEADER = "Date,Open,High,Low,Close,Volume\n"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "CSV file not found"),
        ("", "the file is empty"),
        (HEADER, "has a header but no rows"),
        ("Date,Open,High,Low,Close\n2020-01-02,1,1,1,1\n2020-01-03,1,1,1,1\n", "missing column(s) Volume"),
        (HEADER + "2020-01-02,1,1,1,1,1\nnot-a-date,1,1,1,1,1\n", "unparseable date 'not-a-date' in column 'Date' on line 3"),
        (HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,1,,1,1,1\n", "missing values in High on 2020-01-03"),
        (HEADER + "2020-01-02,1,1,1,1,1\n2020-01-02,1,1,1,1,1\n", "duplicate dates 2020-01-02"),
        (HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,-1,1,-1,1,1\n", "non-positive prices on 2020-01-03"),
        (HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,1,abc,1,1,1\n", "non-numeric value 'abc'"),
        (HEADER + "2019-01-02,1,1,1,1,1\n2020-01-02,1,1,1,1,1\n", "only 1 trading day(s) in 2020-01-01..2020-12-31"),
    ],
)
def test_csv_errors_name_the_file_and_the_problem(tmp_path, content, message):
    p = tmp_path / "prices.csv"
    if content is not None:
        p.write_text(content)
    with pytest.raises(DataError) as err:
        CsvFetcher(str(p)).fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31))
    assert str(p) in str(err.value) and message in str(err.value)
    # ... and a broken CSV never falls back to synthetic data
    with pytest.raises(DataError):
        DataFetcherFactory.fetch(f"csv:{p}", "AAPL", D(2020, 1, 1), D(2020, 12, 31))


def test_csv_unsorted_dates_are_sorted_and_edits_are_seen(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text(HEADER + "2020-01-03,2,2,2,2,2\n2020-01-02,1,1,1,1,1\n")
    first = CsvFetcher(str(p)).fetch("X", D(2020, 1, 1), D(2020, 1, 31))
    assert first.Close.tolist() == [1.0, 2.0]
    p.write_text(HEADER + "2020-01-03,3,3,3,3,3\n2020-01-02,1,1,1,1,1\n2020-01-06,4,4,4,4,4\n")
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert CsvFetcher(str(p)).fetch("X", D(2020, 1, 1), D(2020, 1, 31)).Close.tolist() == [1.0, 3.0, 4.0]


def test_csv_cache_is_keyed_on_content_not_mtime_or_size(tmp_path):
    """A same-size edit within one mtime tick: the parsed-file cache must not serve the old rows
    (the config hash, the file's sha256, already names the new content)."""
    from trainkit.config import file_sha256

    p = tmp_path / "same.csv"
    old = HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,2,2,2,2,2\n"
    new = HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,7,7,7,7,7\n"
    assert len(old) == len(new)
    stamp = (1_600_000_000_000_000_000, 1_600_000_000_000_000_000)
    p.write_text(old)
    os.utime(p, ns=stamp)
    fetcher = CsvFetcher(str(p))
    assert fetcher.fetch("X", D(2020, 1, 1), D(2020, 1, 31)).Close.tolist() == [1.0, 2.0]
    before = os.stat(p)
    p.write_text(new)
    os.utime(p, ns=stamp)
    after = os.stat(p)
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)  # the old key's blind spot
    assert fetcher.fetch("X", D(2020, 1, 1), D(2020, 1, 31)).Close.tolist() == [1.0, 7.0]
    assert fetcher.sha256() == file_sha256(str(p))
    # a fetcher pinned to the content a config was hashed on refuses other content
    pinned = CsvFetcher(str(p), sha256=file_sha256(str(p)))
    assert pinned.fetch("X", D(2020, 1, 1), D(2020, 1, 31)).Close.tolist() == [1.0, 7.0]
    p.write_text(old)
    with pytest.raises(DataError, match="changed since its hash was taken"):
        pinned.fetch("X", D(2020, 1, 1), D(2020, 1, 31))
    with pytest.raises(DataError, match="changed since its hash was taken"):
        DataFetcherFactory.fetch(f"csv:{p}", "X", D(2020, 1, 1), D(2020, 1, 31), csv_sha256="0" * 64)


def test_csv_parsed_once_per_content(tmp_path, monkeypatch):
    p = tmp_path / "once.csv"
    p.write_text(HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,2,2,2,2,2\n")
    csv_source.clear_cache()
    parses = []
    real = csv_source._parse
    monkeypatch.setattr(csv_source, "_parse", lambda *a: parses.append(a) or real(*a))
    for _ in range(3):
        CsvFetcher(str(p)).fetch("X", D(2020, 1, 1), D(2020, 1, 31))
    assert len(parses) == 1
    p.write_text(HEADER + "2020-01-02,1,1,1,1,1\n2020-01-03,3,3,3,3,3\n")
    CsvFetcher(str(p)).fetch("X", D(2020, 1, 1), D(2020, 1, 31))
    assert len(parses) == 2


# ============================================================================== yfinance
def test_yfinance_through_recorded_chart_api(goog):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    fetcher = YahooFetcher(session=session_with(adapter))
    frame = fetcher.fetch("GOOG", D(2009, 6, 1), D(2010, 6, 30))
    assert_clean(frame)
    # yfinance parsed Yahoo's JSON, auto-adjusted by adjclose, and we kept the inclusive window
    expected = expected_adjusted(goog, "2009-06-01", "2010-06-30")
    assert frame.index.equals(expected.index.as_unit("ns"))
    np.testing.assert_allclose(frame.to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert frame.index[-1] == pd.Timestamp("2010-06-30")  # end is inclusive ...
    (chart,) = adapter.chart_calls()
    # ... because yfinance's end is exclusive: the request runs to midnight after 2010-06-30 in New York
    assert int(chart["period2"]) == int(pd.Timestamp("2010-07-01", tz=NY).timestamp())
    assert int(chart["period1"]) == int(pd.Timestamp("2009-06-01", tz=NY).timestamp())


def test_yfinance_download_is_cached_on_disk(goog, tmp_path):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    first = YahooFetcher(session=session_with(adapter)).fetch("GOOG", D(2009, 1, 1), D(2010, 12, 31))
    cache = DownloadCache()
    assert os.path.isfile(cache.path_for("GOOG"))
    assert cache.path_for("GOOG").startswith(str(tmp_path / "cache"))
    assert not [n for n in os.listdir(os.path.dirname(cache.path_for("GOOG"))) if n.startswith(".tmp-")]
    # inside the stored window: answered from disk, the network is never touched
    unplugged = Unplugged()
    offline = YahooFetcher(session=session_with(unplugged))
    again = offline.fetch("GOOG", D(2009, 1, 1), D(2010, 12, 31))
    pd.testing.assert_frame_equal(again, first)
    inner = offline.fetch("GOOG", D(2010, 3, 1), D(2010, 3, 31))
    pd.testing.assert_frame_equal(inner, first.loc["2010-03-01":"2010-03-31"])
    assert unplugged.calls == 0
    # outside it: one download of the union of both windows, then that is cached
    wider = YahooFetcher(session=session_with(adapter)).fetch("GOOG", D(2011, 1, 1), D(2011, 6, 30))
    assert len(wider) > 100 and wider.index[0] >= pd.Timestamp("2011-01-01")
    last = adapter.chart_calls()[-1]
    assert int(last["period1"]) == int(pd.Timestamp("2009-01-01", tz=NY).timestamp())
    assert offline.cached("GOOG", D(2009, 1, 1), D(2011, 6, 30)) is not None
    assert unplugged.calls == 0
    # a damaged cache file is a miss, not a failure
    with open(cache.path_for("GOOG"), "wb") as fh:
        fh.write(b"not parquet")
    assert offline.cached("GOOG", D(2009, 1, 1), D(2010, 1, 1)) is None


def _forget_yf_responses() -> None:
    """yfinance memoizes responses per process: a changed recording must be asked again."""
    sys.modules["yfinance.data"].YfData.cache_get.cache_clear()


def revised_adjustment(frame: pd.DataFrame) -> np.ndarray:
    """A later dividend as Yahoo reports it: everything before 2010-06-01 scaled by 0.97."""
    return np.where(frame.index < pd.Timestamp("2010-06-01"), 0.97, 1.0)


def test_yfinance_cache_never_rewrites_stored_rows_and_records_revisions(goog, caplog):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    fetcher = YahooFetcher(session=session_with(adapter))
    first = fetcher.fetch("GOOG", D(2009, 1, 1), D(2010, 12, 31))
    cache = DownloadCache()
    digest_before = cached_digest("yfinance", "GOOG", D(2009, 1, 1), D(2010, 12, 31))
    assert digest_before == frame_digest(first) and cache.revisions("GOOG") is None

    # Yahoo revises its adjusted history; a wider request downloads the union again
    adapter.data["GOOG"] = (goog, revised_adjustment(goog))
    _forget_yf_responses()
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        wider = fetcher.fetch("GOOG", D(2009, 1, 1), D(2011, 6, 30))
    # the stored rows are served as they were; the new days are appended
    pd.testing.assert_frame_equal(wider.loc[:"2010-12-31"], first)
    pd.testing.assert_frame_equal(fetcher.fetch("GOOG", D(2009, 1, 1), D(2010, 12, 31)), first)
    assert wider.index[-1] == pd.Timestamp("2011-06-30") and len(wider.loc["2011"]) > 100
    _, cs, ce = cache.read("GOOG")
    assert (cs, ce) == (D(2009, 1, 1), D(2011, 6, 30))
    assert cached_digest("yfinance", "GOOG", D(2009, 1, 1), D(2010, 12, 31)) == digest_before
    # ... and the revision is kept beside them, with when it was seen
    revised = expected_adjusted(goog.assign(), "2009-01-01", "2010-12-31")
    revised[["Open", "High", "Low", "Close"]] = goog.loc["2009-01-01":"2010-12-31", ["Open", "High", "Low", "Close"]].mul(
        revised_adjustment(goog.loc["2009-01-01":"2010-12-31"]), axis=0)
    changed = revised.index[~np.isclose(revised.Close.to_numpy(), first.Close.to_numpy(), rtol=1e-9)]
    pending = cache.revisions("GOOG")
    assert pending is not None and list(pending.index) == list(changed.as_unit("ns"))
    assert set(pending["change"]) == {"changed"} and pending["seen"].nunique() == 1
    np.testing.assert_allclose(pending.Close.to_numpy(), revised.loc[changed, "Close"].to_numpy(), rtol=1e-9)
    [warning] = [r.getMessage() for r in caplog.records if "revised" in r.getMessage()]
    assert f"revised {len(changed)} stored row(s) of GOOG between {changed[0].date()} and {changed[-1].date()}" in warning
    assert "--force" in warning and "refresh('GOOG')" in warning and cache.revisions_path_for("GOOG") in warning
    assert "\n" not in warning

    # seen again on the next download: nothing new to say, the first-seen time stays
    caplog.clear()
    _forget_yf_responses()
    seen = pending["seen"].iloc[0]
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        fetcher.fetch("GOOG", D(2008, 7, 1), D(2011, 6, 30))
    assert not [r for r in caplog.records if "revised" in r.getMessage()]
    again = cache.revisions("GOOG")
    assert list(again.index) == list(pending.index) and set(again["seen"]) == {seen}

    # adopting the revision is explicit (and offline); from then on fetches see revised prices
    unplugged = Unplugged()
    offline = YahooFetcher(session=session_with(unplugged))
    assert cache.refresh("GOOG") == len(changed)
    assert cache.revisions("GOOG") is None and cache.refresh("GOOG") == 0
    now = offline.fetch("GOOG", D(2009, 1, 1), D(2010, 12, 31))
    np.testing.assert_allclose(now.to_numpy(), revised.to_numpy(), rtol=1e-9)
    assert cached_digest("yfinance", "GOOG", D(2009, 1, 1), D(2010, 12, 31)) == frame_digest(now) != digest_before
    assert cached_digest("yfinance", "GOOG", D(2011, 1, 1), D(2011, 6, 30)) == frame_digest(wider.loc["2011"])
    assert unplugged.calls == 0


def test_yfinance_cache_records_added_and_removed_days_and_forgets_taken_back_revisions(goog, caplog):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    fetcher = YahooFetcher(session=session_with(adapter))
    first = fetcher.fetch("GOOG", D(2012, 1, 1), D(2012, 6, 30))
    gone, extra = pd.Timestamp("2012-03-15"), pd.Timestamp("2012-03-17")  # a weekday vanishes, a Saturday appears
    edited = pd.concat([goog.drop(index=gone), goog.loc[["2012-03-16"]].set_axis([extra])]).sort_index()
    edited.index.name = "Date"
    adapter.data["GOOG"] = (edited, goog_adjustment(edited))
    _forget_yf_responses()
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        wider = fetcher.fetch("GOOG", D(2012, 1, 1), D(2012, 9, 28))
    pd.testing.assert_frame_equal(wider.loc[:"2012-06-30"], first)  # the stored days, as they were
    pending = DownloadCache().revisions("GOOG")
    assert dict(zip(pending.index, pending["change"])) == {gone: "removed", extra: "added"}
    assert pending.loc[gone, ["Open", "Close"]].isna().all()
    assert any("revised 2 stored row(s) of GOOG between 2012-03-15 and 2012-03-17 (1 added, 1 removed)" in r.getMessage()
               for r in caplog.records)
    # Yahoo takes it back: the pending revision is dropped, nothing to adopt
    adapter.data["GOOG"] = (goog, goog_adjustment(goog))
    _forget_yf_responses()
    fetcher.fetch("GOOG", D(2012, 1, 1), D(2012, 12, 31))
    assert DownloadCache().revisions("GOOG") is None and DownloadCache().refresh("GOOG") == 0
    # adopting removes and inserts days
    adapter.data["GOOG"] = (edited, goog_adjustment(edited))
    _forget_yf_responses()
    fetcher.fetch("GOOG", D(2011, 12, 1), D(2012, 12, 31))
    assert DownloadCache().refresh("GOOG") == 2
    now = fetcher.cached("GOOG", D(2012, 1, 1), D(2012, 6, 30))
    assert gone not in now.index and extra in now.index and len(now) == len(first)


def test_yfinance_cache_stores_only_finished_days(goog, monkeypatch):
    """A window reaching today stores rows only up to yesterday; today's bar is served, not kept."""
    from trainkit.data import yahoo

    today = dt.date(2012, 6, 29)
    monkeypatch.setattr(yahoo, "_today", lambda: today)
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    fetcher = YahooFetcher(session=session_with(adapter))
    frame = fetcher.fetch("GOOG", D(2012, 1, 1), today)
    assert frame.index[-1] == pd.Timestamp(today)
    stored, _, ce = DownloadCache().read("GOOG")
    assert ce == D(2012, 6, 28) and stored.index[-1] == pd.Timestamp("2012-06-28")
    assert fetcher.cached("GOOG", D(2012, 1, 1), today) is None  # today is asked again next time


def test_yfinance_cache_merges_of_two_processes_do_not_lose_rows(goog):
    """Merges hold the symbol's file lock: two downloads extending the stored window in opposite
    directions at once both end up in it (a read-merge-write without the lock loses one)."""
    clean = validate_ohlcv(goog, "GOOG")
    cache = DownloadCache()
    cache.write("GOOG", clean.loc["2010"], D(2010, 1, 1), D(2010, 12, 31))
    barrier = threading.Barrier(2)
    errors = []

    def merge(start: dt.date, end: dt.date) -> None:
        try:
            barrier.wait(10)
            DownloadCache().merge("GOOG", clean.loc[str(start):str(end)], start, end)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=merge, args=w) for w in
               ((D(2008, 1, 1), D(2010, 12, 31)), (D(2010, 1, 1), D(2012, 12, 31)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    stored, cs, ce = cache.read("GOOG")
    assert (cs, ce) == (D(2008, 1, 1), D(2012, 12, 31))
    pd.testing.assert_frame_equal(stored, clean.loc["2008":"2012"])
    assert cache.revisions("GOOG") is None


def test_cached_digest_matches_the_fetch_without_the_network(goog, tmp_path):
    window = (D(2010, 1, 1), D(2010, 12, 31))
    # synthetic: deterministic, whatever the seed
    for seed in (None, 4):
        assert cached_digest("synthetic", "GOOG", *window, data_seed=seed) == DataFetcherFactory.fetch(
            "synthetic", "GOOG", *window, data_seed=seed).digest
    # csv: from the file as it is now; an edit changes it
    path = write_goog_csv(goog, tmp_path / "g.csv")
    assert cached_digest(f"csv:{path}", "GOOG", *window) == DataFetcherFactory.fetch(f"csv:{path}", "GOOG", *window).digest
    before = cached_digest(f"csv:{path}", "GOOG", *window)
    goog.assign(Close=goog.Close * 1.01).to_csv(path)
    after = cached_digest(f"csv:{path}", "GOOG", *window)
    assert after != before and after == DataFetcherFactory.fetch(f"csv:{path}", "GOOG", *window).digest
    assert cached_digest(f"csv:{tmp_path / 'missing.csv'}", "GOOG", *window) is None
    # yfinance: None while the window is not in the local download cache (never asks Yahoo) ...
    assert cached_digest("yfinance", "GOOG", *window) is None
    assert "through TRAINKIT_YF_PROXY" in DataFetcherFactory.fetch("yfinance", "GOOG", *window).fallback_reason
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    YahooFetcher(session=session_with(adapter)).fetch("GOOG", D(2009, 6, 1), D(2011, 6, 30))
    # ... then exactly the digest the factory's fetch records (Yahoo still unreachable: from disk)
    result = DataFetcherFactory.fetch("yfinance", "GOOG", *window, no_fallback=True)
    assert cached_digest("yfinance", "GOOG", *window) == result.digest
    assert cached_digest("yfinance", "GOOG", D(2009, 1, 1), D(2010, 12, 31)) is None  # starts before the cache
    assert cached_digest("yfinance", "GOOG", D(2010, 1, 2), D(2010, 1, 3)) is None  # a weekend: no rows
    with pytest.raises(ConfigError):
        cached_digest("yahoo", "GOOG", *window)


def test_yfinance_unknown_symbol_is_a_clear_data_error(goog):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    with pytest.raises(DataError) as err:
        YahooFetcher(session=session_with(adapter)).fetch("NOSUCH", D(2010, 1, 1), D(2010, 12, 31))
    msg = str(err.value)
    assert "yfinance returned no rows for NOSUCH 2010-01-01..2010-12-31" in msg
    assert "unknown symbol" in msg and "\n" not in msg


def test_yfinance_hanging_network_fails_within_the_timeout(goog):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))}, delay=2.0)
    # the cause, not the clock: this message is raised only when the worker is still running at
    # the deadline and is abandoned (the transport is still sleeping), never after an answer
    with pytest.raises(DataError, match=r"did not answer within 0.5 s for GOOG"):
        YahooFetcher(session=session_with(adapter), timeout=0.5).fetch("GOOG", D(2010, 1, 1), D(2010, 12, 31))
    # let the abandoned worker finish so it cannot touch later tests' sessions
    for t in threading.enumerate():
        if t.name.startswith("trainkit-yfinance-"):
            t.join(10)


def _yf_shapes(goog: pd.DataFrame, symbol: str):
    """Frames in the shapes ``yf.download``/``Ticker.history`` really return."""
    base = goog.loc["2012-01-03":"2012-03-30"].copy()
    base.index = base.index.tz_localize(NY)  # Ticker.history: midnight in the exchange's zone
    adj = base.Close * 0.5
    auto = base[["Close", "High", "Low", "Open", "Volume"]]  # yfinance 1.x column order
    with_adj = base.assign(**{"Adj Close": adj})[["Adj Close", "Close", "High", "Low", "Open", "Volume"]]
    price_ticker = auto.copy()
    price_ticker.columns = pd.MultiIndex.from_product([auto.columns, [symbol]], names=["Price", "Ticker"])
    price_ticker_adj = with_adj.copy()
    price_ticker_adj.columns = pd.MultiIndex.from_product([with_adj.columns, [symbol]], names=["Price", "Ticker"])
    ticker_price = auto.copy()
    ticker_price.columns = pd.MultiIndex.from_product([[symbol], auto.columns], names=["Ticker", "Price"])
    two = pd.concat([price_ticker, price_ticker.rename(columns={symbol: "OTHER"}, level=1) * 3], axis=1)
    utc = auto.tz_convert("UTC")  # older yfinance: UTC stamps (05:00 for a New York midnight)
    return {
        "(Price,Ticker) auto-adjusted": (price_ticker, 1.0),
        "(Price,Ticker) with Adj Close": (price_ticker_adj, 0.5),
        "(Ticker,Price)": (ticker_price, 1.0),
        "two tickers": (two, 1.0),
        "flat tz-aware": (auto, 1.0),
        "flat with Adj Close": (with_adj, 0.5),
        "flat UTC": (utc, 1.0),
    }


def test_yfinance_output_shapes_are_normalised(goog):
    expected = goog.loc["2012-01-03":"2012-03-30"].astype("float64")
    expected.index = expected.index.as_unit("ns").rename("Date")
    for name, (raw, factor) in _yf_shapes(goog, "GOOG").items():
        frame = clean_download(raw, "GOOG")
        assert_clean(frame)
        exp = expected.copy()
        exp[["Open", "High", "Low", "Close"]] *= factor
        pd.testing.assert_frame_equal(frame, exp, check_exact=False, rtol=1e-12, obj=name)


def test_yfinance_empty_download_shapes_are_data_errors():
    from yfinance.utils import empty_df

    empty = empty_df()
    multi = empty.copy()
    multi.columns = pd.MultiIndex.from_product([empty.columns, ["AAPL"]], names=["Price", "Ticker"])
    for raw in (empty, multi, None):
        with pytest.raises(DataError, match="AAPL"):
            clean_download(raw, "AAPL")


def test_yfinance_unreachable_is_refused_at_once_naming_the_cause(monkeypatch):
    """Yahoo is unreachable on purpose (conftest: TRAINKIT_YF_PROXY is a closed port): yfinance's
    real code fails by a refused connection — not by waiting out a timeout — and says so."""
    proxy = os.environ["TRAINKIT_YF_PROXY"]
    assert proxy.startswith("http://127.0.0.1:") and yf_proxy() == proxy
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "600")  # a timeout could not explain a failure
    # a symbol no other test asks for: yfinance memoizes a failed time-zone lookup per symbol
    # for the whole process, and would then fail without connecting at all
    with pytest.raises(DataError) as err:
        YahooFetcher().fetch("UNRCH", D(2020, 1, 1), D(2022, 12, 31))
    msg = str(err.value)
    assert msg.startswith("yfinance returned no rows for UNRCH 2020-01-01..2022-12-31"), msg
    # refused, not timed out: yfinance reports the refused connection itself, or (when its
    # time-zone look-up is the call that was refused) that no time zone came back
    assert ("connect" in msg.lower() or "no timezone found" in msg) and "did not answer" not in msg, msg
    assert msg.endswith(f"(through TRAINKIT_YF_PROXY={proxy})") and "\n" not in msg
    assert DownloadCache().read("UNRCH") is None  # nothing cached from a failure


def test_yfinance_proxy_applies_only_without_an_explicit_session(goog, monkeypatch):
    import yfinance as yf

    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    frame = YahooFetcher(session=session_with(adapter)).fetch("GOOG", D(2010, 1, 1), D(2010, 3, 31))
    assert len(frame) > 40 and yf.config.network.proxy is None  # the session is the seam
    with pytest.raises(DataError, match="through TRAINKIT_YF_PROXY"):
        YahooFetcher(use_cache=False).fetch("GOOG", D(2010, 4, 1), D(2010, 6, 30))  # (yfinance memoizes answers)
    assert yf.config.network.proxy == os.environ["TRAINKIT_YF_PROXY"]
    for bad in ("ftp://host:21", "127.0.0.1:8080", "http://", "http://host:99999", "http://h:1/path"):
        monkeypatch.setenv("TRAINKIT_YF_PROXY", bad)
        with pytest.raises(ConfigError, match="TRAINKIT_YF_PROXY"):
            yf_proxy()
    monkeypatch.setenv("TRAINKIT_YF_PROXY", "socks5h://user:secret@proxy.example:1080")
    assert yf_proxy() == "socks5h://user:secret@proxy.example:1080"
    monkeypatch.setenv("TRAINKIT_YF_PROXY", "ftp://user:secret@proxy.example")
    with pytest.raises(ConfigError) as err:
        yf_proxy()
    assert "secret" not in str(err.value)
    monkeypatch.delenv("TRAINKIT_YF_PROXY")
    assert yf_proxy() is None


@pytest.mark.skipif(os.environ.get("TRAINKIT_TEST_LIVE_YAHOO") != "1",
                    reason="talks to the real Yahoo: set TRAINKIT_TEST_LIVE_YAHOO=1 on a machine with internet")
def test_yfinance_live(monkeypatch):
    monkeypatch.delenv("TRAINKIT_YF_PROXY")
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "30")
    frame = YahooFetcher().fetch("AAPL", D(2020, 1, 1), D(2022, 12, 31))
    assert_clean(frame)
    assert frame.index[0] == pd.Timestamp("2020-01-02") and frame.index[-1] == pd.Timestamp("2022-12-30")
    assert cached_digest("yfinance", "AAPL", D(2020, 1, 1), D(2022, 12, 31)) == frame_digest(frame)


def test_yfinance_timeout_setting(monkeypatch):
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "2.5")
    assert YahooFetcher().timeout == 2.5
    assert YahooFetcher(timeout=1).timeout == 1.0
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="TRAINKIT_YF_TIMEOUT"):
        YahooFetcher().timeout  # noqa: B018
    monkeypatch.delenv("TRAINKIT_YF_TIMEOUT")
    assert YahooFetcher().timeout == 10.0


# ============================================================================ factory
def test_factory_creates_fetchers(tmp_path):
    assert isinstance(DataFetcherFactory.create("yfinance"), YahooFetcher)
    assert DataFetcherFactory.create("YFinance", timeout=3).timeout == 3.0
    s = DataFetcherFactory.create("synthetic", data_seed=5)
    assert isinstance(s, SyntheticFetcher) and s.data_seed == 5
    c = DataFetcherFactory.create(f"csv:{tmp_path}/../{tmp_path.name}/a.csv")
    assert isinstance(c, CsvFetcher) and c.path == str(tmp_path / "a.csv")
    for bad in ("", "yahoo", "csv:"):
        with pytest.raises(ConfigError):
            DataFetcherFactory.create(bad)


def test_factory_falls_back_to_synthetic_loudly(caplog, monkeypatch):
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "5")
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        result = DataFetcherFactory.fetch("yfinance", "aapl", D(2020, 1, 1), D(2020, 12, 31))
    assert isinstance(result, FetchResult) and result.fell_back
    assert (result.requested_source, result.effective_source) == ("yfinance", "synthetic")
    assert "AAPL" in result.fallback_reason and result.data_seed == default_data_seed("AAPL")
    assert "TRAINKIT_YF_PROXY" in result.fallback_reason  # refused by the closed port, on purpose
    expected = SyntheticFetcher().fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31))
    pd.testing.assert_frame_equal(result.frame, expected)
    assert result.digest == frame_digest(expected)
    assert any("falling back to synthetic" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    with pytest.raises(AttributeError):
        result.effective_source = "yfinance"  # frozen
    seeded = DataFetcherFactory.fetch("yfinance", "AAPL", D(2020, 1, 1), D(2020, 12, 31), data_seed=9)
    assert seeded.data_seed == 9 and seeded.digest == frame_digest(
        SyntheticFetcher(data_seed=9).fetch("AAPL", D(2020, 1, 1), D(2020, 12, 31)))
    with pytest.raises(DataError, match="--no-fallback was given"):
        DataFetcherFactory.fetch("yfinance", "AAPL", D(2020, 1, 1), D(2020, 12, 31), no_fallback=True)


def test_factory_uses_the_download_cache_and_reports_sources(goog, tmp_path):
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    YahooFetcher(session=session_with(adapter)).fetch("GOOG", D(2008, 1, 1), D(2012, 12, 31))
    # the factory's own fetcher (no seam, offline machine) is answered by the disk cache
    result = DataFetcherFactory.fetch("yfinance", "GOOG", D(2010, 1, 1), D(2010, 12, 31), no_fallback=True)
    assert not result.fell_back and result.effective_source == "yfinance" and result.fallback_reason is None
    np.testing.assert_allclose(result.frame.to_numpy(), expected_adjusted(goog, "2010-01-01", "2010-12-31").to_numpy())
    path = write_goog_csv(goog, tmp_path / "g.csv")
    rel = os.path.relpath(path)
    csv_result = DataFetcherFactory.fetch(f"csv:{rel}", "GOOG", D(2010, 1, 1), D(2010, 12, 31))
    assert csv_result.requested_source == csv_result.effective_source == f"csv:{path}"
    assert csv_result.data_seed is None and csv_result.digest == frame_digest(csv_result.frame)
    syn = DataFetcherFactory.fetch("synthetic", "GOOG", D(2010, 1, 1), D(2010, 12, 31), data_seed=4)
    assert syn.effective_source == "synthetic" and not syn.fell_back and syn.data_seed == 4


def test_probe_is_memoized_and_counts_the_disk_cache(goog, monkeypatch, caplog):
    monkeypatch.setenv("TRAINKIT_YF_TIMEOUT", "600")
    with caplog.at_level(logging.INFO, logger="trainkit"):
        assert DataFetcherFactory.probe("yfinance", "GOOG", D(2010, 1, 1), D(2010, 12, 31)) is False
    # the answer came from a refused connection (Yahoo unreachable on purpose), not a timeout
    [note] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("probe of yfinance")]
    assert "TRAINKIT_YF_PROXY" in note and "did not answer" not in note, note
    adapter = RecordedYahoo({"GOOG": (goog, goog_adjustment(goog))})
    YahooFetcher(session=session_with(adapter)).fetch("GOOG", D(2010, 1, 1), D(2010, 12, 31))
    # asked once per process: the answer stands even though the cache could now answer
    assert DataFetcherFactory.probe("yfinance", "GOOG", D(2010, 1, 1), D(2010, 12, 31)) is False
    DataFetcherFactory.reset_probes()
    assert DataFetcherFactory.probe("yfinance", "GOOG", D(2010, 1, 1), D(2010, 12, 31)) is True
    assert DataFetcherFactory.probe("synthetic", "GOOG", D(2010, 1, 1), D(2010, 12, 31)) is True


def test_importing_trainkit_and_data_does_not_import_yfinance():
    code = ("import sys, trainkit; assert 'pandas' not in sys.modules, 'pandas'; "
            "import trainkit.data; assert 'yfinance' not in sys.modules, 'yfinance'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_download_cache_is_its_own_room_and_stays_importable_from_yahoo():
    """The cache never needs the yfinance adapter; the names it had in ``trainkit.data.yahoo``
    are the same objects there (REFRESH_HINT names that path to users)."""
    import ast

    from trainkit.data import download_cache, yahoo

    with open(download_cache.__file__, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.startswith(("yfinance", "trainkit.data.yahoo"))}, imported

    for name in ("DownloadCache", "MergeOutcome", "REFRESH_HINT", "LOCK_TIMEOUT", "cache_dir"):
        assert getattr(yahoo, name) is getattr(download_cache, name), name
    assert yahoo.REFRESH_HINT.startswith("trainkit.data.yahoo.DownloadCache()")


def test_ten_years_from_synthetic_and_csv(goog, tmp_path):
    """Ten years from each offline source, in full (their speed is measured by bench/bench_data.py)."""
    frame = SyntheticFetcher(data_seed=1).fetch("TENY", D(2010, 1, 1), D(2019, 12, 31))
    path = write_goog_csv(goog, tmp_path / "goog10.csv")
    csv_frame = CsvFetcher(path).fetch("GOOG", D(2003, 1, 1), D(2013, 12, 31))
    assert len(frame) == 2608 and len(csv_frame) == len(goog)
    assert_clean(frame)
    assert_clean(csv_frame)
