"""Issue 17: the logged model answers daily price bars with positions, and is served for real.

Everything runs against a real sqlite store with small, real models: the pyfunc face in this
process, in a process where ``import trainkit`` fails, and behind ``mlflow models serve``; the
positions are checked against ``trainkit backtest`` (:func:`trainkit.backtest.run_backtest`)
over the same days. A model logged in the format before this change (three files, the old
pyfunc file, a tensor signature) still loads and predicts, and ``trainkit signal`` serves it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


from support import FAST, PYTHON, REPO, served_model
from test_cli import cli  # noqa: F401  (fixture: the CLI in-process)

TRAIN = ("AAPL", "2020-01-01", "2021-12-31")
OLD_SYMBOL = "MSFT"
S, E = "2022-01-03", "2022-06-30"  # the test window: right after training

#: trainkit/pyfunc_model.py as logged before issue 17 (commit 218bc60), verbatim
OLD_PYFUNC = r'''"""The MLflow pyfunc face of a trainkit model, logged with *models-from-code*.

MLflow copies this file into the logged model and executes it on load, so it must stand on its
own: it imports only mlflow, numpy, json, hashlib and stable-baselines3 — never ``trainkit`` —
and a model logged today loads wherever SB3 is installed, with or without trainkit.

Contract of :meth:`TrainkitPolicy.predict`: a float32 array of observations ``(n, obs_dim)``
(or a DataFrame with ``obs_dim`` columns) → an int64 array of ``n`` actions, exactly the ones
``trainkit.load_model(uri).predict(obs, deterministic=True)`` returns. An observation is the
scaled feature row of a day followed by the current position (see ``feature_spec.json``).

The SB3 zip is verified against the sha256 recorded at logging time (``model_config``)
before it is deserialised.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

_ALGOS = ("ppo", "a2c", "dqn")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TrainkitPolicy(PythonModel):
    """Observations in, actions out (deterministic policy)."""

    # the model's signature (a float32 tensor) is the contract; without this MLflow wraps
    # predict for type-hint validation and warns that there are no type hints
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import stable_baselines3 as sb3

        policy_path = context.artifacts["policy"]
        expected = (context.model_config or {}).get("model_sha256")
        actual = _sha256(policy_path)
        if expected and actual != expected:
            raise mlflow.exceptions.MlflowException(
                f"trainkit policy.zip is corrupt: sha256 {actual[:12]}… does not match the recorded {expected[:12]}…"
            )
        with open(context.artifacts["config"]) as fh:
            self.config = json.load(fh)
        with open(context.artifacts["feature_spec"]) as fh:
            self.feature_spec = json.load(fh)
        algo = self.config["algo"]
        if algo not in _ALGOS:
            raise mlflow.exceptions.MlflowException(f"unknown trainkit algorithm {algo!r}")
        cls = getattr(sb3, algo.upper())
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # rebuilding the policy is many tiny ops: threads only contend
        try:
            self.model = cls.load(policy_path, device="cpu")
        finally:
            torch.set_num_threads(threads)
        self.obs_dim = int(self.model.observation_space.shape[0])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        obs = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim == 1:
            obs = obs.reshape(1, -1)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"expected observations of shape (n, {self.obs_dim}), got {obs.shape}")
        actions, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(actions, dtype=np.int64).reshape(-1)


