"""The Model Registry: register cached models (default name ``trainkit-<SYMBOL>``, a template,
or a custom name), point aliases at versions, load and backtest by ``models:/<name>/<version>``
and ``models:/<name>@<alias>``, and ``clear`` keeping what is registered unless told otherwise.
Real MLflow (sqlite), real small PPO models on real GOOG prices."""

from __future__ import annotations

import json

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import trainkit
from support import FAST
from trainkit.backtest import run_backtest
from trainkit.errors import ConfigError, ModelNotFoundError

TRAIN = ("2005-07-01", "2009-12-31")
TEST = ("2010-01-01", "2011-12-31")


def goog_csv(tmp_path: Path) -> Path:
    from backtesting.test import GOOG

    path = tmp_path / "GOOG.csv"
    GOOG.to_csv(path, index_label="Date")
    return path


def train(manager, csv: Path, **options):
    res = manager.get("GOOG", *TRAIN, data_source=f"csv:{csv}", progress=False, **{**FAST, **options})
    assert res.status == "trained"
    return res


def same_weights(a, b) -> bool:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_register_alias_load_and_backtest_by_registry_uri(sqlite_uri: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    manager = trainkit.TrainingManager()
    res = train(manager, goog_csv(tmp_path))
    client = manager.store.client

    assert manager.register(res.model_uri) == ("trainkit-GOOG", "1")
    assert manager.register(res.model_uri, alias="champion") == ("trainkit-GOOG", "2")
    assert manager.register(res.model_uri, name="goog-ppo-small") == ("goog-ppo-small", "1")
    monkeypatch.setenv("TRAINKIT_REGISTERED_NAME", "desk-{symbol}")
    assert manager.register(res.model_uri) == ("desk-GOOG", "1")

    mv = client.get_model_version_by_alias("trainkit-GOOG", "champion")
    assert str(mv.version) == "2" and mv.run_id == res.run_id
    model_id = client.get_run(res.run_id).data.tags["trainkit.model_id"]
    assert mv.source == f"models:/{model_id}"
    # registered as mlflow.register_model does it: the LoggedModel lists its versions (the UI's "Registered")
    listed = json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert [(e["name"], str(e["version"])) for e in listed] == [
        ("trainkit-GOOG", "1"), ("trainkit-GOOG", "2"), ("goog-ppo-small", "1"), ("desk-GOOG", "1")]

    # load by version and by alias: the very model that was trained
    by_version = trainkit.load_model("models:/trainkit-GOOG/1")
    by_alias = trainkit.load_model("models:/trainkit-GOOG@champion")
    by_custom = trainkit.load_model("models:/goog-ppo-small/1")
    for loaded in (by_version, by_alias, by_custom):
        assert type(loaded).__name__ == "PPO"
        assert same_weights(loaded, res.model)
    obs = np.random.default_rng(0).normal(size=(64, res.model.observation_space.shape[0])).astype(np.float32)
    assert (by_alias.predict(obs, deterministic=True)[0] == res.model.predict(obs, deterministic=True)[0]).all()

    # what does not exist is a clear runtime error; a reserved alias is a usage error
    with pytest.raises(ModelNotFoundError):
        trainkit.load_model("models:/trainkit-GOOG/7")
    with pytest.raises(ModelNotFoundError):
        trainkit.load_model("models:/trainkit-GOOG@nobody")
    with pytest.raises(ConfigError, match="alias"):
        manager.register(res.model_uri, alias="latest")

    # backtest by the registry URI: same numbers as by run, lineage back to the training run
    bt_alias = run_backtest("models:/trainkit-GOOG@champion", *TEST)
    bt_run = run_backtest(res.model_uri, *TEST, log=False)
    assert bt_alias.metrics == bt_run.metrics
    tags = client.get_run(bt_alias.run_id).data.tags
    assert tags["trainkit.model_uri"] == "models:/trainkit-GOOG@champion"
    assert tags["trainkit.source_run_id"] == res.run_id
    assert tags["trainkit.model_id"] == model_id
    assert run_backtest("models:/trainkit-GOOG/1", *TEST, log=False).metrics == bt_run.metrics

    listed = {m.run_id: m for m in manager.list_cached_models("GOOG")}
    assert set(listed[res.run_id].registered) == {"trainkit-GOOG/1", "trainkit-GOOG/2", "goog-ppo-small/1", "desk-GOOG/1"}


def test_clear_keeps_registered_models_unless_asked(sqlite_uri: str, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    manager = trainkit.TrainingManager()
    csv = goog_csv(tmp_path)
    kept = train(manager, csv, seed=0)
    other = train(manager, csv, seed=1)
    assert kept.config_hash != other.config_hash
    manager.register(kept.model_uri, alias="champion")

    remove, keep = manager.plan_clear(symbol="GOOG")
    assert [m.run_id for m in remove] == [other.run_id]
    assert [m.run_id for m in keep] == [kept.run_id] and keep[0].registered == ("trainkit-GOOG/1",)
    assert [m.run_id for m in manager.clear_cache(symbol="GOOG", dry_run=True)] == [other.run_id]
    assert {m.run_id for m in manager.list_cached_models("GOOG")} == {kept.run_id, other.run_id}  # dry run

    with caplog.at_level(logging.INFO, logger="trainkit"):
        removed = manager.clear_cache(symbol="GOOG")
    assert [m.run_id for m in removed] == [other.run_id]
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "trainkit")
    assert kept.run_id in said and "registered as trainkit-GOOG/1" in said and "include_registered" in said
    assert [m.run_id for m in manager.list_cached_models("GOOG")] == [kept.run_id]
    assert same_weights(trainkit.load_model("models:/trainkit-GOOG@champion"), kept.model)
    with pytest.raises(ModelNotFoundError):
        trainkit.load_model(other.model_uri)

    removed = manager.clear_cache(symbol="GOOG", include_registered=True)
    assert [m.run_id for m in removed] == [kept.run_id]
    assert manager.list_cached_models("GOOG") == []
    for uri in ("models:/trainkit-GOOG/1", "models:/trainkit-GOOG@champion", kept.model_uri):
        with pytest.raises(ModelNotFoundError):
            trainkit.load_model(uri)
