"""Default hyperparameters of every algorithm, by name: the ``defaults`` column of the
algorithm table (:mod:`trainkit.algorithms`, where the values and the reasons for them live).

Kept as its own name because the CLI's help and ``bench/calibrate.py`` read
``ALGORITHM_DEFAULTS`` from here; it is a live, read-only view of the table, never a second
copy. Stdlib only, like the table.
"""

from __future__ import annotations

from trainkit.algorithms import ALGORITHM_DEFAULTS

__all__ = ["ALGORITHM_DEFAULTS"]
