"""Backtests by model URI, on real GOOG prices (``backtesting.test.GOOG``) through the CSV source.

A small real PPO model is trained on 2005-07..2009 and backtested on 2010..2012 by URI. The
checks that matter: buy-and-hold against the prices themselves, the strategy's equity against
an independent recomputation from its positions (costs as in training), the logged run and its
lineage, identical numbers in fresh processes, the in-sample warning and the data-source
override."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support import FAST, copy_sqlite_store
from trainkit.backtest import METRIC_NAMES, BacktestResult, compute_metrics, run_backtest
from trainkit.errors import ConfigError, DataError, ModelNotFoundError, ModelURIError

TRAIN = ("2005-07-01", "2009-12-31")
TEST = ("2010-01-01", "2012-12-31")


def goog() -> pd.DataFrame:
    from backtesting.test import GOOG

    return GOOG.copy()


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index_label="Date")
    return path


def train_goog(tmp_path: Path, **options):
    """(manager, ModelResult, csv path): a real small PPO model on GOOG 2005-07..2009."""
    from trainkit import TrainingManager

    csv = write_csv(goog(), tmp_path / "GOOG.csv")
    manager = TrainingManager()
    res = manager.get("GOOG", *TRAIN, data_source=f"csv:{csv}", progress=False, **{**FAST, **options})
    assert res.status == "trained"
    return manager, res, csv


@pytest.fixture(scope="module")
def _goog_store(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path):
    """One store and one trained model for the whole module: every test here only reads the
    model. Laid out like ``sqlite_uri`` (a copy of the session's migrated template, the db and
    ./mlruns in one temp dir)."""
    root = tmp_path_factory.mktemp("backtest-store")
    uri = copy_sqlite_store(sqlite_template, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRAINKIT_CACHE_DIR", str(root / "cache"))
        mp.setenv("TRAINKIT_CLAIM_SETTLE", "0.3")
        mp.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        manager, trained, csv = train_goog(root)
        # create the backtest experiment now, while ./mlruns is the temp dir
        manager.store.conn.experiment_id("trainkit-backtests")
    return root, uri, manager, trained, csv


@pytest.fixture
def goog_model(_goog_store, monkeypatch: pytest.MonkeyPatch):
    """(manager, ModelResult, csv path) of the module's model, its store in force."""
    root, uri, manager, trained, csv = _goog_store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return manager, trained, csv


# ----------------------------------------------------------------------------- metrics (pure)
def test_metrics_match_a_hand_computation() -> None:
    closes = np.array([100.0, 110.0, 99.0, 99.0, 108.9])
    positions = np.array([1.0, -1.0, 0.0, 1.0, 1.0])  # the last one earns nothing
    cost = 10 / 1e4
    gross = positions[:-1] * (closes[1:] / closes[:-1] - 1.0)  # +0.10, +0.10, 0, +0.10
    costs = cost * np.array([1.0, 2.0, 1.0, 1.0])
    r = gross - costs
    m, equity = compute_metrics(r, positions, closes)

    assert set(m) == set(METRIC_NAMES)
    e = [1.0]
    for x in r:
        e.append(e[-1] * (1 + x))
    assert equity == pytest.approx(e, rel=1e-15)
    assert m["total_return"] == pytest.approx(e[-1] - 1, rel=1e-14)
    assert m["annualized_return"] == pytest.approx(e[-1] ** (252 / 4) - 1, rel=1e-12)
    sd = np.sqrt(sum((x - r.mean()) ** 2 for x in r) / 3)
    assert m["annualized_volatility"] == pytest.approx(sd * math.sqrt(252), rel=1e-12)
    assert m["sharpe"] == pytest.approx(r.mean() / sd * math.sqrt(252), rel=1e-12)
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / 4)  # only the flat day lost (its cost)
    assert m["sortino"] == pytest.approx(r.mean() / downside * math.sqrt(252), rel=1e-12)
    peak = np.maximum.accumulate(e)
    assert m["max_drawdown"] == pytest.approx(min(np.array(e) / peak - 1), rel=1e-12) and m["max_drawdown"] < 0
    assert m["n_trades"] == 4 and isinstance(m["n_trades"], int)  # enter long, flip short, go flat, go long
    assert m["turnover"] == 5.0  # 1 + 2 + 1 + 1
    assert m["exposure"] == 0.75
    assert m["buy_and_hold_return"] == pytest.approx(108.9 / 100 - 1, rel=1e-14)
    assert m["excess_return"] == pytest.approx(m["total_return"] - m["buy_and_hold_return"], rel=1e-12)


