"""The MLflow store (trainkit/store/) against real stores: a sqlite database in a temp dir
and a real `mlflow server` process. No mocks: every model here is trained (small), logged,
searched, verified and loaded through MLflow.

Multi-process races (several processes at once, SIGKILL'd trainers, corrupted artifacts from
outside, an unreachable server per CLI command) live in tests/reliability/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

import trainkit
from trainkit.errors import (
    ConfigError,
    IntegrityError,
    ModelNotFoundError,
    ModelURIError,
    StoreError,
    TrackingServerUnreachable,
)

from support import FAST, assert_same_model, copy_sqlite_store  # FAST: small, real training settings

WINDOW = ("AAPL", "2020-01-01", "2021-12-31")


def _new_manager(uri: str):
    from trainkit import TrainingManager

    return TrainingManager(tracking_uri=uri)


def _observations(model, n: int = 64, seed: int = 0) -> np.ndarray:
    dim = int(model.observation_space.shape[0])
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path):
    """One small model trained into an empty sqlite store (a copy of the session's migrated
    template), shared by the read-only tests."""
    root = tmp_path_factory.mktemp("store-module")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        uri = copy_sqlite_store(sqlite_template, root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRAINKIT_CACHE_DIR", str(root / "cache"))
        mp.setenv("TRAINKIT_CLAIM_SETTLE", "0.2")
        manager = _new_manager(uri)
        result = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
        yield manager, result, root, uri


@pytest.fixture
def store_env(trained, monkeypatch: pytest.MonkeyPatch):
    """Point the fluent MLflow API (mlflow.pyfunc.load_model) at the module's store."""
    manager, result, root, uri = trained
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return trained


# ----------------------------------------------------------------------------- the contract
def test_run_carries_the_contract(store_env) -> None:
    manager, result, _root, _uri = store_env
    client = manager.store.client
    run = client.get_run(result.run_id)
    tags, params = run.data.tags, run.data.params
    config = result.config

    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "trainkit"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["config_hash"]) and tags["config_hash"] == config.config_hash
    assert run.info.run_name == f"AAPL-ppo-{config.config_hash[:8]}"
    assert tags["trainkit.symbol"] == "AAPL"
    assert tags["trainkit.data_source"] == "synthetic"
    assert tags["trainkit.data_source_effective"] == "synthetic"
    assert "trainkit.fallback_reason" not in tags
    assert re.fullmatch(r"[0-9a-f]{64}", tags["trainkit.data_digest"])
    assert re.fullmatch(r"[0-9a-f]{64}", tags["trainkit.model_sha256"])
    assert tags["trainkit.version"] == trainkit.__version__
    # no claim bookkeeping left on a finished run
    assert not {"trainkit.claim_hash", "trainkit.heartbeat", "trainkit.claim_state"} & set(tags)
    # every config field is a param, with the value the config hashes
    assert {k: params.get(k) for k in config.to_params()} == config.to_params()
    assert set(params) - set(config.to_params()) <= {"model_sha256"}  # MLflow logs the pyfunc model_config
    assert params["timesteps"] == "256" and params["hp.n_steps"] == "64" and params["algo"] == "ppo"
    # the description says what was trained on what
    note = tags["mlflow.note.content"]
    assert "AAPL" in note and "synthetic" in note and config.config_hash in note and "WARNING" not in note
    # the training data is a dataset input, with the digest of the frame
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.digest == tags["trainkit.data_digest"][: len(ds.digest)] and len(ds.digest) >= 16
    assert "AAPL" in ds.name and {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert json.loads(ds.profile)["num_rows"] > 400  # two years of business days
    # training metrics were logged
    assert run.data.metrics["train_seconds"] > 0


def test_model_is_a_logged_model_built_from_code(store_env) -> None:
    manager, result, _root, _uri = store_env
    client = manager.store.client
    run = client.get_run(result.run_id)
    model_id = run.data.tags["trainkit.model_id"]
    lm = client.get_logged_model(model_id)
    assert lm.name == "model" and lm.source_run_id == result.run_id
    assert lm.experiment_id == run.info.experiment_id
    assert str(getattr(lm.status, "name", lm.status)).endswith("READY")
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    local = Path(lm.artifact_location.replace("file://", ""))
    names = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "requirements.txt", "artifacts/policy.zip", "artifacts/config.json",
            "artifacts/feature_spec.json"} <= names
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel  # models-from-code ...
    assert not any(n.endswith(".pkl") for n in names)  # ... not a cloudpickled object
    # bars or observations in: the signature declares the predict params, not one input schema
    assert result.config.config_hash in mlmodel and '"name": "position"' in mlmodel
    assert "artifacts/signals_core.py" in names  # the feature code travels with the model
    spec = json.loads(next(local.rglob("feature_spec.json")).read_text())
    assert spec["feature_count"] == 21 and spec["obs_dim"] == 22 and "scaler" in spec


