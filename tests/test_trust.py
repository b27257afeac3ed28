"""Trust: the cache never lies (`explain`, changed prices), `clear` never loses a registered
model when the registry cannot be read, and invalid settings are exit 2 before any I/O.

Real sqlite stores, real (small) training, real subprocesses for the CLI."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from support import FAST, FAST_CLI, free_port, run_cli

WINDOW = ("EXPL", "2020-01-01", "2021-06-30")


def _manager(uri: str):
    from trainkit import TrainingManager

    return TrainingManager(uri)


def _snapshot(db: Path) -> list[tuple]:
    """Every run row and tag of a sqlite store: what 'writes nothing' is checked against."""
    with sqlite3.connect(db) as con:
        runs = con.execute("select run_uuid, status, lifecycle_stage from runs order by run_uuid").fetchall()
        tags = con.execute("select run_uuid, key, value from tags order by run_uuid, key").fetchall()
        exps = con.execute("select name, lifecycle_stage from experiments order by name").fetchall()
    return runs + tags + exps


# ----------------------------------------------------------------------------- explain
@pytest.mark.slow
def test_explain_names_the_answer_the_runs_that_do_not_answer_and_the_nearest_configs(sqlite_uri: str, tmp_path: Path) -> None:
    manager = _manager(sqlite_uri)
    trained = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
    config = trained.config

    hit = manager.explain(config)
    assert hit.cached and hit.answer.run_id == trained.run_id and hit.answer.model_uri == trained.model_uri
    assert hit.not_served == () and hit.nearest == () and hit.data_changed is False

    # a different window and learning rate: not cached, and the nearest config names exactly those fields
    other = manager.config_for("EXPL", "2020-01-01", "2021-07-30", data_source="synthetic",
                               **{**FAST, "learning_rate": 0.0003})
    miss = manager.explain(other)
    assert not miss.cached and miss.answer is None
    assert [n.model.run_id for n in miss.nearest] == [trained.run_id]
    assert [d.field for d in miss.nearest[0].differences] == ["hyperparameters.learning_rate", "train_end"]
    diffs = {d.field: (d.cached, d.requested) for d in miss.nearest[0].differences}
    assert diffs["train_end"] == ("2021-06-30", "2021-07-30")
    assert float(diffs["hyperparameters.learning_rate"][1]) == 0.0003

    # the CLI: the same answer as one JSON document, and a readable text form
    res = run_cli("explain", "--symbols", "EXPL", "--train-start", "2020-01-01", "--train-end", "2021-07-30",
                  "--data-source", "synthetic", *FAST_CLI, "--hp", "learning_rate=0.0003", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [d["config_hash"] for d in doc] == [other.config_hash] and doc[0]["cached"] is False
    assert {d["field"] for d in doc[0]["nearest"][0]["differences"]} >= {"train_end", "hyperparameters.learning_rate"}
    text = run_cli("explain", "--symbols", "EXPL", "--train-start", "2020-01-01", "--train-end", "2021-07-30",
                   "--data-source", "synthetic", *FAST_CLI, "--hp", "learning_rate=0.0003", "--workers", "2")
    assert text.returncode == 0, text.stderr
    assert "not cached" in text.stdout and "train_end 2021-06-30 → 2021-07-30" in text.stdout
    assert other.config_hash in text.stdout

    # a broken copy of the model does not answer, and explain says why
    manager.store.mark_broken(trained.run_id, "policy.zip failed verification (test)")
    broken = manager.explain(config)
    assert not broken.cached
    assert [(n.run_id, n.reason.split(":")[0]) for n in broken.not_served] == [(trained.run_id, "broken")]

    # deleted (trainkit clear): the run is still there, soft-deleted, and explain says so
    retrained = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
    manager.clear_cache(config_hash=config.config_hash)
    gone = manager.explain(config)
    reasons = {n.run_id: n.reason for n in gone.not_served}
    assert not gone.cached and reasons[retrained.run_id].startswith("deleted")



@pytest.mark.slow
def test_explain_shows_a_csv_content_change_and_writes_nothing(sqlite_uri: str, tmp_path: Path) -> None:
    from backtesting.test import GOOG

    csv = tmp_path / "goog.csv"
    GOOG.loc["2008-01-01":"2011-12-31"].to_csv(csv, index_label="Date")
    manager = _manager(sqlite_uri)
    first = manager.get("GOOG", "2009-01-01", "2010-12-31", data_source=f"csv:{csv}", progress=False, **FAST)
    GOOG.loc["2008-01-01":"2012-06-30"].to_csv(csv, index_label="Date")  # rows appended: new content
    changed = manager.config_for("GOOG", "2009-01-01", "2010-12-31", data_source=f"csv:{csv}", **FAST)
    db = Path(sqlite_uri[len("sqlite:///"):])
    before = _snapshot(db)
    why = manager.explain(changed)
    assert _snapshot(db) == before, "explain must not write"
    assert not why.cached
    diffs = {d.field: (d.cached, d.requested) for d in why.nearest[0].differences}
    assert list(diffs) == ["data csv sha256"]
    assert diffs["data csv sha256"] == (first.config.csv_sha256[:8] + "…", changed.csv_sha256[:8] + "…")


def test_explain_on_a_fresh_store_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    res = run_cli("--tracking-uri", f"sqlite:///{db}", "explain", "--symbols", "NEW", "--data-source", "synthetic",
                  "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc[0]["cached"] is False and doc[0]["nearest"] == []
    assert "no store at" in doc[0]["note"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "explain created files (a store, a lock, mlruns)"


# ----------------------------------------------------------------------------- changed prices
@pytest.mark.slow
def test_a_hit_whose_training_prices_changed_warns_and_list_marks_it(sqlite_uri: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Yahoo revises adjusted history; once the local download cache holds revised rows, a hit
    says so (offline) and names --force; `list` marks the model."""
    from backtesting.test import GOOG

    from trainkit.data.yahoo import DownloadCache
    from trainkit.features import warmup_start

    window = ("GOOG", "2010-01-01", "2011-12-31")
    start, end = warmup_start(window[1]), _dt.date.fromisoformat(window[2])
    frame = GOOG.loc[str(start): window[2]]
    cache = DownloadCache()
    cache.write("GOOG", frame, start, end)
    manager = _manager(sqlite_uri)
    trained = manager.get(*window, data_source="yfinance", progress=False, **FAST)
    assert trained.status == "trained"
    assert [m.data_changed for m in manager.list_cached_models("GOOG")] == [False]

    revised = frame.copy()
    revised.loc[revised.index[:50], "Close"] *= 0.98  # a dividend adjustment of the early history
    cache.write("GOOG", revised, start, end)  # as if the revision had been adopted (refresh)
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        again = manager.get(*window, data_source="yfinance", progress=False, **FAST)
    assert again.status == "cached" and again.run_id == trained.run_id
    warning = [r.getMessage() for r in caplog.records if "differ today" in r.getMessage()]
    assert len(warning) == 1 and "--force" in warning[0]
    assert [m.data_changed for m in manager.list_cached_models("GOOG")] == [True]
    why = manager.explain(trained.config)
    assert why.cached and why.data_changed is True and "--force" in why.note
    listed = json.loads(run_cli("list", "--symbol", "GOOG", "--json").stdout)
    assert [m["data_changed"] for m in listed] == [True]


