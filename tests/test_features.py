"""trainkit.features on real prices (backtesting's GOOG daily bars, 2004-08..2013-03)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from backtesting.test import GOOG

from trainkit.config import FEATURE_CATALOG_SIZE
from trainkit.errors import ConfigError, DataError
from trainkit.features import (
    FEATURE_DOCS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    MIN_WINDOW_ROWS,
    WARMUP_BARS,
    FeatureSet,
    Scaler,
    build_features,
    parse_spec,
    raw_features,
    warmup_start,
)

#: exponentially smoothed features: infinite memory, so only approximately independent of where
#: the frame starts once their burn-in is over
EWM_FEATURES = {"rsi_14", "macd_hist", "atr_14", "adx_14", "macd", "macd_signal", "ema_ratio_20", "ema_ratio_50"}


@pytest.fixture(scope="module")
def goog() -> pd.DataFrame:
    frame = GOOG[["Open", "High", "Low", "Close", "Volume"]].astype("float64")
    frame.index = pd.DatetimeIndex(frame.index.values.astype("datetime64[ns]"), name="Date")
    return frame


@pytest.fixture(scope="module")
def goog_raw(goog: pd.DataFrame) -> pd.DataFrame:
    return raw_features(goog)


def _frame_from(goog: pd.DataFrame, first: dt.date | str) -> pd.DataFrame:
    return goog.loc[pd.Timestamp(first):]


# ------------------------------------------------------------------------------ catalog
def test_catalog_is_ordered_documented_and_sized() -> None:
    assert len(FEATURE_NAMES) == FEATURE_CATALOG_SIZE == 32
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert list(FEATURE_DOCS) == list(FEATURE_NAMES)
    for name, doc in FEATURE_DOCS.items():
        assert doc.strip() and "\n" not in doc and len(doc) < 120, name
    # the most basic features first: returns, then realised volatility
    assert FEATURE_NAMES[:6] == ("logret_1", "logret_5", "logret_21", "logret_63", "vol_21", "vol_63")
    assert {"rsi_14", "macd_hist", "bb_pctb_20", "atr_14", "adx_14", "sma_ratio_200", "mfi_14"} <= set(FEATURE_NAMES[:21])
    assert WARMUP_BARS == 199  # the 200-day SMA ratio is the slowest feature


@pytest.mark.parametrize("bad", [0, 33, -1, True, 2.5, "21"])
def test_feature_count_out_of_range(goog: pd.DataFrame, bad: object) -> None:
    with pytest.raises(ConfigError, match="feature_count"):
        build_features(goog, bad)  # type: ignore[arg-type]


def test_shapes_dtypes_and_alignment(goog: pd.DataFrame) -> None:
    fs = build_features(goog, start="2006-01-01", end="2009-12-31")
    assert isinstance(fs, FeatureSet)
    window = goog.loc["2006-01-01":"2009-12-31"]
    assert len(fs) == len(window) == fs.matrix.shape[0]
    assert fs.matrix.shape == (len(window), 21) and fs.names == FEATURE_NAMES[:21]
    assert fs.matrix.dtype == np.float32 and fs.matrix.flags.c_contiguous
    assert np.isfinite(fs.matrix).all() and np.abs(fs.matrix).max() <= 10.0
    assert fs.closes.dtype == np.float64 and np.array_equal(fs.closes, window["Close"].to_numpy())
    assert fs.dates.dtype == np.dtype("datetime64[ns]")
    assert np.array_equal(fs.dates, window.index.values)
    assert fs.dates[0] == np.datetime64("2006-01-03") and fs.dates[-1] == np.datetime64("2009-12-31")


def test_extreme_counts_and_prefix(goog: pd.DataFrame) -> None:
    """feature_count=k is exactly the first k columns of the full catalog."""
    full = build_features(goog, 32, start="2007-01-01", end="2010-12-31")
    assert full.matrix.shape[1] == 32
    for k in (1, 6, 21):
        part = build_features(goog, k, start="2007-01-01", end="2010-12-31")
        assert part.names == FEATURE_NAMES[:k]
        np.testing.assert_array_equal(part.matrix, full.matrix[:, :k])


def test_start_none_begins_at_first_complete_row(goog: pd.DataFrame) -> None:
    fs = build_features(goog, 32)
    assert fs.dates[0] == goog.index.values[WARMUP_BARS]
    fs4 = build_features(goog, 4)  # returns up to 63 days only need 63 bars
    assert fs4.dates[0] == goog.index.values[63]


# ------------------------------------------------------------------------------ causality and warm-up
@pytest.mark.parametrize("cut", ["2007-03-15", "2008-10-10", "2010-06-30", "2012-12-31"])
def test_causal_truncation_matches_full_build(goog: pd.DataFrame, cut: str) -> None:
    """The row of day t only depends on bars up to t: truncating the frame after t, or
    scribbling over every bar after t, leaves rows up to t untouched."""
    full = build_features(goog, 32, start="2006-01-03")
    n = int((full.dates <= np.datetime64(cut)).sum())
    truncated = build_features(goog.loc[:cut], 32, scaler=full.scaler, start="2006-01-03")
    assert len(truncated) == n
    np.testing.assert_array_equal(truncated.matrix, full.matrix[:n])
    np.testing.assert_array_equal(truncated.dates, full.dates[:n])

    future = goog.copy()
    after = future.index > pd.Timestamp(cut)
    rng = np.random.default_rng(7)
    future.loc[after, ["Open", "High", "Low", "Close"]] *= rng.uniform(0.5, 2.0, size=(int(after.sum()), 1))
    future.loc[after, "Volume"] *= 3.0
    scribbled = build_features(future, 32, scaler=full.scaler, start="2006-01-03")
    np.testing.assert_array_equal(scribbled.matrix[:n], full.matrix[:n])
    assert not np.array_equal(scribbled.matrix[n + 5 :], full.matrix[n + 5 :])


def test_raw_warmup_is_nan_then_finite(goog_raw: pd.DataFrame) -> None:
    """Each feature is NaN exactly during its own warm-up (no ta zeros, no back-fill) and finite
    afterwards on real data."""
    values = goog_raw.to_numpy()
    first_valid = np.argmax(np.isfinite(values), axis=0)
    assert first_valid.max() == WARMUP_BARS
    for j, name in enumerate(FEATURE_NAMES):
        assert np.isnan(values[: first_valid[j], j]).all(), name
        assert np.isfinite(values[first_valid[j] :, j]).all(), name
    assert first_valid[FEATURE_NAMES.index("logret_1")] == 1
    assert first_valid[FEATURE_NAMES.index("adx_14")] > 28  # ta's ADX is zero, not NaN, for 2*14 bars


@pytest.mark.parametrize("skip", [150, 400, 900, 1500])
def test_lookbacks_are_long_enough(goog: pd.DataFrame, goog_raw: pd.DataFrame, skip: int) -> None:
    """A feature's first valid value on a frame that starts later must not depend on the bars it
    never saw: exactly for rolling-window features, within 2% of a std for the smoothed ones."""
    late = raw_features(goog.iloc[skip:]).to_numpy()
    full = goog_raw.to_numpy()[skip:]
    spread = np.nanstd(goog_raw.to_numpy(), axis=0)
    first_valid = np.argmax(np.isfinite(late), axis=0)
    for j, name in enumerate(FEATURE_NAMES):
        a, b = late[first_valid[j] :, j], full[first_valid[j] :, j]
        if name in EWM_FEATURES:
            assert np.max(np.abs(a - b)) < 0.02 * spread[j], name
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name)


def test_not_enough_history(goog: pd.DataFrame) -> None:
    start = dt.date(2008, 1, 2)
    short = goog.loc["2007-08-01":]  # ~100 bars before start
    with pytest.raises(DataError, match="not enough history before 2008-01-02") as err:
        build_features(short, 21, start=start, end="2009-12-31")
    assert warmup_start(start).isoformat() in str(err.value)
    # features that need little history are fine on the same frame
    assert len(build_features(short, 4, start=start, end="2009-12-31")) > 400


@pytest.mark.parametrize("start", [dt.date(2008, 1, 2), dt.date(2007, 1, 1), dt.date(2009, 7, 4), dt.date(2011, 11, 25)])
def test_warmup_start_gives_enough_history(goog: pd.DataFrame, start: dt.date) -> None:
    """Fetching from warmup_start(start) — a holiday, a weekend or a plain day — gives every
    feature on the first trading day on or after start."""
    first = warmup_start(start)
    assert first < start and np.busday_count(first, start) >= WARMUP_BARS
    assert (start - first).days < 366  # not absurdly much
    fs = build_features(_frame_from(goog, first), 32, start=start, end=start + dt.timedelta(days=200))
    expected = goog.index[goog.index >= pd.Timestamp(start)][0]
    assert fs.dates[0] == np.datetime64(expected)
    assert warmup_start(start.isoformat()) == first


def test_window_too_short_or_reversed(goog: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=f"at least {MIN_WINDOW_ROWS}"):
        build_features(goog, 21, start="2010-01-04", end="2010-02-05")
    with pytest.raises(DataError, match="only 0 trading days"):
        build_features(goog, 21, start="2015-01-01", end="2016-01-01")
    with pytest.raises(ConfigError, match="after end"):
        build_features(goog, 21, start="2010-06-01", end="2010-01-01")
    with pytest.raises(ConfigError):
        build_features(goog, 21, start="2010-13-01")


def test_bad_frames_raise_data_error(goog: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="Volume"):
        build_features(goog.drop(columns="Volume"))
    broken = goog.copy()
    broken.iloc[500, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        build_features(broken)
    with pytest.raises(DataError, match="sorted"):
        build_features(goog.iloc[::-1])
    with pytest.raises(DataError, match="DatetimeIndex"):
        build_features(goog.reset_index(drop=True))


# ------------------------------------------------------------------------------ scaling
def test_scaler_is_fitted_on_the_training_window_only(goog: pd.DataFrame, goog_raw: pd.DataFrame) -> None:
    train = build_features(goog, 21, start="2006-01-01", end="2009-12-31")
    window_raw = goog_raw.loc["2006-01-01":"2009-12-31"].to_numpy()[:, :21]
    np.testing.assert_allclose(train.scaler.mean, window_raw.mean(axis=0), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(train.scaler.std, window_raw.std(axis=0), rtol=1e-9)
    m = train.matrix.astype(np.float64)
    assert np.abs(m.mean(axis=0)).max() < 0.02
    assert np.abs(m.std(axis=0) - 1.0).max() < 0.05
    # later bars in the frame change nothing about the training scaler (no leakage)
    assert build_features(goog.loc[:"2009-12-31"], 21, start="2006-01-01").scaler == train.scaler

    # a backtest window is scaled with the training statistics, not its own
    test_raw = goog_raw.loc["2010-01-01":"2012-12-31"].to_numpy()[:, :21]
    backtest = build_features(goog, 21, scaler=train.scaler, start="2010-01-01", end="2012-12-31")
    assert backtest.scaler is train.scaler
    np.testing.assert_array_equal(backtest.matrix, train.scaler.transform(test_raw))
    own = build_features(goog, 21, start="2010-01-01", end="2012-12-31")
    assert own.scaler != train.scaler
    assert np.abs(backtest.matrix - own.matrix).max() > 0.1


def test_scaler_transform_contract() -> None:
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0], [2.0, 5.0, 1e6]])
    s = Scaler.fit(x)
    assert s.std[1] == 1.0  # constant column: only centred
    out = s.transform(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0], [-1.2247449, 1.2247449, 0.0], rtol=1e-6)
    assert (out[:, 1] == 0).all()
    assert out[:, 2].max() <= 10.0 and out[:, 2].min() >= -10.0
    assert s.transform(np.array([[1e9, 5.0, -1e9]]))[0].tolist() == [10.0, 0.0, -10.0]
    assert Scaler((0.0,), (0.0,)).transform(np.array([[3.0]]))[0, 0] == 3.0  # std == 0 -> 1
    with pytest.raises(ConfigError, match="3 features"):
        s.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        Scaler.fit(np.array([[np.nan, 1.0]]))


def test_scaler_and_spec_round_trip_through_json(goog: pd.DataFrame) -> None:
    fs = build_features(goog, 12, start="2006-01-01", end="2009-12-31")
    text = json.dumps(fs.scaler.to_dict(), allow_nan=False)
    back = Scaler.from_dict(json.loads(text))
    assert back == fs.scaler
    np.testing.assert_array_equal(back.transform(np.ones((2, 12))), fs.scaler.transform(np.ones((2, 12))))

    spec = json.loads(json.dumps(fs.spec(), allow_nan=False))
    assert spec["feature_names"] == list(FEATURE_NAMES[:12]) and spec["feature_count"] == 12
    assert spec["warmup_bars"] == WARMUP_BARS and spec["feature_version"] == FEATURE_VERSION == 1
    count, scaler = parse_spec(spec)
    assert count == 12 and scaler == fs.scaler
    again = build_features(goog, count, scaler=scaler, start="2006-01-01", end="2009-12-31")
    np.testing.assert_array_equal(again.matrix, fs.matrix)

    with pytest.raises(ConfigError, match="version"):
        parse_spec({**spec, "feature_version": 99})
    with pytest.raises(ConfigError, match="catalog"):
        parse_spec({**spec, "feature_names": list(reversed(spec["feature_names"]))})
    with pytest.raises(ConfigError):
        Scaler.from_dict({"mean": [0.0, 1.0], "std": [1.0]})
    with pytest.raises(ConfigError):
        Scaler.from_dict({"mean": [0.0]})
    with pytest.raises(ConfigError, match="scaler has 12"):
        build_features(goog, 21, scaler=scaler)


# ------------------------------------------------------------------------------ properties
def test_deterministic_bytes(goog: pd.DataFrame) -> None:
    a = build_features(goog.copy(), 32, start="2006-01-01")
    b = build_features(goog.copy(), 32, start="2006-01-01")
    assert a.matrix.tobytes() == b.matrix.tobytes()
    assert a.closes.tobytes() == b.closes.tobytes() and a.dates.tobytes() == b.dates.tobytes()
    assert json.dumps(a.spec(), sort_keys=True) == json.dumps(b.spec(), sort_keys=True)


def test_features_are_scale_free(goog: pd.DataFrame, goog_raw: pd.DataFrame) -> None:
    """The same market at 37x the price and 5x the volume has the same raw features."""
    scaled = goog.copy()
    scaled[["Open", "High", "Low", "Close"]] *= 37.0
    scaled["Volume"] *= 5.0
    np.testing.assert_allclose(raw_features(scaled).to_numpy(), goog_raw.to_numpy(), rtol=1e-6, atol=1e-6)


def test_degenerate_bars_give_neutral_finite_features(goog: pd.DataFrame) -> None:
    """A trading halt (flat bars, zero volume) and an index without volume build without NaN."""
    halted = goog.copy()
    rows = slice(800, 860)
    last = halted["Close"].iloc[799]
    halted.iloc[rows, :4] = last
    halted.iloc[rows, 4] = 0.0
    fs = build_features(halted, 32, start="2006-01-03")
    assert np.isfinite(fs.matrix).all()
    raw = raw_features(halted).iloc[rows]
    assert (raw["logret_1"] == 0).all() and (raw["hl_range"] == 0).all() and (raw["close_location"] == 0).all()
    assert (raw.iloc[25:]["mfi_14"] == 50.0).all() and (raw.iloc[25:]["obv_flow_21"] == 0.0).all()

    no_volume = goog.copy()
    no_volume["Volume"] = 0.0
    fs = build_features(no_volume, 32)
    assert np.isfinite(fs.matrix).all()
    col = list(fs.names).index("volume_z_21")
    assert (fs.matrix[:, col] == 0).all() and fs.scaler.std[col] == 1.0


def test_ten_years_build() -> None:
    """~10 years of daily bars plus warm-up (2,760 rows) build into 2,520 finite rows, the same
    twice. How long that takes is measured by ``make bench`` (bench/bench_timings.py), not here."""
    rng = np.random.default_rng(0)
    n = 2520 + 240
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.007, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.007, n)))
    frame = pd.DataFrame(
        {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": rng.integers(1e5, 1e7, n).astype(float)},
        index=pd.bdate_range("2010-01-01", periods=n, name="Date"),
    )
    start = frame.index[240].date()
    fs = build_features(frame, 32, start=start)
    assert len(fs) == 2520 and np.isfinite(fs.matrix).all()
    again = build_features(frame, 32, start=start)
    np.testing.assert_array_equal(again.matrix, fs.matrix)
