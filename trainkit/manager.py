"""`TrainingManager`: config → cache → data → features → training → store.

The public entry point of trainkit. A request is resolved into a :class:`TrainConfig`; its
hash is looked up in MLflow; a verified FINISHED model is served as is, anything else is
trained once (across processes and machines: see :mod:`trainkit.store` claims), logged and
served. Training is a pure function of the config, so a hash always means the same model.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from trainkit.config import TrainConfig, parse_bool, parse_older_than
from trainkit.errors import ConfigError, IntegrityError, ModelNotFoundError, TrainingInterrupted
from trainkit.store import (
    DEFAULT_EXPERIMENT,
    CachedModel,
    Claim,
    DataProvenance,
    MlflowMetricsSink,
    ModelStore,
    load_bundle,
)

log = logging.getLogger("trainkit")

#: options of get_model that shape the request, not the model (not part of the hash)
_REQUEST_OPTIONS = ("no_fallback", "progress", "project_run_id", "on_wait")


@dataclass(frozen=True)
class ModelResult:
    """What :meth:`TrainingManager.get` did: served from cache, trained, or trained on
    fallback data — with the model, its URI and where it lives."""

    model: Any
    model_uri: str
    run_id: str
    config: TrainConfig
    status: str  # cached | trained | fallback
    seconds: float
    record: CachedModel
    fallback_reason: str | None = None

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    @property
    def cache_hit(self) -> bool:
        return self.status == "cached"


class TrainingManager:
    """Get RL trading models by configuration; MLflow is the cache.

    >>> trainer = TrainingManager()                        # MLFLOW_TRACKING_URI or ./mlflow.db
    >>> model, uri = trainer.get_model("AAPL", "2020-01-01", "2022-12-31", timesteps=100_000)
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT) -> None:
        self.store = ModelStore(tracking_uri, experiment_name)
        self._probed: dict[tuple[str, str], bool] = {}

    @property
    def tracking_uri(self) -> str:
        return self.store.tracking_uri

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
        t0 = time.perf_counter()
        no_fallback = parse_bool(options.pop("no_fallback", False), "no_fallback")
        progress = options.pop("progress", None)
        project_run_id = options.pop("project_run_id", None)
        on_wait = options.pop("on_wait", None)
        force = parse_bool(force, "force")
        config = TrainConfig.create(symbol, train_start, train_end, feature_count, data_source, timesteps, **options)

        if not force:
            served = self._serve_cached(config, t0, no_fallback)
            if served is not None:
                self._record_project_run(project_run_id, served)
                return served
            superseded: frozenset[str] = frozenset()
        else:  # force: none of the models that exist now may answer (clock-free, unlike a time cut)
            superseded = frozenset(rec.run_id for rec, _run in self._candidates(config))

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
        # torch and SB3 load now, not while holding a claim: a Ctrl-C during that import must
        # not leave a RUNNING claim behind, and the claim is held for less time
        import trainkit.agents  # noqa: F401

        use_project_run = project_run_id if project_run_id and self._can_train_into(project_run_id) else None
        while True:
            got = self.store.acquire(config, provenance, project_run_id=use_project_run, on_wait=on_wait, accept=accept)
            if isinstance(got, CachedModel):  # someone else trained it while we waited
                served = self._load_record(config, got, t0)
                if served is None:  # their model failed verification (now tagged broken): go again
                    continue
                self._record_project_run(project_run_id, served)
                return served
            try:
                result = self._train(config, got, fetch, features, provenance, progress, t0)
            except TrainingInterrupted:
                if not got.lost.is_set():
                    raise
                # we stalled long enough to be judged dead and another trainer took over: wait
                # for its model instead of failing the request
                log.warning("%s: the training claim was taken over by another trainer; waiting for its model", config.symbol)
                use_project_run = None
                continue
            self._record_project_run(project_run_id, result)
            return result

    # ------------------------------------------------------------------ internals
    def _serve_cached(self, config: TrainConfig, t0: float, no_fallback: bool = False) -> ModelResult | None:
        for rec, run in self._candidates(config):
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
                if rec.fell_back:
                    log.warning(
                        "%s: serving a model trained on SYNTHETIC fallback data (%s is still unavailable: %s)",
                        config.symbol, config.data_source, rec.fallback_reason,
                    )
                return served
        return None

    def _candidates(self, config: TrainConfig) -> list[tuple[CachedModel, Any]]:
        from trainkit.store import _record

        return [(_record(r), r) for r in self.store.finished_runs(config.config_hash)]

    def _load_record(self, config: TrainConfig, rec: CachedModel, t0: float, run: Any = None) -> ModelResult | None:
        try:
            model, _bundle = load_bundle(rec.model_uri, store=self.store, run=run)
        except (IntegrityError, ModelNotFoundError) as exc:
            self.store.mark_broken(rec.run_id, str(exc))
            return None
        return ModelResult(
            model=model, model_uri=rec.model_uri, run_id=rec.run_id, config=config, status="cached",
            seconds=time.perf_counter() - t0, record=rec, fallback_reason=rec.fallback_reason,
        )

    def _source_answers(self, config: TrainConfig) -> bool:
        """Does the requested source answer again? Asked at most once per process (Decision 8)."""
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

    def _train(self, config: TrainConfig, claim: Claim, fetch: Any, features: Any, provenance: DataProvenance,
               progress: Any, t0: float) -> ModelResult:
        # a fallback was already announced by the data layer (one warning per symbol, not two)
        try:  # everything from here on releases the claim on any exit, Ctrl-C included
            from trainkit.agents import save_sb3, train

            sink = MlflowMetricsSink(self.store.client, claim.run_id)
            t_train = time.perf_counter()
            model = train(config, features, progress=progress, metrics_sink=sink, should_stop=claim.should_stop)
            train_seconds = time.perf_counter() - t_train
            sink.flush()
            with tempfile.TemporaryDirectory(prefix="trainkit-train-") as tmp:
                zip_path = os.path.join(tmp, "policy.zip")
                save_sb3(model, zip_path)
                window = fetch.frame.loc[str(config.start_date): str(config.end_date)]
                rec = self.store.publish(
                    claim, config, policy_zip=zip_path, feature_spec=features.spec(), provenance=provenance,
                    frame=window, obs_dim=int(features.matrix.shape[1]) + 1,
                    metrics={
                        "train_seconds": train_seconds,
                        "train_steps_per_second": config.timesteps / max(train_seconds, 1e-9),
                        "train_rows": float(len(features)),
                    },
                )
        except KeyboardInterrupt:
            claim.fail("interrupted by the user (Ctrl-C)", status="KILLED")
            raise
        except BaseException as exc:
            claim.fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        if rec.run_id != claim.run_id:  # taken over: serve the other trainer's model
            served = self._load_record(config, rec, t0)
            if served is None:
                raise TrainingInterrupted(f"the claim on {config.symbol} was taken over and the other model is unusable")
            return served
        status = "fallback" if provenance.fallback_reason else "trained"
        return ModelResult(
            model=model, model_uri=rec.model_uri, run_id=rec.run_id, config=config, status=status,
            seconds=time.perf_counter() - t0, record=rec, fallback_reason=provenance.fallback_reason,
        )

    def _can_train_into(self, run_id: str) -> bool:
        """Decision 3: a miss trains into ``mlflow run``'s project run when that run is in our
        experiment and holds no model or claim yet (a multi-symbol project run holds one model;
        the other symbols get runs of their own)."""
        from trainkit.store import TAG_CLAIM, TAG_HASH, TAG_MODEL_ID

        run = self.store.get_run(run_id)
        tags = run.data.tags
        return (
            run.info.experiment_id == self.store.experiment_id
            and run.info.status == "RUNNING"
            and not any(tags.get(t) for t in (TAG_HASH, TAG_CLAIM, TAG_MODEL_ID))
        )

    def _record_project_run(self, project_run_id: str | None, result: ModelResult) -> None:
        """Under ``mlflow run`` in another experiment: say in the project run which cached run
        served it (Decision 3). A run without a model never carries ``config_hash``."""
        if not project_run_id or project_run_id == result.run_id:
            return
        from trainkit.store import TAG_MODEL_ID

        if self.store.get_run(project_run_id).data.tags.get(TAG_MODEL_ID):
            return  # it holds a model of its own (trained into it for another symbol)
        self.store.tag_run(project_run_id, {
            "trainkit.model_uri": result.model_uri,
            "trainkit.model_run_id": result.run_id,
            "trainkit.cache_hit": "true" if result.cache_hit else "false",
            "trainkit.symbol": result.config.symbol,
        })

    # ------------------------------------------------------------------ list / clear
    def list_cached_models(self, symbol: str | None = None) -> list[CachedModel]:
        """trainkit's models in the experiment (newest first), live trainings included as
        status ``training``; models trained on fallback data have status ``fallback``."""
        return self.store.list_models(symbol)

    def plan_clear(
        self,
        symbol: str | None = None,
        older_than: Any = None,
        config_hash: str | None = None,
        include_registered: bool = False,
    ) -> tuple[list[CachedModel], list[CachedModel]]:
        """``(to_remove, kept_because_registered)`` for these filters; changes nothing."""
        if config_hash is not None:
            config_hash = str(config_hash).strip().lower()
            if not (len(config_hash) == 64 and all(c in "0123456789abcdef" for c in config_hash)):
                raise ConfigError(f"--config-hash {config_hash!r} must be the full 64-hex-character hash (see trainkit list --json)")
        cutoff = parse_older_than(older_than) if older_than not in (None, "") else None
        models = [m for m in self.store.list_models(symbol, include_training=False)]
        if config_hash:
            models = [m for m in models if m.config_hash == config_hash]
        if cutoff is not None:
            models = [m for m in models if m.created_at < cutoff]
        kept = [m for m in models if m.registered and not include_registered]
        remove = [m for m in models if not (m.registered and not include_registered)]
        return remove, kept

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
            self.store.delete(remove, purge=purge)
        return remove

    # ------------------------------------------------------------------ registry
    def register(self, model_uri: str, name: str | None = None, alias: str | None = None) -> tuple[str, str]:
        """Register a model (``trainkit-<SYMBOL>`` by default) and optionally set an alias."""
        if name is None:
            _lm, run = self.store.resolve(model_uri)
            template = os.environ.get("TRAINKIT_REGISTERED_NAME", "trainkit-{symbol}")
            name = template.format(symbol=run.data.tags.get("trainkit.symbol", "model"))
        return self.store.register(model_uri, name, alias)


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
