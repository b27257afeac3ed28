"""Why a request is, or is not, a cache hit (``trainkit explain``) — read-only.

It asks only the tracking store and the local download cache (never the network), trains
nothing and writes nothing. The answer is the model a request would be served now;
``not_served`` lists every run that carries the hash but would not answer, with the reason;
when nothing answers, ``nearest`` are the cached configs of the symbol with the fewest
differing fields — usually the one option a user changed without meaning to.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainkit.cache import fallback_refusal
from trainkit.config import TrainConfig
from trainkit.store import CachedModel

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.cache import ModelCache


@dataclass(frozen=True)
class ConfigDiff:
    """One field in which a cached config differs from a request."""

    field: str
    cached: str
    requested: str

    def __str__(self) -> str:
        return f"{self.field} {self.cached} → {self.requested}"


@dataclass(frozen=True)
class NearMiss:
    """A cached model of the same symbol and the fields that keep it from answering."""

    model: CachedModel
    differences: tuple[ConfigDiff, ...]


@dataclass(frozen=True)
class NotServed:
    """A run that carries the hash (or a lease on it) but does not answer it, and why."""

    run_id: str
    status: str
    reason: str


@dataclass(frozen=True)
class Explanation:
    """Why a request is (not) a cache hit: what :func:`explain` found."""

    config: TrainConfig
    answer: CachedModel | None  # the model a request would be served now
    note: str | None  # a caveat about the answer (fallback data, prices changed since)
    not_served: tuple[NotServed, ...]
    nearest: tuple[NearMiss, ...]  # when nothing answers: cached configs of the symbol, nearest first
    data_changed: bool | None = None  # the answer's prices differ today from its recorded digest

    @property
    def cached(self) -> bool:
        return self.answer is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.config.symbol,
            "config_hash": self.config.config_hash,
            "cached": self.cached,
            "model_uri": self.answer.model_uri if self.answer else None,
            "run_id": self.answer.run_id if self.answer else None,
            "status": self.answer.status if self.answer else None,
            "note": self.note,
            "data_changed": self.data_changed,
            "not_served": [dataclasses.asdict(n) for n in self.not_served],
            "nearest": [
                {"run_id": n.model.run_id, "model_uri": n.model.model_uri, "config_hash": n.model.config_hash,
                 "differences": [dataclasses.asdict(d) for d in n.differences]}
                for n in self.nearest
            ],
            "config": self.config.to_dict(),
        }


def explain(cache: ModelCache, config: TrainConfig, *, no_fallback: bool = False, nearest: int = 3) -> Explanation:
    """Why ``config`` is or is not a cache hit in ``cache`` (module docstring)."""
    h = config.config_hash
    not_served = [NotServed(r.info.run_id, r.info.status, why) for r, why in cache.store.catalog.unservable(h)]
    answer: CachedModel | None = None
    note: str | None = None
    for rec, _run in cache.store.candidates(h):
        if answer is not None:
            not_served.append(NotServed(rec.run_id, "FINISHED", f"run {answer.run_id} answers first "
                                        "(a model on the requested source first, then the newest)"))
            continue
        refusal = fallback_refusal(rec, config, no_fallback=no_fallback,
                                   source_answers=lambda: _source_cached_locally(config))
        if refusal is not None:
            if not no_fallback:  # offline, "answers again" means: its prices are in the download cache
                refusal = (f"trained on synthetic fallback data, and {config.data_source}'s prices for the window are "
                           "in the local download cache now: the next request retrains on them")
            not_served.append(NotServed(rec.run_id, "FINISHED", refusal))
            continue
        if rec.fell_back:
            note = (f"trained on SYNTHETIC fallback data ({rec.fallback_reason}); the next request asks "
                    f"{config.data_source} once and retrains if it answers")
        answer = rec
    changed = cache.data_changed(answer) if answer is not None else None
    if changed:
        note = ((note + "; ") if note else "") + ("its training prices differ today from the digest recorded on "
                                                 "the model: --force retrains on today's prices")
    near = _nearest(cache, config, nearest) if answer is None and nearest > 0 else []
    return Explanation(config=config, answer=answer, note=note, not_served=tuple(not_served),
                       nearest=tuple(near), data_changed=changed)


def nothing_stored(config: TrainConfig, why: str) -> Explanation:
    """The explanation when there is no store at all (``why``: "no store at …"): nothing
    answers, nothing is near; a read does not create the store to find that out."""
    return Explanation(config=config, answer=None, note=why, not_served=(), nearest=())


def _source_cached_locally(config: TrainConfig) -> bool:
    """Would the requested source answer, as far as can be told offline (the download cache)?"""
    from trainkit.data import cached_digest
    from trainkit.features import warmup_start

    return cached_digest(config.data_source, config.symbol, warmup_start(config.start_date), config.end_date) is not None


def _nearest(cache: ModelCache, config: TrainConfig, n: int) -> list[NearMiss]:
    """The ``n`` cached configs of the symbol with the fewest differing fields."""
    from trainkit.store import record_from_run

    wanted = config.to_params()
    scored = []
    for run in cache.store.catalog.model_runs(config.symbol):
        diffs = differences(run.data.params, wanted)
        if diffs:
            scored.append((len(diffs), -(run.info.start_time or 0), run.info.run_id, run, diffs))
    scored.sort(key=lambda t: t[:3])
    return [NearMiss(record_from_run(t[3]), tuple(t[4])) for t in scored[:n]]


def differences(cached: dict[str, str], wanted: dict[str, str]) -> list[ConfigDiff]:
    """The fields in which a cached run's params differ from a request's (both
    :meth:`TrainConfig.to_params`), named as a user reads them."""
    out: list[ConfigDiff] = []
    csv = cached.get("data_source", "").startswith("csv:") and wanted.get("data_source", "").startswith("csv:")
    fields = set(TrainConfig.__dataclass_fields__)
    keys = set(wanted) | {k for k in cached if k in fields or k.startswith("hp.")}  # not MLflow's own params
    for key in sorted(keys):
        a, b = cached.get(key, "(none)"), wanted.get(key, "(none)")
        if a == b or (csv and key == "data_source"):  # a CSV counts by content, not by path
            continue
        if key == "csv_sha256":
            out.append(ConfigDiff("data csv sha256", a[:8] + "…", b[:8] + "…"))
        elif key.startswith("hp."):
            out.append(ConfigDiff("hyperparameters." + key[3:], a, b))
        else:
            out.append(ConfigDiff(key, a, b))
    return out
