"""Honest selection over the store: how many configs were walked forward on one symbol's window,
and what that does to the best one's Sharpe ratio (docs/ARCHITECTURE.md, *Honest selection*).

* **The window** (:func:`window_key`): symbol, data (source, CSV digest, data seed, and the
  source the prices really came from), start, end, train and test windows, step, mode and
  embargo — read from a walk-forward's params, so walk-forwards logged before this module
  existed are found too. Yahoo's prices carry no digest in a walk-forward's params: two
  walk-forwards of the same symbol and window count as the same data. When Yahoo revised its
  history in between, counting both sets of configs only makes the deflation stricter.
* **A config** (:func:`config_key`): every train option and the seeds — all the params but the
  window's. Two walk-forwards of one config on one window are one trial (the oldest answers,
  unless the one asked about is among them).
* **N** is the raw count of distinct configs on the window, across studies and plain
  walk-forwards. Configs that differ in one hyperparameter are correlated trials; the 2014
  paper suggests clustering them into fewer effective trials. trainkit does not: the raw count
  is an upper bound on the effective number, so the deflated Sharpe it gives is conservative —
  a config it passes would pass with clustering too.
* **The figures**: the chosen walk-forward's deflated Sharpe ratio over the per-period Sharpe
  ratios of every config on the window (:func:`trainkit.selection.deflated_sharpe`), and PBO by
  CSCV over the configs whose stitched out-of-sample days are the chosen one's, when there are
  at least four (:func:`trainkit.selection.pbo_cscv`, 16 blocks, every split).

:func:`evidence_for` reads only; :func:`with_evidence` also logs the figures on the walk-forward's
run as a snapshot, with the N they were computed with as the step (N grows later: ``promote``
always counts again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError, StoreError, TrainkitError
from trainkit.store.contract import TAG_SOURCE_EFFECTIVE, WALKFORWARD_PARAMS

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.selection import PBO, DeflatedSharpe
    from trainkit.store import ModelStore
    from trainkit.store.evaluations import LoggedWalkForward
    from trainkit.walkforward.result import WalkForward

__all__ = ["PBO_BLOCKS", "Evidence", "config_key", "evidence_for", "evidence_of", "finished_walkforward", "snapshot",
           "window_key", "with_evidence"]

log = logging.getLogger("trainkit")

#: the params of a walk-forward's data: a path-based source counts by content (``csv_sha256``)
_DATA_PARAMS = ("data_source", "csv_sha256", "data_seed")
#: the walk-forward's own params that are not a choice among configs (``seeds`` is one)
_NOT_WINDOW = ("seeds", "anchor", "n_folds")
#: which days were walked forward: the walk-forward's own params but the seeds (and what follows)
_WINDOW_PARAMS = tuple(k for k in WALKFORWARD_PARAMS if k not in _NOT_WINDOW)
#: CSCV's block count (the paper's suggestion); fewer when the out-of-sample days are few
PBO_BLOCKS = 16


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _by_content(source: str | None) -> str | None:
    """A source as the cache hashes it: ``csv:/a/b.csv`` counts as ``csv`` (its content is
    ``csv_sha256``), so a moved file or another machine's path is the same data."""
    from trainkit.sources import parse_data_source

    if not source:
        return source
    try:
        return parse_data_source(source)[0]
    except ConfigError:
        return source


def window_key(params: Mapping[str, str], source_effective: str | None) -> str:
    """sha256 of the symbol, data and window of a walk-forward's ``params`` (a plan's
    :meth:`~trainkit.walkforward.plan.WalkForwardPlan.params` or a logged run's) and the source
    its prices came from."""
    doc = {k: params.get(k) for k in (*_WINDOW_PARAMS, *_DATA_PARAMS)}
    doc["data_source"] = _by_content(doc["data_source"])
    return _digest({**doc, "source_effective": _by_content(source_effective)})


def config_key(params: Mapping[str, str]) -> str:
    """sha256 of what was chosen: every param of a walk-forward but its window's (seeds included)."""
    skip = set(_WINDOW_PARAMS) | {"anchor", "n_folds"}
    doc = {k: v for k, v in params.items() if k not in skip}
    if "data_source" in doc:
        doc["data_source"] = _by_content(doc["data_source"])
    return _digest(doc)


