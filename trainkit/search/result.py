"""What a search returns: each :class:`Trial` (a config, one walk-forward, its value) and the
:class:`TuneResult` of one study. Plain frozen data with the ``--json`` shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainkit.walkforward.result import selection_fields

__all__ = ["Trial", "TuneResult"]


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Trial:
    """One trial of a study: its number, state (running / complete / pruned / fail), the
    sampled values (``params``, as the sampler sees them) and the hyperparameters they mean,
    its value (the objective, out of sample; ``None`` unless complete), the walk-forward run it
    read or created, and the models *this command* trained for it."""

    number: int
    state: str
    params: dict[str, Any]
    hyperparams: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    walkforward_run_id: str | None = None
    trained: int = 0
    run_id: str = ""
    cached: int = 0  #: its models this command read from the store (a trial it did not run: all it has)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "state": self.state, "params": dict(self.params), "value": _num(self.value),
                "walkforward_run_id": self.walkforward_run_id, "trained": self.trained}


@dataclass(frozen=True)
class TuneResult:
    """A study after one ``tune``: every trial (by number), the best, how many count toward the
    total (``n_trials``: complete and pruned), how many distinct configs were evaluated
    (``n_configs``; ``n_configs_window``: by every study and walk-forward of the same symbol and
    window — what the best's deflated Sharpe is deflated for, ``evidence``), and the models this
    command trained."""

    symbol: str
    study: str
    study_run_id: str
    objective: str
    direction: str
    trials: tuple[Trial, ...]
    trained: int = 0
    n_configs: int = 0
    space: tuple[str, ...] = ()
    #: the best trial's selection evidence (:class:`trainkit.walkforward.evidence.Evidence`)
    evidence: Any = field(default=None, compare=False, repr=False)

    @property
    def n_configs_window(self) -> int:
        """The configs tried on the study's window by any study or walk-forward (the evidence's N; 0 without it)."""
        return 0 if self.evidence is None else self.evidence.n_configs

    @property
    def n_trials(self) -> int:
        from trainkit.store.contract import COUNTED_TRIAL_STATES

        return sum(t.state in COUNTED_TRIAL_STATES for t in self.trials)

    @property
    def best(self) -> Trial | None:
        from trainkit.store.studies import best_trial

        return best_trial(self.trials, self.direction)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "symbol": self.symbol, "study": self.study, "study_run_id": self.study_run_id,
            "objective": self.objective, "direction": self.direction, "n_trials": self.n_trials,
            "n_configs": self.n_configs, "n_configs_window": self.n_configs_window, "trained": self.trained,
            "best": None if best is None else {"number": best.number, "params": dict(best.params),
                                               "value": _num(best.value), "walkforward_run_id": best.walkforward_run_id,
                                               **selection_fields(self.evidence)},
            "trials": [t.to_dict() for t in self.trials],
        }
