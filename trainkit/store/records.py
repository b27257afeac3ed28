"""What trainkit reads back from runs: :class:`CachedModel`, which run answers a hash, and the
one staleness rule of leases.

Pure functions of MLflow ``Run`` objects (duck-typed: ``run.info`` and ``run.data``); no
client calls and no mlflow import, so each rule can be read — and tested — on its own.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from dataclasses import dataclass
from typing import Any

from trainkit import settings
from trainkit.sources import can_fall_back
from trainkit.store.contract import (
    CLAIM_STATE_TRAINING,
    current_tags,
    PARAM_ALGO,
    PARAM_DATA_SEED,
    PARAM_DATA_SOURCE,
    PARAM_FEATURE_COUNT,
    PARAM_SYMBOL,
    PARAM_TIMESTEPS,
    PARAM_TRAIN_END,
    PARAM_TRAIN_START,
    TAG_BROKEN,
    TAG_CLAIM,
    TAG_CLAIM_STATE,
    TAG_DATA_DIGEST,
    TAG_FALLBACK_REASON,
    TAG_HASH,
    TAG_HEARTBEAT,
    TAG_MODEL_ID,
    TAG_MODEL_SHA,
    TAG_SOURCE,
    TAG_SOURCE_EFFECTIVE,
    TAG_SYMBOL,
    TAG_VERSION,
    ModelStatus,
    is_config_hash,
    run_model_uri,
)


@dataclass(frozen=True)
class CachedModel:
    """One cached model (or live training lease) as ``list``/``clear`` show it."""

    run_id: str
    model_uri: str
    model_id: str | None
    config_hash: str
    symbol: str
    algo: str
    train_start: str
    train_end: str
    timesteps: int | None
    feature_count: int | None
    data_source: str
    data_source_effective: str
    fallback_reason: str | None
    status: str  # a ModelStatus
    created: str  # ISO 8601, UTC
    run_name: str
    registered: tuple[str, ...] = ()
    data_digest: str = ""  # sha256 of the prices it was trained on (TAG_DATA_DIGEST)
    data_seed: int | None = None  # the synthetic seed of its config (param)
    data_changed: bool | None = None  # do today's local prices of its window differ? None: not checked
    experiment_id: str = ""  # where the run is (the UI's pages are per experiment)

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback_reason) or (
            self.data_source_effective not in ("", self.data_source) and can_fall_back(self.data_source)
        )

    @property
    def created_at(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.created)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["registered"] = list(self.registered)
        d["fell_back"] = self.fell_back
        return d


def _iso(ms: int | None) -> str:
    return _dt.datetime.fromtimestamp((ms or 0) / 1000, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def model_status(run: Any) -> str:
    """The :class:`ModelStatus` of a FINISHED model run (broken beats fallback beats ready)."""
    tags = current_tags(run.data.tags)
    if tags.get(TAG_BROKEN):
        return ModelStatus.BROKEN
    if tags.get(TAG_FALLBACK_REASON):
        return ModelStatus.FALLBACK
    return ModelStatus.READY


def record_from_run(run: Any, status: str | None = None, registered: tuple[str, ...] = ()) -> CachedModel:
    """The :class:`CachedModel` a run describes (a model run, or a lease with ``status``)."""
    tags, params = current_tags(run.data.tags), run.data.params
    return CachedModel(
        run_id=run.info.run_id,
        model_uri=run_model_uri(run.info.run_id),
        model_id=tags.get(TAG_MODEL_ID),
        config_hash=tags.get(TAG_HASH) or tags.get(TAG_CLAIM, ""),
        symbol=tags.get(TAG_SYMBOL, params.get(PARAM_SYMBOL, "")),
        algo=params.get(PARAM_ALGO, ""),
        train_start=params.get(PARAM_TRAIN_START, ""),
        train_end=params.get(PARAM_TRAIN_END, ""),
        timesteps=_int_or_none(params.get(PARAM_TIMESTEPS)),
        feature_count=_int_or_none(params.get(PARAM_FEATURE_COUNT)),
        data_source=tags.get(TAG_SOURCE, params.get(PARAM_DATA_SOURCE, "")),
        data_source_effective=tags.get(TAG_SOURCE_EFFECTIVE, ""),
        fallback_reason=tags.get(TAG_FALLBACK_REASON) or None,
        status=status or model_status(run),
        created=_iso(run.info.start_time),
        run_name=run.info.run_name or "",
        registered=registered,
        data_digest=tags.get(TAG_DATA_DIGEST, ""),
        data_seed=_int_or_none(params.get(PARAM_DATA_SEED)),
        experiment_id=str(run.info.experiment_id or ""),
    )


def is_model_run(run: Any) -> bool:
    """A run trainkit published a model in — not another tool's run that happens to use a
    ``config_hash`` tag too (``clear`` must never touch those)."""
    tags = current_tags(run.data.tags)
    return is_config_hash(tags.get(TAG_HASH, "")) and bool(tags.get(TAG_MODEL_SHA)) and bool(tags.get(TAG_VERSION))


def is_lease_run(run: Any) -> bool:
    """A lease trainkit created (another tool's run with a look-alike tag is not one)."""
    tags = current_tags(run.data.tags)
    return bool(tags.get(TAG_CLAIM)) and bool(tags.get(TAG_VERSION))


def served_order(run: Any) -> tuple:
    """Which FINISHED run answers a hash when several do: one trained on the requested source
    beats a fallback one, then the newest, then the run id — deterministic everywhere."""
    fallback = 1 if current_tags(run.data.tags).get(TAG_FALLBACK_REASON) else 0
    return (fallback, -(run.info.start_time or 0), run.info.run_id)


def lease_order(run: Any) -> tuple:
    """Which of several competing leases wins: the oldest ``start_time``, then the run id."""
    return (run.info.start_time or 0, run.info.run_id)


def won_tie(run: Any) -> bool:
    """A lease that already won its tie (and is training): no lease created later beats it,
    whatever the clocks of the machines say."""
    return run.data.tags.get(TAG_CLAIM_STATE) == CLAIM_STATE_TRAINING


def last_heartbeat(run: Any) -> float:
    """Unix seconds of a lease's last sign of life: its heartbeat tag, or its start."""
    try:
        beat = float(run.data.tags.get(TAG_HEARTBEAT, "0"))
    except ValueError:
        beat = 0.0
    return max(beat, (run.info.start_time or 0) / 1000)


def is_stale(run: Any, now: float | None = None, stale_after: float | None = None) -> bool:
    """THE staleness rule: a lease is stale when its last sign of life is more than
    ``TRAINKIT_STALE_AFTER`` seconds old (judged on the reader's clock; tag filters have no
    ``<``, so this is decided client-side). A stale lease no longer reserves its hash."""
    now = time.time() if now is None else now
    limit = settings.TRAINKIT_STALE_AFTER.get() if stale_after is None else stale_after
    return now - last_heartbeat(run) > limit