@dataclass(frozen=True)
class Evidence:
    """The case for one walk-forward as the choice among every config tried on its window.

    ``sharpe`` is its annualised out-of-sample Sharpe (the walk-forward's metric);
    ``deflated`` the deflated Sharpe ratio with everything it was computed from; ``pbo`` PBO
    over ``pbo_candidates`` configs (``None`` with fewer than four on the same days);
    ``n_configs`` the N deflated for; ``window`` a readable ``SYMBOL START..END``."""

    walkforward_run_id: str
    symbol: str
    window: str
    sharpe: float
    deflated: DeflatedSharpe
    n_configs: int
    pbo: PBO | None
    pbo_candidates: int
    #: the chosen run's metrics when it was read (the latest snapshot logged on it, if any)
    run_metrics: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)
    #: the chosen walk-forward run's experiment (where the UI finds it)
    experiment_id: str = field(default="", compare=False)

    @property
    def deflated_sharpe(self) -> float:
        return self.deflated.value

    @property
    def pbo_value(self) -> float | None:
        return None if self.pbo is None else self.pbo.value

    def to_dict(self) -> dict[str, Any]:
        """The JSON face: the three figures, and what they were computed from."""
        from trainkit.metrics import TRADING_DAYS

        d = self.deflated
        return {"walkforward_run_id": self.walkforward_run_id, "window": self.window, "sharpe": self.sharpe,
                "deflated_sharpe": d.value, "pbo": self.pbo_value, "n_configs": self.n_configs,
                "pbo_candidates": self.pbo_candidates, "sr0_annualized": d.sr0 * math.sqrt(TRADING_DAYS),
                "n_days": d.n_obs, "skew": d.skew, "kurtosis": d.kurtosis, "variance_floor_used": d.variance_floor_used}

    def snapshot(self) -> dict[str, float]:
        """What is logged on MLflow runs (with ``n_configs`` as the step)."""
        out = {"deflated_sharpe": self.deflated_sharpe, "n_configs": float(self.n_configs)}
        if self.pbo is not None:
            out["pbo"] = self.pbo.value
        return out

    def describe(self) -> str:
        """One line: ``deflated Sharpe 0.41 over 57 configs tried on AAPL 2012-01-01..2023-12-31 (PBO 0.48)``."""
        pbo = "" if self.pbo is None else f", PBO {self.pbo.value:.2f} over {self.pbo_candidates}"
        return (f"deflated Sharpe {self.deflated_sharpe:.2f} (Sharpe {self.sharpe:.2f}) over {self.n_configs} "
                f"config{'s' if self.n_configs != 1 else ''} tried on {self.window}{pbo}")


def _window_of(wf: LoggedWalkForward) -> str:
    return window_key(wf.params, wf.tags.get(TAG_SOURCE_EFFECTIVE))


def _representatives(chosen: LoggedWalkForward, runs: Sequence[LoggedWalkForward]) -> list[LoggedWalkForward]:
    """One walk-forward per config on the chosen one's window: the chosen one for its own
    config, else the oldest (``runs`` come oldest first)."""
    key = _window_of(chosen)
    mine = config_key(chosen.params)
    reps: dict[str, LoggedWalkForward] = {mine: chosen}
    for r in runs:
        if _window_of(r) == key:
            reps.setdefault(config_key(r.params), r)
    return [chosen] + [r for k, r in reps.items() if k != mine]


def _n_configs(store: ModelStore, chosen: LoggedWalkForward, reps: Sequence[LoggedWalkForward]) -> int:
    """N: the configs of the walk-forwards on the window, and those of search trials on it that
    were pruned before they logged one."""
    from trainkit.store.studies import StudyStore

    return len({config_key(r.params) for r in reps} | StudyStore(store).configs_tried(_window_of(chosen)))


