"""Running a study: claim trials, walk each forward through the model cache, record them.

A trial *is* a walk-forward of cached folds (:mod:`trainkit.walkforward`): a duplicate sample,
a resumed study, a second tuner or a second machine trains nothing that is in the store, and a
config already walked forward by ``trainkit walkforward`` reads its value back.

The loop (``docs/ARCHITECTURE.md``, *The search*):

1. **claim** under the study's lease (:meth:`StudyStore.claiming`): read the trials; if the
   complete and pruned ones plus those running elsewhere reach ``--trials``, stop (or wait
   for the others, when some are still running); else take up to ``parallel`` trials —
   failed or interrupted ones first, in place, then new numbers, each asked of the sampler
   (:func:`trainkit.search.study.sample`). A sample trainkit's config rejects is asked
   again and never becomes a trial;
2. **run** the claimed trials' folds together through one fan-out
   (:func:`trainkit.fanout.fan_out`, the executors that train models), or, with a pruner,
   fold by fold so a trial below the median of earlier trials at the same fold stops there
   (its finished folds stay cached);
3. **record** each trial (value, running values, the walk-forward run), then claim again.

Ctrl-C marks the trials in flight failed (their runs KILLED, heartbeats stopped) and goes on
as an interrupt (exit 130); the training leases are released where they were held. A rerun
takes those trials up again and trains only what was not finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError, TrainkitError
from trainkit.search.result import Trial, TuneResult
from trainkit.config import hyperparam_params
from trainkit.search.study import (
    STARTUP_TRIALS,
    StudySpec,
    ask_config,
    check_options,
    config_key,
    differences,
    should_prune,
)

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.cache import ModelCache
    from trainkit.executors import Executor
    from trainkit.store.studies import StudyRecord, StudyStore, TrialRecord, TrialRun
    from trainkit.walkforward import Fold, FoldTask, WalkForwardPlan

log = logging.getLogger("trainkit")

__all__ = ["check_study", "preview", "remaining", "tune"]

def check_study(cache: ModelCache | None, spec: StudySpec) -> StudyRecord | None:
    """The stored study named ``spec.name``, or ``None``; :class:`ConfigError` (exit 2) when it
    is a study of something else (another symbol, window, train options, space or objective).
    Reads only."""
    if cache is None:
        return None
    from trainkit.store.studies import StudyStore

    found = StudyStore(cache.store).find(spec.name)
    if found is not None:
        _same_study(spec, found)
    return found


def remaining(cache: ModelCache | None, spec: StudySpec, n_trials: int) -> int:
    """How many trials the study still lacks of ``n_trials`` (counting what runs elsewhere as
    done). Reads only; ``cache=None``: there is no store."""
    from trainkit.store.studies import StudyStore

    found = check_study(cache, spec)
    if cache is None or found is None:
        return n_trials
    trials = StudyStore(cache.store).trials(found)
    return max(0, n_trials - sum(t.counts or t.state == "running" for t in trials))


def _same_study(spec: StudySpec, found: StudyRecord) -> None:
    diff = differences(found.identity, spec.identity)
    if diff:
        raise ConfigError(f"study {spec.name!r} exists with another {', '.join(diff)}: name a new study with --study, "
                          "or run it with its own options")


@dataclass
class _Live:
    """A trial in flight in this process."""

    run: TrialRun
    plan: WalkForwardPlan
    folds: dict[tuple[int, int], Fold] = field(default_factory=dict)
    trained: int = 0
    error: TrainkitError | None = None
    ended: Trial | None = None


def _claim(studies: StudyStore, study: StudyRecord, spec: StudySpec, plan: WalkForwardPlan, total: int,
           parallel: int) -> list[_Live] | None:
    """Up to ``parallel`` trials for this process (``[]``: others are running the rest; wait),
    or ``None`` when the study holds its total."""
    if sum(t.counts for t in studies.trials(study)) >= total:
        return None  # the study holds its total: nothing to claim, so no lease is taken (a rerun writes nothing)
    with studies.claiming(study):
        trials = studies.trials(study)
        done = sum(t.counts for t in trials)
        elsewhere = sum(t.state == "running" for t in trials)
        room = total - done - elsewhere
        if room <= 0:
            return [] if elsewhere and done < total else None
        out: list[_Live] = []
        try:
            for rec, trial_plan, again in _next_trials(spec, plan, trials, min(parallel, room)):
                run = studies.restart_trial(study, rec) if again else studies.start_trial(
                    study, rec.number, rec.params, config_key=config_key(trial_plan), window_key=spec.window_key,
                    hp_params=hyperparam_params(spec.space.to_hyperparams(rec.params)))
                out.append(_Live(run, trial_plan))
        except BaseException as exc:  # an interrupt or a bad space half-way: no trial is left running
            for lv in out:
                lv.run.fail(_why(exc), interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        return out


def _next_trials(spec: StudySpec, plan: WalkForwardPlan, trials: Sequence[TrialRecord],
                 room: int) -> list[tuple[TrialRecord, WalkForwardPlan, bool]]:
    """The next ``room`` trials and their plans: failed ones again, in place (``True``), then new
    asks, each seeing the ones before it as running (the constant liar's input). The one rule
    of what comes next, for a run and for ``--dry-run`` alike."""
    from trainkit.store.studies import TrialRecord
    from trainkit.walkforward.plan import with_hyperparams

    out = [(TrialRecord(t.run_id, t.number, "running", t.params, running=t.running, config_key=t.config_key),
            with_hyperparams(plan, spec.space.to_hyperparams(t.params)), True)
           for t in [t for t in trials if t.state == "fail"][:room]]
    number = max((t.number for t in trials), default=-1) + 1
    while len(out) < room:
        params, trial_plan = ask_config(spec, plan, [*trials, *(o[0] for o in out)], number)
        out.append((TrialRecord("", number, "running", params), trial_plan, False))
        number += 1
    return out


def _why(exc: BaseException) -> str:
    return "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"


def _wait_for_others(studies: StudyStore, study: StudyRecord, total: int) -> None:
    """Others are running the rest of the total: poll (without the lease, so a long wait leaves
    no trace in the store) until one of their trials ends or the total is reached."""
    running = {t.number for t in studies.trials(study) if t.state == "running"}
    while True:
        time.sleep(2.0)
        trials = studies.trials(study)
        if sum(t.counts for t in trials) >= total or {t.number for t in trials if t.state == "running"} != running:
            return


def _fold_key(task: FoldTask) -> tuple[str, str, str]:
    return task.config.config_hash, task.window.test_start, task.window.test_end


def _complete(lv: _Live) -> bool:
    return lv.error is None and all((t.window.index, t.seed) in lv.folds for t in lv.plan.tasks)


def _run_folds(cache: ModelCache, executor: Executor | None, lives: Sequence[_Live], fold: int | None,
               on_complete: Callable[[_Live], Any] | None = None) -> None:
    """Every missing fold (``fold``: only that one) of the trials ``lives``: cached ones answered
    here, the rest through one fan-out, a fold shared by two trials run once. ``on_complete``:
    called for a trial as soon as its last fold streams in, while the workers go on with the
    others' folds (so recording a trial costs them no idle time)."""
    from functools import partial

    from trainkit.fanout import fan_out
    from trainkit.walkforward import run_fold

    owners: dict[tuple[str, str, str], list[tuple[_Live, FoldTask]]] = {}
    for lv in lives:
        for task in lv.plan.tasks:
            if (fold is None or task.window.index == fold) and (task.window.index, task.seed) not in lv.folds:
                owners.setdefault(_fold_key(task), []).append((lv, task))
    pending = []
    for key, users in owners.items():
        hit = run_fold(cache, users[0][1], cached_only=True)
        if hit is None:
            pending.append(users[0][1])
        for lv, task in users:
            if hit is not None:
                lv.folds[(task.window.index, task.seed)] = hit
    for task, value in fan_out(cache, executor, partial(run_fold), pending):
        for i, (lv, t) in enumerate(owners[_fold_key(task)]):
            if isinstance(value, TrainkitError):
                lv.error = lv.error or value
                continue
            lv.folds[(t.window.index, t.seed)] = value
            if i == 0 and value.status != "cached":
                lv.trained += 1
            if on_complete is not None and lv.ended is None and _complete(lv):
                on_complete(lv)


def _running(spec: StudySpec, lv: _Live, upto: int) -> float:
    """The trial's out-of-sample objective over folds ``0..upto``, stitched."""
    from trainkit.walkforward.plan import first_folds
    from trainkit.walkforward.stitch import aggregate

    cut = first_folds(lv.plan, upto + 1)
    folds = [lv.folds[(t.window.index, t.seed)] for t in cut.tasks]
    return float(aggregate(cut, folds)[3][spec.objective])


def _trial(spec: StudySpec, rec: TrialRecord | Any, lv: _Live | None = None, seeds: int = 1) -> Trial:
    """A trial as returned: with what this command trained and read (``lv``), or as stored (every
    model it has is in the store: a complete trial's folds, a pruned one's up to its stop)."""
    if lv is not None:
        trained, cached = lv.trained, len(lv.folds) - lv.trained
    else:
        trained, cached = 0, (len(rec.running) * seeds if rec.state in ("complete", "pruned") else 0)
    return Trial(number=rec.number, state=rec.state, params=dict(rec.params),
                 hyperparams=spec.space.to_hyperparams(rec.params) if rec.params else {}, value=rec.value,
                 walkforward_run_id=rec.walkforward_run_id, trained=trained, run_id=rec.run_id, cached=cached)


def _end(cache: ModelCache, spec: StudySpec, lv: _Live) -> Trial:
    """Record a trial whose folds all ran (or one failed)."""
    from trainkit.walkforward import conclude

    if lv.error is not None:
        why = str(lv.error).splitlines()[0] if str(lv.error) else type(lv.error).__name__
        log.error("%s trial %d failed: %s", spec.symbol, lv.run.number, why)
        lv.run.fail(why)
        rec = lv.run.record
        return Trial(rec.number, "fail", dict(rec.params), spec.space.to_hyperparams(rec.params), trained=lv.trained,
                     run_id=rec.run_id)
    folds = [lv.folds[(t.window.index, t.seed)] for t in lv.plan.tasks]
    for k in range(len(lv.plan.windows)):
        if k not in lv.run.running:
            lv.run.running[k] = _running(spec, lv, k)
    wf = conclude(cache, lv.plan, folds)
    value = float(wf.metrics[spec.objective])
    rec = lv.run.finish("complete", value=value, walkforward_run_id=wf.run_id, trained=lv.trained,
                        metrics={k: float(v) for k, v in wf.metrics.items()})
    return _trial(spec, rec, lv)


def _run_batch(cache: ModelCache, executor: Executor | None, studies: StudyStore, study: StudyRecord,
               spec: StudySpec, lives: list[_Live], on_trial: Callable[[Trial], Any] | None) -> None:
    if spec.pruner == "none":
        def end(lv: _Live) -> None:
            lv.ended = _end(cache, spec, lv)

        _run_folds(cache, executor, lives, None, on_complete=end)
    else:
        n_folds = max(len(lv.plan.windows) for lv in lives)
        for k in range(n_folds):
            active = [lv for lv in lives if lv.ended is None and lv.error is None]
            _run_folds(cache, executor, active, k)
            others = studies.trials(study) if active else []
            for lv in active:
                if lv.error is not None or k == len(lv.plan.windows) - 1:
                    continue
                value = _running(spec, lv, k)
                lv.run.report(k, value)
                if should_prune(spec, others, lv.run.number, lv.run.record.params, lv.run.running, k):
                    rec = lv.run.finish("pruned", value=None, walkforward_run_id=None, trained=lv.trained)
                    lv.ended = _trial(spec, rec, lv)
                    log.info("%s trial %d pruned after fold %d (%s %.3f)", spec.symbol, rec.number, k, spec.objective, value)
    for lv in lives:
        if lv.ended is None:
            lv.ended = _end(cache, spec, lv)
        if on_trial is not None:
            on_trial(lv.ended)


def tune(cache: ModelCache, plan: WalkForwardPlan, spec: StudySpec, n_trials: int, executor: Executor | None = None,
         *, parallel: int | None = None, on_trial: Callable[[Trial], Any] | None = None) -> TuneResult:
    """Run study ``spec`` on ``plan`` (the walk-forward every trial shares; its hyperparameters
    are the first trial's) until it holds ``n_trials`` complete or pruned trials, ``parallel``
    trials at a time (default: the executor's workers). Returns every trial of the study and
    the models this call trained. :class:`ConfigError` (exit 2) before anything is written when
    the study exists as a study of something else."""
    from trainkit.store.studies import StudyStore

    check_options(objective=spec.objective, pruner=spec.pruner, sampler_seed=spec.sampler_seed, trials=n_trials)
    check_study(cache, spec)
    studies = StudyStore(cache.store)
    study = studies.open(spec.name, spec.identity, params=_study_params(plan, spec), tags=_study_tags(plan, spec))
    _same_study(spec, study)  # another command created it a moment ago, as a study of something else
    width = max(1, parallel or getattr(executor, "workers", 1) or 1)
    mine: dict[int, Trial] = {}
    lives: list[_Live] = []
    failure: TrainkitError | None = None
    try:
        while failure is None:
            lives = _claim(studies, study, spec, plan, n_trials, width)  # type: ignore[assignment]
            if lives is None:
                break
            if not lives:
                _wait_for_others(studies, study, n_trials)
                continue
            _run_batch(cache, executor, studies, study, spec, lives, on_trial)
            for lv in lives:
                mine[lv.ended.number] = lv.ended  # type: ignore[union-attr]
                failure = failure or lv.error  # no new trial after a failure: a rerun takes it up
            lives = []
    except BaseException as exc:
        for lv in lives or ():
            if lv.ended is None:
                lv.run.fail(_why(exc), interrupted=isinstance(exc, KeyboardInterrupt))
        raise
    result = _result(cache, studies, study, spec, mine)
    if failure is not None:
        raise failure  # once what finished is recorded, as a walk-forward raises its first failed fold
    return result


def _study_params(plan: WalkForwardPlan, spec: StudySpec) -> dict[str, str]:
    ident = spec.identity
    return {"symbol": plan.symbol, "objective": spec.objective, "direction": spec.direction,
            **{k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in ident["window"].items()},
            "space": ", ".join(spec.space.names()), "algo": plan.base.algo, "timesteps": str(plan.base.timesteps),
            "data_source": plan.base.data_source}


def _study_tags(plan: WalkForwardPlan, spec: StudySpec) -> dict[str, str]:
    from trainkit.store import contract as C

    return {C.TAG_SYMBOL: plan.symbol, C.TAG_WINDOW_KEY: spec.window_key,
            C.TAG_NOTE: f"Study **{spec.name}**: {spec.objective} ({spec.direction}) of walk-forwards of {plan.symbol} "
                        f"{plan.start}..{plan.end} (train {plan.train_window}, test {plan.test_window}); "
                        f"searched: {', '.join(spec.space.names())}. Each nested run is a trial."}


def _result(cache: ModelCache, studies: StudyStore, study: StudyRecord, spec: StudySpec,
            mine: dict[int, Trial]) -> TuneResult:
    """Every trial of the study (this call's with what it trained), summarised on the study run
    when this call ended any trial."""
    records = studies.trials(study)
    seeds = len(spec.identity["window"]["seeds"])
    trials = tuple(mine.get(r.number) or _trial(spec, r, seeds=seeds) for r in records)
    counted = [r for r in records if r.counts]
    result = TuneResult(symbol=spec.symbol, study=spec.name, study_run_id=study.run_id, objective=spec.objective,
                        direction=spec.direction, trials=trials, trained=sum(t.trained for t in mine.values()),
                        n_configs=len({json.dumps(dict(r.params), sort_keys=True) for r in counted}),
                        space=spec.space.names())
    best = result.best
    if best is not None and best.walkforward_run_id:
        from trainkit.walkforward.evidence import snapshot

        ev = snapshot(cache.store, best.walkforward_run_id)  # also on the best's walk-forward run
        if ev is not None:
            result = dataclasses.replace(result, evidence=ev)
    if mine:
        from trainkit.search.report import summarize

        summarize(studies, study, spec, records, result)
    return result


def preview(cache: ModelCache | None, plan: WalkForwardPlan, spec: StudySpec, n_trials: int) -> dict[str, Any]:
    """What ``tune`` would do next (``--dry-run``): the trials it would run — failed ones taken
    up again, then new asks of an in-memory copy of the study — and what of each is cached.
    Reads only: creates no study, no trial, no run. ``cache=None``: there is no store."""
    from trainkit.store.studies import StudyStore
    from trainkit.walkforward import dry_run

    check_options(objective=spec.objective, pruner=spec.pruner, sampler_seed=spec.sampler_seed, trials=n_trials)
    found = check_study(cache, spec)
    trials = StudyStore(cache.store).trials(found) if (cache is not None and found is not None) else []
    done = sum(t.counts for t in trials)
    room = max(0, n_trials - done - sum(t.state == "running" for t in trials))
    nexts = _next_trials(spec, plan, trials, room)
    rows = []
    for i, (rec, trial_plan, retry) in enumerate(nexts):
        folds = dry_run(cache, trial_plan)
        # past the sampler's random start-up, an ask depends on the values of the trials before it
        exact = retry or i == 0 or rec.number < STARTUP_TRIALS
        rows.append({"number": rec.number, "retry": retry, "params": dict(rec.params), "exact": exact,
                     "folds": len(folds), "models_cached": sum(r["cached"] for r in folds),
                     "backtests_cached": sum(r["backtest_cached"] for r in folds),
                     "would_train": sum(not r["cached"] for r in folds)})
    return {"symbol": spec.symbol, "study": spec.name, "exists": found is not None, "n_trials": done,
            "trials": n_trials, "objective": spec.objective, "space": spec.space.describe(), "next": rows}