mlflow.models.set_model(TrainkitPolicy())
'''


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A sqlite store with one model in today's format (AAPL) and one in the old format (MSFT)."""
    from trainkit import TrainingManager
    from trainkit.store import flavor

    root = tmp_path_factory.mktemp("signals")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRAINKIT_CACHE_DIR", str(root / "cache"))
        mp.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        manager = TrainingManager(tracking_uri=uri)
        new = manager.get(*TRAIN, data_source="synthetic", progress=False, **FAST)
        # the format before issue 17: three files, the old pyfunc file, a float32 tensor signature
        old_file = root / "old_pyfunc_model.py"
        old_file.write_text(OLD_PYFUNC)
        with pytest.MonkeyPatch.context() as old:
            old.setattr(flavor, "MODEL_FILES", {k: flavor.MODEL_FILES[k] for k in ("policy", "config", "feature_spec")})
            old.setattr(flavor, "pyfunc_file", lambda: str(old_file))
            old.setattr(flavor, "signature", _old_signature)
            old.setattr(flavor, "_REQUIREMENTS", ("mlflow", "stable-baselines3", "torch", "numpy", "gymnasium", "cloudpickle"))
            legacy = manager.get(OLD_SYMBOL, TRAIN[1], TRAIN[2], data_source="synthetic", progress=False, **FAST)
        yield {"uri": uri, "root": root, "manager": manager, "new": new, "old": legacy}


@pytest.fixture
def env(store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(store["root"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    return store


def _old_signature(obs_dim: int):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, obs_dim))]),
                          outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]))


def _bars(symbol: str = "AAPL", start: str = S, end: str = E) -> pd.DataFrame:
    """The frame `trainkit backtest --start start --end end` reads (warm-up included)."""
    from trainkit.data import DataFetcherFactory
    from trainkit.features import warmup_start

    return DataFetcherFactory.fetch("synthetic", symbol, warmup_start(start), end).frame


def _backtest(uri: str, start: str = S, end: str = E):
    from trainkit.backtest import run_backtest

    return run_backtest(uri, start, end, log=False)


def _model_dir(manager, result) -> Path:
    client = manager.store.client
    lm = client.get_logged_model(client.get_run(result.run_id).data.tags["trainkit.model_id"])
    return Path(lm.artifact_location.replace("file://", ""))


def _payload(frame: pd.DataFrame, params: dict | None = None) -> dict:
    """``dataframe_split`` JSON of bars with a Date column (exact floats: json, not to_json)."""
    df = frame.reset_index() if isinstance(frame.index, pd.DatetimeIndex) else frame
    rows = [[str(v.date()) if isinstance(v, pd.Timestamp) else (v.item() if hasattr(v, "item") else v) for v in row]
            for row in df.itertuples(index=False)]
    doc: dict = {"dataframe_split": {"columns": [str(c) for c in df.columns], "data": rows}}
    if params:
        doc["params"] = params
    return doc


# ----------------------------------------------------------------------------- the code travels
def test_the_core_is_self_contained_and_the_features_use_it():
    from trainkit import features, signals_core

    allowed = {"__future__", "collections", "typing", "numpy", "pandas", "ta"}
    for name in ("signals_core.py", "pyfunc_model.py"):
        tree = ast.parse((REPO / "trainkit" / name).read_text())
        roots = {(a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                 for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in getattr(n, "names", [])}
        assert "trainkit" not in roots, name
        if name == "signals_core.py":
            assert roots <= allowed, roots - allowed
    # one copy of the formulas: trainkit's features are the ones a served model computes
    assert features._compute is signals_core.compute and features._catalog is signals_core.catalog
    assert features.FEATURE_NAMES == signals_core.FEATURE_NAMES and features.FEATURE_VERSION == signals_core.FEATURE_VERSION


def test_model_carries_the_feature_code_params_and_requirements(env):
    from importlib.metadata import version

    local = _model_dir(env["manager"], env["new"])
    assert (local / "artifacts" / "signals_core.py").read_bytes() == (REPO / "trainkit" / "signals_core.py").read_bytes()
    from mlflow.models import Model

    sig = Model.load(str(local / "MLmodel")).signature
    assert sig.inputs is None  # bars or observations: predict checks its input itself
    assert [p.name for p in sig.params.params] == ["position", "start"]
    reqs = dict(line.split("==", 1) for line in (local / "requirements.txt").read_text().split() if "==" in line)
    for pkg in ("mlflow", "stable-baselines3", "torch", "numpy", "pandas", "ta", "gymnasium"):
        assert reqs.get(pkg) == version(pkg).split("+", 1)[0], (pkg, reqs)
    assert not any(line.startswith("trainkit") for line in (local / "requirements.txt").read_text().split())


# ----------------------------------------------------------------------------- bars in, positions out
def test_bars_give_the_positions_of_a_backtest_over_the_same_days(env):
    import mlflow.pyfunc

    uri = env["new"].model_uri
    bt = _backtest(uri)
    bars = _bars()
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(bars, params={"start": S})
    assert list(out.columns) == ["date", "action", "position", "previous_position"]
    assert out["date"].tolist() == [str(d.date()) for d in bt.equity["date"]]
    np.testing.assert_array_equal(out["position"].to_numpy(), bt.equity["position"].to_numpy())
    np.testing.assert_array_equal(out["previous_position"].to_numpy(), np.concatenate(([0], out["position"][:-1])))
    assert set(out["position"]) <= {-1, 0, 1} and len(set(out["position"])) > 1  # not a constant policy
    np.testing.assert_array_equal(out["position"], np.array([-1, 0, 1])[out["action"]])
    # the same bars as a CSV would give them: a Date column, any case, an extra column, Adj Close = Close
    csv_like = bars.reset_index().rename(columns=str.lower).assign(adj_close=lambda f: f["close"], note="x")
    pd.testing.assert_frame_equal(model.predict(csv_like, params={"start": S}), out)
    # columns as a dict (what a served {"inputs": {"Date": [...], ...}} becomes)
    as_columns = {k: np.asarray(v) for k, v in bars.reset_index().astype({"Date": str}).to_dict(orient="list").items()}
    pd.testing.assert_frame_equal(model.predict(as_columns, params={"start": S}), out)
    # default: every day whose features are warm, from flat; the last row is tomorrow's target
    every = model.predict(bars)
    assert len(every) == len(bars) - 199 and every["date"].iloc[-1] == E and every["previous_position"].iloc[0] == 0


def test_the_position_param_starts_from_the_callers_position(env):
    import mlflow.pyfunc

    from trainkit.features import build_features, parse_spec
    from trainkit.store import load_bundle

    uri = env["new"].model_uri
    sb3, bundle = load_bundle(uri)
    count, scaler = parse_spec(bundle.feature_spec)
    bars = _bars()
    row = build_features(bars, count, scaler=scaler, start="2022-05-01", end=E).matrix[-1]
    model = mlflow.pyfunc.load_model(uri)
    for held in (-1, 0, 1):
        out = model.predict(bars, params={"start": E, "position": held})
        assert out[["date", "previous_position"]].values.tolist() == [[E, held]]
        expected, _ = sb3.predict(np.append(row, np.float32(held))[None].astype(np.float32), deterministic=True)
        assert out["action"].iloc[0] == int(expected[0])
    # a walk from a held short differs from one from flat only where the policy cares
    walk = model.predict(bars, params={"start": S, "position": -1})
    assert walk["previous_position"].iloc[0] == -1 and len(walk) == len(_backtest(uri).equity)


def test_observation_vectors_still_return_actions(env):
    import mlflow.pyfunc

    from trainkit import load_model

    uri = env["new"].model_uri
    sb3 = load_model(uri)
    obs = np.random.default_rng(1).normal(size=(48, sb3.observation_space.shape[0])).astype(np.float32)
    expected, _ = sb3.predict(obs, deterministic=True)
    model = mlflow.pyfunc.load_model(uri)
    np.testing.assert_array_equal(model.predict(obs), expected)
    np.testing.assert_array_equal(model.predict(pd.DataFrame(obs)), expected)
    assert model.predict(obs).dtype == np.int64


def _bad_inputs(bars: pd.DataFrame) -> list[tuple[str, object, dict | None, str]]:
    """(case, bars, params, words the message must contain)."""
    frame = bars.reset_index()
    swapped = frame.copy()
    swapped.iloc[[100, 101]] = swapped.iloc[[101, 100]].to_numpy()
    dup = frame.copy()
    dup.loc[101, "Date"] = dup.loc[100, "Date"]
    zero = frame.copy()
    zero.loc[150, "Close"] = 0.0
    return [
        ("missing column", frame.drop(columns=["Volume"]), None, "lack column(s) Volume"),
        ("too little history", frame.tail(120), None, "too little history"),
        ("too little before start", frame, {"start": str(frame["Date"].iloc[50].date())}, "too little history"),
        ("non-positive price", zero, None, "non-positive prices"),
        ("unsorted dates", swapped, None, "not sorted"),
        ("duplicate dates", dup, None, "duplicate dates"),
        ("position outside the model's", frame, {"position": 2.0}, "position must be one of"),
    ]


def test_bad_bars_are_invalid_parameter_values_that_name_the_problem(env):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(env["new"].model_uri)
    bars = _bars()
    frame = bars.reset_index()
    more = [
        ("unparseable date", frame.assign(Date=frame["Date"].astype(str).where(frame.index != 7, "soon")), None,
         "unparseable date 'soon'"),
        ("epoch dates", frame.assign(Date=frame["Date"].astype("int64") // 10**6), None, "date_format='iso'"),
        ("no dates", frame.drop(columns=["Date"]), None, "no dates"),
        ("missing value", frame.assign(High=frame["High"].where(frame.index != 9)), None, "missing values in High"),
        ("two symbols", frame.assign(Symbol=["AAPL", "MSFT"] * (len(frame) // 2) + ["AAPL"] * (len(frame) % 2)), None,
         "2 symbols"),
        ("start after the bars", frame, {"start": "2030-01-02"}, "after the last bar"),
        ("bad observations", np.zeros((2, 5), dtype=np.float32), None, "observations of shape (n, 22)"),
    ]
    for case, data, params, needle in _bad_inputs(bars) + more:
        with pytest.raises(MlflowException) as info:
            model.predict(data, params=params)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE", case
        assert needle in info.value.message, (case, info.value.message)


# ----------------------------------------------------------------------------- without trainkit
_BLOCKER = """
import os, sys

class _NoTrainkit:
    def find_spec(self, name, path=None, target=None):
        if name == "trainkit" or name.startswith("trainkit."):
            with open(os.environ["TK_BLOCK_LOG"], "a") as fh:
                fh.write(f"blocked {name} in {os.getpid()}\\n")
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoTrainkit())
with open(os.environ["TK_BLOCK_LOG"], "a") as fh:
    fh.write(f"active in {os.getpid()}: {' '.join(sys.argv)[:200]}\\n")
"""


def _no_trainkit_env(store, tmp_path: Path) -> dict[str, str]:
    """An environment whose Pythons cannot import trainkit (installed in editable mode in the
    venv, so blocked explicitly by a sitecustomize on PYTHONPATH) and log that they tried."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(_BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    env.update(PYTHONPATH=str(block), TK_BLOCK_LOG=str(tmp_path / "block.log"), MLFLOW_TRACKING_URI=store["uri"],
               PATH=f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}", MLFLOW_LOGGING_LEVEL="WARNING")
    return env


def test_loads_and_predicts_where_trainkit_cannot_be_imported(env, tmp_path: Path):
    uri = env["new"].model_uri
    bars = _bars()
    bars.to_csv(tmp_path / "bars.csv")
    script = textwrap.dedent(f"""
        import json, sys
        try:
            import trainkit
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("trainkit is importable: the test proves nothing")
        import mlflow.pyfunc, pandas as pd
        model = mlflow.pyfunc.load_model({uri!r})
        bars = pd.read_csv("bars.csv")
        out = model.predict(bars, params={{"start": {S!r}}})
        assert not [m for m in sys.modules if m == "trainkit" or m.startswith("trainkit.")]
        print(json.dumps(out.to_dict(orient="list")))
    """)
    p = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=_no_trainkit_env(env, tmp_path), timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    bt = _backtest(uri)
    assert out["position"] == bt.equity["position"].astype(int).tolist()
    log = (tmp_path / "block.log").read_text()
    assert log.count("blocked trainkit ") == 1 and "active in" in log  # only the script's own attempt


# ----------------------------------------------------------------------------- mlflow models serve
def _post(url: str, doc: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_bars_with_backtest_positions(env, tmp_path: Path):
    uri = env["new"].model_uri
    with served_model(uri, _no_trainkit_env(env, tmp_path), tmp_path) as base:
        bars = _bars()
        code, body = _post(base + "/invocations", _payload(bars, {"start": S}))
        assert code == 200, body
        served = pd.DataFrame(body["predictions"])
        bt = _backtest(uri)
        assert served["date"].tolist() == [str(d.date()) for d in bt.equity["date"]]
        np.testing.assert_array_equal(served["position"].to_numpy(), bt.equity["position"].to_numpy())
        # the caller's position, and tomorrow's target only
        code, body = _post(base + "/invocations", _payload(bars.tail(250), {"start": E, "position": -1}))
        assert code == 200 and len(body["predictions"]) == 1 and body["predictions"][0]["previous_position"] == -1

        # observation vectors, as before
        from trainkit import load_model

        sb3 = load_model(uri)
        obs = np.random.default_rng(2).normal(size=(16, sb3.observation_space.shape[0])).astype(np.float32)
        code, body = _post(base + "/invocations", {"inputs": obs.tolist()})
        assert code == 200 and body["predictions"] == sb3.predict(obs, deterministic=True)[0].tolist()

        # bad input: a 4xx naming the problem, never a 500 with a traceback
        for case, data, params, needle in _bad_inputs(bars):
            code, body = _post(base + "/invocations", _payload(data, params))
            assert code == 400, (case, code, body)
            assert body["error_code"] == "INVALID_PARAMETER_VALUE" and needle in body["message"], (case, body)
            assert "Traceback" not in json.dumps(body) and not body.get("stack_trace"), (case, body)
    blocked = (tmp_path / "block.log").read_text()
    assert "uvicorn" in blocked and "blocked" not in blocked, blocked  # the server never even tried trainkit


# ----------------------------------------------------------------------------- trainkit signal
def test_signal_is_the_last_position_of_the_backtest_since_training(env, cli):  # noqa: F811
    uri = env["new"].model_uri
    res = cli("signal", "--model-uri", uri, "--date", E, "--json")
    assert res.code == 0, res.err
    doc = res.json
    bt = _backtest(uri, "2022-01-01", E)  # the default walk starts the day after training ends
    assert (doc["date"], doc["walk_start"], doc["start_position"]) == (E, S, 0)
    assert doc["position"] == int(bt.equity["position"].iloc[-1])
    assert doc["previous_position"] == int(bt.equity["position"].iloc[-2])
    assert doc["days"] == bt.n_days and doc["symbol"] == "AAPL" and doc["warnings"] == []
    # --since: a walk from flat from another day, as a backtest from it
    since = cli("signal", "--model-uri", uri, "--date", E, "--since", "2022-03-01", "--json").json
    assert since["position"] == int(_backtest(uri, "2022-03-01", E).equity["position"].iloc[-1])
    # --position: one step from the position held, as the served model's `position` param
    import mlflow.pyfunc

    step = cli("signal", "--model-uri", uri, "--date", E, "--position", "-1", "--json").json
    served = mlflow.pyfunc.load_model(uri).predict(_bars(), params={"start": E, "position": -1})
    assert (step["previous_position"], step["position"], step["days"]) == (-1, int(served["position"].iloc[0]), 1)
    # text
    text = cli("signal", "--model-uri", uri, "--date", "2022-07-02")  # a Saturday: Friday's close
    assert text.code == 0, text.err
    assert text.out.startswith("AAPL 2022-07-01: target position ") and "walked from 2022-01-03 (flat)" in text.out


@pytest.mark.parametrize("args, needle", [
    (["--position", "2"], "--position"),
    (["--position", "0", "--since", "2022-03-01"], "exclude each other"),
    (["--date", "2999-01-04"], "in the future"),
    (["--date", "2022-02-30"], "--date"),
])
def test_signal_usage_errors_exit_2(env, cli, args, needle):  # noqa: F811
    res = cli("signal", "--model-uri", env["new"].model_uri, *args)
    assert res.code == 2 and needle in res.err and "Traceback" not in res.err, res.err


# ----------------------------------------------------------------------------- models logged before
def test_a_model_logged_before_still_loads_and_predicts(env, cli):  # noqa: F811
    import mlflow.pyfunc

    from trainkit import load_model

    old = env["old"]
    local = _model_dir(env["manager"], old)
    names = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert "artifacts/signals_core.py" not in names and "artifacts/policy.zip" in names  # really the old format
    assert '"float32", "shape": [-1, 22]' in (local / "MLmodel").read_text()
    # its pyfunc face is the one it was logged with: observations in, actions out, as before
    sb3 = load_model(old.model_uri)
    obs = np.random.default_rng(3).normal(size=(32, 22)).astype(np.float32)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(old.model_uri).predict(obs), sb3.predict(obs, deterministic=True)[0])
    # trainkit's own paths need only the old three files: backtests and signals work
    bt = _backtest(old.model_uri)
    res = cli("signal", "--model-uri", old.model_uri, "--date", E, "--since", S, "--json")
    assert res.code == 0, res.err
    assert res.json["symbol"] == OLD_SYMBOL and res.json["position"] == int(bt.equity["position"].iloc[-1])
