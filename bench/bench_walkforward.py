"""Benchmark: a walk-forward with cached folds (issue 14).

A 10-year walk-forward (synthetic prices 2014..2023) with 3-year sliding train windows and
3-month test windows — 28 folds — at the default 100k timesteps, ``--workers 2``, run as
``trainkit walkforward`` processes against a fresh sqlite store:

* the first run, against the expectation (number of folds × one cache miss) / workers, where
  one cache miss (a 3-year window of the same config) is measured in the same run;
* the rerun — nothing trained, no run created, every backtest read back — target < 10 s.

Run alone: ``python bench/bench_walkforward.py [--timesteps 100000] [--workers 2] [--years 10]``
(fewer timesteps or years for a quick look on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

Row = tuple[str, str, str]

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "WFBENCH"
START_YEAR = 2014

_CLI = "import sys; from trainkit.cli import main; main(sys.argv[1:])"


def _walkforward(uri: str, end: str, timesteps: int, workers: int, cwd: str) -> tuple[float, dict]:
    argv = ["--tracking-uri", uri, "walkforward", "--symbols", SYMBOL, "--start", f"{START_YEAR}-01-01", "--end", end,
            "--train-window", "3y", "--test-window", "3m", "--data-source", "synthetic", "--timesteps",
            str(timesteps), "--workers", str(workers), "--json"]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI, *argv], capture_output=True, text=True, cwd=cwd, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"walkforward failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout)[0]


def _one_miss(root: str, timesteps: int) -> float:
    """One cache miss of a fold's config (3-year window) in its own fresh store, in process."""
    from trainkit import TrainingManager, agents

    manager = TrainingManager(f"sqlite:///{os.path.join(root, 'miss.db')}")
    agents.warm_up()  # a worker imports torch and SB3 once, not once per fold
    t = time.perf_counter()
    res = manager.get(SYMBOL, "2020-01-01", "2022-12-31", data_source="synthetic", timesteps=timesteps, progress=False)
    assert res.status == "trained", res.status
    return time.perf_counter() - t


def run(timesteps: int = 100_000, workers: int = 2, years: int = 10) -> list[Row]:
    root = tempfile.mkdtemp(prefix="tk-bench-wf-")
    os.environ.setdefault("TRAINKIT_CACHE_DIR", os.path.join(root, "cache"))
    uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
    end = f"{START_YEAR + years - 1}-12-31"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        miss = _one_miss(root, timesteps)
        first_s, first = _walkforward(uri, end, timesteps, workers, root)
        again_s, again = _walkforward(uri, end, timesteps, workers, root)
    finally:
        os.chdir(cwd)
    n = len({f["fold"] for f in first["folds"]})
    expected = n * miss / workers
    assert first["trained"] == len(first["folds"]), first["trained"]
    assert again["trained"] == 0 and again["run_existed"] and again["run_id"] == first["run_id"]
    label = f"{years}y, 3y/3m sliding, {n} folds, {timesteps:,} steps, --workers {workers}"
    return [
        ("walkforward: one cache miss (3y window)", f"{miss:.1f} s", "in process, fresh store"),
        (f"walkforward: first run ({label})", f"{first_s:.0f} s",
         f"(folds × miss) / workers = {expected:.0f} s; ratio {first_s / expected:.2f}"),
        ("walkforward: rerun (trains nothing, logs nothing)", f"{again_s:.1f} s", "target < 10 s, whole process"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--years", type=int, default=10)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = run(args.timesteps, args.workers, args.years)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
