"""Benchmark: fetch + feature build for 10 years of daily data (issue 2)."""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import tempfile
import time


def _median_ms(fn, repeat: int = 5) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def run() -> list[tuple[str, str, str]]:
    os.environ.setdefault("TRAINKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    from backtesting.test import GOOG

    from trainkit.data import DataFetcherFactory
    from trainkit.features import build_features, warmup_start

    start, end = dt.date(2010, 1, 4), dt.date(2019, 12, 31)

    def synthetic() -> None:
        r = DataFetcherFactory.fetch("synthetic", "BENCH", warmup_start(start), end)
        build_features(r.frame, 21, start=start, end=end)

    tmp = tempfile.mkdtemp(prefix="tk-bench-")
    path = os.path.join(tmp, "GOOG.csv")
    GOOG.to_csv(path, index_label="Date")
    g_start, g_end = dt.date(2005, 7, 1), dt.date(2013, 3, 1)

    def csv() -> None:
        r = DataFetcherFactory.fetch(f"csv:{path}", "GOOG", warmup_start(g_start), g_end)
        build_features(r.frame, 21, start=g_start, end=g_end)

    cold = time.perf_counter()
    synthetic()
    cold_ms = (time.perf_counter() - cold) * 1000

    from trainkit.data import synthetic as synth
    from trainkit.data.csv import clear_cache

    def whole_path() -> None:  # what the first fetch of a (symbol, data_seed) pays, once per process
        synth.full_path.cache_clear()
        synth.full_path("BENCH", 1)

    def csv_cold() -> None:  # parse + validate (later fetches of the same content: hash + copy)
        clear_cache()
        DataFetcherFactory.fetch(f"csv:{path}", "GOOG", g_start, g_end)

    return [
        ("synthetic whole path 1970..2045, one symbol (median of 5)", f"{_median_ms(whole_path):.0f} ms", ""),
        ("fetch, GOOG CSV all rows, parsed cold (median of 5)", f"{_median_ms(csv_cold):.0f} ms", ""),
        ("fetch+features, synthetic 10y (first call in process)", f"{cold_ms:.0f} ms", ""),
        ("fetch+features, synthetic 10y (warm, median of 5)", f"{_median_ms(synthetic):.0f} ms", ""),
        ("fetch+features, GOOG CSV 2005-07..2013-03 (median of 5)", f"{_median_ms(csv):.0f} ms", ""),
    ]


if __name__ == "__main__":
    for name, value, note in run():
        print(f"{name:<60} {value:>12}  {note}")
    sys.exit(0)