def test_both_loaders_agree_for_every_uri_form(store_env) -> None:
    import mlflow.pyfunc

    manager, result, _root, _uri = store_env
    name = "trainkit-AAPL-loaders"
    reg_name, version = manager.register(result.model_uri, name=name, alias="champion")
    assert (reg_name, version) == (name, "1")
    model_id = manager.store.client.get_run(result.run_id).data.tags["trainkit.model_id"]
    uris = [result.model_uri, f"models:/{model_id}", f"models:/{name}/1", f"models:/{name}@champion"]
    obs = _observations(result.model, 96)
    expected, _ = result.model.predict(obs, deterministic=True)
    for uri in uris:
        sb3 = trainkit.load_model(uri)
        actions, _ = sb3.predict(obs, deterministic=True)
        pyfunc = mlflow.pyfunc.load_model(uri)
        via_pyfunc = pyfunc.predict(obs)
        assert via_pyfunc.dtype == np.int64 and via_pyfunc.shape == (96,), uri
        np.testing.assert_array_equal(actions, expected, err_msg=uri)
        np.testing.assert_array_equal(via_pyfunc, expected, err_msg=uri)
    # a DataFrame of observations works too
    frame = pd.DataFrame(obs)
    np.testing.assert_array_equal(pyfunc.predict(frame), expected)
    # the policy is not constant on these inputs (otherwise agreement would prove little)
    assert len(set(expected.tolist())) > 1 or result.model.action_space.n == 1


def test_bundle_rebuilds_everything_a_backtest_needs(store_env) -> None:
    from trainkit.store import load_bundle

    manager, result, _root, _uri = store_env
    model, bundle = load_bundle(result.model_uri, store=manager.store)
    assert_same_model(model, result.model, what="load_bundle")
    assert bundle.config == result.config
    assert bundle.feature_spec["feature_count"] == 21 and len(bundle.feature_spec["scaler"]["mean"]) == 21
    assert bundle.run_id == result.run_id
    model_id = manager.store.client.get_run(result.run_id).data.tags["trainkit.model_id"]
    assert bundle.model_id == model_id and bundle.registered_version is None
    manager.register(result.model_uri, name="trainkit-AAPL-bundle", alias="prod")
    model, by_alias = load_bundle("models:/trainkit-AAPL-bundle@prod", store=manager.store)
    assert_same_model(model, result.model, what="load_bundle by alias")
    assert (by_alias.model_id, by_alias.registered_version, by_alias.run_id) == (model_id, "trainkit-AAPL-bundle/1", result.run_id)


def test_log_run_records_the_model_as_its_input(store_env) -> None:
    manager, result, root, _uri = store_env
    model_id = manager.store.client.get_run(result.run_id).data.tags["trainkit.model_id"]
    (root / "note.txt").write_text("hello")
    rid = manager.store.log_run(
        "trainkit-backtests", run_name="AAPL-backtest", params={"a": "1"}, metrics={"m": 0.5},
        tags={"trainkit.model_uri": result.model_uri}, artifacts={"note.txt": str(root / "note.txt")},
        input_model_ids=[model_id],
    )
    run = manager.store.client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"} and run.data.metrics == {"m": 0.5}
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]
    assert [a.path for a in manager.store.client.list_artifacts(rid)] == ["note.txt"]


@pytest.mark.parametrize(
    "uri",
    ["runs:/0123456789abcdef0123456789abcdef/model", "models:/m-0123456789abcdef0123456789abcdef",
     "models:/trainkit-AAPL/3", "models:/trainkit-AAPL@champion", "  models:/x@y  "],
)
def test_validate_model_uri_accepts_the_four_shapes(uri: str) -> None:
    from trainkit.store import validate_model_uri

    assert validate_model_uri(uri) == uri.strip()


@pytest.mark.parametrize(
    "uri",
    ["", "s3://b/k", "runs:/abc/model", "runs:/0123456789abcdef0123456789abcdef/policy", "models:/name",
     "models:/name/v1", "models:/na me@x", "models:/name@1bad", None],
)
def test_validate_model_uri_refuses_everything_else(uri) -> None:
    from trainkit.store import validate_model_uri

    with pytest.raises(ModelURIError, match="invalid|trainkit models live"):
        validate_model_uri(uri)


