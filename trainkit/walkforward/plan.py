"""The plan of a walk-forward: what it will do, before it does anything.

:func:`plan_walk_forward` checks the request (exit 2 before any I/O), fetches the prices once
for their trading calendar, anchors the folds (:mod:`trainkit.walkforward.windows`) and resolves
one :class:`~trainkit.config.TrainConfig` per (fold, seed): the tasks an executor runs.

When the data start later than ``start`` (a CSV, a young stock), the anchor moves to the first
day on which every feature is warm (``WARMUP_BARS`` trading days into the data), and the plan
says so. Start not before end, an end in the future, bad seeds and zero folds are
:class:`~trainkit.errors.ConfigError` (exit 2) before anything is trained.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from dataclasses import dataclass
from typing import Any

from trainkit.config import TrainConfig, parse_date, validate_symbol
from trainkit.errors import ConfigError
from trainkit.walkforward.windows import MODES, Calendar, FoldWindow, Window, fold_windows, parse_window

log = logging.getLogger("trainkit")

__all__ = ["FoldTask", "WalkForwardPlan", "first_folds", "plan_walk_forward", "with_hyperparams"]


@dataclass(frozen=True)
class FoldTask:
    """One unit of work (picklable: it crosses process boundaries): a fold's windows, a seed
    and the resolved config of its model."""

    window: FoldWindow
    seed: int
    config: TrainConfig


@dataclass(frozen=True)
class WalkForwardPlan:
    """What a walk-forward will do, before it does anything: its folds, each fold's config (and
    hash) per seed, the anchor and what the plan had to say (``warnings``)."""

    symbol: str
    start: str
    end: str
    anchor: str
    train_window: Window
    test_window: Window
    step: Window
    mode: str
    embargo: Window
    seeds: tuple[int, ...]
    base: TrainConfig  # the train options (its own window and seed mean nothing)
    windows: tuple[FoldWindow, ...]
    tasks: tuple[FoldTask, ...]
    data_source_effective: str
    warnings: tuple[str, ...] = ()

    def params(self) -> dict[str, str]:
        """The parent run's params: the walk-forward's own, then the train options."""
        from trainkit.store.contract import WALKFORWARD_PARAMS

        own = dict(zip(WALKFORWARD_PARAMS, (
            self.symbol, self.start, self.end, self.anchor, str(self.train_window), str(self.test_window),
            str(self.step), self.mode, str(self.embargo), ",".join(map(str, self.seeds)), str(len(self.windows)),
        ), strict=True))
        options = {k: v for k, v in self.base.to_params().items() if k not in ("symbol", "train_start", "train_end", "seed")}
        return {**own, **options}

    def options(self) -> dict[str, Any]:
        """The train options as a JSON-ready dict (what every fold's config shares)."""
        d = self.base.to_dict()
        for k in ("symbol", "train_start", "train_end", "seed"):
            d.pop(k, None)
        return d


def _seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (int, str)) and not isinstance(seeds, bool):
        seeds = [seeds]
    out: list[int] = []
    for s in seeds or ():
        try:
            if isinstance(s, bool):
                raise TypeError
            v = int(s)
        except (TypeError, ValueError):
            raise ConfigError(f"seed {s!r} is not an integer: use e.g. seeds 0 1 2") from None
        if not 0 <= v < 2**31:
            raise ConfigError(f"seed {v} is out of range: use 0..2147483647")
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError("give at least one seed, e.g. seeds 0 1 2")
    return tuple(out)


def _check_request(symbol: Any, start: Any, end: Any, train_window: Any, test_window: Any, step: Any, mode: Any,
                   embargo: Any, seeds: Any) -> tuple[str, _dt.date, _dt.date, Window, Window, Window, str, Window, tuple[int, ...]]:
    """Everything that can be checked without I/O (exit 2)."""
    sym = validate_symbol(symbol)
    s, e = parse_date(start, "start"), parse_date(end, "end")
    if s >= e:
        raise ConfigError(f"start {s} must be before end {e}")
    today = _dt.date.today()
    if e > today:
        raise ConfigError(f"end {e} is in the future: use a date up to today ({today})")
    train = parse_window(train_window, "train window")
    test = parse_window(test_window, "test window")
    stp = test if step in (None, "") else parse_window(step, "step")
    emb = parse_window(embargo if embargo not in (None, "") else "0d", "embargo", allow_zero=True)
    m = str(mode).strip().lower()
    if m not in MODES:
        raise ConfigError(f"mode {mode!r} is unknown: use sliding or expanding")
    return sym, s, e, train, test, stp, m, emb, _seeds(seeds)