def test_metrics_of_a_strategy_that_never_trades() -> None:
    closes = np.linspace(100, 150, 40)
    m, equity = compute_metrics(np.zeros(39), np.zeros(40), closes)
    assert (equity == 1.0).all()
    assert m["total_return"] == m["annualized_return"] == m["annualized_volatility"] == 0.0
    assert m["sharpe"] == m["sortino"] == m["max_drawdown"] == 0.0
    assert m["n_trades"] == m["turnover"] == m["exposure"] == 0.0
    assert m["buy_and_hold_return"] == pytest.approx(0.5)
    assert m["excess_return"] == pytest.approx(-0.5)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("uri", "start", "end", "source", "error", "fragment"),
    [
        ("s3://bucket/model", *TEST, None, ModelURIError, "invalid model URI"),
        ("runs:/abc", *TEST, None, ModelURIError, "invalid model URI"),
        ("runs:/" + "a" * 32 + "/model", "2012-12-31", "2010-01-01", None, ConfigError, "must be before"),
        ("runs:/" + "a" * 32 + "/model", "2010-13-01", "2011-01-01", None, ConfigError, "not a valid date"),
        ("runs:/" + "a" * 32 + "/model", "2010-01-01", "2999-01-01", None, ConfigError, "in the future"),
        ("runs:/" + "a" * 32 + "/model", "2010-01-01", "2010-01-20", None, ConfigError, "at least 30"),
        ("models:/trainkit-GOOG@champion", *TEST, "parquet:x", ConfigError, "unknown data source"),
    ],
)
def test_invalid_requests_fail_before_any_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri, start, end,
                                             source, error, fragment) -> None:
    db = tmp_path / "never.db"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=fragment) as exc:
        run_backtest(uri, start, end, data_source=source, tracking_uri=f"sqlite:///{db}")
    assert exc.value.exit_code == 2
    assert not db.exists() and not (tmp_path / "mlruns").exists()


def test_unknown_model_is_a_runtime_error(goog_model) -> None:
    with pytest.raises(ModelNotFoundError) as exc:
        run_backtest("runs:/" + "0" * 32 + "/model", *TEST)
    assert exc.value.exit_code == 1


