"""``trainkit walkforward`` (issue 14): fold arithmetic, cached folds and backtests, stitching,
the MLflow parent/child runs, the CLI, concurrency and learning out of sample.

The fold arithmetic is tested as pure functions on a business-day calendar in
tests/test_windows.py; here on GOOG's real calendar, whose data start later than the requested
start. Everything else is real: small
PPO models (``FAST``) on synthetic and CSV prices, a real sqlite store, a real ``mlflow server``,
real subprocesses racing for the same folds, and the planted-edge problems of
``bench/learning_problems.py`` at the default settings. Budget: about 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import FAST, PYTHON, REPO
from test_windows import BDAYS, W, check_folds, d  # the pure fold arithmetic is tested there

from trainkit.walkforward import (
    Calendar,
    fold_windows,
    plan_walk_forward,
    stitch,
    walk_forward,
)


# ============================================================================ fold arithmetic on real calendars
def test_a_later_end_keeps_every_earlier_fold() -> None:
    short, _ = fold_windows(BDAYS, "2012-01-01", "2016-12-31", W("3y"), W("3m"))
    longer, _ = fold_windows(BDAYS, "2012-01-01", "2019-12-31", W("3y"), W("3m"))
    assert len(longer) > len(short) and longer[: len(short)] == short
    # the configs (hence the cached models) are the same too: planned on synthetic data, nothing trained
    a = plan_walk_forward("WFEND", "2012-01-01", "2016-12-31", "3y", "3m", data_source="synthetic", **FAST)
    b = plan_walk_forward("WFEND", "2012-01-01", "2019-12-31", "3y", "3m", data_source="synthetic", **FAST)
    assert [t.config.config_hash for t in b.tasks[: len(a.tasks)]] == [t.config.config_hash for t in a.tasks]
    # and a fold's config is the window a user would type: shared with `trainkit train`
    from trainkit.manager import TrainingManager

    plain = TrainingManager.config_for("WFEND", "2012-01-01", "2014-12-31", data_source="synthetic", **FAST)
    assert a.tasks[0].config.config_hash == plain.config_hash


def test_data_starting_later_than_start_move_the_anchor(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from backtesting.test import GOOG

    from trainkit.features import WARMUP_BARS

    csv = tmp_path / "GOOG.csv"
    GOOG.to_csv(csv, index_label="Date")
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        plan = plan_walk_forward("GOOG", "2003-01-01", "2008-12-31", "1y", "6m", data_source=f"csv:{csv}", **FAST)
    first_warm = GOOG.index[WARMUP_BARS].date()
    assert plan.anchor == first_warm.isoformat() == "2005-06-03"
    assert plan.windows[0].train_start == plan.anchor
    assert any("begin on 2004-08-19" in w and "anchored at 2005-06-03" in w for w in plan.warnings)
    assert any("anchored at 2005-06-03" in r.getMessage() for r in caplog.records)
    cal = Calendar(ts.date() for ts in GOOG.index)
    check_folds(cal, plan.windows)
    # every training day has its warm-up in the data
    assert all(cal.index(d(w.train_first_day)) >= WARMUP_BARS for w in plan.windows)
    # enough history before start: the anchor stays at start
    assert plan_walk_forward("GOOG", "2006-01-02", "2008-12-31", "1y", "6m", data_source=f"csv:{csv}",
                             **FAST).anchor == "2006-01-02"


def test_stitching_multiplies_the_fold_equities() -> None:
    rng = np.random.default_rng(7)
    frames = []
    start = pd.Timestamp("2020-01-01")
    for k, n in enumerate((40, 35, 50)):
        dates = pd.bdate_range(start, periods=n)
        start = dates[-1] + pd.offsets.BDay(1)
        net = np.r_[0.0, rng.normal(0.001, 0.01, n - 1)]
        close = 100 * np.cumprod(1 + rng.normal(0, 0.01, n))
        frames.append(pd.DataFrame({"date": dates, "close": close, "position": rng.choice([-1.0, 0.0, 1.0], n),
                                    "net_return": net, "strategy_equity": np.cumprod(1 + net)}))
    out = stitch(frames, [3, 4, 5])
    assert len(out) == 125 and list(out["fold"].unique()) == [3, 4, 5]
    ends = np.cumsum([40, 35, 50]) - 1
    expected = np.cumprod([f["strategy_equity"].iloc[-1] for f in frames])
    assert out["strategy_equity"].to_numpy()[ends] == pytest.approx(expected, rel=1e-12)
    bh = np.cumprod([f["close"].iloc[-1] / f["close"].iloc[0] for f in frames])
    assert out["buy_and_hold_equity"].to_numpy()[ends] == pytest.approx(bh, rel=1e-12)
    # overlapping windows: a fold's days end where the next fold's begin
    late = frames[1].copy()
    late["date"] = late["date"] - pd.offsets.BDay(10)
    over = stitch([frames[0], late])
    assert over["date"].is_monotonic_increasing and over["date"].is_unique and len(over) == 30 + 35


# ============================================================================ bad requests: exit 2 before anything
@pytest.fixture
def cli(capsys, monkeypatch):
    """The CLI in-process: ``(exit code, stdout, stderr)``."""
    from trainkit.cli import run

    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")

    def call(*args: str):
        capsys.readouterr()
        code = run([str(a) for a in args])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    yield call
    logger = logging.getLogger("trainkit")
    for h in [h for h in logger.handlers if getattr(h, "_trainkit_cli", False)]:
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


_SYN = ["walkforward", "--symbols", "WFBAD", "--data-source", "synthetic", "--timesteps", "256"]


@pytest.mark.parametrize("args, needle", [
    (["--start", "2020-01-01", "--end", "2019-01-01"], "must be before"),
    (["--start", "2015-01-01", "--end", "2020-12-31", "--test-window", "30y"], "longer than the data"),
    (["--start", "2015-01-01", "--end", "2020-12-31", "--train-window", "2m"], "too short"),
    (["--start", "2015-01-01", "--end", "2020-12-31", "--test-window", "20d"], "at least 30"),
    (["--start", "2019-01-01", "--end", "2020-12-31", "--train-window", "3y", "--test-window", "6m"], "no fold fits"),
    (["--start", "2015-01-01", "--end", "2020-12-31", "--test-window", "6x"], "not a window"),
    (["--start", "2015-01-01", "--end", "2020-12-31", "--mode", "rolling"], "rolling"),
    (["--start", "2015-01-01", "--end", "2099-12-31"], "future"),
    (["--start", "2015-01-01", "--end", "2020-12-31", "--seeds", "0", "x"], "not a seed"),
])
def test_bad_windows_are_exit_2_with_one_line_before_anything_is_trained(cli, tmp_path: Path, monkeypatch, args,
                                                                         needle) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    code, out, err = cli("--tracking-uri", f"sqlite:///{db}", *_SYN, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err and not out.strip()
    assert not db.exists() and not (tmp_path / "mlruns").exists()  # no store was even opened


# ============================================================================ the real thing: sqlite
def all_runs(uri: str) -> dict[str, tuple[str, str, str]]:
    """run id -> (experiment, status, lifecycle) over the whole store, read with MlflowClient."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    names = {e.experiment_id: e.name for e in c.search_experiments(view_type=ViewType.ALL)}
    runs = c.search_runs(list(names), run_view_type=ViewType.ALL, max_results=5000) if names else []
    return {r.info.run_id: (names[r.info.experiment_id], r.info.status, r.info.lifecycle_stage) for r in runs}


