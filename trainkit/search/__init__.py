"""Hyperparameter search whose trials are cache entries: ``trainkit tune``.

Each trial is one config walked forward over cached folds (:mod:`trainkit.walkforward`), so a
duplicate sample, a resumed study, a second tuner or a second machine trains nothing that is
already in the store. The study itself lives in the tracking store, reached through MLflow's
API (:mod:`trainkit.store.studies`), so a team shares it with nothing but the MLflow server.

* :mod:`~trainkit.search.space` — the search space: a default per algorithm, and space files
  (YAML or JSON) checked before anything runs;
* :mod:`~trainkit.search.study` — what a study is (its identity), its objectives, and the
  deterministic asks and pruning over Optuna;
* :mod:`~trainkit.search.loop` — the loop: claim trials, run their folds through the fan-out,
  record them;
* :mod:`~trainkit.search.report` — the study run's summary and Optuna's pictures;
* :mod:`~trainkit.search.result` — what comes back: :class:`Trial`, :class:`TuneResult`.

The only package that imports Optuna, and only when a study runs (stdlib at import time).
"""

from __future__ import annotations

from trainkit.search.result import Trial, TuneResult
from trainkit.search.space import SearchSpace, default_space, load_space, parse_space
from trainkit.search.study import (
    OBJECTIVES,
    PRUNERS,
    StudySpec,
    check_objective,
    check_options,
    default_study_name,
    make_spec,
)
from trainkit.search.loop import check_study, preview, remaining, tune

__all__ = ["OBJECTIVES", "PRUNERS", "SearchSpace", "StudySpec", "Trial", "TuneResult", "check_objective",
           "check_options", "check_study", "default_space", "default_study_name", "load_space", "make_spec", "parse_space", "preview", "remaining", "tune"]