# ----------------------------------------------------------------------------- the real thing
def test_backtest_by_run_uri_against_the_prices_and_the_logged_run(goog_model, tmp_path: Path) -> None:
    manager, trained, csv = goog_model
    client = manager.store.client

    res = run_backtest(trained.model_uri, *TEST)
    assert isinstance(res, BacktestResult)
    assert res.warnings == []
    assert (res.symbol, res.start, res.end) == ("GOOG", *TEST)
    assert res.source_run_id == trained.run_id
    assert res.data_source == res.data_source_effective == f"csv:{csv}"

    # buy and hold against the prices themselves
    prices = goog().loc[TEST[0]:TEST[1], "Close"]
    assert res.first_day == str(prices.index[0].date()) == "2010-01-04"
    assert res.last_day == str(prices.index[-1].date()) == "2012-12-31"
    assert res.n_days == len(prices)
    assert res.metrics["buy_and_hold_return"] == pytest.approx(prices.iloc[-1] / prices.iloc[0] - 1, rel=1e-12)

    # the strategy's equity, recomputed from its positions with the training costs
    eq = res.equity
    assert list(eq["close"]) == list(prices)
    pos = eq["position"].to_numpy()
    assert set(np.unique(pos)) <= {-1.0, 0.0, 1.0}
    assert 0 < res.metrics["n_trades"] < res.n_days  # the policy does trade, not on every day
    assert trained.config.cost_bps == 5.0
    held = pos[:-1]
    traded = np.abs(np.diff(np.concatenate(([0.0], held))))
    daily = held * (prices.to_numpy()[1:] / prices.to_numpy()[:-1] - 1) - 5.0 / 1e4 * traded
    assert eq["strategy_equity"].to_numpy() == pytest.approx(np.concatenate(([1.0], np.cumprod(1 + daily))), rel=1e-10)
    assert res.metrics["total_return"] == pytest.approx(np.prod(1 + daily) - 1, rel=1e-10)
    assert res.metrics["turnover"] == traded.sum()
    assert res.metrics["n_trades"] == np.count_nonzero(traded)
    assert res.metrics["exposure"] == pytest.approx(np.mean(held != 0))
    assert all(math.isfinite(res.metrics[k]) for k in METRIC_NAMES)
    assert json.loads(json.dumps(res.to_dict()))["metrics"] == res.metrics

    # the logged run
    run = client.get_run(res.run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "trainkit-backtests"
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["trainkit.model_uri"] == trained.model_uri
    assert tags["trainkit.source_run_id"] == trained.run_id
    assert tags["trainkit.symbol"] == "GOOG"
    assert tags["trainkit.in_sample"] == "false"
    assert "config_hash" not in tags  # a run without a model never carries the cache key
    p = run.data.params
    assert (p["start"], p["end"], p["first_day"], p["last_day"]) == (*TEST, "2010-01-04", "2012-12-31")
    assert p["data_source"] == f"csv:{csv}" and p["data_source_override"] == "false"
    assert run.data.metrics == pytest.approx(res.metrics, rel=1e-12)
    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"equity_curve.png", "equity.csv"} <= arts
    local = Path(client.download_artifacts(res.run_id, "", str(tmp_path / "arts")))
    assert (local / "equity_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    daily_csv = pd.read_csv(local / "equity.csv")
    assert list(daily_csv["date"]) == [str(d.date()) for d in prices.index]
    assert daily_csv["strategy_equity"].to_numpy() == pytest.approx(eq["strategy_equity"].to_numpy(), rel=1e-12)
    assert list(daily_csv["position"]) == list(pos)

    # lineage: the tags lead back to the training run and its model
    source = client.get_run(tags["trainkit.source_run_id"])
    assert client.get_experiment(source.info.experiment_id).name == "trainkit"
    assert source.data.tags["config_hash"] == trained.config_hash == res.config_hash
    assert tags["trainkit.model_id"] == source.data.tags["trainkit.model_id"]
    assert tags["trainkit.source_config_hash"] == trained.config_hash

    # the same model by its LoggedModel URI: the same numbers, its own run
    by_id = run_backtest(f"models:/{tags['trainkit.model_id']}", *TEST)
    assert by_id.metrics == res.metrics
    assert by_id.run_id != res.run_id and by_id.source_run_id == trained.run_id
    runs = client.search_runs([exp.experiment_id], "tags.`trainkit.source_run_id` = '%s'" % trained.run_id)
    assert {res.run_id, by_id.run_id} <= {r.info.run_id for r in runs}


_CHILD = """
import json, sys
from trainkit.backtest import run_backtest
res = run_backtest(sys.argv[1], sys.argv[2], sys.argv[3], log=False)
print(json.dumps({k: repr(v) for k, v in res.metrics.items()}))
"""


def test_the_same_uri_and_window_give_identical_metrics_in_fresh_processes(goog_model, tmp_path: Path) -> None:
    manager, trained, _csv = goog_model
    first = run_backtest(trained.model_uri, *TEST)
    again = run_backtest(trained.model_uri, *TEST)
    assert again.metrics == first.metrics  # exact, not approximate
    assert again.equity.equals(first.equity)
    assert manager.store.client.get_run(again.run_id).data.metrics == first.metrics

    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, trained.model_uri, *TEST], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for _ in range(2)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    expected = {k: repr(v) for k, v in first.metrics.items()}
    assert outs[0] == outs[1] == expected


