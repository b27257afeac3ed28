"""A study in MLflow after a ``tune``: the best trial and the counts on the study run, and
Optuna's pictures as its artifacts — the optimisation history, and the parameter importances
(when at least two finished trials differ in value: Optuna cannot rank parameters otherwise).

Written only by a command that ended a trial: a rerun that finds the study complete logs
nothing."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.search.result import TuneResult
    from trainkit.search.study import StudySpec
    from trainkit.store.studies import StudyRecord, StudyStore, TrialRecord

log = logging.getLogger("trainkit")

__all__ = ["HISTORY_PNG", "IMPORTANCE_PNG", "pictures", "summarize"]

HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"


def pictures(spec: StudySpec, trials: Sequence[TrialRecord], directory: str) -> dict[str, str]:
    """Optuna's matplotlib pictures of the study, written into ``directory``: name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from trainkit.search.study import rebuild

    study = rebuild(spec, [t for t in trials if t.counts])
    out: dict[str, str] = {}
    values = {t.value for t in trials if t.state == "complete" and t.value is not None}
    plots = [(HISTORY_PNG, ovm.plot_optimization_history)]
    if len(values) >= 2:
        plots.append((IMPORTANCE_PNG, ovm.plot_param_importances))
    for name, plot in plots:
        try:
            ax = plot(study, target_name=spec.objective)
            fig = ax.figure
            ax.set_title(f"{spec.name}: {ax.get_title()}")
            fig.set_size_inches(8, 4.5)
            fig.tight_layout()
            path = os.path.join(directory, name)
            fig.savefig(path, dpi=100)
            plt.close(fig)
            out[name] = path
        except Exception as exc:  # a picture is a nicety: never fail a study for one
            log.warning("%s: no %s (%s)", spec.name, name, exc)
    return out


def summarize(studies: StudyStore, study: StudyRecord, spec: StudySpec, trials: Sequence[TrialRecord],
              result: TuneResult) -> None:
    """The best trial, the counts and the pictures on the study run."""
    from trainkit.config import hyperparam_params
    from trainkit.store import contract as C

    best = result.best
    metrics: dict[str, float] = {"n_trials": float(result.n_trials), "n_configs": float(result.n_configs),
                                 "n_configs_window": float(result.n_configs_window),
                                 "n_complete": float(sum(t.state == "complete" for t in trials)),
                                 "n_pruned": float(sum(t.state == "pruned" for t in trials))}
    tags: dict[str, str] = {}
    params: dict[str, Any] = {}
    if best is not None:
        metrics["best_value"] = float(best.value)  # type: ignore[arg-type]
        metrics[f"best_{spec.objective}"] = float(best.value)  # type: ignore[arg-type]
        tags = {"trainkit.best_trial": str(best.number), C.TAG_WALKFORWARD_RUN_ID: best.walkforward_run_id or ""}
        params = hyperparam_params(best.hyperparams)
    if result.evidence is not None:  # a snapshot: N grows later, and promote always counts again
        metrics.update({f"best_{k}": v for k, v in result.evidence.snapshot().items() if k != "n_configs"})
    with tempfile.TemporaryDirectory(prefix="trainkit-tune-") as tmp:
        studies.summarize(study, params=params, metrics=metrics, tags=tags, artifacts=pictures(spec, trials, tmp))
