"""``python sigint_cli.py PHASE trainkit-args…``: run the trainkit CLI unchanged, and send this
process a real SIGINT (what Ctrl-C sends) as soon as PHASE begins — so each phase of a request
can be interrupted on purpose instead of by luck of timing.

Only the *trigger* is attached (a wrapper around the function that starts the phase, which
arms the signal and then calls the real function); what the signal does is trainkit's own
handling. ``DELAY`` seconds after the phase begins (0: at once). Phases:

* ``import``  — inside the heavy lazy imports before training (``agents.warm_up``)
* ``data``    — while fetching prices (``DataFetcherFactory.fetch``)
* ``claim``   — right after the lease run was created, while the claim settles
* ``training``— during ``agents.train``
* ``logging`` — while the model is being logged to MLflow (``flavor.log_model``)
* ``publish`` — after the model was logged, before the run is marked FINISHED
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading

#: phase -> (module, class or None, function, delay in seconds, arm before or after the call)
PHASES = {
    "import": ("trainkit.agents", None, "warm_up", 0.05, "before"),
    "data": ("trainkit.data.factory", "DataFetcherFactory", "fetch", 0.0, "before"),
    "claim": ("trainkit.store.runs", None, "create_training_run", 0.05, "after"),  # while the claim settles
    "training": ("trainkit.agents", None, "train", 0.8, "before"),
    "logging": ("trainkit.store.flavor", None, "log_model", 0.05, "before"),
    "publish": ("trainkit.store.runs", None, "description", 0.0, "before"),
}


def _arm(delay: float) -> None:
    if delay <= 0:
        os.kill(os.getpid(), signal.SIGINT)
    else:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()


def main() -> None:
    phase, argv = sys.argv[1], sys.argv[2:]
    module_name, owner, attr, delay, when = PHASES[phase]
    import importlib

    module = importlib.import_module(module_name)
    target = getattr(module, owner) if owner else module
    original = getattr(target, attr)
    fired = []

    def wrapper(*args, **kwargs):
        first = not fired
        if first:
            fired.append(True)
            with open(os.environ["SIGINT_MARK"], "w") as fh:
                fh.write(phase)
            if when == "before":
                _arm(delay)
        result = original(*args, **kwargs)
        if first and when == "after":
            _arm(delay)
        return result

    if owner and isinstance(target.__dict__.get(attr), classmethod):
        setattr(target, attr, classmethod(lambda cls, *a, **k: wrapper(*a, **k)))
    else:
        setattr(target, attr, functools.wraps(original)(wrapper))
    import trainkit.cli

    trainkit.cli.main(argv)


if __name__ == "__main__":
    main()
