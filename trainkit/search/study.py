"""What a study is, and how it asks: Optuna's samplers and pruners over the trials in the store.

**Identity.** A study belongs to one symbol, one walk-forward window, one set of train options
(everything but the searched hyperparameters), one search space and one objective
(:func:`identity`). A second command naming the same study with any of them different is refused
(exit 2) before it writes: Optuna would mix them silently.

**Deterministic asks.** The study lives in the tracking store (:mod:`trainkit.store.studies`);
for each ask it is rebuilt in memory from the trials numbered below the one being asked, and the
sampler is seeded from (``--sampler-seed``, trial number, attempt) (:func:`ask_seed`). So a fresh
study with the same options asks for the same configs (and finds them cached), and a resumed
study asks exactly what an uninterrupted one would: Optuna's seeded samplers restart their random
sequence in every new process and would re-ask what the study holds (optuna #2021). Trials still
running elsewhere are in the rebuilt study as RUNNING, so the TPE sampler's constant liar makes
parallel asks differ. A fresh study's first trial is the default config (``enqueue_trial``,
with the defaults that lie inside the space).

**Pruning** (``--pruner median``): Optuna's ``MedianPruner`` over the running out-of-sample
value of the earlier trials at the same fold.

Optuna is imported here and in :mod:`trainkit.search.loop` only, when a study runs.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError
from trainkit.walkforward.stitch import METRIC_DIRECTIONS

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.search.space import SearchSpace
    from trainkit.store.studies import TrialRecord
    from trainkit.walkforward import WalkForwardPlan

__all__ = ["OBJECTIVES", "PRUNERS", "STARTUP_TRIALS", "StudySpec", "ask_config", "ask_seed", "check_objective",
           "check_options", "check_study_name", "config_key",
           "default_study_name", "differences", "identity", "make_spec", "rebuild", "sample", "should_prune"]

#: what ``--objective`` may name: a walk-forward metric and whether higher is better — the backtest
#: metrics that judge a model (``METRIC_DIRECTIONS``, but turnover: a search would find the agent
#: that never trades) and the fold and seed statistics.
OBJECTIVES: Mapping[str, str] = {
    **{k: v for k, v in METRIC_DIRECTIONS.items() if k != "turnover"},
    "fold_sharpe_mean": "maximize", "fold_sharpe_median": "maximize", "fold_sharpe_min": "maximize",
    "folds_beating_buy_and_hold": "maximize", "seed_sharpe_mean": "maximize", "seed_sharpe_min": "maximize",
    "seed_sharpe_std": "minimize",
}

#: ``--pruner`` choices
PRUNERS: tuple[str, ...] = ("none", "median")

#: trials the TPE sampler draws at random before it models the results: their asks do not
#: depend on any trial's value (what ``--dry-run`` can promise exactly)
STARTUP_TRIALS = 10

#: asks of one trial number before a duplicate of an earlier trial is accepted as it is
_DUPLICATE_ASKS = 8
#: asks of one trial number whose configs trainkit rejects before the space is given up on
_REJECTED_ASKS = 50

#: a median pruner prunes from the fourth trial on, never on a trial's first fold
_PRUNE_AFTER_TRIALS, _PRUNE_WARMUP_FOLDS = 3, 1


def check_objective(name: Any) -> str:
    """An objective of :data:`OBJECTIVES`, or :class:`ConfigError` listing them."""
    text = str(name or "").strip().lower()
    if text not in OBJECTIVES:
        raise ConfigError(f"objective {name!r} is not a walk-forward metric a search can use: "
                          f"choose one of {', '.join(OBJECTIVES)}")
    return text


@dataclass(frozen=True)
class StudySpec:
    """One study of one symbol: its name, what it is (``identity``), the space, the objective
    and how it samples and prunes."""

    name: str
    symbol: str
    space: SearchSpace
    objective: str = "sharpe"
    sampler_seed: int = 0
    pruner: str = "none"
    identity: Mapping[str, Any] = None  # type: ignore[assignment]

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    #: the selection window (:func:`trainkit.walkforward.evidence.window_key`): the configs tried
    #: on the same out-of-sample days of the same prices share it, whichever study tried them
    window_key: str = ""


def _window(plan: WalkForwardPlan) -> dict[str, Any]:
    return {"start": plan.start, "end": plan.end, "train_window": str(plan.train_window),
            "test_window": str(plan.test_window), "step": str(plan.step), "mode": plan.mode,
            "embargo": str(plan.embargo), "seeds": list(plan.seeds)}


def _options(plan: WalkForwardPlan, space: SearchSpace) -> dict[str, Any]:
    """The train options every trial shares: the plan's, without the searched hyperparameters."""
    opts = plan.options()
    opts["hyperparams"] = {k: v for k, v in opts.get("hyperparams", {}).items() if k not in space.names()}
    return opts