def plan_walk_forward(symbol: str, start: Any, end: Any, train_window: Any = "3y", test_window: Any = "6m",
                      step: Any = None, mode: str = "sliding", embargo: Any = "0d", seeds: Any = (0,), *,
                      no_fallback: bool = False, **options: Any) -> WalkForwardPlan:
    """The folds of a walk-forward and the config of every (fold, seed) — fetches the prices
    (for the trading calendar) and trains nothing. ``options``: the train options of
    ``TrainingManager.get_model`` (``timesteps``, ``algo``, ``feature_count``, ``data_source``,
    hyperparameters, ``cost_bps``…), not the window or ``seed``. :class:`ConfigError` (exit 2)
    for anything a user must change."""
    if "seed" in options:
        raise ConfigError("a walk-forward takes seeds=(…) (--seeds), not seed")
    for k in ("train_start", "train_end", "force", "progress", "project_run_id", "on_wait"):
        if k in options:
            raise ConfigError(f"{k} is not an option of a walk-forward")
    sym, s, e, train, test, stp, m, emb, seed_list = _check_request(symbol, start, end, train_window, test_window,
                                                                     step, mode, embargo, seeds)
    # the train options are validated (and a CSV hashed) before any price is fetched
    base = TrainConfig.create(sym, "2000-01-03", "2000-12-29", seed=seed_list[0], **options)

    from trainkit.data import DataFetcherFactory
    from trainkit.features import WARMUP_BARS, warmup_start

    fetch = DataFetcherFactory.fetch(base.data_source, sym, warmup_start(s), e, data_seed=base.data_seed,
                                     no_fallback=no_fallback, csv_sha256=base.csv_sha256)
    warnings: list[str] = []
    if fetch.fallback_reason:
        warnings.append(f"{fetch.requested_source} failed ({fetch.fallback_reason}): the folds are planned on "
                        "SYNTHETIC data and will train on it")
    cal = Calendar(ts.date() for ts in fetch.frame.index)
    anchor = s
    if cal.index(s) < WARMUP_BARS:  # the data begin too late to warm the features up before start
        if len(cal.days) <= WARMUP_BARS:
            raise ConfigError(f"the prices of {sym} cover only {len(cal.days)} trading days up to {e} "
                              f"({cal.first}..{cal.last}): the features alone need {WARMUP_BARS} days of warm-up")
        anchor = cal.days[WARMUP_BARS]
        warnings.append(f"the prices of {sym} begin on {cal.first}: after the features' warm-up of {WARMUP_BARS} "
                        f"trading days the folds are anchored at {anchor}, not at {s}")
    windows, tail = fold_windows(cal, anchor, e, train, test, stp, emb, m)
    if not windows:
        t0 = cal.advance(anchor, train + emb)
        why = tail or f"it would start on {t0}, after the last day with prices ({min(e, cal.last)})"
        raise ConfigError(
            f"no fold fits in {anchor}..{e}: the first test window needs the train window {train} and the embargo "
            f"{emb} before it, and {why}; use an earlier --start, a later --end or shorter windows")
    if tail:
        warnings.append(tail)
    tasks = []
    for w in windows:
        for seed in seed_list:
            try:
                cfg = dataclasses.replace(base, train_start=w.train_start, train_end=w.train_end, seed=seed)
            except ConfigError as exc:
                raise ConfigError(f"fold {w.index} ({w.train_start}..{w.train_end}): {exc}") from None
            tasks.append(FoldTask(w, seed, cfg))
    for msg in warnings:
        log.warning("%s: %s", sym, msg)
    return WalkForwardPlan(
        symbol=sym, start=s.isoformat(), end=e.isoformat(), anchor=anchor.isoformat(), train_window=train,
        test_window=test, step=stp, mode=m, embargo=emb, seeds=seed_list, base=base, windows=tuple(windows),
        tasks=tuple(tasks), data_source_effective=fetch.effective_source, warnings=tuple(warnings),
    )



def with_hyperparams(plan: WalkForwardPlan, hyperparams: dict[str, Any]) -> WalkForwardPlan:
    """``plan`` with other hyperparameters (a search's trial): the same folds and prices, every
    task's config remade through :meth:`TrainConfig.create` (so coerced and validated the one
    way). Fetches nothing; :class:`ConfigError` when the config cannot train."""
    opts = plan.base.to_dict()
    for k in ("symbol", "train_start", "train_end", "csv_sha256", "schema_version"):
        opts.pop(k, None)
    opts["hyperparams"] = {**dict(plan.base.hyperparams), **hyperparams}
    base = TrainConfig.create(plan.symbol, plan.base.train_start, plan.base.train_end, **opts)
    tasks = tuple(FoldTask(t.window, t.seed, dataclasses.replace(base, train_start=t.window.train_start,
                                                                 train_end=t.window.train_end, seed=t.seed))
                  for t in plan.tasks)
    return dataclasses.replace(plan, base=base, tasks=tasks)


def first_folds(plan: WalkForwardPlan, n: int) -> WalkForwardPlan:
    """``plan`` cut to its first ``n`` folds (a trial's running out-of-sample value)."""
    windows = plan.windows[:n]
    last = windows[-1].index
    return dataclasses.replace(plan, windows=windows, tasks=tuple(t for t in plan.tasks if t.window.index <= last))
