"""How the ``trainkit`` process ends: its exit codes, and its fast exit — the only place the
CLI touches interpreter internals.

Exit codes (docs/ARCHITECTURE.md, "Errors and exit codes"): ``0`` success; ``2`` the command
line or a value is invalid, or ``clear`` refused to delete without confirmation; ``1`` a
runtime failure, or the user declined ``clear``'s prompt; ``130`` interrupted (Ctrl-C).

Why the fast exit exists: once a command has printed its result, a normal interpreter exit still spends
1-3 s tearing down the thousands of modules torch, stable-baselines3 and MLflow bring in
(finalizing each module, its objects and their ``__del__``s). Nobody waits for that on purpose.

Why it is safe: everything a normal exit does that matters still happens, in the same order —
threading's exit hooks run and non-daemon threads are joined (MLflow's artifact-copy pools
finish their uploads), ``atexit`` handlers run (MLflow's flushes, ``logging.shutdown``),
stdout and stderr are flushed. Only the module teardown is skipped, by ``os._exit``.

It uses two private functions of the interpreter (``threading._shutdown``,
``atexit._run_exitfuncs``), so it is kept here, small, and used only by
:func:`trainkit.cli.shell.main` (the process's entry point); in-process callers use
:func:`trainkit.cli.shell.run`, which never exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REFUSED", "EXIT_RUNTIME", "EXIT_USAGE", "exit_now"]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` now: the interpreter's exit steps that matter, then
    ``os._exit`` instead of the module teardown (see the module docstring)."""
    # what the interpreter does first at exit: run threading's exit hooks (they tell
    # concurrent.futures workers — e.g. MLflow's artifact-copy pools — to stop), then join
    # the non-daemon threads. Joining without the hooks first can wait forever.
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001  # pragma: no cover - private API; fall back to plain joins
        for t in threading.enumerate():
            if t is not threading.current_thread() and not t.daemon:
                t.join(timeout=10)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
