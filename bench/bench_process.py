"""Whole processes, as a user runs them: the README's `make train` (a fresh store, then the cached
second call) and the fixed costs around it (`python -c "import mlflow"`, `trainkit --help`).

**The lookup floor.** A cached answer can be no faster than a process that imports MLflow,
opens the same store with ``MlflowClient`` and runs one ``search_runs`` on the ``config_hash``
tag: everything a lookup needs (``LOOKUP_FLOOR``). The cached ``train``, ``list``, ``explain``
and ``train --dry-run`` are measured beside it, each the median of a few runs in the same
store, and reported as ratios to it (targets: a cached ``train`` <= 1.3x, ``list`` <= 1.0x).

Each row is one real subprocess in a fresh temporary directory (its own sqlite store and download
cache), timed from spawn to exit. Run alone: ``python bench/bench_process.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
TRAINKIT = str(Path(PYTHON).parent / "trainkit")
MAKE_TRAIN = ["train", "--symbols", "AAPL", "--train-start", "2020-01-01", "--train-end", "2022-12-31"]
#: everything a cache lookup needs, and nothing more: the floor of a cached answer
LOOKUP_FLOOR = """
import mlflow
from mlflow.tracking import MlflowClient
client = MlflowClient("sqlite:///mlflow.db")
exp = client.get_experiment_by_name("trainkit")
client.search_runs([exp.experiment_id], "tags.config_hash = '%s' and attributes.status = 'FINISHED'")
"""


def _timed(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t0, proc


def run() -> list[tuple[str, str, str]]:
    root = tempfile.mkdtemp(prefix="tk-bench-proc-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINKIT_"))}
    env["TRAINKIT_CACHE_DIR"] = os.path.join(root, "cache")
    rows: list[tuple[str, str, str]] = []

    s, _ = _timed([PYTHON, "-c", "import mlflow"], root, env)
    rows.append(("process: python -c 'import mlflow'", f"{s:.2f} s", "a floor every MLflow client pays"))
    s, _ = _timed([PYTHON, "-c", "import torch, stable_baselines3"], root, env)
    rows.append(("process: python -c 'import torch, stable_baselines3'", f"{s:.2f} s", "the other floor of a miss"))
    s, _ = _timed([TRAINKIT, "--help"], root, env)
    rows.append(("process: trainkit --help", f"{s:.2f} s", "imports no mlflow/torch"))

    cold, first = _timed([TRAINKIT, *MAKE_TRAIN], root, env)
    status = first.stdout.split()[1] if first.returncode == 0 and first.stdout.split() else f"exit {first.returncode}"
    rows.append(("process: make train's command, fresh store (cold)", f"{cold:.1f} s",
                 f"{status}; store created+migrated, data, train 100k, log"))
    warm, second = _timed([TRAINKIT, *MAKE_TRAIN], root, env)
    status = second.stdout.split()[1] if second.returncode == 0 and second.stdout.split() else f"exit {second.returncode}"
    rows.append(("process: make train's command again (cached)", f"{warm:.1f} s", f"{status}; the README's second call"))
    miss, third = _timed([TRAINKIT, *MAKE_TRAIN[:2], "MSFT", *MAKE_TRAIN[3:]], root, env)
    rows.append(("process: a miss on a store that exists (warm)", f"{miss:.1f} s",
                 f"exit {third.returncode}; MSFT, same window"))
    rows.append(("process: cold miss / cached hit", f"{cold / warm:.1f}x", "what the cache saves per call"))
    rows += lookup_ratios(root, env)
    return rows


def _median(argv: list[str], cwd: str, env: dict[str, str], n: int = 3) -> float:
    times = sorted(_timed(argv, cwd, env)[0] for _ in range(n))
    return times[len(times) // 2]


def lookup_ratios(root: str, env: dict[str, str]) -> list[tuple[str, str, str]]:
    """Cached answers against the lookup floor, in the store the rows above filled."""
    import json

    dry = subprocess.run([TRAINKIT, *MAKE_TRAIN, "--dry-run", "--json"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    config_hash = json.loads(dry.stdout)[0]["config_hash"]
    floor = _median([PYTHON, "-c", LOOKUP_FLOOR % config_hash], root, env)
    rows = [("process: lookup floor (import mlflow, MlflowClient, one search_runs)", f"{floor:.2f} s",
             "what any cached answer must pay")]
    for label, argv, target in (
        ("make train's command, cached", [TRAINKIT, *MAKE_TRAIN], "target <= 1.3x"),
        ("trainkit list", [TRAINKIT, "list"], "target <= 1.0x"),
        ("trainkit explain (cached config)", [TRAINKIT, "explain", *MAKE_TRAIN[1:]], "reads only"),
        ("trainkit train --dry-run", [TRAINKIT, *MAKE_TRAIN, "--dry-run"], "reads only"),
    ):
        s = _median(argv, root, env)
        rows.append((f"process: {label}", f"{s:.2f} s", f"median of 3; {s / floor:.2f}x the floor ({target})"))
    return rows


if __name__ == "__main__":
    for name, value, note in run():
        print(f"{name:<58} {value:>10}  {note}")
