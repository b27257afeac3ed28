"""`make bench`: one table from one run — data, env, training, cache (issues 2, 4, 9).

Speed targets are checked here, never by timed unit tests. Rows are (name, value, note);
ratios are computed within this one run, since the machine is noisy.
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

import bench_data  # noqa: E402
import bench_store  # noqa: E402
import bench_training  # noqa: E402


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.]", "", text.split()[0]))


def whole_miss(sb3_steps_per_s: float, timesteps: int = 100_000) -> list[tuple[str, str, str]]:
    """A whole cache miss of the default config in a fresh store — data, features, training,
    MLflow logging — against SB3-default PPO learn() alone for the same timesteps."""
    root = tempfile.mkdtemp(prefix="tk-bench-miss-")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        from trainkit import TrainingManager

        uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
        manager = TrainingManager(uri)
        t = time.perf_counter()
        res = manager.get("MISS", "2015-01-01", "2019-12-31", data_source="synthetic", timesteps=timesteps, progress=False)
        miss_s = time.perf_counter() - t
    finally:
        os.chdir(cwd)
    sb3_s = timesteps / sb3_steps_per_s
    return [
        (f"miss: whole cache miss, default config ({timesteps:,} steps)", f"{miss_s:.1f} s", f"status {res.status}; fetch+features+train+log"),
        (f"miss: SB3-default PPO learn() alone, {timesteps:,} steps", f"{sb3_s:.1f} s", "from the SB3-default rate above"),
        ("miss: SB3-default learn() / whole trainkit miss", f"{sb3_s / miss_s:.1f}x", "target >= 8x"),
    ]


def main() -> int:
    os.environ.setdefault("TRAINKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    rows: list[tuple[str, str, str]] = []
    rows += bench_data.run()
    training = bench_training.run()
    rows += training
    sb3 = next(v for n, v, _ in training if n.startswith("train: SB3") and "steps/s" in v)
    rows += whole_miss(_number(sb3))
    rows += bench_store.run(miss=False)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'benchmark':<{width}}  {'value':>18}  note")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
