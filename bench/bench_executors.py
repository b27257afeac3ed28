"""Benchmark: the same cache misses run one after the other, by ``LocalExecutor(2)`` and by
``RayExecutor`` on a local 2-CPU Ray instance (issue 15).

Each mode trains N symbols (synthetic data, the default config with ``timesteps``) into a fresh
sqlite store of its own, so every request is a miss, through
``TrainingManager.iter_models(requests, executor)`` — exactly what ``trainkit train`` does —
twice with the same executor: a *cold* first call (worker start-up, imports and the Ray
start-up included) and a *warm* second call with N other symbols (what every call after the
first costs: a walk-forward's later batches, a notebook, a long-lived cluster). Times are wall
clock for the whole call, MLflow logging included. Targets: Ray within 15 % of the local pool,
and both at least 1.7x faster than sequential.

Why the two differ: every process that trains pays about 4 s once (MLflow, torch,
stable-baselines3, ``torch._dynamo``) — the sequential mode in this process, the pool in its
fork server, Ray in each worker — while a 100k-step model trains in about 1.5 s. On 2 cores
that one-time cost cannot be split, so 8 models on a cold start cannot reach 1.7x.

Run alone: ``python bench/bench_executors.py [--symbols 8] [--timesteps 100000]``. Needs
``trainkit[ray]``. The local Ray instance uses token authentication with a throwaway token
(nothing is written to ``~/.ray``) and is shut down at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Row = tuple[str, str, str]

WINDOW = ("2015-01-01", "2019-12-31")


def _symbols(n: int) -> list[str]:
    return [f"BEX{i:02d}" for i in range(n)]


def _timed(label: str, executor_factory, symbols: list[str], timesteps: int) -> dict[str, float]:
    """Two batches of cache misses through one ``executor_factory()`` kept open (``with``):
    ``cold`` — every symbol of ``symbols``, the executor's first call (worker start-up and the
    Ray start-up included; ``connect`` is the Ray start-up on its own); ``warm`` — as many other
    symbols, the same executor's second call (the pool's fork server, Ray's connection and its
    worker processes are then up; this process is warm for the sequential mode). ``*_one``:
    the mean seconds of one request inside its worker (a per-model time that grows with
    parallelism means the cores were contended, not the executor slow)."""
    from trainkit import TrainingManager
    from trainkit.manager import ModelRequest

    root = tempfile.mkdtemp(prefix=f"tk-bench-{label}-")
    cwd = os.getcwd()
    os.chdir(root)
    out: dict[str, float] = {}
    try:
        manager = TrainingManager(f"sqlite:///{os.path.join(root, 'mlflow.db')}")
        batches = {"cold": symbols, "warm": [s.replace("BEX", "BEW") for s in symbols]}
        requests = {name: [ModelRequest(manager.config_for(s, *WINDOW, data_source="synthetic", timesteps=timesteps))
                           for s in names] for name, names in batches.items()}
        _ = manager.store.experiment_id  # the store exists before the clock starts (same for all modes)
        t0 = time.perf_counter()
        executor = executor_factory()
        with executor:  # Ray: keep the connection (and its workers) for both batches, shut down after
            if hasattr(executor, "connect"):
                executor.connect()
                out["connect"] = time.perf_counter() - t0
            for name, batch in requests.items():
                if name != "cold":
                    t0 = time.perf_counter()
                outcomes = list(manager.iter_models(batch, executor))
                out[name] = time.perf_counter() - t0
                bad = [o for o in outcomes if not o.ok or o.result.status != "trained"]
                if bad or len(outcomes) != len(batch):
                    raise SystemExit(f"{label} ({name}): not every request trained: {bad}")
                out[f"{name}_one"] = sum(o.result.seconds for o in outcomes) / len(outcomes)
    finally:
        os.chdir(cwd)
    return out


def run(symbols: int = 8, timesteps: int = 100_000) -> list[Row]:
    from trainkit.executors import LocalExecutor, RayExecutor

    os.environ.setdefault("TRAINKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    os.environ.pop("RAY_ADDRESS", None)  # a local 2-CPU instance, whatever the shell points at
    if not os.environ.get("RAY_AUTH_TOKEN"):  # a throwaway token: nothing written to ~/.ray
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    names = _symbols(symbols)
    what = f"{symbols} symbols x {timesteps:,} steps"
    seq = _timed("seq", lambda: LocalExecutor(1), names, timesteps)
    pool = _timed("pool", lambda: LocalExecutor(2), names, timesteps)
    ray = _timed("ray", lambda: RayExecutor(num_cpus=2), names, timesteps)
    rows: list[Row] = []
    for batch, when in (("cold", "first call: start-up included"), ("warm", "second call, same executor")):
        rows += [
            (f"executors {batch}: sequential, {what}", f"{seq[batch]:.1f} s",
             f"LocalExecutor(1), in this process; {when}; {seq[batch + '_one']:.1f} s per model"),
            (f"executors {batch}: local pool, {what}", f"{pool[batch]:.1f} s",
             f"LocalExecutor(2), workers forked from a warm fork server; {when}; {pool[batch + '_one']:.1f} s per model"),
            (f"executors {batch}: Ray, {what}", f"{ray[batch]:.1f} s",
             f"RayExecutor, local 2-CPU instance; {when}"
             + (f" (Ray start-up {ray['connect']:.1f} s)" if batch == "cold" else "")
             + f"; {ray[batch + '_one']:.1f} s per model"),
            (f"executors {batch}: sequential / local pool", f"{seq[batch] / pool[batch]:.2f}x", "target >= 1.7x"),
            (f"executors {batch}: sequential / Ray", f"{seq[batch] / ray[batch]:.2f}x", "target >= 1.7x"),
            (f"executors {batch}: Ray / local pool (time)", f"{ray[batch] / pool[batch]:.2f}x", "target <= 1.15x"),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=100_000)
    args = parser.parse_args(argv)
    rows = run(args.symbols, args.timesteps)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>9}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
