"""What a walk-forward returns: each :class:`Fold` (a model and its out-of-sample backtest)
and the :class:`WalkForward` they make together. Plain frozen data (a fold crosses process
boundaries back from an executor's workers); the numbers are computed elsewhere
(:mod:`trainkit.walkforward.stitch`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trainkit.backtest import BacktestResult
    from trainkit.walkforward.plan import WalkForwardPlan

__all__ = ["Fold", "WalkForward", "selection_fields"]


@dataclass(frozen=True)
class Fold:
    """One fold (and seed) done: its windows, its model (cached or trained now) and its
    out-of-sample backtest (``metrics``, daily ``equity``)."""

    index: int
    seed: int
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    config_hash: str
    model_uri: str
    model_id: str | None
    training_run_id: str
    status: str  # a RequestStatus: cached | trained | fallback
    backtest: BacktestResult = field(compare=False, repr=False)
    backtest_key: str = ""
    seconds: float = 0.0
    fallback_reason: str | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.backtest.metrics

    @property
    def equity(self) -> pd.DataFrame:
        return self.backtest.equity

    @property
    def backtest_cached(self) -> bool:
        return self.backtest.cached

    def to_dict(self) -> dict[str, Any]:
        """One fold's row of the ``--json`` object (JSON-ready)."""
        bt = self.backtest
        return {
            "fold": self.index, "seed": self.seed,
            "train_start": self.train_start, "train_end": self.train_end,
            "test_start": self.test_start, "test_end": self.test_end,
            "first_day": bt.first_day, "last_day": bt.last_day, "n_days": bt.n_days,
            "config_hash": self.config_hash, "model_uri": self.model_uri, "model_id": self.model_id,
            "training_run_id": self.training_run_id, "status": self.status, "fallback_reason": self.fallback_reason,
            "backtest_run_id": bt.run_id, "backtest_cached": bt.cached,
            "metrics": {k: (v if isinstance(v, int) else float(v)) for k, v in bt.metrics.items()},
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class WalkForward:
    """A walk-forward's outcome: its folds (in fold, then seed, order), the stitched
    out-of-sample daily ``equity`` (a Series indexed by date; with several seeds, their
    equal-weight portfolio), ``buy_and_hold`` stitched the same way, each seed's own stitched
    equity (``seed_equity``, one column per seed), the aggregate ``metrics`` and the MLflow
    parent run (``run_id``, in experiment ``experiment_id``; ``run_existed``: an identical
    walk-forward had logged it)."""

    plan: WalkForwardPlan = field(repr=False)
    folds: tuple[Fold, ...]
    equity: pd.Series = field(compare=False, repr=False)
    buy_and_hold: pd.Series = field(compare=False, repr=False)
    seed_equity: pd.DataFrame = field(compare=False, repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    run_existed: bool = False
    key: str = ""
    experiment_id: str | None = None
    #: the selection evidence (:class:`trainkit.walkforward.evidence.Evidence`) of this
    #: walk-forward among every config tried on its window, when it was computed
    evidence: Any = field(default=None, compare=False, repr=False)

    @property
    def symbol(self) -> str:
        return self.plan.symbol

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.plan.seeds

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.plan.warnings

    @property
    def trained(self) -> int:
        """Folds whose model was trained by this call."""
        return sum(f.status != "cached" for f in self.folds)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object of one symbol."""
        from trainkit.store.contract import WALKFORWARD_EXPERIMENT

        p = self.plan
        return {
            "symbol": p.symbol,
            "run_id": self.run_id,
            "experiment": WALKFORWARD_EXPERIMENT if self.run_id else None,
            "experiment_id": self.experiment_id,
            "run_existed": self.run_existed,
            "start": p.start, "end": p.end, "anchor": p.anchor,
            "train_window": str(p.train_window), "test_window": str(p.test_window), "step": str(p.step),
            "mode": p.mode, "embargo": str(p.embargo), "seeds": list(p.seeds),
            "first_day": str(self.equity.index[0].date()), "last_day": str(self.equity.index[-1].date()),
            "n_days": len(self.equity),
            "metrics": {k: (v if isinstance(v, int) else float(v)) for k, v in self.metrics.items()},
            "folds": [f.to_dict() for f in self.folds],
            "trained": self.trained,
            "options": p.options(),
            "data_source_effective": p.data_source_effective,
            "warnings": list(p.warnings),
            **selection_fields(self.evidence),
        }


def selection_fields(ev: Any) -> dict[str, Any]:
    """``deflated_sharpe``, ``pbo``, ``n_configs`` and the whole ``selection`` (``None`` each
    when there is no evidence): the JSON face of a walk-forward's or a best trial's evidence."""
    if ev is None:
        return {"deflated_sharpe": None, "pbo": None, "n_configs": None, "selection": None}
    return {"deflated_sharpe": ev.deflated_sharpe, "pbo": ev.pbo_value, "n_configs": ev.n_configs,
            "selection": ev.to_dict()}