def identity(plan: WalkForwardPlan, space: SearchSpace, objective: str) -> dict[str, Any]:
    """What a study is a study of (stored on the study run, compared by every later command)."""
    return {"symbol": plan.symbol, "window": _window(plan), "options": _options(plan, space),
            "space": json.loads(space.canonical()), "objective": objective}


def differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The parts of a study's identity that differ (``symbol``, ``window``, ``options``, ``space``, ``objective``)."""
    return [k for k in ("symbol", "window", "options", "space", "objective")
            if json.dumps(stored.get(k), sort_keys=True, default=str) != json.dumps(wanted.get(k), sort_keys=True, default=str)]


def config_key(plan: WalkForwardPlan) -> str:
    """sha256 of a trial's config (train options and seeds): equal keys, equal walk-forwards —
    the rule honest selection counts configs by (:func:`trainkit.walkforward.evidence.config_key`)."""
    from trainkit.walkforward.evidence import config_key as selection_config_key

    return selection_config_key(plan.params())


def default_study_name(plan: WalkForwardPlan) -> str:
    """``<SYMBOL>-<algo>-<train window>-<test window>``, e.g. ``AAPL-ppo-3y-6m``."""
    return f"{plan.symbol}-{plan.base.algo}-{plan.train_window}-{plan.test_window}"


def ask_seed(seed: int, number: int, attempt: int = 0) -> int:
    """The sampler's seed for trial ``number`` (and a re-ask ``attempt`` after a duplicate or a
    config trainkit rejects): a function of the study's seed and the number alone."""
    digest = hashlib.sha256(f"trainkit-tune:{seed}:{number}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _quiet() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def rebuild(spec: StudySpec, trials: Sequence[TrialRecord], *, seed: int = 0, below: int | None = None) -> Any:
    """An Optuna study in memory holding ``trials`` (those numbered below ``below``): complete
    ones with their value, pruned ones with their running values, running ones as RUNNING (the
    constant liar's input). Failed ones are left out: they will be asked again in place."""
    optuna = _quiet()
    from optuna.trial import TrialState, create_trial

    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=STARTUP_TRIALS)
    study = optuna.create_study(direction=spec.direction, sampler=sampler)
    dists = spec.space.distributions()
    dims = {d.name: d for d in spec.space.dimensions}
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "running": TrialState.RUNNING}
    for t in trials:
        if (below is not None and t.number >= below) or t.state not in states:
            continue
        if set(t.params) != set(dims) or not all(dims[k].contains(dims[k].decode(v)) for k, v in t.params.items()):
            continue  # not a point of this space (cannot happen for a study whose identity matched)
        study.add_trial(create_trial(
            state=states[t.state], value=t.value if t.state == "complete" else None, params=dict(t.params),
            distributions=dists, intermediate_values=dict(t.running)))
    return study


