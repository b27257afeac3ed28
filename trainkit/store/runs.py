"""Runs: the training run's life (lease run → published model), backtest and other finished
runs, tags on project runs, and the metrics sink training reports to.

Everything is written through ``MlflowClient`` calls with explicit run ids (never the fluent
API, which is per-thread and starts runs of its own), in batches where MLflow allows it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from trainkit.config import TrainConfig
from trainkit.errors import TrainingInterrupted
from trainkit.sources import parse_data_source, source_spec
from trainkit.store import flavor
from trainkit.store.connection import dataset_entity, local_dataset_source
from trainkit.store.contract import (
    TAG_CLAIM,
    TAG_DATA_DIGEST,
    TAG_FALLBACK_REASON,
    TAG_HASH,
    TAG_HEARTBEAT,
    TAG_MODEL_ID,
    TAG_MODEL_SHA,
    TAG_MODEL_URI,
    TAG_NOTE,
    TAG_SOURCE,
    TAG_SOURCE_EFFECTIVE,
    TAG_SYMBOL,
    TAG_VERSION,
    RequestStatus,
    run_model_uri,
)
from trainkit.provenance import DataProvenance
from trainkit.store.records import CachedModel, record_from_run

log = logging.getLogger("trainkit")


def _now_ms() -> int:
    return int(time.time() * 1000)


def as_tags(d: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in d.items()]


def as_params(d: dict[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in d.items()]


def as_metrics(d: dict[str, float], step: int = 0) -> list[Any]:
    """Finite values only (MLflow refuses NaN on some backends)."""
    from mlflow.entities import Metric

    ts = _now_ms()
    return [Metric(k, float(v), ts, step) for k, v in d.items() if v is not None and math.isfinite(float(v))]


# ----------------------------------------------------------------------------- metrics sink
class MlflowMetricsSink:
    """Buffers training metrics and writes them with ``log_batch`` every few seconds, so the
    UI shows learning curves without a round-trip per step (a few per minute instead).
    Implements :class:`trainkit.agents.MetricsSink`.

    While the tracking server does not answer, metrics stay in the buffer (up to ``keep``
    points; only past that are the oldest dropped, with a warning) and go out with the next
    flush that gets through; :meth:`close` retries like every other write of a trainer
    (``TRAINKIT_SERVER_RETRY_S``). A metrics failure never fails training by itself."""

    def __init__(self, client: Any, run_id: str, flush_seconds: float = 5.0, max_buffer: int = 900,
                 keep: int = 200_000, retrying: Any = None) -> None:
        self._client, self._run_id = client, run_id
        self._flush_seconds, self._max, self._keep = flush_seconds, max_buffer, keep
        self._retrying = retrying  # Connection.retrying, for the final flush
        self._buf: list[Any] = []
        self._last = time.monotonic()
        self._warned = False

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ts = _now_ms()
        for k, v in metrics.items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(fv):
                continue
            key = re.sub(r"[^A-Za-z0-9_\-. /]", "_", k)
            self._buf.append(Metric(key=key, value=fv, timestamp=ts, step=int(step)))
        if len(self._buf) >= self._max or time.monotonic() - self._last >= self._flush_seconds:
            self.flush()

    def flush(self) -> bool:
        """Send what is buffered; ``False`` (and everything kept) when the server did not take it."""
        self._last = time.monotonic()
        while self._buf:
            chunk = self._buf[:900]
            try:
                self._client.log_batch(self._run_id, metrics=chunk)
            except Exception as exc:
                if len(self._buf) > self._keep:
                    dropped = len(self._buf) - self._keep
                    del self._buf[:dropped]
                    log.warning("the tracking server has not answered for a while: dropped the %d oldest training "
                                "metric points (kept %d)", dropped, self._keep)
                if not self._warned:
                    self._warned = True
                    log.warning("could not log training metrics to MLflow (%s): keeping them until the server "
                                "answers", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                return False
            del self._buf[: len(chunk)]
        return True

    def close(self) -> None:
        """The final flush: retried while the server is away (``TRAINKIT_SERVER_RETRY_S``); if it
        still fails, the metrics are lost with a warning — and so will the publish that follows."""
        if self.flush() or self._retrying is None:
            return

        def send() -> None:
            if not self.flush():
                raise ConnectionError("the tracking server did not take the training metrics")

        try:
            self._retrying("logging the training metrics", send)
        except Exception as exc:
            log.warning("%d training metric points were not logged: %s", len(self._buf), str(exc).splitlines()[0])


# ----------------------------------------------------------------------------- training runs
def lease_tags(config: TrainConfig, provenance: DataProvenance) -> dict[str, str]:
    """The tags of a training run while it is a lease (no ``config_hash`` yet: a run without a
    model never carries it)."""
    from trainkit.store.flavor import trainkit_version

    tags = {
        TAG_CLAIM: config.config_hash,
        TAG_HEARTBEAT: f"{time.time():.3f}",
        TAG_SYMBOL: config.symbol,
        TAG_SOURCE: config.data_source,
        TAG_SOURCE_EFFECTIVE: provenance.effective_source,
        TAG_DATA_DIGEST: provenance.digest,
        TAG_VERSION: trainkit_version(),
    }
    if provenance.fallback_reason:
        tags[TAG_FALLBACK_REASON] = provenance.fallback_reason
    return tags


def create_training_run(conn: Any, experiment_id: str, config: TrainConfig, provenance: DataProvenance,
                        project_run_id: str | None = None) -> tuple[str, int, bool]:
    """Create the RUNNING run that becomes a lease — or adopt ``mlflow run``'s project run,
    without re-logging the params MLflow already set on it. Returns ``(run_id, start_time_ms,
    external)``."""
    tags, params = lease_tags(config, provenance), config.to_params()
    with conn.errors("creating the training run"):
        if project_run_id:
            run = conn.client.get_run(project_run_id)
            params = {k: v for k, v in params.items() if k not in run.data.params}
            conn.client.log_batch(project_run_id, tags=as_tags(tags))
        else:
            run = conn.client.create_run(experiment_id, run_name=config.run_name(), tags=tags)
    try:
        if params:  # the run exists (and is a lease) from here on: do not lose it to a server restart
            conn.retrying("creating the training run",
                          lambda: conn.client.log_batch(run.info.run_id, params=as_params(params)))
    except BaseException:  # Ctrl-C or a failure before anyone holds the lease: end it at once
        with contextlib.suppress(Exception):
            conn.client.delete_tag(run.info.run_id, TAG_CLAIM)
            if not project_run_id:
                conn.client.set_terminated(run.info.run_id, status="KILLED")
        raise
    return run.info.run_id, int(run.info.start_time or 0), bool(project_run_id)


def publish(conn: Any, experiment_id: str, lease: Any, config: TrainConfig, *, model: Any,
            feature_spec: dict[str, Any], provenance: DataProvenance, obs_dim: int, frame: Any = None,
            metrics: dict[str, float] | None = None) -> CachedModel | None:
    """Log the live SB3 ``model`` (the flavor writes its files) under ``model``, then tag the run with ``config_hash`` and mark it
    FINISHED — in that order, so nothing unfinished is ever served — then drop the lease tags.

    Every step is retried while the tracking server does not answer (``TRAINKIT_SERVER_RETRY_S``:
    a restart of the server must not throw a finished training away). Returns the published
    record, or ``None`` when the lease was taken over meanwhile (then nothing is published: the
    taker's model answers the hash)."""
    run_id, h = lease.run_id, config.config_hash
    if not conn.retrying("checking the training lease", lease.is_holder):
        return None
    with tempfile.TemporaryDirectory(prefix="trainkit-publish-") as tmp:
        files = flavor.save_model(model, tmp, config=config, feature_spec=feature_spec,
                                  provenance=provenance, obs_dim=obs_dim)
        if frame is not None:
            conn.retrying("logging the training data", lambda: log_dataset(conn, run_id, config, provenance, frame))
        if metrics:
            conn.retrying("logging the training metrics", lambda: conn.client.log_batch(run_id, metrics=as_metrics(metrics)))
        model_id, sha = conn.retrying("logging the model", lambda: flavor.log_model(conn, experiment_id, run_id, config, files, obs_dim))
    if not conn.retrying("checking the training lease", lease.is_holder):
        try:
            conn.client.delete_logged_model(model_id)
        except Exception as exc:  # an orphan LoggedModel is harmless: its run never carries config_hash
            log.debug("could not delete the orphan model %s: %s", model_id, exc)
        return None
    lease.stop_heartbeat()
    tags = as_tags({
        TAG_MODEL_SHA: sha,
        TAG_MODEL_ID: model_id,
        TAG_MODEL_URI: run_model_uri(run_id),
        TAG_NOTE: description(config, provenance, model_id),
        TAG_HASH: h,
    })
    conn.retrying("finishing the training run", lambda: conn.client.log_batch(run_id, tags=tags))
    # FINISHED before the lease tags go, so a waiting process sees either the live lease or the
    # model, never neither; FINISHED even for `mlflow run`'s project run (mlflow ends it again
    # when the process exits)
    conn.retrying("finishing the training run", lambda: conn.client.set_terminated(run_id, status="FINISHED"))
    lease.drop_tags()
    run = conn.retrying("reading the training run", lambda: conn.client.get_run(run_id))
    return record_from_run(run)


def taken_over(config: TrainConfig) -> TrainingInterrupted:
    return TrainingInterrupted(f"the claim on {config.symbol} ({config.config_hash[:8]}) was taken over by another trainer")


def result_status(provenance: DataProvenance) -> str:
    """The :class:`RequestStatus` of a request that just trained on ``provenance``."""
    return RequestStatus.FALLBACK if provenance.fallback_reason else RequestStatus.TRAINED


def log_dataset(conn: Any, run_id: str, config: TrainConfig, provenance: DataProvenance, frame: Any) -> None:
    """The training window's prices as the run's dataset input (the UI's Datasets panel)."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    kind, _ = parse_data_source(provenance.effective_source)
    name = f"{config.symbol} {config.train_start}..{config.train_end} ({kind})"
    ds = from_pandas(frame.reset_index(), source=dataset_source(config, provenance), name=name[:500],
                     digest=provenance.digest[:32])
    conn.client.log_inputs(
        run_id, datasets=[DatasetInput(dataset_entity(ds), tags=[InputTag("mlflow.data.context", "training")])]
    )


def dataset_source(config: TrainConfig, provenance: DataProvenance) -> Any:
    """An explicit MLflow dataset source (a bare string is ambiguous to MLflow), of the kind the
    delivering source's registry row names (:attr:`~trainkit.sources.SourceSpec.dataset`):
    ``http`` a URL, ``local`` a file (tags naming it when MLflow has no local source), ``code``
    tags."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    kind, path = parse_data_source(provenance.effective_source)
    describe = source_spec(kind).dataset
    if describe is None:
        return CodeDatasetSource(tags={"source": provenance.effective_source, "symbol": config.symbol})
    source_type, fields = describe(config.symbol, path, config.data_seed)
    if source_type == "http":
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        return HTTPDatasetSource(fields["url"])
    if source_type == "local":
        tags = {kind: fields["path"], **{k: v for k, v in fields.items() if k != "path"}}
        return local_dataset_source(fields["path"]) or CodeDatasetSource(tags=tags)
    return CodeDatasetSource(tags=fields)


def description(config: TrainConfig, provenance: DataProvenance, model_id: str) -> str:
    """The run's description (Markdown, shown in the MLflow UI)."""
    lines = [
        f"### {config.symbol} — {config.algo.upper()} trained by trainkit {flavor.trainkit_version()}",
        "",
        f"* window: **{config.train_start} → {config.train_end}**, {config.timesteps:,} timesteps, "
        f"{config.feature_count} features, seed {config.seed}",
        f"* data: requested **{provenance.requested_source}**, used **{provenance.effective_source}** "
        f"(sha256 `{provenance.digest[:16]}…`)",
        f"* config hash: `{config.config_hash}`",
        f"* model: `runs:/<this run>/model` = `models:/{model_id}`",
    ]
    if provenance.fallback_reason:
        lines[1:1] = [
            "",
            f"> **⚠ WARNING: trained on SYNTHETIC fallback data**, not on {provenance.requested_source}: "
            f"{provenance.fallback_reason}. Do not use it for real decisions; trainkit retrains it when the source answers again.",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- other runs
@contextlib.contextmanager
def new_run(conn: Any, experiment_id: str, *, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """A new RUNNING run for the body to log into (yields its id): FINISHED when the body
    returns, FAILED when it raises (and the exception goes on), so a half-logged run is never
    taken for a complete one — lookups accept FINISHED runs only."""
    rid = conn.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    try:
        yield rid
    except BaseException:
        conn.client.set_terminated(rid, status="FAILED")
        raise
    conn.client.set_terminated(rid, status="FINISHED")


def log_finished_run(conn: Any, experiment_id: str, *, run_name: str, params: dict[str, str],
                     metrics: dict[str, float], tags: dict[str, str], artifacts: dict[str, str] | None = None,
                     input_model_ids: Sequence[str] | None = None) -> str:
    """Log a complete, FINISHED run (a backtest, a walk-forward fold). Returns its run id.
    ``input_model_ids``: LoggedModels the run used, logged as its inputs (MLflow 3 lineage:
    the UI shows the model on the run and the run on the model). A failure ends it FAILED."""
    with conn.errors("logging a run"), new_run(conn, experiment_id, run_name=run_name, tags=tags) as rid:
        conn.client.log_batch(rid, params=as_params(params), metrics=as_metrics(metrics))
        if input_model_ids:
            from mlflow.entities import LoggedModelInput

            conn.client.log_inputs(rid, models=[LoggedModelInput(m) for m in input_model_ids])
        for path in (artifacts or {}).values():
            conn.client.log_artifact(rid, path)
    return rid
