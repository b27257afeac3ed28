"""The MLflow pyfunc face of a trainkit model, logged with *models-from-code*.

MLflow copies this file into the logged model and executes it on load, so it must stand on its
own: it imports only mlflow, numpy, pandas, json, hashlib, importlib and stable-baselines3 —
never ``trainkit``. The feature code comes from the model itself: the artifact
``signals_core.py`` (a copy of ``trainkit/signals_core.py``: numpy, pandas and ``ta``), loaded
here under a name of its own. A model logged today loads and predicts wherever its pip
requirements are installed, with or without trainkit.

Contract of :meth:`TrainkitPolicy.predict`:

* **Daily bars** — a DataFrame with a ``Date`` column (or a date index) and ``Open High Low
  Close Volume`` (the columns a CSV data source takes), oldest first, with enough history for
  the features' warm-up → a DataFrame with one row per requested day: ``date``, ``action``,
  ``position`` (-1/0/+1, the target held from that day's close to the next) and
  ``previous_position`` (held coming into the day). The deterministic policy is walked through
  the days from a flat position, as ``trainkit backtest`` walks it, with the model's own
  feature spec and *training* scaler; the last row is tomorrow's target. Params: ``position``
  (the position held coming into the first requested day; default 0, flat) and ``start`` (the
  first requested day; default the first bar whose features are warm).
* **Observations** — a float array ``(n, obs_dim)`` (or a DataFrame of ``obs_dim`` anonymous
  columns) → an int64 array of ``n`` actions, exactly the ones
  ``trainkit.load_model(uri).predict(obs, deterministic=True)`` returns. An observation is the
  scaled feature row of a day followed by the current position (see ``feature_spec.json``).

Input the model cannot use raises ``MlflowException`` with ``INVALID_PARAMETER_VALUE`` and a
message naming the problem: ``mlflow models serve`` answers it with HTTP 400, not a 500.

The SB3 zip is verified against the sha256 recorded at logging time (``model_config``)
before it is deserialised.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

#: algorithm -> "module:Class" of its stable-baselines3 class: a copy of the ``sb3_class``
#: column of ``trainkit.algorithms`` (this file imports no trainkit); tests/test_registries.py
#: pins the two together.
_CLASSES = {
    "ppo": "stable_baselines3:PPO",
    "a2c": "stable_baselines3:A2C",
    "dqn": "stable_baselines3:DQN",
}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_module(path: str) -> Any:
    """The model's own ``signals_core.py``, under a name of its own: two models loaded in one
    process each keep their own code, and an installed trainkit is neither needed nor used."""
    name = f"trainkit_signals_core_{_sha256(path)[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _bad_input(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class TrainkitPolicy(PythonModel):
    """Daily bars in, target positions out — or observations in, actions out."""

    # the input is checked here (bars or observations); without this MLflow wraps predict for
    # type-hint validation and warns that there are no type hints
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        policy_path = context.artifacts["policy"]
        expected = (context.model_config or {}).get("model_sha256")
        actual = _sha256(policy_path)
        if expected and actual != expected:
            raise MlflowException(
                f"trainkit policy.zip is corrupt: sha256 {actual[:12]}… does not match the recorded {expected[:12]}…"
            )
        with open(context.artifacts["config"]) as fh:
            self.config = json.load(fh)
        with open(context.artifacts["feature_spec"]) as fh:
            self.feature_spec = json.load(fh)
        self.signals = _load_module(context.artifacts["signals"])
        try:
            count, _, _ = self.signals.read_spec(self.feature_spec)
        except self.signals.SpecError as exc:
            raise MlflowException(f"trainkit model: {exc}: retrain it (trainkit train --force)") from None
        algo = self.config["algo"]
        if algo not in _CLASSES:
            raise MlflowException(f"unknown trainkit algorithm {algo!r}")
        module, _, name = _CLASSES[algo].partition(":")
        cls = getattr(importlib.import_module(module), name)
        with _one_torch_thread():  # rebuilding the policy is many tiny ops: threads only contend
            self.model = cls.load(policy_path, device="cpu")
        self.obs_dim = int(self.model.observation_space.shape[0])
        self.allow_short = bool(self.config.get("allow_short", True))
        n_actions = len(self.signals.position_levels(self.allow_short))
        if self.obs_dim != count + 1 or int(self.model.action_space.n) != n_actions:
            raise MlflowException(
                f"trainkit model is inconsistent: obs_dim {self.obs_dim} and {self.model.action_space.n} actions, "
                f"but {count} features and allow_short={self.allow_short}: retrain it (trainkit train --force)"
            )

    def _actions(self, obs: np.ndarray) -> np.ndarray:
        with _one_torch_thread():  # one thread, as backtests and training use: same numbers everywhere
            actions, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(actions, dtype=np.int64).reshape(-1)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        params = params or {}
        signals = self.signals
        if isinstance(model_input, dict):  # served as {"inputs": {"Date": [...], "Open": [...], ...}}
            import pandas as pd

            try:
                model_input = pd.DataFrame(model_input)
            except (TypeError, ValueError) as exc:
                raise _bad_input(f"bars given as columns must be lists of one length ({{\"Date\": [...], "
                                 f"\"Open\": [...], ...}}): {exc}") from None
        if signals.looks_like_bars(model_input):
            try:
                return signals.signals(
                    model_input, spec=self.feature_spec, predict=self._actions, allow_short=self.allow_short,
                    start=params.get("start"), position=params.get("position"),
                )
            except signals.BarsError as exc:
                raise _bad_input(str(exc)) from None
        return self._actions(self._observations(model_input))

    def _observations(self, model_input: Any) -> np.ndarray:
        expect = (f"expected daily bars (a DataFrame with Date, Open, High, Low, Close, Volume) or observations "
                  f"of shape (n, {self.obs_dim})")
        try:
            obs = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        except (TypeError, ValueError) as exc:
            raise _bad_input(f"{expect}: {exc}") from None
        if obs.ndim == 1:
            obs = obs.reshape(1, -1)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise _bad_input(f"{expect}, got an array of shape {obs.shape}")
        if obs.dtype.kind not in "iuf":  # a bool, a string or a list is no feature value
            raise _bad_input(f"{expect}: observations must be numbers, got {obs.dtype} values")
        obs = obs.astype(np.float32)
        if not np.isfinite(obs).all():
            raise _bad_input("observations contain NaN or infinite values")
        return obs


class _one_torch_thread:
    def __enter__(self) -> None:
        import torch

        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self._threads)


mlflow.models.set_model(TrainkitPolicy())
