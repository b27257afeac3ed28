"""The trainkit model format, in the shape of MLflow's own flavors (``mlflow/sklearn``):
what files make a model, how they are written and logged, and how they are loaded back —
verified before anything is deserialised.

A trainkit model is an MLflow LoggedModel (``models:/m-…``, also ``runs:/<run_id>/model``)
logged with *models-from-code*: MLflow executes ``trainkit/pyfunc_model.py`` on
``mlflow.pyfunc.load_model`` (daily bars → positions, or observations → actions; no trainkit
needed), and its artifacts are the files of :data:`MODEL_FILES` — the only list of them. The
pyfunc file reads them by the same keys (``context.artifacts["policy"]`` …);
``tests/test_contract.py`` pins both.

The feature code travels with the model: ``signals_core.py`` is a copy of
:mod:`trainkit.signals_core` (numpy, pandas and ``ta`` only), which the pyfunc file loads from
the model's own artifacts, so the served model builds its observations from bars with the
formulas and the training scaler it was trained with. Models logged before it existed have
only the first three files: trainkit itself never needs the fourth (:data:`LOAD_FILES`), and
their pyfunc face is the file logged with them (observations → actions, as before).

This module and :mod:`trainkit.agents` are the only ones that use stable-baselines3; its classes
come from the algorithm table (:mod:`trainkit.algorithms`), imported when a model is loaded or built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainkit.algorithms import algorithm_spec
from trainkit.config import TrainConfig, file_sha256
from trainkit.errors import IntegrityError
from trainkit.store.contract import LOGGED_MODEL_TYPE, MODEL_NAME, TAG_HASH, TAG_MODEL_SHA, TAG_SYMBOL
from trainkit.threads import one_torch_thread  # re-exported: callers import it from here

#: artifact key -> file name: the files that make a trainkit model, and nothing else
MODEL_FILES: dict[str, str] = {
    "policy": "policy.zip",  # the stable-baselines3 zip
    "config": "config.json",  # the resolved TrainConfig, its hash and the trainkit version
    "feature_spec": "feature_spec.json",  # feature count, training scaler, obs_dim, data provenance
    "signals": "signals_core.py",  # trainkit.signals_core: bars -> features -> positions, without trainkit
}
POLICY, CONFIG, FEATURE_SPEC = MODEL_FILES["policy"], MODEL_FILES["config"], MODEL_FILES["feature_spec"]
SIGNALS = MODEL_FILES["signals"]

#: the files trainkit's own loader reads (every model has them, including those logged before
#: ``signals`` existed)
LOAD_FILES: tuple[str, ...] = ("policy", "config", "feature_spec")

#: packages the pyfunc file and signals_core.py import, pinned to the versions in this environment
_REQUIREMENTS = ("mlflow", "stable-baselines3", "torch", "numpy", "gymnasium", "cloudpickle", "pandas", "ta")


def trainkit_version() -> str:
    from trainkit.version import __version__

    return __version__


# ---------------------------------------------------------------------------- SB3 objects
def sb3_class(algo: str) -> Any:
    """The stable-baselines3 class of ``algo`` (``ppo`` → ``PPO``): its row's, in the
    algorithm table (:mod:`trainkit.algorithms`); :class:`ConfigError` if unknown."""
    return algorithm_spec(algo).model_class()


def save_policy(model: Any, path: str) -> None:
    """Write the SB3 zip to exactly ``path`` (SB3 would append ``.zip`` to a bare name)."""
    with open(path, "wb") as fh:
        model.save(fh)


def load_policy(path: str, algo: str) -> Any:
    """Load an SB3 zip written by :func:`save_policy`, on the CPU, with one torch thread.
    Only call it on a file whose sha256 was verified (:func:`verify`): loading unpickles."""
    cls = sb3_class(algo)
    with one_torch_thread(), open(path, "rb") as fh:
        return cls.load(fh, device="cpu")


# ---------------------------------------------------------------------------- save / log
def save_model(model: Any, dst: str, *, config: TrainConfig, feature_spec: Mapping[str, Any],
               provenance: Any, obs_dim: int) -> dict[str, str]:
    """Write the files of :data:`MODEL_FILES` for the live SB3 ``model`` into directory ``dst``
    (as MLflow's own flavors take the live model: the format is this module's business, never
    the caller's); returns key → path."""
    paths = {key: os.path.join(dst, name) for key, name in MODEL_FILES.items()}
    save_policy(model, paths["policy"])
    with open(paths["config"], "w") as fh:
        json.dump({**config.to_dict(), "config_hash": config.config_hash, "trainkit_version": trainkit_version()},
                  fh, indent=2, sort_keys=True)
    data = provenance.to_dict() if hasattr(provenance, "to_dict") else dict(provenance)
    with open(paths["feature_spec"], "w") as fh:
        json.dump({**feature_spec, "obs_dim": obs_dim, "data": data}, fh, indent=2, sort_keys=True)
    if "signals" in paths:
        shutil.copyfile(signals_file(), paths["signals"])
    return paths


def pyfunc_file() -> str:
    """The models-from-code file MLflow executes on ``mlflow.pyfunc.load_model``."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyfunc_model.py")


def signals_file() -> str:
    """The self-contained feature and walk code every model carries (:mod:`trainkit.signals_core`)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "signals_core.py")


