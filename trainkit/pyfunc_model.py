"""The MLflow pyfunc face of a trainkit model, logged with *models-from-code*.

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
