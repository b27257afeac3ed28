"""``python barrier_cli.py BARRIER_DIR N trainkit-args…``: run the trainkit CLI in a process
that first imports everything heavy, then waits until N such processes are ready (a file per
process in BARRIER_DIR) — so N requests reach the tracking store at the same moment instead of
being spread out by seconds of imports. Writes ``go-<pid>`` with the time it started. The one
start barrier of the races in tests/reliability, tests/team and tests/test_walkforward.py.

The CLI then runs unchanged (``trainkit.cli.main``); nothing of trainkit is patched.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    barrier, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    import mlflow.tracking  # noqa: F401  (the heavy imports, before the barrier)
    import stable_baselines3  # noqa: F401

    import trainkit.agents  # noqa: F401
    import trainkit.cli
    import trainkit.cli.walkforward  # noqa: F401
    import trainkit.data  # noqa: F401
    import trainkit.features  # noqa: F401
    import trainkit.manager  # noqa: F401

    open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 180
    while sum(name.startswith("ready-") for name in os.listdir(barrier)) < n:
        if time.monotonic() > deadline:
            sys.exit("barrier: the other processes never became ready")
        time.sleep(0.005)
    with open(os.path.join(barrier, f"go-{os.getpid()}"), "w") as fh:
        fh.write(repr(time.time()))
    trainkit.cli.main(argv)


if __name__ == "__main__":
    main()
