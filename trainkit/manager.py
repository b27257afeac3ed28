"""`TrainingManager`: the public face of trainkit's Python API.

A facade over the get-or-train core (:class:`trainkit.cache.ModelCache`, which it extends):
requests as keywords (``get_model("AAPL", "2020-01-01", "2022-12-31", timesteps=…)``), many
requests at once through an executor, walk-forward, ``explain``, and the cache's list / clear /
register. It imports downward only: walk-forward, the fan-out and (next) the search depend on
the core, never on this module, so no cycle exists (docs/ARCHITECTURE.md, *Rooms*).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from trainkit.cache import ModelCache, ModelOutcome, ModelRequest, ModelResult, outcome
from trainkit.config import TrainConfig, parse_bool, parse_older_than
from trainkit.explain import ConfigDiff, Explanation, NearMiss, NotServed
from trainkit.explain import explain as _explain
from trainkit.store import CachedModel, ModelStatus, check_config_hash

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.promotion import Promotion
    from trainkit.store.promotions import AliasMove

log = logging.getLogger("trainkit")

__all__ = ["ConfigDiff", "Explanation", "ModelOutcome", "ModelRequest", "ModelResult", "NearMiss", "NotServed",
           "TrainingManager"]

#: options of get_model that shape the request, not the model (not part of the hash)
_REQUEST_OPTIONS = ("no_fallback", "progress", "project_run_id", "on_wait", "load")


class TrainingManager(ModelCache):
    """Get RL trading models by configuration; MLflow is the cache.

    >>> trainer = TrainingManager()                        # MLFLOW_TRACKING_URI or ./mlflow.db
    >>> model, uri = trainer.get_model("AAPL", "2020-01-01", "2022-12-31", timesteps=100_000)
    """

    # ------------------------------------------------------------------ one model
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
        load = parse_bool(options.pop("load", True), "load")
        progress = options.pop("progress", None)
        project_run_id = options.pop("project_run_id", None)
        on_wait = options.pop("on_wait", None)
        config = TrainConfig.create(symbol, train_start, train_end, feature_count, data_source, timesteps, **options)
        return self.get_config(config, force=parse_bool(force, "force"), no_fallback=no_fallback, progress=progress,
                               project_run_id=project_run_id, on_wait=on_wait, load=load)

    def get_config(self, config: TrainConfig, *, force: bool = False, no_fallback: bool = False, progress: Any = None,
                   project_run_id: str | None = None, on_wait: Callable[[str], Any] | None = None,
                   load: bool = True) -> ModelResult:
        """The model of a resolved config (:meth:`ModelCache.get_or_train` of its request);
        ``load=False``: verify a cached model without deserialising it (``model`` is ``None``)."""
        return self.get_or_train(ModelRequest(config, force=force, no_fallback=no_fallback), progress=progress,
                                 project_run_id=project_run_id, on_wait=on_wait, load=load)

    # ------------------------------------------------------------------ many at once
    def iter_models(self, requests: Sequence[ModelRequest], executor: Any = None, *,
                    progress: Any = None, load: bool = True) -> Iterator[ModelOutcome]:
        """Get many models, yielding each :class:`ModelOutcome` as it finishes (completion
        order). ``executor``: a :class:`trainkit.executors.LocalExecutor` (default: one after
        the other in this process) or :class:`trainkit.executors.RayExecutor`. Results from
        other processes carry ``model=None`` (no progress bars from several processes), and so
        do all with ``load=False`` (cache hits verified, not deserialised)."""
        from trainkit.fanout import fan_out

        remote = executor is not None and not executor.in_process
        work = partial(outcome, progress=False, load=False) if remote else partial(outcome, progress=progress, load=load)
        stream = fan_out(self, executor, work, requests)
        try:
            for request, value in stream:
                yield value if isinstance(value, ModelOutcome) else ModelOutcome(request, error=value)
        finally:
            stream.close()  # stopped early (Ctrl-C in the caller, an error): the executor cancels its work now

    def get_models(self, requests: Sequence[ModelRequest], executor: Any = None, *, load: bool = True) -> list[ModelOutcome]:
        """:meth:`iter_models`, collected in request order; with ``load``, results from other
        processes get their model loaded here (a verified cache hit, ~20 ms each)."""
        done = list(self.iter_models(requests, executor, load=load))
        by_id = {id(o.request): o for o in done}  # in process: the caller's own request objects
        out = [by_id.get(id(r)) or next(o for o in done if o.request == r) for r in requests]
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

    def tune(self, symbol: str, start: Any, end: Any, train_window: Any = "3y", test_window: Any = "6m", *,
             trials: int = 20, study: str | None = None, space: Any = None, objective: str = "sharpe",
             sampler_seed: int = 0, pruner: str = "none", step: Any = None, mode: str = "sliding",
             embargo: Any = "0d", seeds: Sequence[int] = (0,), executor: Any = None, parallel: int | None = None,
             no_fallback: bool = False, on_trial: Any = None, **options: Any) -> Any:
        """Search hyperparameters with Optuna, each trial one walk-forward of cached folds
        (:mod:`trainkit.search`): run study ``study`` (default ``<SYMBOL>-<algo>-<train>-<test>``)
        until it holds ``trials`` finished trials. ``space``: a :class:`~trainkit.search.SearchSpace`,
        a mapping in the space file's form, a path to a YAML/JSON space file, or ``None`` (the
        algorithm's default space). Bad options are :class:`ConfigError` before anything is read.
        ``options``: the train options of ``get_model``; the searched hyperparameters start from
        them. Returns a :class:`trainkit.search.TuneResult`."""
        import os
        from collections.abc import Mapping

        from trainkit.errors import ConfigError
        from trainkit.search import SearchSpace, check_options, default_space, load_space, make_spec, parse_space
        from trainkit.search import tune as run_study
        from trainkit.walkforward import plan_walk_forward

        check_options(objective=objective, pruner=pruner, sampler_seed=sampler_seed, name=study, trials=trials)
        algo = str(options.get("algo", "ppo")).lower()
        if isinstance(space, (str, os.PathLike)):
            space = load_space(os.fspath(space), algo)
        elif isinstance(space, Mapping):
            space = parse_space(space, algo)
        elif space is not None and not isinstance(space, SearchSpace):
            raise ConfigError(f"space {space!r} must be a SearchSpace, a mapping or a path to a space file")
        plan = plan_walk_forward(symbol, start, end, train_window, test_window, step, mode, embargo, seeds,
                                 no_fallback=no_fallback, **options)
        if space is None:
            space = default_space(plan.base.algo, plan.base.hyperparams)
        spec = make_spec(plan, space, objective, study, sampler_seed=sampler_seed, pruner=pruner)
        return run_study(self, plan, spec, trials, executor, parallel=parallel, on_trial=on_trial)

    # ------------------------------------------------------------------ explain
    def explain(self, config: TrainConfig, *, no_fallback: bool = False, nearest: int = 3) -> Explanation:
        """Why ``config`` is or is not a cache hit — read-only (:func:`trainkit.explain.explain`)."""
        return _explain(self, config, no_fallback=no_fallback, nearest=nearest)

    def note_backtest(self, project_run_id: str, result: Any) -> None:
        """Under ``mlflow run -e backtest``: say in the project run where the backtest is."""
        self.store.note_backtest(project_run_id, result)

    # ------------------------------------------------------------------ lookup / list / clear
    def list_cached_models(self, symbol: str | None = None) -> list[CachedModel]:
        """trainkit's models in the experiment (newest first), live trainings included as
        status ``training``; models trained on fallback data have status ``fallback``.
        ``data_changed`` says whether a model's training prices differ today from the digest
        recorded on it (checked offline; ``None`` when that needs the network)."""
        memo: dict = {}
        return [m if m.status == ModelStatus.TRAINING else dataclasses.replace(m, data_changed=self.data_changed(m, memo))
                for m in self.store.list_models(symbol)]

    def rank_models(self, metric: str, oos_window: Any, symbol: str | None = None) -> list[Any]:
        """The models measured out of sample on ``oos_window`` (``"START..END"`` or a pair of
        dates), best first by ``metric`` (:mod:`trainkit.walkforward.ranking`). Reads only."""
        from trainkit.walkforward.ranking import check_metric, parse_oos_window, rank_models

        window = parse_oos_window(oos_window if isinstance(oos_window, str) else "..".join(map(str, oos_window)))
        return rank_models(self.store, check_metric(metric), window, symbol)

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

    # ------------------------------------------------------------------ promotion
    def promote(self, symbol: str, *, study: str | None = None, walkforward_run_id: str | None = None,
                alias: str | None = None, min_dsr: float | None = None, max_pbo: float | None = None,
                name: str | None = None, dry_run: bool = False) -> Promotion:
        """Promote the best walk-forward of ``study`` (or ``walkforward_run_id``) to
        ``models:/<name>@<alias>`` when its deflated Sharpe (over every config tried on its
        window, counted now) is at least ``min_dsr`` and, given ``max_pbo``, its PBO at most
        that. A refusal is *returned* (``promoted=False`` and the reason), not raised. Defaults:
        alias ``champion``, ``min_dsr`` 0.95 (:mod:`trainkit.promotion`)."""
        from trainkit.promotion import DEFAULT_ALIAS, DEFAULT_MIN_DSR, Gates, promote

        gates = Gates(DEFAULT_MIN_DSR if min_dsr is None else min_dsr, max_pbo)
        return promote(self, symbol, study=study, walkforward_run_id=walkforward_run_id, alias=alias or DEFAULT_ALIAS,
                       gates=gates, name=name, dry_run=dry_run)

    def rollback(self, name: str, alias: str | None = None) -> AliasMove:
        """Point ``alias`` (default ``champion``) back at the version it had before the last
        promotion, recorded."""
        from trainkit.promotion import DEFAULT_ALIAS, rollback

        return rollback(self, name, alias or DEFAULT_ALIAS)

    def promotion_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded alias move of registered model ``name``, oldest first."""
        from trainkit.promotion import history

        return history(self, name, alias)

    # ------------------------------------------------------------------ registry
    def register(self, model_uri: str, name: str | None = None, alias: str | None = None) -> tuple[str, str]:
        """Register a model (``trainkit-<SYMBOL>`` by default) and optionally set an alias."""
        return self.store.register(model_uri, name, alias)