@pytest.mark.parametrize(
    "uri, error",
    [
        ("s3://bucket/model", ModelURIError),
        ("runs:/not-a-run-id/model", ModelURIError),
        ("runs:/0123456789abcdef0123456789abcdef/other", ModelURIError),
        ("runs:/0123456789abcdef0123456789abcdef/model", ModelNotFoundError),
        ("models:/m-0123456789abcdef0123456789abcdef", ModelNotFoundError),
        ("models:/no-such-model/3", ModelNotFoundError),
        ("models:/no-such-model@champion", ModelNotFoundError),
        ("models:/just-a-name", ModelURIError),
    ],
)
def test_bad_uris_fail_with_their_own_error(store_env, uri: str, error: type) -> None:
    with pytest.raises(error):
        trainkit.load_model(uri)


def test_a_run_without_a_model_is_not_a_model(store_env) -> None:
    manager, _result, _root, _uri = store_env
    client = manager.store.client
    run = client.create_run(manager.store.experiment_id, run_name="someone-else")
    client.set_terminated(run.info.run_id)
    with pytest.raises(ModelNotFoundError, match="no trainkit model"):
        trainkit.load_model(f"runs:/{run.info.run_id}/model")


def test_registry_rejects_bad_names(store_env) -> None:
    manager, result, _root, _uri = store_env
    with pytest.raises(ConfigError):
        manager.register(result.model_uri, name="bad name with spaces")
    with pytest.raises(ConfigError):
        manager.register(result.model_uri, name="trainkit-AAPL-x", alias="v3")


# ----------------------------------------------------------------------------- integrity
def test_altered_bytes_are_refused_before_loading(sqlite_uri: str) -> None:
    manager = _new_manager(sqlite_uri)
    result = manager.get("MSFT", "2020-01-01", "2021-06-30", data_source="synthetic", progress=False, **FAST)
    lm = manager.store.client.get_logged_model(manager.store.client.get_run(result.run_id).data.tags["trainkit.model_id"])
    policy = Path(lm.artifact_location.replace("file://", "")) / "artifacts" / "policy.zip"
    policy.write_bytes(policy.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="sha256"):
        trainkit.load_model(result.model_uri)
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="corrupt"):  # the pyfunc face verifies too
        mlflow.pyfunc.load_model(result.model_uri)
    policy.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        trainkit.load_model(result.model_uri)


# ----------------------------------------------------------------------------- claims
def _claim_run(manager, config, *, heartbeat: float, start_offset_ms: int = 0, state: str | None = None) -> str:
    """A claim run made by hand, as another trainer's process would have left it."""
    from trainkit import store as st

    tags = {
        st.TAG_CLAIM: config.config_hash,
        st.TAG_HEARTBEAT: f"{heartbeat:.3f}",
        st.TAG_SYMBOL: config.symbol,
        st.TAG_VERSION: trainkit.__version__,
    }
    if state:
        tags[st.TAG_CLAIM_STATE] = state
    run = manager.store.client.create_run(
        manager.store.experiment_id, run_name=config.run_name(), tags=tags,
        start_time=int(time.time() * 1000) + start_offset_ms,
    )
    return run.info.run_id


def _provenance():
    from trainkit.store import DataProvenance

    return DataProvenance("synthetic", "synthetic", None, "0" * 64)


def _raise_after_first_wait(holder: str) -> None:
    raise _Waited(holder)


class _Waited(Exception):
    pass


