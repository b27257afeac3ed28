"""Evaluations in MLflow: cached backtests and walk-forward runs.

* **Cached backtests.** A backtest is a pure function of (model, data digest, window, costs), so
  its run in ``trainkit-backtests`` carries that key (``trainkit.backtest_key``, computed by
  :func:`trainkit.backtest.backtest_key`). :func:`find_backtest` answers a key with the logged
  run — params, tags, metrics and the ``equity.csv`` artifact — and the backtest module rebuilds
  its result from them instead of running the policy and logging another run.
* **Walk-forwards.** One parent run per walk-forward in ``trainkit-walkforward``, its folds as
  nested child runs (``mlflow.parentRunId``) that point at their cached backtests. The parent
  carries the key of the whole evaluation (``trainkit.walkforward_key``: the spec and every
  fold's backtest key), so an identical walk-forward finds it (:func:`find_walkforward`) and
  creates no run. Each fold's out-of-sample metrics are also logged against the fold's
  LoggedModel (MLflow 3 model metrics), every fold of a walk-forward against one dataset (the
  caller names it: :func:`trainkit.walkforward.report.oos_dataset`), so the Models view shows one
  column per metric and can rank models by out-of-sample Sharpe. The fold run names the model
  in its inputs (MLflow 3 lineage) and in its description, with a link: the UI's "Logged
  models" table of a run lists only models of the run's own experiment.

Everything goes through ``MlflowClient`` with explicit run ids (never the fluent API). Checked
on MLflow 3.17 (``Metric(model_id=…, dataset_name=…, dataset_digest=…)`` in ``log_batch``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainkit.store.contract import (
    BACKTEST_EXPERIMENT,
    TAG_BACKTEST_KEY,
    TAG_PARENT_RUN,
    TAG_WALKFORWARD_KEY,
    WALKFORWARD_EXPERIMENT,
    quote,
)

log = logging.getLogger("trainkit")

#: the artifact a cached backtest is rebuilt from
EQUITY_ARTIFACT = "equity.csv"


@dataclass(frozen=True)
class LoggedBacktest:
    """A backtest run found by its key: what the backtest module rebuilds its result from."""

    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    equity_csv: str  # the text of equity.csv


@dataclass(frozen=True)
class FoldRun:
    """One child run of a walk-forward: a fold (and seed) pointing at its backtest. ``model_id``:
    the fold's LoggedModel, which ``metrics`` are also logged against (``dataset_name`` and
    ``dataset_digest``: the walk-forward's out-of-sample dataset, one for all its folds; the
    fold's own test window is in ``params``)."""

    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


@dataclass(frozen=True)
class WalkForwardRun:
    """The parent run of a walk-forward and its folds, ready to log."""

    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    artifacts: dict[str, str]  # artifact name -> local file
    folds: Sequence[FoldRun] = field(default_factory=tuple)


# ----------------------------------------------------------------------------- lookups
def _oldest(runs: Sequence[Any]) -> Any:
    """Several runs with one key (two processes logged the same backtest at once): the oldest
    answers, then the lower run id — the same choice everywhere, and stable as more appear."""
    return min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _finished_with(conn: Any, experiment: str, tag: str, key: str) -> Any | None:
    exp = conn.experiment_id_if_exists(experiment)
    if exp is None:  # nothing was ever logged there: a lookup creates no experiment
        return None
    runs = conn.search([exp], f"tags.`{tag}` = {quote(key)} and attributes.status = 'FINISHED'")
    return _oldest(runs) if runs else None


def find_backtest(store: Any, key: str) -> LoggedBacktest | None:
    """The FINISHED backtest run with ``key`` and its daily equity, or ``None``. A run whose
    ``equity.csv`` cannot be read does not answer (the backtest then runs and logs anew)."""
    conn = store.conn
    run = _finished_with(conn, BACKTEST_EXPERIMENT, TAG_BACKTEST_KEY, key)
    if run is None:
        return None
    text = read_artifact_text(conn, run, EQUITY_ARTIFACT)
    if text is None:
        log.warning("the cached backtest %s has no readable %s: running the backtest again", run.info.run_id,
                    EQUITY_ARTIFACT)
        return None
    return LoggedBacktest(run_id=run.info.run_id, params=dict(run.data.params), tags=dict(run.data.tags),
                          metrics=dict(run.data.metrics), equity_csv=text)


def read_artifact_text(conn: Any, run: Any, name: str) -> str | None:
    """One artifact file of a run as text (one request), or ``None`` when it is missing."""
    return _read_text(conn, run.info.run_id, run.info.artifact_uri, name)


