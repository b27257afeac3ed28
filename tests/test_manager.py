"""TrainingManager end to end on a real sqlite store: config → cache → data → training →
MLflow, with small real SB3 training. (Several processes at once, SIGKILL'd trainers and the
CLI against a dead server are in tests/reliability/.)"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import trainkit
from trainkit.errors import ConfigError, ModelNotFoundError

from support import FAST  # small, real training settings shared by the test files

SYNTH = dict(data_source="synthetic", progress=False, **FAST)


def _manager(uri: str):
    from trainkit import TrainingManager

    return TrainingManager(tracking_uri=uri)


def _finished(manager, config_hash: str) -> list:
    return manager.store.client.search_runs(
        [manager.store.experiment_id], f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'"
    )


def _artifact_dir(manager, run_id: str) -> Path:
    client = manager.store.client
    lm = client.get_logged_model(client.get_run(run_id).data.tags["trainkit.model_id"])
    return Path(lm.artifact_location.replace("file://", ""))


# ----------------------------------------------------------------------------- hit / miss / force
def test_miss_trains_hit_serves_force_retrains(sqlite_uri: str) -> None:
    manager = _manager(sqlite_uri)
    model, uri = manager.get_model("AAPL", "2020-01-01", "2021-12-31", **SYNTH)
    assert uri.startswith("runs:/") and uri.endswith("/model")
    config = manager.config_for("AAPL", "2020-01-01", "2021-12-31", data_source="synthetic", **FAST)

    # a new manager (as a new process would) is served from MLflow, without training
    other = _manager(sqlite_uri)
    hit = other.get("AAPL", "2020-01-01", "2021-12-31", **SYNTH)
    assert hit.status == "cached" and hit.cache_hit and hit.model_uri == uri, hit
    obs = np.random.default_rng(1).normal(size=(50, 22)).astype(np.float32)
    np.testing.assert_array_equal(hit.model.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert len(_finished(manager, config.config_hash)) == 1

    # the symbol is case-insensitive and the data_seed default is part of the same hash
    assert other.get("aapl", "2020-01-01", "2021-12-31", **SYNTH).model_uri == uri

    # force retrains into a new run; the newest FINISHED run then answers the hash
    forced = other.get("AAPL", "2020-01-01", "2021-12-31", force=True, **SYNTH)
    assert forced.status == "trained" and forced.model_uri != uri
    assert len(_finished(manager, config.config_hash)) == 2
    assert manager.get("AAPL", "2020-01-01", "2021-12-31", **SYNTH).model_uri == forced.model_uri
    # training is a pure function of the config: same hash, same actions
    np.testing.assert_array_equal(forced.model.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    # both are listed (docs/ARCHITECTURE.md, "The lease"), newest first
    listed = manager.list_cached_models("AAPL")
    assert [m.run_id for m in listed] == [forced.run_id, hit.run_id]
    assert {m.status for m in listed} == {"ready"} and {m.config_hash for m in listed} == {config.config_hash}

    # a different config is a different hash: a miss
    other_seed = manager.get("AAPL", "2020-01-01", "2021-12-31", seed=7, **SYNTH)
    assert other_seed.status == "trained" and other_seed.config_hash != config.config_hash
    assert manager.list_cached_models("MSFT") == []
    assert len(manager.list_cached_models()) == 3


def test_bad_requests_fail_before_any_run(sqlite_uri: str) -> None:
    manager = _manager(sqlite_uri)
    with pytest.raises(ConfigError):
        manager.get_model("AAPL", "2021-12-31", "2020-01-01", **SYNTH)
    with pytest.raises(ConfigError):
        manager.get_model("AAPL", "2020-01-01", "2021-12-31", bogus_option=3, **SYNTH)
    with pytest.raises(ConfigError):
        manager.get_model("AAPL", "2020-01-01", "2021-12-31", force="maybe", **SYNTH)
    assert manager.store.client.search_runs([manager.store.experiment_id]) == []


# ----------------------------------------------------------------------------- integrity
def test_corrupt_or_missing_model_is_tagged_broken_and_retrained(sqlite_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    manager = _manager(sqlite_uri)
    first = manager.get("IBM", "2020-01-01", "2021-06-30", **SYNTH)
    policy = _artifact_dir(manager, first.run_id) / "artifacts" / "policy.zip"
    data = bytearray(policy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    policy.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="trainkit"):
        second = _manager(sqlite_uri).get("IBM", "2020-01-01", "2021-06-30", **SYNTH)
    assert second.status == "trained" and second.run_id != first.run_id
    broken = manager.store.client.get_run(first.run_id)
    assert "sha256" in broken.data.tags["trainkit.broken"] and broken.info.lifecycle_stage == "active"  # tagged, kept
    assert any("retrained" in r.getMessage() and first.run_id in r.getMessage() for r in caplog.records)
    statuses = {m.run_id: m.status for m in manager.list_cached_models("IBM")}
    assert statuses == {first.run_id: "broken", second.run_id: "ready"}

    # a deleted artifact is the same story
    (_artifact_dir(manager, second.run_id) / "artifacts" / "policy.zip").unlink()
    third = _manager(sqlite_uri).get("IBM", "2020-01-01", "2021-06-30", **SYNTH)
    assert third.status == "trained" and third.run_id not in (first.run_id, second.run_id)
    assert "missing" in manager.store.client.get_run(second.run_id).data.tags["trainkit.broken"]
    assert _manager(sqlite_uri).get("IBM", "2020-01-01", "2021-06-30", **SYNTH).run_id == third.run_id


# ----------------------------------------------------------------------------- fallback
def test_fallback_is_marked_served_with_a_warning_and_retrained_when_the_source_answers(
    sqlite_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    from backtesting.test import GOOG

    from trainkit.data import DataFetcherFactory
    from trainkit.data.yahoo import DownloadCache
    from trainkit.features import warmup_start

    DataFetcherFactory.reset_probes()
    window = ("GOOG", "2010-01-01", "2011-12-31")
    manager = _manager(sqlite_uri)
    first = manager.get(*window, data_source="yfinance", progress=False, **FAST)  # Yahoo is unreachable here
    assert first.status == "fallback" and first.fallback_reason
    tags = manager.store.client.get_run(first.run_id).data.tags
    assert tags["trainkit.data_source"] == "yfinance" and tags["trainkit.data_source_effective"] == "synthetic"
    assert tags["trainkit.fallback_reason"] and "WARNING" in tags["mlflow.note.content"]
    listed = manager.list_cached_models("GOOG")
    assert [(m.status, m.fell_back) for m in listed] == [("fallback", True)]

    # Yahoo still down: the fallback model is served, loudly
    DataFetcherFactory.reset_probes()
    with caplog.at_level(logging.WARNING, logger="trainkit"):
        again = _manager(sqlite_uri).get(*window, data_source="yfinance", progress=False, **FAST)
    assert again.status == "cached" and again.run_id == first.run_id
    assert any("SYNTHETIC" in r.getMessage() for r in caplog.records)
    # ... unless the caller refuses synthetic data: then the request fails (Yahoo is down)
    from trainkit.errors import DataError

    with pytest.raises(DataError, match="no-fallback"):
        _manager(sqlite_uri).get(*window, data_source="yfinance", no_fallback=True, progress=False, **FAST)

    # Yahoo answers again (its download is in trainkit's disk cache): the request retrains on it
    frame = GOOG.loc[str(warmup_start(window[1])): window[2]]
    DownloadCache().write("GOOG", frame, warmup_start(window[1]), _dt.date.fromisoformat(window[2]))
    DataFetcherFactory.reset_probes()
    real = _manager(sqlite_uri).get(*window, data_source="yfinance", progress=False, **FAST)
    assert real.status == "trained" and real.run_id != first.run_id and real.config_hash == first.config_hash
    tags = manager.store.client.get_run(real.run_id).data.tags
    assert tags["trainkit.data_source_effective"] == "yfinance" and "trainkit.fallback_reason" not in tags
    # from now on the real-data model answers the hash, and list tells the two apart
    assert _manager(sqlite_uri).get(*window, data_source="yfinance", progress=False, **FAST).run_id == real.run_id
    assert {m.run_id: m.status for m in manager.list_cached_models("GOOG")} == {real.run_id: "ready", first.run_id: "fallback"}


# ----------------------------------------------------------------------------- claims in-process
def test_identical_requests_in_two_threads_train_once(sqlite_uri: str) -> None:
    results: dict[int, object] = {}
    waited: list[str] = []

    def ask(i: int) -> None:
        results[i] = _manager(sqlite_uri).get("KO", "2020-01-01", "2021-06-30", on_wait=waited.append, **SYNTH)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2
    uris = {r.model_uri for r in results.values()}
    assert len(uris) == 1
    assert sorted(r.status for r in results.values()) == ["cached", "trained"]
    manager = _manager(sqlite_uri)
    h = results[0].config_hash
    assert len(_finished(manager, h)) == 1
    # the loser's claim left nothing behind: no RUNNING run, no second claim
    runs = manager.store.client.search_runs([manager.store.experiment_id], "attributes.status = 'RUNNING'")
    assert runs == []


def test_waiter_takes_over_when_the_holder_releases(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live claim blocks (the waiter is told who holds it); when the holder gives up, the
    waiter trains at once instead of waiting for the claim to go stale. Staleness is an hour
    away here, so a waiter that trained can only have seen the release (and the holder's run
    carries no "stale" verdict)."""
    from trainkit import store as st

    monkeypatch.setenv("TRAINKIT_STALE_AFTER", "3600")
    manager = _manager(sqlite_uri)
    config = manager.config_for("KO", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    holder = manager.store.client.create_run(
        manager.store.experiment_id, run_name=config.run_name(),
        tags={st.TAG_CLAIM: config.config_hash, st.TAG_HEARTBEAT: f"{time.time():.3f}", st.TAG_VERSION: trainkit.__version__,
              st.TAG_SYMBOL: "KO"},
    ).info.run_id
    told: list[str] = []

    def release() -> None:
        while not told:
            time.sleep(0.05)
        time.sleep(0.5)
        manager.store.client.delete_tag(holder, st.TAG_CLAIM)
        manager.store.client.set_terminated(holder, status="FAILED")

    t = threading.Thread(target=release)
    t.start()
    result = _manager(sqlite_uri).get("KO", "2020-01-01", "2021-06-30", on_wait=told.append, **SYNTH)
    t.join()
    assert told == [holder]
    assert result.status == "trained" and result.run_id != holder
    held = manager.store.client.get_run(holder)
    assert held.info.status == "FAILED" and st.TAG_FAILURE not in held.data.tags, held.data.tags  # released, not judged stale


def test_ctrl_c_marks_the_run_killed_and_releases_the_claim(sqlite_uri: str) -> None:
    from trainkit import store as st

    manager = _manager(sqlite_uri)
    slow = dict(SYNTH, timesteps=200_000)  # long enough to be interrupted mid-training
    exp = manager.store.experiment_id

    def interrupt_when_training() -> None:
        client = _manager(sqlite_uri).store.client
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = client.search_runs([exp], "attributes.status = 'RUNNING'")
            if runs and runs[0].data.tags.get(st.TAG_CLAIM_STATE) == "training":
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.1)

    t = threading.Thread(target=interrupt_when_training, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        manager.get("PEP", "2020-01-01", "2021-06-30", **slow)
    t.join(5)
    runs = manager.store.client.search_runs([exp], "", run_view_type=3)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "KILLED"
    assert st.TAG_CLAIM not in run.data.tags and "Ctrl-C" in run.data.tags[st.TAG_FAILURE]
    assert "config_hash" not in run.data.tags  # a run without a model never carries the hash
    assert manager.list_cached_models() == []
    # released at once: the next request claims and trains without waiting for staleness
    waited: list[str] = []
    result = manager.get("PEP", "2020-01-01", "2021-06-30", on_wait=waited.append, **SYNTH)
    assert result.status == "trained" and waited == []


# ----------------------------------------------------------------------------- mlflow run (docs/ARCHITECTURE.md, "MLflow pitfalls")
def test_project_run_in_another_experiment_is_tagged_with_the_cached_model(sqlite_uri: str) -> None:
    manager = _manager(sqlite_uri)
    client = manager.store.client
    project_exp = client.create_experiment("my-project")
    project = client.create_run(project_exp).info.run_id
    client.log_param(project, "symbol", "msft")  # MLproject parameters arrive as strings

    result = manager.get("MSFT", "2020-01-01", "2021-06-30", project_run_id=project, **SYNTH)
    assert result.status == "trained" and result.run_id != project
    assert client.get_run(result.run_id).info.experiment_id == manager.store.experiment_id
    tags = client.get_run(project).data.tags
    assert tags["trainkit.model_uri"] == result.model_uri and tags["trainkit.model_run_id"] == result.run_id
    assert tags["trainkit.cache_hit"] == "false" and "config_hash" not in tags

    second = client.create_run(project_exp).info.run_id
    hit = manager.get("MSFT", "2020-01-01", "2021-06-30", project_run_id=second, **SYNTH)
    assert hit.status == "cached" and client.get_run(second).data.tags["trainkit.cache_hit"] == "true"


def test_project_run_in_the_trainkit_experiment_is_trained_into(sqlite_uri: str) -> None:
    manager = _manager(sqlite_uri)
    client = manager.store.client
    project = client.create_run(manager.store.experiment_id).info.run_id
    client.log_param(project, "timesteps", "256")  # set by `mlflow run`: must not be re-logged
    result = manager.get("MSFT", "2020-01-01", "2021-06-30", project_run_id=project, **SYNTH)
    assert result.run_id == project and result.status == "trained"
    run = client.get_run(project)
    assert run.info.status == "FINISHED" and run.data.tags["config_hash"] == result.config_hash
    assert run.data.params["timesteps"] == "256" and run.data.params["symbol"] == "MSFT"
    assert _manager(sqlite_uri).get("MSFT", "2020-01-01", "2021-06-30", **SYNTH).model_uri == f"runs:/{project}/model"


# ----------------------------------------------------------------------------- list / clear
def test_clear_filters_soft_delete_purge_registered_and_foreign_runs(sqlite_uri: str) -> None:
    manager = _manager(sqlite_uri)
    client = manager.store.client
    a = manager.get("AAPL", "2020-01-01", "2021-06-30", **SYNTH)
    time.sleep(0.05)
    b = manager.get("AAPL", "2020-01-01", "2021-06-30", seed=1, **SYNTH)
    c = manager.get("MSFT", "2020-01-01", "2021-06-30", **SYNTH)
    exp = manager.store.experiment_id
    # another tool's runs in the same experiment, one even using a config_hash tag
    foreign_plain = client.create_run(exp, run_name="notebook").info.run_id
    foreign_tagged = client.create_run(exp, tags={"config_hash": a.config_hash, "trainkit.symbol": "AAPL"}).info.run_id
    client.set_terminated(foreign_tagged)
    everything = {a.run_id, b.run_id, c.run_id}
    assert {m.run_id for m in manager.list_cached_models()} == everything

    # dry run: reports, changes nothing
    assert {m.run_id for m in manager.clear_cache(dry_run=True)} == everything
    assert {m.run_id for m in manager.list_cached_models()} == everything
    # filters
    with pytest.raises(ConfigError):
        manager.clear_cache(config_hash="abc123", dry_run=True)
    assert [m.run_id for m in manager.clear_cache(config_hash=c.config_hash.upper(), dry_run=True)] == [c.run_id]
    assert {m.run_id for m in manager.clear_cache(symbol="aapl", dry_run=True)} == {a.run_id, b.run_id}
    b_created = next(m for m in manager.list_cached_models() if m.run_id == b.run_id).created
    assert [m.run_id for m in manager.clear_cache(older_than=b_created, dry_run=True)] == [a.run_id]
    assert manager.clear_cache(older_than="1h", dry_run=True) == []
    assert manager.clear_cache(older_than="2000-01-01", dry_run=True) == []
    tomorrow = (_dt.date.today() + _dt.timedelta(days=1)).isoformat()
    assert {m.run_id for m in manager.clear_cache(older_than=tomorrow, symbol="AAPL", dry_run=True)} == {a.run_id, b.run_id}
    with pytest.raises(ConfigError):
        manager.clear_cache(older_than="last tuesday", dry_run=True)

    # soft delete: the run and its model are gone from trainkit's view and do not load
    model_id_b = client.get_run(b.run_id).data.tags["trainkit.model_id"]
    assert [m.run_id for m in manager.clear_cache(config_hash=b.config_hash)] == [b.run_id]
    assert client.get_run(b.run_id).info.lifecycle_stage == "deleted"  # restorable
    for uri in (b.model_uri, f"models:/{model_id_b}"):
        with pytest.raises(ModelNotFoundError):
            trainkit.load_model(uri)
    assert (_artifact_dir_of(client, model_id_b) / "artifacts" / "policy.zip").exists()  # soft: bytes kept
    # a deleted model is not served: the same request trains again
    assert manager.get("AAPL", "2020-01-01", "2021-06-30", seed=1, **SYNTH).status == "trained"

    # registered models are kept unless asked
    manager.register(c.model_uri, alias="champion")
    model_dir_a = _artifact_dir(manager, a.run_id)
    removed = manager.clear_cache(older_than=tomorrow, purge=True)
    removed_ids = {m.run_id for m in removed}
    assert c.run_id not in removed_ids and a.run_id in removed_ids and len(removed_ids) == 2
    # purge: gone from the store, bytes gone from disk
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        client.get_run(a.run_id)
    assert not model_dir_a.exists()
    assert [m.run_id for m in manager.list_cached_models()] == [c.run_id]
    assert manager.list_cached_models()[0].registered == ("trainkit-MSFT/1",)

    removed = manager.clear_cache(include_registered=True)
    assert [m.run_id for m in removed] == [c.run_id]
    with pytest.raises(ModelNotFoundError):
        trainkit.load_model("models:/trainkit-MSFT@champion")
    # the other tool's runs were never touched
    assert client.get_run(foreign_plain).info.lifecycle_stage == "active"
    assert client.get_run(foreign_tagged).info.lifecycle_stage == "active"
    assert manager.list_cached_models() == []


def _artifact_dir_of(client, model_id: str) -> Path:
    from mlflow.tracking._tracking_service.utils import _get_store

    lm = _get_store(client.tracking_uri).get_logged_model(model_id, allow_deleted=True)
    return Path(lm.artifact_location.replace("file://", ""))


def test_csv_training_records_the_file_and_survives_a_move(sqlite_uri: str, tmp_path: Path) -> None:
    from backtesting.test import GOOG

    path = tmp_path / "goog.csv"
    GOOG.to_csv(path, index_label="Date")
    manager = _manager(sqlite_uri)
    result = manager.get("GOOG", "2006-01-01", "2007-12-31", data_source=f"csv:{path}", progress=False, **FAST)
    assert result.status == "trained"
    run = manager.store.client.get_run(result.run_id)
    tags = run.data.tags
    assert tags["trainkit.data_source_effective"].startswith("csv:") and "trainkit.fallback_reason" not in tags
    assert run.data.params["csv_sha256"] == result.config.csv_sha256
    source = json.loads(run.inputs.dataset_inputs[0].dataset.source)
    assert "goog.csv" in json.dumps(source)
    # the hash follows the content, not the location: a moved file is a hit
    moved = tmp_path / "elsewhere.csv"
    path.rename(moved)
    hit = _manager(sqlite_uri).get("GOOG", "2006-01-01", "2007-12-31", data_source=f"csv:{moved}", progress=False, **FAST)
    assert hit.status == "cached" and hit.run_id == result.run_id
