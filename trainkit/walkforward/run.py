"""Running a walk-forward: each (fold, seed) task is one model from the model cache plus one
backtest of it on the fold's test window, then the folds are stitched and the parent run logged.

**Each fold** is :meth:`ModelCache.get_or_train <trainkit.cache.ModelCache.get_or_train>` (the
model cache, leases and all) plus a backtest of that model on its test window
(:func:`trainkit.backtest.run_backtest`, itself cached by (model, data digest, window, costs)).
A fold whose model and backtest are both cached is answered here without loading the model.
The others are independent tasks for an executor, through :func:`trainkit.fanout.fan_out`
(``--workers 2`` trains two folds at once); identical folds asked by two processes train once.

Only the get-or-train core (:class:`~trainkit.cache.ModelCache`) is needed, never the
:class:`~trainkit.manager.TrainingManager` facade: a ``TrainingManager`` is a ``ModelCache``, and
an executor's worker process gets a plain one from :mod:`trainkit.fanout`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from trainkit.errors import TrainkitError
from trainkit.fanout import fan_out
from trainkit.store.contract import BACKTEST_EXPERIMENT, WALKFORWARD_EXPERIMENT
from trainkit.walkforward.plan import FoldTask, WalkForwardPlan, plan_walk_forward
from trainkit.walkforward.result import Fold, WalkForward
from trainkit.walkforward.stitch import aggregate, walkforward_key

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.backtest import BacktestResult
    from trainkit.cache import ModelCache
    from trainkit.config import TrainConfig
    from trainkit.executors import Executor

log = logging.getLogger("trainkit")

__all__ = ["conclude", "dry_run", "run_fold", "run_plan", "walk_forward"]


def _fold_key(bt: BacktestResult, config: TrainConfig) -> str:
    from trainkit.backtest import backtest_key

    return backtest_key(model_uri=bt.model_uri, model_id=bt.model_id or bt.source_run_id,
                        config_hash=config.config_hash, data_digest=bt.data_digest or "", start=bt.start, end=bt.end,
                        cost_bps=config.cost_bps, allow_short=config.allow_short)


def run_fold(cache: ModelCache, task: FoldTask, *, force: bool = False, no_fallback: bool = False,
             cached_only: bool = False) -> Fold | None:
    """One fold in this process: its model (``get_or_train``) and its backtest. When both are
    cached the model is not even loaded (:func:`trainkit.backtest.cached_backtest`);
    ``cached_only``: that, or ``None``. Module-level, so executors can pickle it."""
    from trainkit.backtest import cached_backtest, run_backtest
    from trainkit.cache import ModelRequest
    from trainkit.store.contract import RequestStatus

    t0 = time.perf_counter()
    cfg, w = task.config, task.window

    def fold(bt: Any, status: str, model_uri: str, model_id: str | None, run_id: str, reason: str | None) -> Fold:
        return Fold(index=w.index, seed=task.seed, train_start=w.train_start, train_end=w.train_end,
                    test_start=w.test_start, test_end=w.test_end, config_hash=cfg.config_hash, model_uri=model_uri,
                    model_id=model_id, training_run_id=run_id, status=status, backtest=bt,
                    backtest_key=_fold_key(bt, cfg), seconds=time.perf_counter() - t0, fallback_reason=reason)

    if not force:
        rec = cache.lookup(cfg)
        if rec is not None and rec.model_id and not rec.fell_back:  # a fallback model asks its source again first
            bt = cached_backtest(cache.store, model_uri=rec.model_uri, model_id=rec.model_id, config=cfg,
                                 start=w.test_start, end=w.test_end)
            if bt is not None:
                return fold(bt, RequestStatus.CACHED, rec.model_uri, rec.model_id, rec.run_id, None)
        if cached_only:
            return None
    # load=False: the backtest loads the model by URI; a cached fold's model is verified here, not
    # deserialised twice
    res = cache.get_or_train(ModelRequest(cfg, force=force, no_fallback=no_fallback), progress=False, load=False)
    bt = run_backtest(res.model_uri, w.test_start, w.test_end, store=cache.store)
    return fold(bt, res.status, res.model_uri, res.record.model_id, res.run_id, res.fallback_reason)


# ============================================================================ the entry points
def walk_forward(cache: ModelCache, symbol: str, start: Any, end: Any, train_window: Any = "3y",
                 test_window: Any = "6m", step: Any = None, mode: str = "sliding", embargo: Any = "0d",
                 seeds: Any = (0,), executor: Executor | None = None, *, force: bool = False,
                 no_fallback: bool = False, log_run: bool = True, on_fold: Callable[[Fold], Any] | None = None,
                 **options: Any) -> WalkForward:
    """Walk ``symbol`` forward over ``start..end`` (:mod:`trainkit.walkforward`): plan the folds
    (exit 2 on bad windows, before anything is trained), get each fold's model and backtest —
    through ``executor`` (``in_process`` and ``map_unordered``, e.g.
    :class:`trainkit.executors.LocalExecutor`; default: one after the other here) — stitch,
    and log the parent run (unless an identical one exists, or ``log_run=False``).
    ``options``: the train options of ``get_model``. ``on_fold(fold)`` is called as each
    finishes (a progress bar)."""
    plan = plan_walk_forward(symbol, start, end, train_window, test_window, step, mode, embargo, seeds,
                             no_fallback=no_fallback, **options)
    return run_plan(cache, plan, executor, force=force, no_fallback=no_fallback, log_run=log_run, on_fold=on_fold)


def run_plan(cache: ModelCache, plan: WalkForwardPlan, executor: Executor | None = None, *, force: bool = False,
             no_fallback: bool = False, log_run: bool = True,
             on_fold: Callable[[Fold], Any] | None = None) -> WalkForward:
    """Run a :class:`WalkForwardPlan`: every (fold, seed) task, then the stitched result and
    the parent run, and its selection evidence among every config tried on its window
    (:mod:`trainkit.walkforward.evidence`). A fold's failure does not stop the others; the first
    failure is raised once all have ended (nothing is logged for the walk-forward then)."""
    done: dict[tuple[int, int], Fold] = {}

    def finished(fold: Fold) -> None:
        done[(fold.index, fold.seed)] = fold
        if on_fold is not None:
            on_fold(fold)

    pending: list[FoldTask] = []
    for task in plan.tasks:  # folds whose model and backtest are cached are answered here: no worker needed
        cached = None if force else run_fold(cache, task, cached_only=True)
        if cached is None:
            pending.append(task)
        else:
            finished(cached)
    if pending:  # folds train, backtest and log metrics on their models: may this user write?
        cache.store.conn.require("EDIT", [cache.experiment_name, BACKTEST_EXPERIMENT, WALKFORWARD_EXPERIMENT],
                                 f"{plan.symbol}: walking forward")
    failures: list[TrainkitError] = []
    work = partial(run_fold, force=force, no_fallback=no_fallback)
    for task, value in fan_out(cache, executor, work, pending):
        if isinstance(value, Fold):
            finished(value)
        elif isinstance(value, TrainkitError):
            log.error("%s fold %d (seed %d, %s..%s): %s", plan.symbol, task.window.index, task.seed,
                      task.window.test_start, task.window.test_end,
                      (str(value).splitlines() or [type(value).__name__])[0])
            failures.append(value)
    if failures:
        raise failures[0]
    wf = conclude(cache, plan, [done[(t.window.index, t.seed)] for t in plan.tasks], log_run=log_run)
    if not log_run:
        return wf
    from trainkit.walkforward.evidence import with_evidence

    return with_evidence(cache.store, wf)


def conclude(cache: ModelCache, plan: WalkForwardPlan, folds: list[Fold], *, log_run: bool = True) -> WalkForward:
    """The walk-forward of ``plan`` from its finished ``folds`` (every task's, in task order):
    stitched, and its parent run found or logged (unless ``log_run=False``)."""
    folds = tuple(folds)
    equity, bh, seed_eq, metrics, stitched = aggregate(plan, folds)
    wf = WalkForward(plan=plan, folds=folds, equity=equity, buy_and_hold=bh, seed_equity=seed_eq, metrics=metrics,
                     key=walkforward_key(plan, folds))
    if not log_run:
        return wf
    from trainkit.store.evaluations import find_walkforward
    from trainkit.walkforward.report import log_parent_run

    from trainkit.store.contract import WALKFORWARD_EXPERIMENT

    existing = find_walkforward(cache.store, wf.key)
    if existing is not None:
        wf = dataclasses.replace(wf, run_id=existing, run_existed=True)
    else:  # the parent run, its fold runs and the models' out-of-sample metrics: writes, asked for first
        cache.store.conn.require("EDIT", [cache.experiment_name, WALKFORWARD_EXPERIMENT], f"{plan.symbol}: walking forward")
        wf = dataclasses.replace(wf, run_id=log_parent_run(cache.store, wf, stitched))
    # where the UI finds the run (the experiment was just used: its id is known, no request)
    return dataclasses.replace(wf, experiment_id=cache.store.conn.experiment_id_if_exists(WALKFORWARD_EXPERIMENT))


def dry_run(cache: ModelCache | None, plan: WalkForwardPlan) -> list[dict[str, Any]]:
    """What a walk-forward would do (``--dry-run``): per (fold, seed) its windows, config hash,
    whether its model is cached (URI) and whether its backtest is. Reads only; writes nothing.
    ``cache=None``: there is no store (nothing is cached)."""
    from trainkit.backtest import cached_backtest

    rows = []
    for t in plan.tasks:
        rec = cache.lookup(t.config) if cache is not None else None
        bt = None
        if rec is not None and rec.model_id:
            bt = cached_backtest(cache.store, model_uri=rec.model_uri, model_id=rec.model_id, config=t.config,
                                 start=t.window.test_start, end=t.window.test_end)
        rows.append({
            "fold": t.window.index, "seed": t.seed,
            "train_start": t.window.train_start, "train_end": t.window.train_end,
            "test_start": t.window.test_start, "test_end": t.window.test_end,
            "train_days": t.window.train_days, "test_days": t.window.test_days,
            "config_hash": t.config.config_hash, "cached": rec is not None,
            "model_uri": rec.model_uri if rec else None, "status": rec.status if rec else None,
            "backtest_cached": bt is not None, "backtest_run_id": bt.run_id if bt else None,
        })
    return rows