# ----------------------------------------------------------------------------- clear fails closed
@pytest.mark.slow
def test_clear_refuses_when_the_registry_cannot_be_read(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that does not answer (here: a registry URI where nothing listens) must not
    make every model look unregistered: clear deletes nothing and says why (exit 1)."""
    manager = _manager(sqlite_uri)
    champion = manager.get("CHMP", "2020-01-01", "2021-06-30", data_source="synthetic", progress=False, **FAST)
    plain = manager.get("PLN", "2020-01-01", "2021-06-30", data_source="synthetic", progress=False, **FAST)
    manager.register(champion.model_uri, alias="champion")

    dead = f"http://127.0.0.1:{free_port()}"
    env = {"MLFLOW_REGISTRY_URI": dead, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    res = run_cli("clear", "--yes", env=env)
    assert res.returncode == 1, (res.stdout, res.stderr)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "registry" in errors[0] and "Traceback" not in res.stderr
    survivors = {m.run_id for m in _manager(sqlite_uri).list_cached_models()}
    assert survivors == {champion.run_id, plain.run_id}, "nothing may be deleted when registrations are unknown"

    # in Python too, and --include-registered (the user accepts deleting registered ones) still works
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from trainkit.errors import StoreError

    blind = _manager(sqlite_uri)
    with pytest.raises(StoreError, match="registry"):
        blind.clear_cache(symbol="PLN")
    assert [m.run_id for m in blind.clear_cache(symbol="PLN", include_registered=True)] == [plain.run_id]
    for k in env:
        monkeypatch.delenv(k)
    assert {m.run_id for m in _manager(sqlite_uri).list_cached_models()} == {champion.run_id}


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "env, needle",
    [
        ({"TRAINKIT_HEARTBEAT": "120", "TRAINKIT_STALE_AFTER": "120"}, "TRAINKIT_HEARTBEAT=120 must be at most half"),
        ({"TRAINKIT_STALE_AFTER": "soon"}, "TRAINKIT_STALE_AFTER='soon' is not a number"),
        ({"TRAINKIT_CLAIM_SETTLE": "-1"}, "TRAINKIT_CLAIM_SETTLE='-1' is out of range"),
        ({"TRAINKIT_YF_PROXY": "not a url"}, "TRAINKIT_YF_PROXY='not a url' is not a proxy URL"),
    ],
)
def test_an_invalid_setting_is_exit_2_before_any_io(tmp_path: Path, env: dict, needle: str) -> None:
    db = tmp_path / "untouched.db"
    for args in (["list"], ["train", "--symbols", "X", "--data-source", "synthetic", *FAST_CLI]):
        res = run_cli("--tracking-uri", f"sqlite:///{db}", *args, env=env, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], res.stderr
        assert not db.exists()
