"""`make bench`: one table from one run — data, training, the whole cache miss, the store, whole
processes, executors, walk-forward and the timings that used to be asserted in tests.

Speed targets are checked here, never by timed unit tests. Rows are (name, value, note); ratios
are computed within this one run, since the machine is noisy. ``python bench/run.py [SECTION …]``
runs only the named sections (``data training miss store process timings executors
walkforward tune``); ``make bench`` runs them all (about 15 minutes on 2 idle cores,
plus about 10 for tune).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Row = tuple[str, str, str]


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.]", "", text.split()[0]))


def whole_miss(sb3_steps_per_s: float, timesteps: int = 100_000) -> list[Row]:
    """A whole cache miss of the default config in a fresh store — data, features, training,
    MLflow logging — against SB3-default PPO learn() alone for the same timesteps; and where
    the time of the miss goes outside learn()."""
    root = tempfile.mkdtemp(prefix="tk-bench-miss-")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        from trainkit import TrainingManager

        uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
        manager = TrainingManager(uri)
        rows: list[Row] = []
        for label, symbol in (("first in this process", "MISS"), ("second in this process", "MISS2")):
            t = time.perf_counter()
            res = manager.get(symbol, "2015-01-01", "2019-12-31", data_source="synthetic", timesteps=timesteps, progress=False)
            miss_s = time.perf_counter() - t
            run = manager.store.client.get_run(res.run_id)
            learn_s = run.data.metrics.get("train_seconds", float("nan"))
            rows.append((f"miss: whole cache miss, default PPO ({timesteps:,} steps), {label}", f"{miss_s:.2f} s",
                         f"status {res.status}; learn() {learn_s:.2f} s, the rest {miss_s - learn_s:.2f} s"))
            if label.startswith("first"):
                first_s = miss_s
    finally:
        os.chdir(cwd)
    sb3_s = timesteps / sb3_steps_per_s
    rows += [
        (f"miss: SB3-default PPO learn() alone, {timesteps:,} steps", f"{sb3_s:.1f} s", "from the SB3-default rate above"),
        ("miss: SB3-default learn() / whole trainkit miss (first)", f"{sb3_s / first_s:.1f}x", "target >= 25x"),
        ("miss: SB3-default learn() / whole trainkit miss (second)", f"{sb3_s / miss_s:.1f}x", "the first-call costs excluded"),
    ]
    return rows


def main(argv: list[str]) -> int:
    os.environ.setdefault("TRAINKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    wanted = set(argv) or {"data", "training", "miss", "store", "process", "timings", "executors", "walkforward",
                          "tune"}
    rows: list[Row] = []
    t0 = time.perf_counter()
    if "data" in wanted:
        import bench_data

        rows += bench_data.run()
    if wanted & {"training", "miss"}:
        import bench_training

        training = bench_training.run()
        if "training" in wanted:
            rows += training
        if "miss" in wanted:
            sb3 = next(v for n, v, _ in training if n.startswith("train: SB3") and "steps/s" in v)
            rows += whole_miss(_number(sb3))
    if "store" in wanted:
        import bench_store

        rows += bench_store.run(miss=False)
    if "process" in wanted:
        import bench_process

        rows += bench_process.run()
    if "timings" in wanted:
        import bench_timings

        rows += bench_timings.run()
    if "executors" in wanted:
        import bench_executors

        rows += bench_executors.run()
    if "walkforward" in wanted:
        import bench_walkforward

        rows += bench_walkforward.run()
    if "tune" in wanted:
        import bench_tune

        rows += bench_tune.run()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'benchmark':<{width}}  {'value':>18}  note")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    print(f"\n(load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