def test_a_window_overlapping_training_is_warned_about(goog_model, caplog: pytest.LogCaptureFixture) -> None:
    manager, trained, _csv = goog_model
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        res = run_backtest(trained.model_uri, "2009-07-01", "2010-06-30")
    assert len(res.warnings) == 1
    assert "overlaps the training window 2005-07-01..2009-12-31" in res.warnings[0]
    assert "2009-07-01..2009-12-31" in res.warnings[0]
    assert any("overlaps the training window" in r.getMessage() for r in caplog.records if r.name == "trainkit")
    run = manager.store.client.get_run(res.run_id)
    assert run.data.tags["trainkit.in_sample"] == "true"
    assert "overlaps the training window" in run.data.tags["mlflow.note.content"]
    # one click from the backtest to its model and training run (the model lives in another experiment)
    exp = manager.store.client.get_run(trained.run_id).info.experiment_id
    assert (f"[`{trained.model_uri}` = `models:/{res.model_id}`](#/experiments/{exp}/models/{res.model_id}"
            f"?workflowType=machine_learning) (training run [`{trained.run_id}`](#/experiments/{exp}/runs/"
            f"{trained.run_id}?workflowType=machine_learning)") in run.data.tags["mlflow.note.content"]
    assert res.to_dict()["warnings"] == res.warnings

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        clean = run_backtest(trained.model_uri, "2010-01-01", "2010-06-30", log=False)
    assert clean.warnings == [] and clean.run_id is None
    assert not [r for r in caplog.records if "overlaps" in r.getMessage()]


def test_the_data_source_can_be_overridden(goog_model, tmp_path: Path) -> None:
    manager, trained, csv = goog_model
    # the training file is gone: the model still names it, so the backtest says what to do
    moved = csv.rename(tmp_path / "moved.csv")
    try:
        with pytest.raises(DataError, match="--data-source") as exc:
            run_backtest(trained.model_uri, *TEST)
        assert exc.value.exit_code == 1
    finally:
        moved.rename(csv)

    # another file of the same symbol with different prices (a drift added from 2010 on):
    # the backtest trades those, scaled with the training scaler
    other = goog()
    drift = np.where(other.index >= "2010-01-01", 1.0 + 0.0004 * np.arange(len(other)), 1.0)
    for col in ("Open", "High", "Low", "Close"):
        other[col] = other[col] * drift
    other_csv = write_csv(other, tmp_path / "goog-other.csv")
    res = run_backtest(trained.model_uri, *TEST, data_source=f"csv:{other_csv}")
    closes = other.loc[TEST[0]:TEST[1], "Close"]
    original = goog().loc[TEST[0]:TEST[1], "Close"]
    assert res.metrics["buy_and_hold_return"] == pytest.approx(closes.iloc[-1] / closes.iloc[0] - 1, rel=1e-12)
    assert res.metrics["buy_and_hold_return"] != pytest.approx(original.iloc[-1] / original.iloc[0] - 1, rel=1e-3)
    assert res.data_source == res.data_source_effective == f"csv:{other_csv}"
    run = manager.store.client.get_run(res.run_id)
    assert run.data.params["data_source_override"] == "true"
    assert run.data.params["data_source"] == f"csv:{other_csv}"
    assert run.data.tags["trainkit.data_source_override"] == f"csv:{other_csv}"
    assert run.data.tags["trainkit.source_run_id"] == trained.run_id
    assert run.data.params["cost_bps"] == "5.0"  # settings still come from the model

    # overriding with the very same prices gives exactly the numbers of the model's own source
    same = write_csv(goog(), tmp_path / "copy.csv")
    assert run_backtest(trained.model_uri, *TEST, data_source=f"csv:{same}", log=False).metrics == \
        run_backtest(trained.model_uri, *TEST, log=False).metrics