def pip_requirements() -> list[str]:
    """Explicit requirements: MLflow would otherwise spend about a second inferring them."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in _REQUIREMENTS:
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+', 1)[0]}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def warm_up() -> None:
    """Do once, in a process that will log models, what its first :func:`log_model` would do
    lazily: import MLflow's pyfunc and model-saving modules, and fill MLflow's map of installed
    packages (it checks :func:`pip_requirements` against the environment on every save; the
    first check scans every installed distribution, about 0.6 s). Silent: a mismatch is reported
    by the real save, not here."""
    import mlflow.pyfunc  # noqa: F401
    from mlflow.models import Model  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.ERROR)
    try:
        warn_dependency_requirement_mismatches(pip_requirements())
    finally:
        mlflow_log.setLevel(level)


def signature(obs_dim: int) -> Any:
    """The predict params (``position``, ``start``) and no input schema.

    ``predict`` takes two kinds of input — a DataFrame of daily bars (→ one row of positions per
    day) or float32 observations ``(n, obs_dim)`` (→ n int64 actions) — and MLflow enforces a
    declared input schema *before* ``predict`` runs, so any one schema would refuse the other
    kind. The pyfunc file checks both itself and answers bad input with an
    ``INVALID_PARAMETER_VALUE`` error (HTTP 400 when served). Params need a signature to reach
    ``predict`` at all. ``obs_dim`` is recorded in ``feature_spec.json``."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import DataType, ParamSchema, ParamSpec

    del obs_dim  # kept for the call sites: the observation width is in the feature spec
    return ModelSignature(params=ParamSchema([
        ParamSpec("position", DataType.double, 0.0),  # held coming into the first requested day
        ParamSpec("start", DataType.string, None),  # first requested day (default: first warm bar)
    ]))


def log_model(conn: Any, experiment_id: str, run_id: str, config: TrainConfig, files: Mapping[str, str],
              obs_dim: int) -> tuple[str, str]:
    """Log the files as a READY LoggedModel named ``model`` of run ``run_id`` in experiment
    ``experiment_id``; returns ``(model_id, sha256 of the policy)``.

    The LoggedModel is created here, in *our* experiment: ``Model.log`` would put it in the
    fluent layer's active experiment (Default), where ``runs:/`` cannot find it."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    sha = file_sha256(files["policy"])
    h = config.config_hash
    with conn.fluent(), warnings.catch_warnings():
        # MLflow nags about input examples and type hints; the signature says it all
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
        warnings.filterwarnings("ignore", message=r".*type hints.*", category=UserWarning)
        lm = conn.client.create_logged_model(
            experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id, params=config.to_params(),
            tags={TAG_HASH: h, TAG_SYMBOL: config.symbol, TAG_MODEL_SHA: sha}, model_type=LOGGED_MODEL_TYPE,
        )
        info = Model.log(
            artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id, python_model=pyfunc_file(),
            artifacts=dict(files), model_config={"model_sha256": sha}, pip_requirements=pip_requirements(),
            signature=signature(obs_dim), metadata={"trainkit_version": trainkit_version(), "config_hash": h},
            await_registration_for=0, model_id=lm.model_id,
        )
        conn.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    return info.model_id, sha


# ---------------------------------------------------------------------------- load
def download_model(conn: Any, logged_model: Any, uri: str, dst: str) -> dict[str, str]:
    """Download the files trainkit's loader reads (:data:`LOAD_FILES`) of ``logged_model`` into
    ``dst`` (one request each); returns key → local path. A missing file is an
    :class:`IntegrityError`. (``signals_core.py`` is for the pyfunc face only, and models logged
    before it existed do not have it.)"""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from trainkit.store.connection import download_artifact_file

    paths: dict[str, str] = {}
    with conn.errors(f"downloading the model files of {uri}"):
        repo = get_artifact_repository(logged_model.artifact_location, tracking_uri=conn.tracking_uri)
        for key in LOAD_FILES:
            name = MODEL_FILES[key]
            try:
                paths[key] = download_artifact_file(repo, f"artifacts/{name}", os.path.join(dst, name))
            except Exception as exc:
                text = str(exc).lower()
                if isinstance(exc, FileNotFoundError) or any(
                    k in text for k in ("no such", "not exist", "404", "not found", "resource_does_not_exist")
                ):
                    raise IntegrityError(f"model {uri} is missing its artifact {name} (deleted or moved)") from None
                raise
    return paths


def recorded_sha256(run: Any) -> str:
    """The policy sha256 recorded on a training run; a run without one is refused."""
    expected = run.data.tags.get(TAG_MODEL_SHA)
    if not expected:
        raise IntegrityError(f"run {run.info.run_id} records no {TAG_MODEL_SHA}: refusing to load an unverifiable model")
    return expected


def verify(paths: Mapping[str, str], expected_sha256: str, uri: str) -> None:
    """The policy's sha256 must equal the one recorded when it was trained — checked before
    anything is unpickled, for cache hits and loads by URI alike."""
    actual = file_sha256(paths["policy"])
    if actual != expected_sha256:
        raise IntegrityError(
            f"model {uri} failed verification: policy.zip sha256 {actual[:12]}… != recorded {expected_sha256[:12]}… "
            "(corrupt or altered)"
        )


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model and everything needed to use it on new data."""

    model: Any
    config: TrainConfig
    feature_spec: dict[str, Any]
    run_id: str
    model_uri: str
    model_id: str | None = None  # the LoggedModel (models:/m-…) the URI resolved to
    registered_version: str | None = None  # "name/version" when the URI named a registered model


def read_config(path: str) -> TrainConfig:
    """The :class:`TrainConfig` of a model's ``config.json`` (no torch, no SB3)."""
    with open(path) as fh:
        raw = json.load(fh)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in raw.items() if k in fields})


def load_files(paths: Mapping[str, str]) -> tuple[Any, TrainConfig, dict[str, Any]]:
    """``(SB3 model, TrainConfig, feature spec)`` from verified model files."""
    with open(paths["feature_spec"]) as fh:
        spec = json.load(fh)
    config = read_config(paths["config"])
    return load_policy(paths["policy"], config.algo), config, spec