def test_a_younger_lease_yields_to_an_older_live_one(sqlite_uri: str) -> None:
    from trainkit.store import TAG_CLAIM

    manager = _new_manager(sqlite_uri)
    store = manager.store
    config = manager.config_for("IBM", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    older = _claim_run(manager, config, heartbeat=time.time(), start_offset_ms=-5_000)
    assert store.leases.is_leased(config.config_hash)
    assert store.acquire(config, _provenance()) is None  # someone holds it: no lease for us
    with pytest.raises(_Waited) as info:
        store.leases.wait(config.config_hash, poll_seconds=0.2, on_wait=_raise_after_first_wait)
    assert str(info.value) == older
    # nothing of ours is left behind: the only lease is the older one, still live
    live, stale = store.leases.holders(config.config_hash)
    assert [r.info.run_id for r in live] == [older] and not stale
    runs = store.client.search_runs([store.experiment_id], f"tags.`{TAG_CLAIM}` = '{config.config_hash}'")
    assert [r.info.run_id for r in runs] == [older]


def test_a_lease_marked_training_wins_even_when_younger(sqlite_uri: str) -> None:
    """Clock skew between machines: a lease that already won must never be overtaken by a
    lease created later whose start_time reads older."""
    manager = _new_manager(sqlite_uri)
    store = manager.store
    config = manager.config_for("IBM", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    winner = _claim_run(manager, config, heartbeat=time.time(), start_offset_ms=+60_000, state="training")
    with pytest.raises(_Waited) as info:
        store.leases.wait(config.config_hash, poll_seconds=0.2, on_wait=_raise_after_first_wait)
    assert str(info.value) == winner
    # a lease that reads older than the winner still loses the tie against it
    live, _ = store.leases.holders(config.config_hash)
    assert not store.leases.wins((0, "0" * 32), live)


def test_two_leases_compete_and_the_older_wins(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both claimants create a lease before either looks (the race): the one created first
    wins the tie and is marked training; the other is released, deleted, and waits."""
    from trainkit.store import TAG_CLAIM_STATE
    from trainkit.store.runs import create_training_run

    manager = _new_manager(sqlite_uri)
    store = manager.store
    config = manager.config_for("IBM", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    # a competitor's lease that appears during our settle time, created after ours
    younger: list[str] = []

    def create_ours() -> tuple[str, int, bool]:
        mine = create_training_run(store.conn, store.experiment_id, config, _provenance())
        younger.append(_claim_run(manager, config, heartbeat=time.time(), start_offset_ms=+60_000))
        return mine

    lease = store.leases.acquire(config.config_hash, create_ours)
    try:
        assert lease is not None and lease.run_id != younger[0]
        assert lease.is_holder()
        live, _ = store.leases.holders(config.config_hash)
        assert sorted(r.info.run_id for r in live) == sorted([lease.run_id, younger[0]])  # they did compete
        assert store.client.get_run(lease.run_id).data.tags[TAG_CLAIM_STATE] == "training"
    finally:
        lease.fail("test over")
    assert store.client.get_run(lease.run_id).info.status == "FAILED"
    assert not lease.is_holder()

    # the mirror image: a competitor older than us appears while we settle → we lose
    store.client.set_terminated(younger[0], status="FAILED")

    def create_second() -> tuple[str, int, bool]:
        mine = create_training_run(store.conn, store.experiment_id, config, _provenance())
        younger.append(_claim_run(manager, config, heartbeat=time.time(), start_offset_ms=-60_000))
        return mine

    assert store.leases.acquire(config.config_hash, create_second) is None
    live, _ = store.leases.holders(config.config_hash)
    assert [r.info.run_id for r in live] == [younger[1]]  # ours was released


def test_a_stale_lease_is_marked_failed_and_taken_over(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainkit.store import TAG_CLAIM, TAG_FAILURE

    monkeypatch.setenv("TRAINKIT_STALE_AFTER", "30")
    manager = _new_manager(sqlite_uri)
    store = manager.store
    config = manager.config_for("IBM", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    dead = _claim_run(manager, config, heartbeat=time.time() - 300, start_offset_ms=-300_000)
    assert not store.leases.is_leased(config.config_hash)  # a stale lease reserves nothing
    got = store.acquire(config, _provenance())
    try:
        assert got is not None and got.run_id != dead and got.is_holder()
        run = store.client.get_run(dead)
        assert run.info.status == "FAILED"
        assert TAG_CLAIM not in run.data.tags and "stale" in run.data.tags[TAG_FAILURE]
        # the list shows our live lease as training, and not the dead one
        listed = {m.run_id: m.status for m in manager.list_cached_models("IBM")}
        assert listed == {got.run_id: "training"}
    finally:
        got.fail("test over", status="KILLED")
    run = store.client.get_run(got.run_id)
    assert run.info.status == "KILLED" and TAG_CLAIM not in run.data.tags
    assert manager.list_cached_models("IBM") == []


def test_a_released_lease_leaves_nothing_behind(sqlite_uri: str) -> None:
    manager = _new_manager(sqlite_uri)
    store = manager.store
    config = manager.config_for("IBM", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    lease = store.acquire(config, _provenance())
    assert lease is not None and store.leases.is_leased(config.config_hash)
    lease.release()
    assert not store.leases.is_leased(config.config_hash)
    assert store.client.get_run(lease.run_id).info.lifecycle_stage == "deleted"
    store.leases.wait(config.config_hash, poll_seconds=0.1)  # nothing to wait for: returns at once


def test_the_staleness_rule() -> None:
    from types import SimpleNamespace

    from trainkit.store import is_stale

    def run(beat: float | None, start_ms: int) -> SimpleNamespace:
        tags = {} if beat is None else {"trainkit.heartbeat": f"{beat:.3f}"}
        return SimpleNamespace(info=SimpleNamespace(start_time=start_ms), data=SimpleNamespace(tags=tags))

    now = 1_000_000.0
    assert not is_stale(run(now - 119, 0), now, 120)
    assert is_stale(run(now - 121, 0), now, 120)
    assert not is_stale(run(None, int((now - 60) * 1000)), now, 120)  # no beat yet: its start counts
    assert is_stale(run(None, int((now - 200) * 1000)), now, 120)


# ----------------------------------------------------------------------------- connection
def test_unreachable_server_is_reported_by_the_health_check_with_bounded_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/ARCHITECTURE.md, "MLflow pitfalls": a dead server is reported by trainkit's own
    ``GET /health`` (one request, no MLflow retries), naming the URI, and the MLflow requests
    after it run with bounded retries and timeout unless the user chose otherwise. Why it is
    quick is checked here; how quick, ``make bench`` measures (bench/bench_timings.py)."""
    from trainkit import store as st

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "")  # restored after the test ...
        monkeypatch.delenv(name)  # ... and unset during it: the user chose nothing
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"  # nothing listens here
    health = f"cannot reach the MLflow tracking server at {uri} ("
    with pytest.raises(TrackingServerUnreachable) as info:
        st.ModelStore(uri)
    assert str(info.value).startswith(health), str(info.value)
    with pytest.raises(TrackingServerUnreachable) as info:
        _new_manager(uri).list_cached_models()
    assert str(info.value).startswith(health), str(info.value)  # asked again: a failed check is not remembered
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("2", "10")

    # a user's own settings win over trainkit's defaults
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with pytest.raises(TrackingServerUnreachable, match=re.escape(health)):
        st.ModelStore(uri)
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("0", "3")


def test_fresh_sqlite_store_is_created_under_a_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/ARCHITECTURE.md, "MLflow pitfalls": the schema is created (under a lock file beside the db) before use."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "sub" / "fresh.db"
    from trainkit.store import ModelStore

    store = ModelStore(f"sqlite:///{db}")
    assert db.exists() and (tmp_path / "sub" / "fresh.db.lock").exists()
    assert store.list_models() == []


# ----------------------------------------------------------------------------- remote server
@pytest.mark.server
@pytest.mark.slow
def test_server_round_trip_hit_loaders_soft_delete_and_no_purge(server_uri: str, mlflow_server) -> None:
    import mlflow.pyfunc

    manager = _new_manager(server_uri)
    first = manager.get("ORCL", "2020-01-01", "2021-06-30", data_source="synthetic", progress=False, **FAST)
    assert first.status == "trained"
    again = _new_manager(server_uri).get("ORCL", "2020-01-01", "2021-06-30", data_source="synthetic", progress=False, **FAST)
    assert again.status == "cached" and again.model_uri == first.model_uri
    obs = _observations(first.model, 32)
    expected, _ = first.model.predict(obs, deterministic=True)
    model_id = manager.store.client.get_run(first.run_id).data.tags["trainkit.model_id"]
    for uri in (first.model_uri, f"models:/{model_id}"):
        np.testing.assert_array_equal(trainkit.load_model(uri).predict(obs, deterministic=True)[0], expected)
        np.testing.assert_array_equal(mlflow.pyfunc.load_model(uri).predict(obs), expected)
    # the artifacts really went through the server (proxied), not to our working directory
    assert not (Path.cwd() / "mlruns").exists()
    location = manager.store.client.get_logged_model(model_id).artifact_location
    assert location.startswith("mlflow-artifacts:"), location
    own = list((mlflow_server.root / "artifacts" / urlparse(location).path.lstrip("/")).rglob("policy.zip"))
    assert len(own) == 1, f"this model's policy.zip is not under the server's artifact root: {location}, {own}"
    run_tags = manager.store.client.get_run(first.run_id).data.tags
    assert hashlib.sha256(own[0].read_bytes()).hexdigest() == run_tags["trainkit.model_sha256"]

    # purge cannot work remotely: it says so and deletes nothing
    with pytest.raises(StoreError, match="mlflow gc") as info:
        manager.clear_cache(symbol="ORCL", purge=True)
    assert info.value.exit_code == 1
    assert [m.run_id for m in manager.list_cached_models("ORCL")] == [first.run_id]
    # soft delete works, and the model no longer loads by any URI
    removed = manager.clear_cache(symbol="ORCL")
    assert [m.run_id for m in removed] == [first.run_id]
    assert manager.list_cached_models("ORCL") == []
    for uri in (first.model_uri, f"models:/{model_id}"):
        with pytest.raises(ModelNotFoundError):
            trainkit.load_model(uri)