def sample(spec: StudySpec, trials: Sequence[TrialRecord], number: int, attempt: int,
           defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values trial ``number`` asks for (``attempt`` > 0: asked again because the earlier
    answer was a duplicate or a config trainkit rejects). ``defaults``: the first trial of a
    fresh study (as sampler values)."""
    study = rebuild(spec, trials, seed=ask_seed(spec.sampler_seed, number, attempt), below=number)
    if defaults:
        study.enqueue_trial(dict(defaults))
    return dict(study.ask(fixed_distributions=spec.space.distributions()).params)


def should_prune(spec: StudySpec, trials: Sequence[TrialRecord], number: int, params: Mapping[str, Any],
                 running: Mapping[int, float], fold: int) -> bool:
    """Would a median pruner stop trial ``number`` after ``fold``, given the earlier trials'
    running values at the same fold?"""
    if spec.pruner != "median":
        return False
    optuna = _quiet()
    from optuna.trial import TrialState, create_trial

    study = rebuild(spec, [t for t in trials if t.number != number and t.state != "running"])
    study.add_trial(create_trial(state=TrialState.RUNNING, params=dict(params), distributions=spec.space.distributions(),
                                 intermediate_values=dict(running)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=_PRUNE_AFTER_TRIALS, n_warmup_steps=_PRUNE_WARMUP_FOLDS)
    frozen = study.get_trials(deepcopy=False)[-1]
    return bool(pruner.prune(study, frozen))


def make_spec(plan: WalkForwardPlan, space: SearchSpace, objective: str = "sharpe", name: str | None = None, *,
              sampler_seed: int = 0, pruner: str = "none") -> StudySpec:
    """The study of ``plan``'s symbol and window over ``space``: named ``name`` (default
    :func:`default_study_name`), its identity computed here. Checks its arguments (exit 2)."""
    objective = check_options(objective=objective, pruner=pruner, sampler_seed=sampler_seed, name=name)
    if space.algo != plan.base.algo:
        raise ConfigError(f"the search space is for {space.algo}, but the study trains {plan.base.algo}")
    if objective.startswith("seed_") and len(plan.seeds) < 2:
        raise ConfigError(f"objective {objective} compares seeds: give at least two (--seeds 0 1 2)")
    study = check_study_name(name or default_study_name(plan))
    from trainkit.walkforward.evidence import window_key

    return StudySpec(name=study, symbol=plan.symbol, space=space, objective=objective, sampler_seed=sampler_seed,
                     pruner=pruner, identity=identity(plan, space, objective),
                     window_key=window_key(plan.params(), plan.data_source_effective))


def check_study_name(name: Any) -> str:
    """A study name trainkit can store and look up, or :class:`ConfigError`."""
    from trainkit.store.contract import quote

    text = str(name or "").strip()
    if not text or len(text) > 200:
        raise ConfigError(f"study name {name!r} must have 1 to 200 characters")
    try:
        quote(text)
    except ConfigError:
        raise ConfigError(f"study name {name!r} cannot contain a quote ('), a backslash or a newline") from None
    return text


def check_options(*, objective: Any = "sharpe", pruner: Any = "none", sampler_seed: Any = 0, name: Any = None,
                  trials: Any = 1) -> str:
    """Every option of a search that can be checked without I/O (exit 2 before prices are
    fetched or the store is read); returns the objective's canonical name."""
    objective = check_objective(objective)
    if pruner not in PRUNERS:
        raise ConfigError(f"pruner {pruner!r} is unknown: choose one of {', '.join(PRUNERS)}")
    if isinstance(sampler_seed, bool) or not isinstance(sampler_seed, int) or not 0 <= sampler_seed < 2**31:
        raise ConfigError(f"sampler seed {sampler_seed!r} must be an integer in 0..2147483647")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials {trials!r}: a study needs at least one trial")
    if name is not None:
        check_study_name(name)
    return objective


def ask_config(spec: StudySpec, plan: WalkForwardPlan, trials: Sequence[TrialRecord],
         number: int) -> tuple[dict[str, Any], WalkForwardPlan]:
    """The values of a new trial ``number`` and its walk-forward plan: re-asked (with the
    attempt in the seed) while the answer duplicates an earlier trial or trainkit rejects it."""
    from trainkit.walkforward.plan import with_hyperparams

    space = spec.space
    defaults = None
    if number == 0:  # the request's own config, as far as it lies inside the space
        inside = {d.name for d in space.dimensions if d.contains(plan.base.hyperparams[d.name])}
        defaults = {k: v for k, v in space.from_hyperparams(plan.base.hyperparams).items() if k in inside}
    seen = {json.dumps(dict(t.params), sort_keys=True) for t in trials}
    last: ConfigError | None = None
    rejected = 0
    for attempt in range(_DUPLICATE_ASKS + _REJECTED_ASKS):
        params = sample(spec, trials, number, attempt, defaults if attempt == 0 else None)
        try:
            trial_plan = with_hyperparams(plan, space.to_hyperparams(params))
        except ConfigError as exc:  # never trained, never listed, never counted
            last, rejected = exc, rejected + 1
            if rejected >= _REJECTED_ASKS:
                break
            continue
        if json.dumps(params, sort_keys=True) in seen and attempt - rejected < _DUPLICATE_ASKS - 1:
            continue
        return params, trial_plan
    raise ConfigError(f"the search space gives no config trainkit can train in {_REJECTED_ASKS} samples "
                      f"(the last: {last}): narrow the space")
