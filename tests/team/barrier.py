"""``python barrier.py BARRIER_DIR N trainkit-args…``: ``python -m trainkit trainkit-args…``,
but first import everything heavy and wait until N such processes are ready (a ``ready-<pid>``
file each in BARRIER_DIR), so that N requests reach the tracking server within milliseconds of
each other instead of seconds of imports apart. Writes ``go-<pid>`` with the time it went.

Only the public entry point is used: the CLI runs exactly as ``python -m trainkit`` runs it.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
import time


def main() -> None:
    barrier, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    import mlflow.tracking  # noqa: F401  (the heavy imports, before the barrier)
    import stable_baselines3  # noqa: F401

    import trainkit  # noqa: F401

    for name in ("trainkit.cli", "trainkit.manager"):  # warm-up only: fine if they move
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 180
    while sum(name.startswith("ready-") for name in os.listdir(barrier)) < n:
        if time.monotonic() > deadline:
            sys.exit("barrier: the other processes never became ready")
        time.sleep(0.005)
    with open(os.path.join(barrier, f"go-{os.getpid()}"), "w") as fh:
        fh.write(repr(time.time()))
    sys.argv = ["trainkit", *argv]
    runpy.run_module("trainkit", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
