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
  LoggedModel (MLflow 3 model metrics, with the test window as the dataset), so the Models view
  can rank models by out-of-sample Sharpe.

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
    ``dataset_digest`` name the test window's prices)."""

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
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )

    from trainkit.store.connection import download_artifact_file

    with tempfile.TemporaryDirectory(prefix="trainkit-eval-") as tmp:
        local = os.path.join(tmp, name)
        try:
            with conn.errors(f"downloading {name} of run {run.info.run_id}"):
                repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=conn.tracking_uri)
                download_artifact_file(repo, name, local)
        except Exception as exc:  # noqa: BLE001 - missing or unreadable: the caller recomputes
            log.debug("cannot read %s of run %s: %s", name, run.info.run_id, exc)
            return None
        with open(local, encoding="utf-8") as fh:
            return fh.read()


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
    """The same metric, linked to the fold's LoggedModel and its test window (MLflow 3 stores it
    on the run *and* on the model; checked on MLflow 3.17)."""
    from mlflow.entities import Metric

    return Metric(metric.key, metric.value, metric.timestamp, metric.step, model_id=fold.model_id,
                  dataset_name=fold.dataset_name, dataset_digest=fold.dataset_digest)


def model_metrics(store: Any, model_id: str) -> list[Any]:
    """The metrics logged against a LoggedModel (what the Models view shows)."""
    with store.conn.errors(f"reading the model {model_id}"):
        return list(store.conn.client.get_logged_model(model_id).metrics or [])


__all__ = [
    "EQUITY_ARTIFACT", "FoldRun", "LoggedBacktest",
    "WalkForwardRun", "find_backtest", "find_walkforward", "log_walkforward", "model_metrics", "read_artifact_text",
]