def _read_text(conn: Any, run_id: str, artifact_uri: str, name: str) -> str | None:
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )

    from trainkit.store.connection import download_artifact_file

    with tempfile.TemporaryDirectory(prefix="trainkit-eval-") as tmp:
        local = os.path.join(tmp, name)
        try:
            with conn.errors(f"downloading {name} of run {run_id}"):
                repo = get_artifact_repository(artifact_uri, tracking_uri=conn.tracking_uri)
                download_artifact_file(repo, name, local)
        except Exception as exc:  # noqa: BLE001 - missing or unreadable: the caller recomputes
            log.debug("cannot read %s of run %s: %s", name, run_id, exc)
            return None
        with open(local, encoding="utf-8") as fh:
            return fh.read()


@dataclass(frozen=True)
class LoggedWalkForward:
    """A FINISHED walk-forward parent run as honest selection reads it: what was walked forward
    (``params``), on what data (``tags``), its aggregate ``metrics``, when it started, where
    its artifacts are and its experiment."""

    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    start_time: int
    artifact_uri: str = ""
    experiment_id: str = ""  #: where the UI finds the run


def _logged(run: Any) -> LoggedWalkForward:
    return LoggedWalkForward(run.info.run_id, dict(run.data.params), dict(run.data.tags), dict(run.data.metrics),
                             int(run.info.start_time or 0), run.info.artifact_uri, run.info.experiment_id)


def walkforwards_of(store: Any, symbol: str) -> list[LoggedWalkForward]:
    """Every FINISHED walk-forward of ``symbol`` (parent runs, not their folds), oldest first.
    Reads only: no experiment is created when none was ever logged."""
    from trainkit.store.contract import TAG_SYMBOL

    conn = store.conn
    exp = conn.experiment_id_if_exists(WALKFORWARD_EXPERIMENT)
    if exp is None:
        return []
    runs = conn.search([exp], f"tags.`{TAG_SYMBOL}` = {quote(symbol)} and attributes.status = 'FINISHED'")
    parents = [_logged(r) for r in runs if TAG_PARENT_RUN not in r.data.tags and TAG_WALKFORWARD_KEY in r.data.tags]
    return sorted(parents, key=lambda w: (w.start_time, w.run_id))


def get_walkforward(store: Any, run_id: str) -> LoggedWalkForward | None:
    """The walk-forward parent run ``run_id`` when it is one and FINISHED, else ``None``."""
    from mlflow.exceptions import MlflowException

    with store.conn.errors(f"reading the walk-forward run {run_id}"):
        try:
            run = store.conn.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None  # no such run (or not a run id): an answer, not a store failure
            raise
    tags = run.data.tags
    if (run.info.status != "FINISHED" or run.info.lifecycle_stage != "active" or TAG_PARENT_RUN in tags
            or TAG_WALKFORWARD_KEY not in tags):
        return None
    return _logged(run)


def folds_on(store: Any, test_start: str, test_end: str, symbol: str | None = None) -> list[Any]:
    """Every FINISHED fold run (of any walk-forward, a search's trials included) whose test
    window is ``test_start..test_end``: the models measured out of sample on those days. Reads
    only."""
    from trainkit.store.contract import TAG_SYMBOL

    conn = store.conn
    exp = conn.experiment_id_if_exists(WALKFORWARD_EXPERIMENT)
    if exp is None:
        return []
    flt = (f"params.test_start = {quote(test_start)} and params.test_end = {quote(test_end)} "
           "and attributes.status = 'FINISHED'")
    if symbol:
        flt += f" and tags.`{TAG_SYMBOL}` = {quote(symbol)}"
    return [r for r in conn.search([exp], flt) if TAG_PARENT_RUN in r.data.tags and "model_uri" in r.data.params]


def fold_models(store: Any, parent_run_id: str) -> list[tuple[int, int, str]]:
    """``(fold, seed, model_uri)`` of every fold run of a walk-forward, in fold then seed order."""
    conn = store.conn
    exp = conn.experiment_id_if_exists(WALKFORWARD_EXPERIMENT)
    if exp is None:
        return []
    runs = conn.search([exp], f"tags.`{TAG_PARENT_RUN}` = {quote(parent_run_id)}")
    out = [(int(r.data.params["fold"]), int(r.data.params["seed"]), r.data.params["model_uri"]) for r in runs
           if {"fold", "seed", "model_uri"} <= set(r.data.params)]
    return sorted(out)