def in_experiment(runs: dict, name: str) -> set[str]:
    return {k for k, v in runs.items() if v[0] == name}


SYN = dict(data_source="synthetic", **FAST)


def test_walk_forward_caches_folds_and_backtests_and_logs_one_parent(sqlite_uri: str, tmp_path: Path, cli) -> None:
    from mlflow.tracking import MlflowClient

    from trainkit.manager import TrainingManager

    manager = TrainingManager()
    client = MlflowClient(sqlite_uri)
    done: list = []
    wf = walk_forward(manager, "WFS", "2015-01-01", "2017-12-31", "1y", "6m", on_fold=done.append, **SYN)

    # the folds: trained now, in order, each tested strictly after its training window
    assert [(f.index, f.status) for f in wf.folds] == [(k, "trained") for k in range(4)] and len(done) == 4
    assert [(f.test_start, f.test_end) for f in wf.folds] == [
        ("2016-01-01", "2016-06-30"), ("2016-07-01", "2016-12-31"), ("2017-01-01", "2017-06-30"),
        ("2017-07-01", "2017-12-31")]
    for f in wf.folds:
        assert f.equity["date"].min() > pd.Timestamp(f.train_end)
        assert f.backtest.run_id and not f.backtest.cached and f.backtest.warnings == []
        assert f.backtest.model_uri == f.model_uri

    # the stitched out-of-sample equity is the product of the fold equities
    eq = wf.equity
    assert list(eq.index) == [t for f in wf.folds for t in f.equity["date"]]
    ends = [f.equity["date"].iloc[-1] for f in wf.folds]
    assert eq.loc[ends].to_numpy() == pytest.approx(np.cumprod([f.equity["strategy_equity"].iloc[-1] for f in wf.folds]),
                                                     rel=1e-12)
    assert wf.buy_and_hold.iloc[-1] == pytest.approx(np.prod([1 + f.metrics["buy_and_hold_return"] for f in wf.folds]),
                                                     rel=1e-12)
    m = wf.metrics
    assert m["total_return"] == pytest.approx(eq.iloc[-1] - 1, rel=1e-12)
    assert m["n_trades"] == sum(f.metrics["n_trades"] for f in wf.folds)
    sharpes = [f.metrics["sharpe"] for f in wf.folds]
    assert (m["fold_sharpe_mean"], m["fold_sharpe_median"], m["fold_sharpe_min"]) == pytest.approx(
        (np.mean(sharpes), np.median(sharpes), np.min(sharpes)))
    assert m["folds_beating_buy_and_hold"] == np.mean([f.metrics["excess_return"] > 0 for f in wf.folds])
    assert m["n_folds"] == 4

    # MLflow: one parent in trainkit-walkforward, the folds nested under it
    parent = client.get_run(wf.run_id)
    assert client.get_experiment(parent.info.experiment_id).name == "trainkit-walkforward"
    assert parent.info.status == "FINISHED" and not wf.run_existed
    p = parent.data.params
    assert (p["symbol"], p["train_window"], p["test_window"], p["step"], p["mode"], p["embargo"], p["seeds"]) == (
        "WFS", "1y", "6m", "6m", "sliding", "0d", "0")
    assert p["timesteps"] == "256" and p["data_source"] == "synthetic"
    assert parent.data.metrics["sharpe"] == pytest.approx(m["sharpe"], rel=1e-12)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{wf.run_id}'")
    assert sorted(int(c.data.params["fold"]) for c in children) == [0, 1, 2, 3]
    arts = Path(client.download_artifacts(wf.run_id, "", str(tmp_path / "arts")))
    assert (arts / "equity_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folds_csv = pd.read_csv(arts / "folds.csv")
    # the windows first, then the out-of-sample metrics, ids and URIs last (readable in the UI's viewer)
    assert list(folds_csv.columns[:7]) == ["fold", "seed", "train_start", "train_end", "test_start", "test_end", "sharpe"]
    assert list(folds_csv.columns[-3:]) == ["config_hash", "model_uri", "backtest_run_id"]
    assert list(folds_csv["test_start"]) == [f.test_start for f in wf.folds]
    assert list(folds_csv["sharpe"]) == pytest.approx(sharpes, rel=1e-12)
    cache_exp = client.get_experiment_by_name("trainkit").experiment_id
    assert wf.experiment_id == parent.info.experiment_id  # where the UI finds the run
    for name in ("trainkit", "trainkit-backtests", "trainkit-walkforward"):  # created by trainkit: "model training"
        assert client.get_experiment_by_name(name).tags["mlflow.experimentKind"] == "custom_model_development"
    datasets = set()
    for c in children:
        f = wf.folds[int(c.data.params["fold"])]
        assert c.data.tags["trainkit.backtest_run_id"] == f.backtest.run_id
        bt_run = client.get_run(f.backtest.run_id)
        assert bt_run.data.tags["trainkit.backtest_key"] == c.data.tags["trainkit.backtest_key"] == f.backtest_key
        # the out-of-sample metrics are on the fold's LoggedModel too, every fold against one dataset (the Models
        # view: one column per metric); the fold's window is on the metric's run, the fold run
        oos = {x.key: x for x in client.get_logged_model(f.model_id).metrics if x.dataset_name}
        assert oos["sharpe"].value == pytest.approx(f.metrics["sharpe"], rel=1e-12)
        datasets |= {(x.dataset_name, x.dataset_digest) for x in oos.values()}
        assert oos["sharpe"].run_id == c.info.run_id
        assert (c.data.params["test_start"], c.data.params["test_end"]) == (f.test_start, f.test_end)
        # from the fold to its model in one click: a link in the fold run's description (the run page's "Logged
        # models" lists only models of the run's own experiment), and the model as the run's input
        assert (f"[`{f.model_uri}` = `models:/{f.model_id}`](#/experiments/{cache_exp}/models/{f.model_id}"
                "?workflowType=machine_learning)") in c.data.tags["mlflow.note.content"]
        assert [i.model_id for i in client.get_run(c.info.run_id).inputs.model_inputs] == [f.model_id]
    # one dataset: the window honest selection counts configs on (a search's trials on these days share it)
    from trainkit.walkforward.evidence import window_key

    assert datasets == {("WFS out of sample: walk-forward 2015-01-01..2017-12-31, 1y train / 6m test",
                         window_key(wf.plan.params(), wf.plan.data_source_effective)[:32])}

    # a rerun trains nothing and creates no run
    before = all_runs(sqlite_uri)
    again = walk_forward(TrainingManager(), "WFS", "2015-01-01", "2017-12-31", "1y", "6m", **SYN)
    assert all_runs(sqlite_uri) == before
    assert [f.status for f in again.folds] == ["cached"] * 4 and all(f.backtest_cached for f in again.folds)
    assert (again.run_id, again.run_existed) == (wf.run_id, True)
    assert again.metrics == wf.metrics and again.equity.equals(wf.equity)

    # a later end trains only the new folds (and backtests only them)
    later = walk_forward(manager, "WFS", "2015-01-01", "2018-12-31", "1y", "6m", **SYN)
    after = all_runs(sqlite_uri)
    assert [f.status for f in later.folds] == ["cached"] * 4 + ["trained"] * 2
    assert [f.model_uri for f in later.folds[:4]] == [f.model_uri for f in wf.folds]
    assert [f.backtest_cached for f in later.folds] == [True] * 4 + [False] * 2
    new = set(after) - set(before)
    assert len(new & in_experiment(after, "trainkit")) == 2
    assert len(new & in_experiment(after, "trainkit-backtests")) == 2
    assert len(new & in_experiment(after, "trainkit-walkforward")) == 1 + 6  # a parent and its folds
    assert later.run_id != wf.run_id

    # the CLI: --json is one document; the same walk-forward again is all cached and logs nothing
    code, out, err = cli("walkforward", "--symbols", "WFS", "--start", "2015-01-01", "--end", "2018-12-31",
                         "--train-window", "1y", "--test-window", "6m", "--data-source", "synthetic",
                         "--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64",
                         "--hp", "n_epochs=1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert isinstance(doc, list) and len(doc) == 1
    row = doc[0]
    assert (row["symbol"], row["run_id"]) == ("WFS", later.run_id)
    assert row["metrics"] == pytest.approx(later.metrics, rel=1e-12)
    assert [f["status"] for f in row["folds"]] == ["cached"] * 6
    assert {"train_start", "train_end", "test_start", "test_end", "seed", "model_uri", "status", "metrics"} <= set(
        row["folds"][0])
    assert all_runs(sqlite_uri) == after

    # --dry-run: what a later end would do, and nothing is written
    code, out, err = cli("walkforward", "--symbols", "WFS", "--start", "2015-01-01", "--end", "2019-06-30",
                         "--train-window", "1y", "--test-window", "6m", "--data-source", "synthetic",
                         "--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64",
                         "--hp", "n_epochs=1", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert "7 folds" in lines[0] and "6 model(s) cached, 1 to train" in lines[0]
    assert sum("not cached (would train)" in ln for ln in lines) == 1
    assert sum("backtest cached" in ln for ln in lines) == 6
    assert all_runs(sqlite_uri) == after

    # the text output: a row per fold and the stitched line
    code, out, err = cli("walkforward", "--symbols", "WFS", "--start", "2015-01-01", "--end", "2017-12-31",
                         "--train-window", "1y", "--test-window", "6m", "--data-source", "synthetic",
                         "--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64",
                         "--hp", "n_epochs=1")
    assert code == 0, err
    assert "4 folds" in out and "0 trained, 4 cached" in out
    assert any(ln.startswith("stitched") for ln in out.splitlines())
    assert f"identical to walk-forward run {wf.run_id}" in out
    assert all_runs(sqlite_uri) == after


def test_seeds_report_their_spread(sqlite_uri: str) -> None:
    from trainkit.cache import ModelCache  # the get-or-train core is all a walk-forward needs

    wf = walk_forward(ModelCache(), "WFSEED", "2016-01-01", "2017-12-31", "1y", "6m", seeds=(0, 1), **SYN)
    assert [(f.index, f.seed, f.status) for f in wf.folds] == [
        (0, 0, "trained"), (0, 1, "trained"), (1, 0, "trained"), (1, 1, "trained")]
    assert len({f.config_hash for f in wf.folds}) == 4
    assert list(wf.seed_equity.columns) == [0, 1]
    for s in (0, 1):  # each seed's own stitched curve is the product of its folds
        mine = [f for f in wf.folds if f.seed == s]
        assert wf.seed_equity[s].iloc[-1] == pytest.approx(np.prod([f.equity["strategy_equity"].iloc[-1] for f in mine]))
    # the stitched series is the seeds' equal-weight portfolio
    daily = wf.seed_equity.pct_change().fillna(0.0).mean(axis=1)
    assert wf.equity.to_numpy() == pytest.approx(np.cumprod(1 + daily.to_numpy()), rel=1e-9)
    m = wf.metrics
    assert m["seed_sharpe_min"] <= m["seed_sharpe_mean"] <= m["seed_sharpe_max"] and m["seed_sharpe_std"] >= 0
    assert wf.to_dict()["seeds"] == [0, 1]
    # another config (seed 2) on the same days: its models' out-of-sample metrics join the same dataset, so
    # MLflow's Models view has one column per metric for every fold, seed and config of these days
    from mlflow.tracking import MlflowClient

    other = walk_forward(ModelCache(), "WFSEED", "2016-01-01", "2017-12-31", "1y", "6m", seeds=(2,), **SYN)
    client = MlflowClient(sqlite_uri)
    sets = {(x.dataset_name, x.dataset_digest) for f in wf.folds + other.folds
            for x in client.get_logged_model(f.model_id).metrics if x.key == "sharpe"}
    assert len(sets) == 1 and next(iter(sets))[0].startswith("WFSEED out of sample: walk-forward 2016-01-01..2017-12-31")


# ============================================================================ a real server, CSV data that start late
@pytest.mark.server
def test_walk_forward_on_a_real_server_with_csv_data_that_start_late(server_uri: str, tmp_path: Path, cli) -> None:
    from backtesting.test import GOOG
    from mlflow.tracking import MlflowClient

    from trainkit.manager import TrainingManager

    csv = tmp_path / "GOOG.csv"
    GOOG.to_csv(csv, index_label="Date")
    exp = f"trainkit-wf-{os.getpid()}-{time.time_ns()}"
    client = MlflowClient(server_uri)
    client.create_experiment(exp)  # the user's own experiment: trainkit uses it as it is
    manager = TrainingManager(server_uri, exp)
    wf = walk_forward(manager, "GOOG", "2004-01-01", "2007-06-30", "1y", "6m", data_source=f"csv:{csv}", **FAST)
    assert wf.plan.anchor == "2005-06-03" and any("begin on 2004-08-19" in w for w in wf.warnings)
    assert [f.test_start for f in wf.folds] == ["2006-06-03", "2006-12-03"]
    assert [f.status for f in wf.folds] == ["trained", "trained"]
    first_days = [f.backtest.first_day for f in wf.folds]
    assert first_days == ["2006-06-05", "2006-12-04"]  # GOOG's trading days
    before = all_runs(server_uri)
    again = walk_forward(TrainingManager(server_uri, exp), "GOOG", "2004-01-01", "2007-06-30", "1y", "6m",
                         data_source=f"csv:{csv}", **FAST)
    assert all_runs(server_uri) == before
    assert [f.status for f in again.folds] == ["cached", "cached"] and again.run_id == wf.run_id
    assert again.metrics == wf.metrics
    assert "mlflow.experimentKind" not in client.get_experiment_by_name(exp).tags  # found, not created: untouched
    # against a server, the CLI prints the run's page in the UI's model-training view
    code, out, err = cli("--tracking-uri", server_uri, "--experiment", exp, "walkforward", "--symbols", "GOOG",
                         "--start", "2004-01-01", "--end", "2007-06-30", "--train-window", "1y", "--test-window", "6m",
                         "--data-source", f"csv:{csv}", "--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64",
                         "--hp", "batch_size=64", "--hp", "n_epochs=1")
    assert code == 0, err
    assert (f"  MLflow UI: {server_uri}/#/experiments/{wf.experiment_id}/runs/{wf.run_id}"
            "?workflowType=machine_learning") in out.splitlines(), out
    assert all_runs(server_uri) == before
    # train prints its model's page
    code, out, err = cli("--tracking-uri", server_uri, "--experiment", exp, "train", "--symbols", "UILINK",
                         "--train-start", "2020-01-01", "--train-end", "2020-12-31", "--data-source", "synthetic",
                         "--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64")
    assert code == 0, err
    exp_id = client.get_experiment_by_name(exp).experiment_id
    [link] = [ln for ln in out.splitlines() if ln.startswith("  MLflow UI: ")]
    assert re.fullmatch(rf"  MLflow UI: {re.escape(server_uri)}/#/experiments/{exp_id}/models/m-[0-9a-f]+"
                        r"\?workflowType=machine_learning", link), out
    from trainkit.cli.output import ui_link  # the address is printed without its credentials; no link off a server

    assert ui_link("https://alice:s3cret@mlflow.example.com/team/", "#/runs/{run_id}", run_id="r1") == (
        "https://mlflow.example.com/team/#/runs/r1")
    assert ui_link("sqlite:///mlflow.db", "#/runs/{run_id}", run_id="r1") == ""


# ============================================================================ two processes at once
BARRIER_CLI = Path(__file__).resolve().parent / "barrier_cli.py"


@pytest.mark.slow
def test_two_processes_running_the_same_walk_forward_train_each_fold_once(sqlite_uri: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    argv = ["walkforward", "--symbols", "WFRACE", "--start", "2015-01-01", "--end", "2017-06-30", "--train-window",
            "1y", "--test-window", "6m", "--data-source", "synthetic", "--timesteps", "2048", "--hp", "n_envs=2",
            "--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([PYTHON, str(BARRIER_CLI), str(barrier), "2", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
             for _ in range(2)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        docs.append(json.loads(out)[0])
    folds = [[(f["config_hash"], f["status"]) for f in doc["folds"]] for doc in docs]
    hashes = [h for h, _ in folds[0]]
    assert len(hashes) == 3 and [h for h, _ in folds[1]] == hashes
    for i in range(3):  # each fold trained by exactly one of the two processes
        assert sorted([folds[0][i][1], folds[1][i][1]]) == ["cached", "trained"], folds
    client = MlflowClient(sqlite_uri)
    exp = client.get_experiment_by_name("trainkit").experiment_id
    for h in hashes:
        finished = client.search_runs([exp], f"tags.config_hash = '{h}' and attributes.status = 'FINISHED'")
        assert len(finished) == 1, h
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")  # no lease left behind
    assert docs[0]["metrics"] == docs[1]["metrics"]  # the same models, the same prices: the same results
    for doc in docs:
        assert client.get_run(doc["run_id"]).info.status == "FINISHED"


# ============================================================================ learning out of sample
sys.path.insert(0, str(REPO / "bench"))
import learning_problems as lp


def _bh_sharpe(series: pd.Series) -> float:
    return lp.sharpe(series.pct_change().dropna().to_numpy())


@pytest.mark.slow
def test_a_planted_edge_is_found_out_of_sample_and_a_random_walk_is_not(sqlite_uri: str, tmp_path: Path) -> None:
    """The markets of tests/test_learning.py as CSV files, walked forward at the default
    settings (100k timesteps, PPO defaults, seed 0), windows in trading days: the AR(1) edge
    (two folds in parallel processes, 6 years to learn and 2.5 to judge each) shows in the
    stitched out-of-sample Sharpe; the random walk (6 years to learn, 10 to judge: a Sharpe's
    standard error is ~0.32) shows nothing."""
    from trainkit.executors import LocalExecutor
    from trainkit.manager import TrainingManager

    rng = np.random.default_rng(101)  # exactly lp.autocorrelated()'s market
    edge = lp.frame_from_returns(lp.autocorrelated_returns(lp.WARMUP + lp.YEAR * 11, rng), rng)
    walk = lp._random_walk_frame()
    manager = TrainingManager()
    results = {}
    for name, frame, test, folds in (("EDGE", edge, 630, 2), ("WALK", walk, 2520, 1)):
        csv = tmp_path / f"{name}.csv"
        frame.to_csv(csv, index_label="Date")
        results[name] = walk_forward(
            manager, name, frame.index[lp.WARMUP].date(), frame.index[-1].date(), 6 * lp.YEAR, test,
            executor=LocalExecutor(folds), data_source=f"csv:{csv}", cost_bps=lp.COST_BPS)
        assert len(results[name].folds) == folds
    e, w = results["EDGE"], results["WALK"]
    report = {k: (round(r.metrics["sharpe"], 2), [round(f.metrics["sharpe"], 2) for f in r.folds],
                  round(_bh_sharpe(r.buy_and_hold), 2)) for k, r in results.items()}
    print(report)
    assert e.metrics["sharpe"] > max(1.0, _bh_sharpe(e.buy_and_hold) + 0.5), report
    assert e.metrics["folds_beating_buy_and_hold"] >= 0.5, report
    assert w.metrics["sharpe"] < 1.0 and w.metrics["fold_sharpe_mean"] < 1.0, report


def test_the_minimum_test_window_is_the_backtests() -> None:
    from trainkit.backtest import MIN_TEST_DAYS as backtest_min
    from trainkit.features import MIN_WINDOW_ROWS
    from trainkit.walkforward import MIN_TEST_DAYS, MIN_TRAIN_DAYS

    assert MIN_TEST_DAYS == backtest_min and MIN_TRAIN_DAYS == MIN_WINDOW_ROWS
