"""Benchmark: the MLflow-backed cache (issue 4).

* cache hit in-process, model load included (median of several), with 1 run in the experiment
  and with 3,000 — target ≤ 250 ms and ≤ 2× growth;
* ``trainkit list --symbol S`` as a whole process with 3,000 runs — target ≤ 4 s;
* a miss for the default config (100k timesteps, synthetic data) — reported.

The 3,000 runs are made quickly with ``MlflowClient.log_batch``: half look like trainkit model
runs of other configs (config_hash and trainkit.* tags, every param, over 10 symbols), half
are other tools' runs in the same experiment (params and tags, no config_hash). They have no
model files: lookup never opens them, and ``list`` reads only run data.

Run alone: ``python bench/bench_store.py [--runs 3000] [--no-miss]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

Row = tuple[str, str, str]

FAST = dict(timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)
WINDOW = ("AAPL", "2020-01-01", "2021-12-31")
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "IBM", "KO", "PEP", "ORCL", "NVDA", "TSLA")


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _populate(store, n: int, params_template: dict[str, str]) -> float:
    """n runs, each create_run + one log_batch (params and tags) + set_terminated, from 4
    threads (sqlite commits are latency-bound: 4 threads ≈ 4× faster). Returns seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Param, RunTag

    import trainkit

    client, exp = store.client, store.experiment_id

    def one(i: int) -> None:
        symbol = SYMBOLS[i % len(SYMBOLS)]
        params = dict(params_template, symbol=symbol, seed=str(i))
        if i % 2 == 0:  # a trainkit model run of another config
            h = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
            tags = {
                "config_hash": h, "trainkit.symbol": symbol, "trainkit.data_source": "synthetic",
                "trainkit.data_source_effective": "synthetic", "trainkit.data_digest": h,
                "trainkit.model_sha256": h, "trainkit.version": trainkit.__version__,
                "trainkit.model_id": f"m-{h[:32]}", "trainkit.model_uri": "runs:/x/model",
                "mlflow.note.content": f"### {symbol} — PPO trained by trainkit (bench filler)",
            }
            name = f"{symbol}-ppo-{h[:8]}"
        else:  # another tool's run in the same experiment
            tags = {"mlflow.source.name": "notebook.ipynb", "team": "research", "symbol": symbol}
            name = f"exploration-{i}"
        run = client.create_run(exp, run_name=name)
        client.log_batch(
            run.info.run_id,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run.info.run_id)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0


def _list_process_seconds(uri: str, symbol: str, repeat: int = 3) -> tuple[float, int]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cli = [sys.executable, "-m", "trainkit", "list", "--symbol", symbol, "--json"]
    have_cli = True
    try:
        import trainkit.cli  # noqa: F401
    except Exception:  # the CLI is not there: time the library call in a whole process instead
        have_cli = False
        cli = [sys.executable, "-c", f"from trainkit import TrainingManager; print(len(TrainingManager().list_cached_models({symbol!r})))"]
    times, count = [], -1
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cli[:5])} failed: {proc.stderr.strip()[-500:]}")
        if have_cli:
            import json

            doc = json.loads(proc.stdout)
            rows = doc if isinstance(doc, list) else doc.get("models", [])
            count = len(rows)
        else:
            count = int(proc.stdout.strip())
    return statistics.median(times), count


def run(n_runs: int = 3000, miss: bool = True, repeat: int = 7) -> list[Row]:
    """Measure in a fresh sqlite store in a temp dir (removed afterwards); the working
    directory and environment are restored for whatever runs next."""
    import shutil

    root = tempfile.mkdtemp(prefix="tk-bench-store-")
    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    try:
        os.environ.setdefault("TRAINKIT_CACHE_DIR", os.path.join(root, "cache"))
        os.environ.setdefault("TRAINKIT_CLAIM_SETTLE", "0.3")
        os.chdir(root)  # MLflow puts ./mlruns beside the working directory
        uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        return _measure(uri, n_runs, miss, repeat)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(root, ignore_errors=True)


def _measure(uri: str, n_runs: int, miss: bool, repeat: int) -> list[Row]:
    from trainkit import TrainingManager

    manager = TrainingManager(uri)
    first = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
    params_template = {k: v for k, v in first.config.to_params().items()}

    def hit() -> None:
        res = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
        assert res.status == "cached" and res.model_uri == first.model_uri

    hit()  # warm: imports, the experiment id, sqlite pages
    hit_1 = _median_ms(hit, repeat)
    fresh = TrainingManager(uri)
    t = time.perf_counter()
    fresh.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
    fresh_1 = (time.perf_counter() - t) * 1000

    fill_s = _populate(manager.store, n_runs - 1, params_template)
    hit()
    hit_n = _median_ms(hit, repeat)
    list_s, listed = _list_process_seconds(uri, "AAPL")
    t = time.perf_counter()
    in_process = len(manager.list_cached_models("AAPL"))
    list_lib_ms = (time.perf_counter() - t) * 1000

    rows: list[Row] = [
        ("cache hit in-process, load included, 1 run (median)", f"{hit_1:.0f} ms", f"target <= 250 ms; n={repeat}"),
        ("cache hit, new TrainingManager, 1 run", f"{fresh_1:.0f} ms", "first call of a new manager (experiment lookup)"),
        (f"cache hit in-process, load included, {n_runs:,} runs (median)", f"{hit_n:.0f} ms", f"target <= 250 ms; n={repeat}"),
        (f"hit growth 1 -> {n_runs:,} runs", f"{hit_n / max(hit_1, 1e-9):.2f}x", "target <= 2x"),
        (f"`trainkit list --symbol AAPL --json`, whole process, {n_runs:,} runs", f"{list_s:.2f} s",
         f"target <= 4 s; {listed} rows; median of 3"),
        (f"list_cached_models('AAPL') in-process, {n_runs:,} runs", f"{list_lib_ms:.0f} ms", f"{in_process} rows"),
        (f"creating {n_runs - 1:,} filler runs (create_run + log_batch)", f"{fill_s:.1f} s", "setup, not a target"),
    ]
    if miss:
        t = time.perf_counter()
        res = manager.get("BENCH", "2020-01-01", "2022-12-31", data_source="synthetic", progress=False)
        miss_s = time.perf_counter() - t
        rows.append(("miss, default config (100k timesteps, synthetic 2020-2022)", f"{miss_s:.1f} s",
                     f"{res.config.timesteps:,} timesteps; fetch + train + log"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--no-miss", action="store_true")
    args = parser.parse_args(argv)
    for name, value, note in run(args.runs, miss=not args.no_miss):
        print(f"{name:<66} {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
