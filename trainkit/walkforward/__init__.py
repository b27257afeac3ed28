"""Walk-forward evaluation with cached folds: train on a window, trade the next window out of
sample, roll forward, and stitch the out-of-sample results together.

A walk-forward goes through the package's modules in order, each testable on its own:

* :mod:`~trainkit.walkforward.windows` — the window grammar (``3y``, ``6m``, ``126``) and the
  fold arithmetic: folds anchored at ``start``, so a later ``end`` only appends folds and the
  earlier ones keep their cached models (stdlib only, pure);
* :mod:`~trainkit.walkforward.plan` — the request checked (exit 2 before anything is trained),
  the prices' trading calendar, the anchor (moved when the data start late) and one resolved
  ``TrainConfig`` per (fold, seed): the :class:`WalkForwardPlan`;
* :mod:`~trainkit.walkforward.run` — each (fold, seed) is one model of the model cache plus one
  cached backtest on its test window, fanned out through an executor
  (:func:`trainkit.fanout.fan_out`);
* :mod:`~trainkit.walkforward.stitch` — the folds stitched into one out-of-sample series, the
  aggregate metrics (:data:`FOLD_METRICS`) and the key naming the result;
* :mod:`~trainkit.walkforward.report` — the MLflow parent run with a nested run per fold and
  seed (experiment ``trainkit-walkforward``); an identical walk-forward finds it and logs none;
* :mod:`~trainkit.walkforward.result` — what comes back: :class:`Fold`, :class:`WalkForward`.

It needs the get-or-train core (:class:`trainkit.cache.ModelCache`), never the
``TrainingManager`` facade. Stdlib only at import time (the CLI parses windows before anything
heavy is imported): numpy, pandas, MLflow and matplotlib are imported where they are used.
"""

from __future__ import annotations

from trainkit.walkforward.plan import FoldTask, WalkForwardPlan, plan_walk_forward
from trainkit.walkforward.report import plot
from trainkit.walkforward.result import Fold, WalkForward
from trainkit.walkforward.run import conclude, dry_run, run_fold, run_plan, walk_forward
from trainkit.walkforward.stitch import FOLD_METRICS, WALKFORWARD_VERSION, aggregate, stitch, walkforward_key
from trainkit.walkforward.windows import (
    MIN_TEST_DAYS,
    MIN_TRAIN_DAYS,
    MODES,
    Calendar,
    FoldWindow,
    Window,
    add_months,
    fold_windows,
    parse_window,
)

__all__ = [
    "FOLD_METRICS", "MIN_TEST_DAYS", "MIN_TRAIN_DAYS", "MODES", "WALKFORWARD_VERSION", "Calendar", "Fold",
    "FoldTask", "FoldWindow", "conclude", "WalkForward", "WalkForwardPlan", "Window", "add_months", "aggregate", "dry_run",
    "fold_windows", "parse_window", "plan_walk_forward", "plot", "run_fold", "run_plan", "stitch", "walk_forward",
    "walkforward_key",
]
