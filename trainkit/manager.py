"""`TrainingManager`: config → cache → data → features → training → store.

The public entry point of trainkit. A request is resolved into a :class:`TrainConfig`; its
hash is looked up in MLflow; a verified FINISHED model is served as is, anything else is
trained once — across processes and machines, through the store's leases — logged and
served. Training is a pure function of the config, so a hash always means the same model.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from trainkit import settings
from trainkit.config import TrainConfig, parse_bool, parse_older_than
from trainkit.errors import IntegrityError, ModelNotFoundError, TrainingInterrupted, TrainkitError, caused_by_interrupt
from trainkit.store import (
    DEFAULT_EXPERIMENT,
    TAG_CLAIM,
    TAG_HASH,
    TAG_MODEL_ID,
    CachedModel,
    DataProvenance,
    Lease,
    ModelStatus,
    ModelStore,
    RequestStatus,
    check_config_hash,
)
from trainkit.store.contract import TAG_BACKTEST_RUN_ID, TAG_CACHE_HIT, TAG_MODEL_RUN_ID, TAG_MODEL_URI, TAG_SOURCE_RUN_ID, TAG_SYMBOL

log = logging.getLogger("trainkit")

#: options of get_model that shape the request, not the model (not part of the hash)
_REQUEST_OPTIONS = ("no_fallback", "progress", "project_run_id", "on_wait")


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
class ModelRequest:
    """One model to get: its resolved config and how to get it (picklable: it crosses
    process boundaries to executors)."""

    config: TrainConfig
    force: bool = False
    no_fallback: bool = False


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
    """Why a request is (not) a cache hit: what :meth:`TrainingManager.explain` found."""

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


class TrainingManager:
    """Get RL trading models by configuration; MLflow is the cache.

    >>> trainer = TrainingManager()                        # MLFLOW_TRACKING_URI or ./mlflow.db
    >>> model, uri = trainer.get_model("AAPL", "2020-01-01", "2022-12-31", timesteps=100_000)
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT) -> None:
        settings.check()  # an invalid TRAINKIT_* setting is a ConfigError before any I/O
        self.store = ModelStore(tracking_uri, experiment_name)
        self._probed: dict[tuple[str, str], bool] = {}

    @property
    def tracking_uri(self) -> str:
        return self.store.tracking_uri

    @property
    def experiment_name(self) -> str:
        return self.store.experiment_name

    # ------------------------------------------------------------------ get
    def get_model(
        self,
        symbol: str,
        train_start: Any,
        train_end: Any,
        feature_count: int = 21,
        data_source: str = "yfinance",
        timesteps: int = 100_000,
        force: bool = False,
        **options: Any,
    ) -> tuple[Any, str]:
        """``(stable-baselines3 model, model_uri)`` for this configuration: cached when a
        FINISHED run with the same ``config_hash`` exists, trained and logged otherwise.
        ``force=True`` retrains. ``options``: any other :class:`TrainConfig` field (``algo``,
        ``seed``, hyperparameters by name or ``hyperparams={…}``, ``cost_bps``,
        ``allow_short``, ``episode_length``, ``data_seed``) and ``no_fallback=True``."""
        res = self.get(symbol, train_start, train_end, feature_count, data_source, timesteps, force, **options)
        return res.model, res.model_uri

    @staticmethod
    def config_for(
        symbol: str,
        train_start: Any,
        train_end: Any,
        feature_count: int = 21,
        data_source: str = "yfinance",
        timesteps: int = 100_000,
        **options: Any,
    ) -> TrainConfig:
        """The resolved config (and hash) a request would use — no I/O besides hashing a CSV."""
        opts = {k: v for k, v in options.items() if k not in _REQUEST_OPTIONS}
        return TrainConfig.create(symbol, train_start, train_end, feature_count, data_source, timesteps, **opts)

    def get(
        self,
        symbol: str,
        train_start: Any,
        train_end: Any,
        feature_count: int = 21,
        data_source: str = "yfinance",
        timesteps: int = 100_000,
        force: bool = False,
        **options: Any,
    ) -> ModelResult:
        """Like :meth:`get_model`, with the details the CLI reports (status, time, run)."""
        no_fallback = parse_bool(options.pop("no_fallback", False), "no_fallback")
        progress = options.pop("progress", None)
        project_run_id = options.pop("project_run_id", None)
        on_wait = options.pop("on_wait", None)
        config = TrainConfig.create(symbol, train_start, train_end, feature_count, data_source, timesteps, **options)
        return self.get_config(config, force=parse_bool(force, "force"), no_fallback=no_fallback, progress=progress,
                               project_run_id=project_run_id, on_wait=on_wait)

    def get_config(self, config: TrainConfig, *, force: bool = False, no_fallback: bool = False, progress: Any = None,
                   project_run_id: str | None = None, on_wait: Callable[[str], Any] | None = None) -> ModelResult:
        """The model of a resolved config — the get-or-train loop:

        find → (miss) fetch data → acquire the lease or wait for its holder → re-check under
        the lease → train → publish → release (in every case, Ctrl-C included)."""
        t0 = time.perf_counter()
        if not force:
            served = self._serve_cached(config, t0, no_fallback)
            if served is not None:
                return self._noted(project_run_id, served)
            superseded: frozenset[str] = frozenset()
        else:  # force: none of the models that exist now may answer (clock-free, unlike a time cut)
            superseded = frozenset(rec.run_id for rec, _run in self.store.candidates(config.config_hash))

        # A miss. Data and features first: a bad window or a broken CSV must fail before any
        # run is created, and they are cheap next to training.
        from trainkit.data import DataFetcherFactory
        from trainkit.features import build_features, warmup_start

        fetch = DataFetcherFactory.fetch(
            config.data_source, config.symbol, warmup_start(config.start_date), config.end_date,
            data_seed=config.data_seed, no_fallback=no_fallback,
        )
        features = build_features(fetch.frame, config.feature_count, start=config.start_date, end=config.end_date)
        provenance = DataProvenance(fetch.requested_source, fetch.effective_source, fetch.fallback_reason, fetch.digest)
        accept = _accept_for(config, superseded, fetch.fallback_reason is None, no_fallback)
        # torch and SB3 load now, not while holding a lease: a Ctrl-C during that import must
        # not leave a RUNNING lease behind, and the lease is held for less time
        from trainkit import agents

        agents.warm_up()
        into = project_run_id if project_run_id and self._can_train_into(project_run_id) else None

        while True:
            found = self.store.find(config.config_hash, accept)
            if found is not None:  # another trainer finished it while we fetched or waited
                served = self._load_record(config, found, t0)
                if served is None:  # it failed verification (now tagged broken): look again
                    continue
                return self._noted(project_run_id, served)
            # the tie between racing claimants is decided while training starts (not after a sleep)
            lease = self.store.acquire(config, provenance, project_run_id=into, defer_tie=True)
            if lease is None:
                self.store.leases.wait(config.config_hash, on_wait=on_wait, label=config.symbol)
                continue
            try:
                if self.store.find(config.config_hash, accept) is not None:  # re-check under the lease
                    lease.release()
                    continue
                result = self._train(config, lease, fetch, features, provenance, progress, t0, accept)
            except TrainingInterrupted:
                if not lease.lost.is_set():
                    lease.fail("training was stopped", status="KILLED")
                    raise
                result = None
            except BaseException as exc:
                if caused_by_interrupt(exc):  # Ctrl-C, even when a library's cleanup failed after it
                    _drop_interrupted_work(exc)
                    lease.fail("interrupted by the user (Ctrl-C)", status="KILLED")
                else:
                    lease.fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                raise
            finally:
                lease.stop_heartbeat()
            if result is None:
                # another trainer answers this config: it won the tie, published first, or took
                # over because we stalled long enough to be judged dead — serve its model
                if lease.lost.is_set() and not lease.lost_tie:
                    log.warning("%s: the training lease was taken over by another trainer; waiting for its model",
                                config.symbol)
                into = None
                continue
            return self._noted(project_run_id, result)

    # ------------------------------------------------------------------ many at once
    def iter_models(self, requests: Sequence[ModelRequest], executor: Any = None, *,
                    progress: Any = None) -> Iterator[ModelOutcome]:
        """Get many models, yielding each :class:`ModelOutcome` as it finishes (completion
        order). ``executor``: a :class:`trainkit.executors.LocalExecutor` (default: one after
        the other in this process) or :class:`trainkit.executors.RayExecutor`. Results from
        other processes carry ``model=None``."""
        from trainkit.executors import LocalExecutor

        executor = executor or LocalExecutor(1)
        if executor.in_process:
            fn: Callable[[ModelRequest], ModelOutcome] = partial(_outcome, self, progress=progress)
        else:  # a fresh manager in each worker; no progress bars from several processes
            fn = partial(_remote_outcome, self.tracking_uri, self.experiment_name)
            use_store = getattr(executor, "use_store", None)
            if use_store is not None:  # Ray: the store its workers must reach (refused before submitting if they cannot)
                use_store(self.tracking_uri)
        results = executor.map_unordered(fn, list(requests))
        try:
            for request, value in results:
                if isinstance(value, ModelOutcome):
                    yield value
                elif isinstance(value, TrainkitError):
                    yield ModelOutcome(request, error=value)
                else:
                    raise value  # a bug, not a request's failure
        finally:
            results.close()  # stopped early (Ctrl-C in the caller, an error): the executor cancels its work now

    def get_models(self, requests: Sequence[ModelRequest], executor: Any = None, *, load: bool = True) -> list[ModelOutcome]:
        """:meth:`iter_models`, collected in request order; with ``load``, results from other
        processes get their model loaded here (a verified cache hit, ~20 ms each)."""
        outcomes = {id(o.request): o for o in self.iter_models(requests, executor)}
        out = [outcomes[id(r)] if id(r) in outcomes else _find_outcome(outcomes.values(), r) for r in requests]
        if load:
            out = [
                dataclasses.replace(o, result=dataclasses.replace(o.result, model=self.store.load_bundle(o.result.model_uri).model))
                if o.result is not None and o.result.model is None else o
                for o in out
            ]
        return out

    # ------------------------------------------------------------------ walk-forward
    def walk_forward(self, symbol: str, start: Any, end: Any, train_window: Any = "3y", test_window: Any = "6m",
                     step: Any = None, mode: str = "sliding", embargo: Any = "0d", seeds: Sequence[int] = (0,),
                     executor: Any = None, **options: Any) -> Any:
        """Walk-forward evaluation with cached folds and cached backtests: folds anchored at
        ``start``, one model (``get_model`` options) and one out-of-sample backtest per fold and
        seed, the stitched out-of-sample equity and its metrics, logged as one parent run in
        ``trainkit-walkforward``. Returns a :class:`trainkit.walkforward.WalkForward`; see
        :func:`trainkit.walkforward.walk_forward` for the fold arithmetic."""
        from trainkit.walkforward import walk_forward

        return walk_forward(self, symbol, start, end, train_window, test_window, step, mode, embargo, seeds,
                            executor, **options)

    # ------------------------------------------------------------------ internals
    def _serve_cached(self, config: TrainConfig, t0: float, no_fallback: bool = False) -> ModelResult | None:
        for rec, run in self.store.candidates(config.config_hash):
            if rec.fell_back and no_fallback:
                continue  # "fail rather than use synthetic data": a synthetic-trained model does not answer
            if rec.fell_back and config.data_source_kind == "yfinance" and self._source_answers(config):
                log.warning(
                    "%s: the cached model was trained on synthetic fallback data and %s answers again: retraining",
                    config.symbol, config.data_source,
                )
                return None
            served = self._load_record(config, rec, t0, run)
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

    def _load_record(self, config: TrainConfig, rec: CachedModel, t0: float, run: Any = None) -> ModelResult | None:
        try:
            bundle = self.store.load_bundle(rec.model_uri, run=run)
        except (IntegrityError, ModelNotFoundError) as exc:
            self.store.mark_broken(rec.run_id, str(exc))
            return None
        return ModelResult(
            model=bundle.model, model_uri=rec.model_uri, run_id=rec.run_id, config=config, status=RequestStatus.CACHED,
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

    def _train(self, config: TrainConfig, lease: Lease, fetch: Any, features: Any, provenance: DataProvenance,
               progress: Any, t0: float, accept: Any = None) -> ModelResult | None:
        """Train under ``lease`` and publish; ``None`` when the lease was taken over meanwhile.
        (A fallback was already announced by the data layer: one warning per symbol, not two.)"""
        from trainkit.agents import train
        from trainkit.store.flavor import save_policy

        sink = self.store.metrics_sink(lease.run_id)
        t_train = time.perf_counter()
        model = train(config, features, progress=progress, metrics_sink=sink, should_stop=lease.should_stop)
        train_seconds = time.perf_counter() - t_train
        sink.close()
        retrying = self.store.conn.retrying  # a finished training outlives a restart of the server
        if (not retrying("checking the training lease", lease.settle)
                or retrying("looking the config up", lambda: self.store.find(config.config_hash, accept)) is not None):
            # lost the tie, or a racing trainer already published this config: serve its model
            lease.release()
            return None
        with tempfile.TemporaryDirectory(prefix="trainkit-train-") as tmp:
            zip_path = os.path.join(tmp, "policy.zip")
            save_policy(model, zip_path)
            rec = self.store.publish(
                lease, config, policy_zip=zip_path, feature_spec=features.spec(), provenance=provenance,
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
        status = RequestStatus.FALLBACK if provenance.fallback_reason else RequestStatus.TRAINED
        return ModelResult(
            model=model, model_uri=rec.model_uri, run_id=rec.run_id, config=config, status=status,
            seconds=time.perf_counter() - t0, record=rec, fallback_reason=provenance.fallback_reason,
        )

    def _can_train_into(self, run_id: str) -> bool:
        """A miss trains into ``mlflow run``'s project run when that run is in our experiment
        and holds no model or lease yet (a multi-symbol project run holds one model; the other
        symbols get runs of their own)."""
        run = self.store.get_run(run_id)
        tags = run.data.tags
        return (
            run.info.experiment_id == self.store.experiment_id
            and run.info.status == "RUNNING"
            and not any(tags.get(t) for t in (TAG_HASH, TAG_CLAIM, TAG_MODEL_ID))
        )

    def _noted(self, project_run_id: str | None, result: ModelResult) -> ModelResult:
        """Under ``mlflow run`` in another experiment: say in the project run which cached run
        served it. A run without a model never carries ``config_hash``."""
        if not project_run_id or project_run_id == result.run_id:
            return result
        if self.store.get_run(project_run_id).data.tags.get(TAG_MODEL_ID):
            return result  # it holds a model of its own (trained into it for another symbol)
        self.store.tag_run(project_run_id, {
            TAG_MODEL_URI: result.model_uri,
            TAG_MODEL_RUN_ID: result.run_id,
            TAG_CACHE_HIT: "true" if result.cache_hit else "false",
            TAG_SYMBOL: result.config.symbol,
        })
        return result

    def note_backtest(self, project_run_id: str, result: Any) -> None:
        """Under ``mlflow run -e backtest``: say in the project run where the backtest is."""
        self.store.tag_run(project_run_id, {
            TAG_BACKTEST_RUN_ID: result.run_id, TAG_MODEL_URI: result.model_uri,
            TAG_SOURCE_RUN_ID: result.source_run_id, TAG_SYMBOL: result.symbol,
        })

    # ------------------------------------------------------------------ explain
    def explain(self, config: TrainConfig, *, no_fallback: bool = False, nearest: int = 3) -> Explanation:
        """Why ``config`` is or is not a cache hit — read-only: it asks only the tracking store
        and the local download cache (never the network), trains nothing and writes nothing.

        The answer is the model a request would be served now. ``not_served`` lists every run
        with the hash that would not answer, with the reason (broken, deleted, unfinished,
        trained on fallback data while the source answers, a lease). When nothing answers,
        ``nearest`` are the cached configs of the symbol with the fewest differing fields."""
        from trainkit.data import cached_digest
        from trainkit.features import warmup_start

        h = config.config_hash
        not_served = [NotServed(r.info.run_id, r.info.status, why) for r, why in self.store.catalog.unservable(h)]
        answer: CachedModel | None = None
        note: str | None = None
        for rec, _run in self.store.candidates(h):
            if answer is not None:
                not_served.append(NotServed(rec.run_id, "FINISHED", f"run {answer.run_id} answers first "
                                            "(a model on the requested source first, then the newest)"))
                continue
            if rec.fell_back and no_fallback:
                not_served.append(NotServed(rec.run_id, "FINISHED", "trained on synthetic fallback data, and "
                                            "--no-fallback refuses it"))
                continue
            if rec.fell_back and config.data_source_kind == "yfinance":
                local = cached_digest("yfinance", config.symbol, warmup_start(config.start_date), config.end_date)
                if local is not None:
                    not_served.append(NotServed(rec.run_id, "FINISHED", "trained on synthetic fallback data, and "
                                                "Yahoo's prices for the window are in the local download cache now: "
                                                "the next request retrains on them"))
                    continue
                note = (f"trained on SYNTHETIC fallback data ({rec.fallback_reason}); the next request asks "
                        f"{config.data_source} once and retrains if it answers")
            answer = rec
        changed = self.data_changed(answer) if answer is not None else None
        if changed:
            note = ((note + "; ") if note else "") + ("its training prices differ today from the digest recorded on "
                                                     "the model: --force retrains on today's prices")
        near: list[NearMiss] = []
        if answer is None and nearest > 0:
            wanted = config.to_params()
            scored = []
            for run in self.store.catalog.model_runs(config.symbol):
                diffs = _differences(run.data.params, wanted)
                if diffs:
                    scored.append((len(diffs), -(run.info.start_time or 0), run.info.run_id, run, diffs))
            scored.sort(key=lambda t: t[:3])
            from trainkit.store import record_from_run

            near = [NearMiss(record_from_run(t[3]), tuple(t[4])) for t in scored[:nearest]]
        return Explanation(config=config, answer=answer, note=note, not_served=tuple(not_served),
                           nearest=tuple(near), data_changed=changed)

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

    # ------------------------------------------------------------------ lookup / list / clear
    def lookup(self, config: TrainConfig) -> CachedModel | None:
        """The model that would answer ``config`` now, without loading it or writing anything
        (``train --dry-run``)."""
        return self.store.find(config.config_hash)

    def list_cached_models(self, symbol: str | None = None) -> list[CachedModel]:
        """trainkit's models in the experiment (newest first), live trainings included as
        status ``training``; models trained on fallback data have status ``fallback``.
        ``data_changed`` says whether a model's training prices differ today from the digest
        recorded on it (checked offline; ``None`` when that needs the network)."""
        memo: dict = {}
        return [m if m.status == ModelStatus.TRAINING else dataclasses.replace(m, data_changed=self.data_changed(m, memo))
                for m in self.store.list_models(symbol)]

    def plan_clear(
        self,
        symbol: str | None = None,
        older_than: Any = None,
        config_hash: str | None = None,
        include_registered: bool = False,
    ) -> tuple[list[CachedModel], list[CachedModel]]:
        """``(to_remove, kept_because_registered)`` for these filters; changes nothing. Fails
        closed: when the Model Registry cannot be read, registered models cannot be told apart,
        so this raises (unless ``include_registered``, which removes them anyway)."""
        if config_hash is not None:
            config_hash = check_config_hash(config_hash, "--config-hash")
        cutoff = parse_older_than(older_than) if older_than not in (None, "") else None
        models = self.store.list_models(symbol, include_training=False, strict_registry=not include_registered)
        if config_hash:
            models = [m for m in models if m.config_hash == config_hash]
        if cutoff is not None:
            models = [m for m in models if m.created_at < cutoff]
        kept = [m for m in models if m.registered and not include_registered]
        remove = [m for m in models if not (m.registered and not include_registered)]
        return remove, kept

    def delete(self, models: Sequence[CachedModel], purge: bool = False) -> None:
        """Remove exactly these models (what :meth:`plan_clear` showed; not a re-query)."""
        self.store.delete(models, purge=purge)

    def clear_cache(
        self,
        symbol: str | None = None,
        older_than: Any = None,
        config_hash: str | None = None,
        dry_run: bool = False,
        purge: bool = False,
        include_registered: bool = False,
    ) -> list[CachedModel]:
        """Remove cached models matching every filter given (all of trainkit's when none is);
        returns what was (or, with ``dry_run``, would be) removed. Soft delete by default
        (restorable in MLflow); ``purge`` deletes for good. Models registered in the Model
        Registry are kept unless ``include_registered``. Other tools' runs are never touched."""
        remove, kept = self.plan_clear(symbol, older_than, config_hash, include_registered)
        for m in kept:
            log.info("kept %s (%s): registered as %s; pass include_registered to remove it", m.run_id, m.symbol, ", ".join(m.registered))
        if not dry_run and remove:
            self.delete(remove, purge=purge)
        return remove

    # ------------------------------------------------------------------ registry
    def register(self, model_uri: str, name: str | None = None, alias: str | None = None) -> tuple[str, str]:
        """Register a model (``trainkit-<SYMBOL>`` by default) and optionally set an alias."""
        return self.store.register(model_uri, name, alias)


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


def _accept_for(config: TrainConfig, superseded: frozenset[str], source_ok: bool, no_fallback: bool = False) -> Any:
    """Which FINISHED runs may answer a request that is about to train: not one a forced
    request set out to replace (``superseded``; a model another trainer finishes while we
    wait does answer), and not a fallback model when the requested source delivered or the
    caller refused fallback data."""

    def accept(rec: CachedModel) -> bool:
        if rec.run_id in superseded:
            return False
        if no_fallback and rec.fell_back:
            return False
        if source_ok and rec.fell_back and config.data_source_kind == "yfinance":
            return False  # we have the real data: a fallback model does not answer
        return True

    return accept


def _outcome(manager: TrainingManager, request: ModelRequest, *, progress: Any = None) -> ModelOutcome:
    """One request in this process; a trainkit error becomes the outcome's error."""
    try:
        result = manager.get_config(request.config, force=request.force, no_fallback=request.no_fallback, progress=progress)
    except TrainkitError as exc:
        return ModelOutcome(request, error=exc)
    return ModelOutcome(request, result=result)


_worker_managers: dict[tuple[str, str], TrainingManager] = {}


def _remote_outcome(tracking_uri: str, experiment_name: str, request: ModelRequest) -> ModelOutcome:
    """One request in a worker process (one manager per worker, reused across its tasks); the
    model stays in MLflow and the result travels without it."""
    key = (tracking_uri, experiment_name)
    if key not in _worker_managers:
        _worker_managers[key] = TrainingManager(tracking_uri, experiment_name)
    outcome = _outcome(_worker_managers[key], request, progress=False)
    if outcome.result is not None:
        outcome = dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, model=None))
    return outcome


def _find_outcome(outcomes: Any, request: ModelRequest) -> ModelOutcome:
    """The outcome of ``request`` among outcomes that came back through pickling (new objects)."""
    for o in outcomes:
        if o.request == request:
            return o
    raise KeyError(request)  # pragma: no cover - every request yields one outcome


def _differences(cached: dict[str, str], wanted: dict[str, str]) -> list[ConfigDiff]:
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
