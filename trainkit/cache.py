"""`ModelCache`: the get-or-train core — one :class:`ModelRequest` in, one served model out.

A request is a resolved :class:`TrainConfig` (and whether to retrain, whether to refuse
fallback data). Its hash is looked up in MLflow; a verified FINISHED model is served as is;
anything else is trained once — across processes and machines, through the store's leases —
logged and served (docs/ARCHITECTURE.md, *The flow of one request*).

This is the layer walk-forward, the search and the workers of :mod:`trainkit.fanout` build on.
:class:`trainkit.manager.TrainingManager` is the public face over it (keyword requests,
many-at-once, explain, list, clear, register); nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainkit import settings
from trainkit.config import TrainConfig
from trainkit.errors import IntegrityError, ModelNotFoundError, TrainingInterrupted, TrainkitError, caused_by_interrupt
from trainkit.provenance import DataProvenance
from trainkit.store import DEFAULT_EXPERIMENT, CachedModel, Lease, ModelStore, RequestStatus

log = logging.getLogger("trainkit")


@dataclass(frozen=True)
class ModelRequest:
    """One model to get: its resolved config and how to get it (picklable: it crosses
    process boundaries to executors). ``force``: none of the models that exist now may
    answer; ``no_fallback``: fail rather than train on (or serve) synthetic fallback data."""

    config: TrainConfig
    force: bool = False
    no_fallback: bool = False


@dataclass(frozen=True)
class ModelResult:
    """What one request did: served from cache, trained, or trained on fallback data — with
    the model, its URI and where it lives. ``model`` is ``None`` for results that came back
    from another process and were not loaded (``trainkit.load_model(result.model_uri)``)."""

    model: Any
    model_uri: str
    run_id: str
    config: TrainConfig
    status: str  # a RequestStatus: cached | trained | fallback
    seconds: float
    record: CachedModel
    fallback_reason: str | None = None

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    @property
    def cache_hit(self) -> bool:
        return self.status == RequestStatus.CACHED


@dataclass(frozen=True)
class ModelOutcome:
    """The answer to one :class:`ModelRequest`: a result, or the trainkit error it met."""

    request: ModelRequest
    result: ModelResult | None = None
    error: TrainkitError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else int(getattr(self.error, "exit_code", 1))


def fallback_refusal(rec: CachedModel, config: TrainConfig, *, no_fallback: bool,
                     source_answers: Callable[[], bool]) -> str | None:
    """**The fallback serving rule**, the one place it is written: why a model trained on
    fallback data must not answer ``config`` now, or ``None`` when it may. It may not when the
    caller refuses fallback data, nor when the requested source can fall back and answers
    again (``source_answers``: asked only then — a probe, a fetch that just delivered, or the
    local download cache, as the caller can tell)."""
    if not rec.fell_back:
        return None
    if no_fallback:
        return "trained on synthetic fallback data, and --no-fallback refuses it"
    from trainkit.sources import source_spec

    if source_spec(config.data_source_kind).may_fall_back and source_answers():
        return f"trained on synthetic fallback data, and {config.data_source} answers again"
    return None


class ModelCache:
    """The get-or-train loop over one tracking store and cache experiment.

    >>> cache = ModelCache()                                 # MLFLOW_TRACKING_URI or ./mlflow.db
    >>> result = cache.get_or_train(ModelRequest(TrainConfig.create("AAPL", "2020-01-01", "2022-12-31")))
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT, *,
                 create: bool = True) -> None:
        """``create=False`` for read paths (list, explain, dry runs): a sqlite store that does
        not exist is :class:`~trainkit.errors.NoStore`, never created (nor migrated, nor locked)."""
        settings.check()  # an invalid TRAINKIT_* setting is a ConfigError before any I/O
        self.store = ModelStore(tracking_uri, experiment_name, create=create)
        self._probed: dict[tuple[str, str], bool] = {}

    @property
    def tracking_uri(self) -> str:
        return self.store.tracking_uri

    @property
    def experiment_name(self) -> str:
        return self.store.experiment_name

    def lookup(self, config: TrainConfig) -> CachedModel | None:
        """The model that would answer ``config`` now, without loading it or writing anything."""
        return self.store.find(config.config_hash)

    # ------------------------------------------------------------------ get or train
    def get_or_train(self, request: ModelRequest, *, progress: Any = None, project_run_id: str | None = None,
                     on_wait: Callable[[str], Any] | None = None, load: bool = True) -> ModelResult:
        """The model of a request — the get-or-train loop:

        find → (miss) fetch data → acquire the lease or wait for its holder → re-check under
        the lease → train → publish → release (in every case, Ctrl-C included).

        ``load=False``: a cache hit is verified (its sha256) but not deserialised, and the
        result's ``model`` is ``None`` — a caller that reports the URI answers at the speed of
        a lookup, without importing torch."""
        config, t0 = request.config, time.perf_counter()
        if not request.force:
            served = self._serve_cached(config, t0, request.no_fallback, load)
            if served is not None:
                return self._noted(project_run_id, served)
            superseded: frozenset[str] = frozenset()
        else:  # force: none of the models that exist now may answer (clock-free, unlike a time cut)
            superseded = frozenset(rec.run_id for rec, _run in self.store.candidates(config.config_hash))

        # A miss. May this user train here at all? Asked before anything is fetched or claimed
        # (a viewer on a team server: one line naming the permission, nothing half-done).
        self.store.conn.require("EDIT", [self.experiment_name], "training a model")
        # Data and features first: a bad window or a broken CSV must fail before any
        # run is created, and they are cheap next to training.
        from trainkit.data import DataFetcherFactory
        from trainkit.features import build_features, warmup_start

        fetch = DataFetcherFactory.fetch(
            config.data_source, config.symbol, warmup_start(config.start_date), config.end_date,
            data_seed=config.data_seed, no_fallback=request.no_fallback,
        )
        features = build_features(fetch.frame, config.feature_count, start=config.start_date, end=config.end_date)

        def accept(rec: CachedModel) -> bool:  # may a FINISHED run answer a request about to train?
            return rec.run_id not in superseded and fallback_refusal(
                rec, config, no_fallback=request.no_fallback, source_answers=lambda: not fetch.fell_back) is None

        # torch and SB3 load now, not while holding a lease: a Ctrl-C during that import must
        # not leave a RUNNING lease behind, and the lease is held for less time
        from trainkit import agents

        agents.warm_up()
        into = project_run_id if project_run_id and self.store.can_train_into(project_run_id) else None

        while True:
            found = self.store.find(config.config_hash, accept)
            if found is not None:  # another trainer finished it while we fetched or waited
                served = self._load_record(config, found, t0, load=load)
                if served is None:  # it failed verification (now tagged broken): look again
                    continue
                return self._noted(project_run_id, served)
            # the tie between racing claimants is decided while training starts (not after a sleep)
            lease = self.store.acquire(config, fetch, project_run_id=into, defer_tie=True)
            if lease is None:
                self.store.leases.wait(config.config_hash, on_wait=on_wait, label=config.symbol)
                continue
            result = self._train_under(lease, config, fetch, features, progress, t0, accept)
            if result is None:
                # another trainer answers this config: it won the tie, published first, or took
                # over because we stalled long enough to be judged dead — serve its model
                if lease.lost.is_set() and not lease.lost_tie:
                    log.warning("%s: the training lease was taken over by another trainer; waiting for its model",
                                config.symbol)
                into = None
                continue
            return self._noted(project_run_id, result)

    def _train_under(self, lease: Lease, config: TrainConfig, fetch: DataProvenance, features: Any, progress: Any,
                     t0: float, accept: Callable[[CachedModel], bool]) -> ModelResult | None:
        """Re-check under the lease, train and publish; end the lease on every way out (KILLED
        on Ctrl-C, FAILED on an error). ``None``: the lease went to another trainer."""
        try:
            if self.store.find(config.config_hash, accept) is not None:  # re-check under the lease
                lease.release("another trainer published this config meanwhile")
                return None
            return self._train(config, lease, fetch, features, progress, t0, accept)
        except TrainingInterrupted:
            if not lease.lost.is_set():
                lease.fail("training was stopped", status="KILLED")
                raise
            return None
        except BaseException as exc:
            if caused_by_interrupt(exc):  # Ctrl-C, even when a library's cleanup failed after it
                _drop_interrupted_work(exc)
                lease.fail("interrupted by the user (Ctrl-C)", status="KILLED")
            else:
                lease.fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        finally:
            lease.stop_heartbeat()

    def _train(self, config: TrainConfig, lease: Lease, fetch: DataProvenance, features: Any, progress: Any,
               t0: float, accept: Callable[[CachedModel], bool]) -> ModelResult | None:
        """Train under ``lease`` and publish; ``None`` when the lease was taken over meanwhile.
        (A fallback was already announced by the data layer: one warning per symbol, not two.)"""
        from trainkit.agents import train

        sink = self.store.metrics_sink(lease.run_id)
        t_train = time.perf_counter()
        model = train(config, features, progress=progress, metrics_sink=sink, should_stop=lease.should_stop)
        train_seconds = time.perf_counter() - t_train
        sink.close()
        retrying = self.store.conn.retrying  # a finished training outlives a restart of the server
        if (not retrying("checking the training lease", lease.settle)
                or retrying("looking the config up", lambda: self.store.find(config.config_hash, accept)) is not None):
            # lost the tie, or a racing trainer already published this config: serve its model
            lease.release("lost the tie, or another trainer published this config first")
            return None
        rec = self.store.publish(
            lease, config, model=model, feature_spec=features.spec(), provenance=fetch,
            frame=fetch.frame.loc[str(config.start_date): str(config.end_date)],
            obs_dim=int(features.matrix.shape[1]) + 1,
            metrics={
                "train_seconds": train_seconds,
                "train_steps_per_second": config.timesteps / max(train_seconds, 1e-9),
                "train_rows": float(len(features)),
            },
        )
        if rec is None:
            return None
        status = RequestStatus.FALLBACK if fetch.fallback_reason else RequestStatus.TRAINED
        return ModelResult(
            model=model, model_uri=rec.model_uri, run_id=rec.run_id, config=config, status=status,
            seconds=time.perf_counter() - t0, record=rec, fallback_reason=fetch.fallback_reason,
        )

    # ------------------------------------------------------------------ serving from the cache
    def _serve_cached(self, config: TrainConfig, t0: float, no_fallback: bool = False,
                      load: bool = True) -> ModelResult | None:
        for rec, run in self.store.candidates(config.config_hash):
            refusal = fallback_refusal(rec, config, no_fallback=no_fallback,
                                       source_answers=lambda: self._source_answers(config))
            if refusal is not None:
                if not no_fallback:  # the source is back: this request retrains on it
                    log.warning("%s: the cached model was %s: retraining", config.symbol, refusal)
                    return None
                continue  # "fail rather than use synthetic data": a synthetic-trained model does not answer
            served = self._load_record(config, rec, t0, run, load)
            if served is not None:
                if self.data_changed(rec):
                    log.warning(
                        "%s: the prices of the cached model's training window differ today from the ones it was "
                        "trained on (digest %s…); pass --force (force=True) to retrain on today's prices",
                        config.symbol, rec.data_digest[:12],
                    )
                if rec.fell_back:
                    log.warning(
                        "%s: serving a model trained on SYNTHETIC fallback data (%s is still unavailable: %s)",
                        config.symbol, config.data_source, rec.fallback_reason,
                    )
                return served
        return None

    def _load_record(self, config: TrainConfig, rec: CachedModel, t0: float, run: Any = None,
                     load: bool = True) -> ModelResult | None:
        """The cached model of ``rec`` verified (and loaded, with ``load``); ``None`` when it
        fails verification (then it is tagged broken, never served again, and retrained)."""
        try:
            if load:
                model = self.store.load_bundle(rec.model_uri, run=run).model
            else:
                self.store.verify(rec.model_uri, run=run)
                model = None
        except (IntegrityError, ModelNotFoundError) as exc:
            self.store.mark_broken(rec.run_id, str(exc))
            return None
        return ModelResult(
            model=model, model_uri=rec.model_uri, run_id=rec.run_id, config=config, status=RequestStatus.CACHED,
            seconds=time.perf_counter() - t0, record=rec, fallback_reason=rec.fallback_reason,
        )

    def _source_answers(self, config: TrainConfig) -> bool:
        """Does the requested source answer again? Asked at most once per process."""
        key = (config.data_source, config.symbol)
        if key not in self._probed:
            from trainkit.data import DataFetcherFactory

            try:
                self._probed[key] = bool(
                    DataFetcherFactory.probe(config.data_source, config.symbol, config.start_date, config.end_date)
                )
            except Exception as exc:  # a probe never fails a request
                log.debug("probe of %s failed: %s", config.data_source, exc)
                self._probed[key] = False
        return self._probed[key]

    def _noted(self, project_run_id: str | None, result: ModelResult) -> ModelResult:
        """Under ``mlflow run``: say in the project run which cached run served it."""
        if project_run_id:
            self.store.note_project_run(project_run_id, result.record, cache_hit=result.cache_hit)
        return result

    # ------------------------------------------------------------------ the prices behind a model
    def data_changed(self, rec: CachedModel, _memo: dict | None = None) -> bool | None:
        """Do the prices of ``rec``'s training window differ today from the digest recorded on
        it? Offline: the CSV as it is now, the local Yahoo download cache, the synthetic
        generator. ``None`` when it cannot be told without the network (window not cached)."""
        from trainkit.data import cached_digest
        from trainkit.features import warmup_start

        if not rec.data_digest or not rec.train_start or not rec.train_end:
            return None
        source = rec.data_source_effective or rec.data_source
        key = (source, rec.symbol, rec.train_start, rec.train_end, rec.data_seed)
        if _memo is not None and key in _memo:
            local = _memo[key]
        else:
            try:
                local = cached_digest(source, rec.symbol, warmup_start(rec.train_start),
                                      _dt.date.fromisoformat(rec.train_end), rec.data_seed)
            except TrainkitError as exc:
                log.debug("cannot check the data of %s: %s", rec.run_id, exc)
                local = None
            if _memo is not None:
                _memo[key] = local
        return None if local is None else local != rec.data_digest


def outcome(cache: ModelCache, request: ModelRequest, *, progress: Any = None, load: bool = True) -> ModelOutcome:
    """One request as a fan-out task: a trainkit error becomes the outcome's error.
    ``load=False``: the result carries no model (a hit is verified, not deserialised; a model
    trained here stays in MLflow) — what a result travelling back from a worker process, or a
    caller that only reports URIs, wants."""
    try:
        result = cache.get_or_train(request, progress=progress, load=load)
    except TrainkitError as exc:
        return ModelOutcome(request, error=exc)
    if not load and result.model is not None:
        result = dataclasses.replace(result, model=None)
    return ModelOutcome(request, result=result)


def _drop_interrupted_work(exc: BaseException) -> None:
    """Let go of what a Ctrl-C cut short inside a library, before the lease is ended.

    An interrupt that lands inside a sqlite write leaves that transaction open in a session
    which the traceback's frames still hold; the store then stays locked, and ending the lease
    would fail ("database is locked"), leaving it RUNNING until it goes stale. Clearing the
    finished frames' locals and collecting lets SQLAlchemy roll the transaction back."""
    import gc
    import traceback

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    gc.collect()