def walkforward_returns(store: Any, wf: LoggedWalkForward) -> tuple[list[str], list[float]] | None:
    """The stitched out-of-sample days and daily net returns of a walk-forward (its
    ``equity.csv`` without its first day, whose return is 0 by construction — the walk-forward's
    own metrics leave it out too), or ``None`` when the artifact cannot be read."""
    import csv
    import io

    text = _read_text(store.conn, wf.run_id, wf.artifact_uri, EQUITY_ARTIFACT)
    if text is None:
        return None
    rows = list(csv.DictReader(io.StringIO(text)))[1:]  # day 0 starts the equity at 1: no return (as the metrics)
    try:
        return [r["date"] for r in rows], [float(r["net_return"]) for r in rows]
    except (KeyError, ValueError):
        return None


def log_snapshot(store: Any, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log selection figures on a finished run as a snapshot at ``step`` (the count they were
    computed with): the run keeps every snapshot, the latest shows in the UI."""
    from trainkit.store.runs import as_metrics

    with store.conn.errors(f"logging the selection evidence on run {run_id}"):
        store.conn.client.log_batch(run_id, metrics=as_metrics(metrics, step=step))


def find_walkforward(store: Any, key: str) -> str | None:
    """The run id of the FINISHED walk-forward with ``key`` (an identical earlier one), or ``None``."""
    run = _finished_with(store.conn, WALKFORWARD_EXPERIMENT, TAG_WALKFORWARD_KEY, key)
    return None if run is None else run.info.run_id


# ----------------------------------------------------------------------------- logging
def log_walkforward(store: Any, wf: WalkForwardRun) -> str:
    """Log the parent run (RUNNING while its folds are logged as nested FINISHED child runs,
    then its metrics and artifacts, then FINISHED) and return its id. The key tag is on the
    parent from the start, but lookups only accept FINISHED runs, so a walk-forward that
    failed half-way (parent FAILED) is never taken for a complete one."""
    from trainkit.store.runs import as_metrics, as_params, new_run

    conn = store.conn
    exp = conn.experiment_id(WALKFORWARD_EXPERIMENT)
    with conn.errors("logging the walk-forward run"), new_run(conn, exp, run_name=wf.run_name, tags=wf.tags) as parent:
        conn.client.log_batch(parent, params=as_params(wf.params))
        for fold in wf.folds:
            _log_fold(conn, exp, parent, fold)
        conn.client.log_batch(parent, metrics=as_metrics(wf.metrics))
        for path in wf.artifacts.values():
            conn.client.log_artifact(parent, path)
    return parent


def _log_fold(conn: Any, exp: str, parent: str, fold: FoldRun) -> str:
    from mlflow.entities import LoggedModelInput

    from trainkit.store.runs import as_metrics, as_params, new_run

    with new_run(conn, exp, run_name=fold.run_name, tags={**fold.tags, TAG_PARENT_RUN: parent}) as run:
        metrics = as_metrics(fold.metrics)
        if fold.model_id:
            metrics = [_for_model(m, fold) for m in metrics]
        conn.client.log_batch(run, params=as_params(fold.params), metrics=metrics)
        if fold.model_id:  # MLflow 3 lineage: the fold's model as the run's input
            conn.client.log_inputs(run, models=[LoggedModelInput(fold.model_id)])
    return run


def _for_model(metric: Any, fold: FoldRun) -> Any:
    """The same metric, linked to the fold's LoggedModel and the walk-forward's out-of-sample
    dataset (MLflow 3 stores it on the run *and* on the model, with the run's id; checked on
    MLflow 3.17)."""
    from mlflow.entities import Metric

    return Metric(metric.key, metric.value, metric.timestamp, metric.step, model_id=fold.model_id,
                  dataset_name=fold.dataset_name, dataset_digest=fold.dataset_digest)


def model_metrics(store: Any, model_id: str) -> list[Any]:
    """The metrics logged against a LoggedModel (what the Models view shows)."""
    with store.conn.errors(f"reading the model {model_id}"):
        return list(store.conn.client.get_logged_model(model_id).metrics or [])


__all__ = [
    "EQUITY_ARTIFACT", "FoldRun", "LoggedBacktest", "LoggedWalkForward",
    "WalkForwardRun", "find_backtest", "find_walkforward", "get_walkforward", "log_snapshot", "log_walkforward",
    "fold_models", "folds_on", "model_metrics", "read_artifact_text", "walkforward_returns", "walkforwards_of",
]