def _read_returns(store: ModelStore, runs: Sequence[LoggedWalkForward]) -> list[tuple[list[str], list[float]] | None]:
    """Each run's stitched days and returns, read a few at a time (one artifact request each)."""
    from concurrent.futures import ThreadPoolExecutor

    from trainkit.store.evaluations import walkforward_returns

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(runs)))) as pool:
        return list(pool.map(lambda r: walkforward_returns(store, r), runs))


def finished_walkforward(store: ModelStore, run_id: str) -> LoggedWalkForward:
    """The FINISHED walk-forward run ``run_id``, or :class:`ConfigError` saying which ids work."""
    from trainkit.store.evaluations import get_walkforward

    wf = get_walkforward(store, run_id)
    if wf is None:
        raise ConfigError(f"run {run_id} is not a finished walk-forward: give the run id a "
                          "`trainkit walkforward` or `trainkit tune` printed")
    return wf


def evidence_for(store: ModelStore, walkforward_run_id: str) -> Evidence:
    """The evidence for walk-forward ``walkforward_run_id`` as the choice among every config
    walked forward on its window in ``store`` (counted now: N only grows)."""
    return evidence_of(store, finished_walkforward(store, walkforward_run_id))


def evidence_of(store: ModelStore, chosen: LoggedWalkForward) -> Evidence:
    """:func:`evidence_for` of a walk-forward run already read."""
    import numpy as np

    from trainkit.selection import deflated_sharpe, pbo_cscv, sharpe_per_period
    from trainkit.store.evaluations import walkforwards_of

    walkforward_run_id = chosen.run_id
    symbol = chosen.params.get("symbol", "")
    reps = _representatives(chosen, walkforwards_of(store, symbol))
    series = _read_returns(store, reps)
    if series[0] is None:
        raise StoreError(f"the walk-forward run {walkforward_run_id} has no readable equity.csv: run the "
                         "walk-forward again to log it")
    days, best = series[0]
    if len(best) < 2:
        raise ConfigError(f"the walk-forward run {walkforward_run_id} has {len(best)} out-of-sample days: too few "
                          "for a Sharpe ratio")
    sharpes = [sharpe_per_period(s[1]) for s in series if s is not None and len(s[1]) >= 2]
    n_configs = _n_configs(store, chosen, reps)
    dsr = deflated_sharpe(best, sharpes, n_configs)
    same_days = [s[1] for s in series if s is not None and s[0] == days]
    pbo = None
    blocks = min(PBO_BLOCKS, len(best) // 2 // 2 * 2)
    if len(same_days) >= 4 and blocks >= 2:
        pbo = pbo_cscv(np.column_stack(same_days), n_blocks=blocks)
    return Evidence(
        walkforward_run_id=walkforward_run_id, symbol=symbol,
        window=f"{symbol} {chosen.params.get('start', '?')}..{chosen.params.get('end', '?')}",
        sharpe=float(chosen.metrics.get("sharpe", dsr.annualized_sharpe)), deflated=dsr, n_configs=n_configs,
        pbo=pbo, pbo_candidates=len(same_days) if pbo is not None else 0, run_metrics=dict(chosen.metrics),
        experiment_id=chosen.experiment_id,
    )


def snapshot(store: ModelStore, run_id: str) -> Evidence | None:
    """The evidence of walk-forward ``run_id``, logged on its run unless the run's latest
    snapshot was computed with the same N (so a rerun with nothing new tried writes nothing).
    ``None``, with a warning, when it cannot be computed: the walk-forward itself stands."""
    from trainkit.store.evaluations import log_snapshot

    try:
        ev = evidence_for(store, run_id)
        logged = ev.run_metrics
        if not (logged.get("n_configs") == float(ev.n_configs) and "deflated_sharpe" in logged):
            log_snapshot(store, run_id, ev.snapshot(), step=ev.n_configs)
    except TrainkitError as exc:
        log.warning("walk-forward run %s: no selection evidence (%s)", run_id, (str(exc).splitlines() or [""])[0])
        return None
    return ev


def with_evidence(store: ModelStore, wf: WalkForward) -> WalkForward:
    """``wf`` with its evidence (:func:`snapshot`)."""
    import dataclasses

    return wf if wf.run_id is None else dataclasses.replace(wf, evidence=snapshot(store, wf.run_id))
