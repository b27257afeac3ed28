"""Benchmark: ``trainkit tune`` — an Optuna search whose trials are cached walk-forwards.

Synthetic prices from 2014, 3-year sliding train windows and 3-month test windows; the end date
is chosen so that the walk-forward has exactly ``--folds`` folds (checked with ``trainkit
walkforward --dry-run --json``: its ``n_folds``). Every timed row is a real ``python -m trainkit
tune … --json`` process against a fresh sqlite store, timed from spawn to exit:

* **the first run** — 4 trials × 6 folds at 20,000 timesteps, ``--workers 2``, the algorithm's
  default space, ``--sampler-seed 0`` — against the ideal *trials × folds × one fold's miss /
  workers*. One fold's miss (training, backtest and logging: ``run_fold`` of the first fold, the
  default config, which is the study's trial 0) is timed in this process in its own fresh store,
  after the imports and warm-ups a pool worker starts with — as ``bench_walkforward._one_miss``
  does. The sampled trials do not cost what the default does (``n_epochs``, ``batch_size``,
  ``n_steps`` and ``net_arch`` are searched), so the miss of each trial's own config is timed too,
  after the run, and a second ratio uses them.
* **the pool warm-up is left out.** ``bench_walkforward`` leaves it out of the ideal only (its miss
  is timed after ``agents.warm_up()``) and times its run as the whole process; inside one ``tune``
  process the warm-up cannot be separated (it runs beside the parent's own work), and an
  all-cached run does not measure it either (nothing is fanned out, so no worker starts, and the
  command does not wait for the fork server). So it is timed on its own: a fresh process makes
  ``LocalExecutor(workers)`` and runs one task per worker that opens the store (what a worker's
  first fold does before training); the time to every worker ready is subtracted from the run —
  an upper bound of what the run paid for it. The whole-process ratio is in the note too.
* **where the first run's time went**, read back from the runs it logged: a fold in a worker
  (its model run's creation to its backtest's end) against the miss timed alone, and the time
  outside the folds — before the first, with none in flight between batches of trials, after
  the last.
* **the same command again** — every trial complete: trains nothing, the fixed cost of a process.
* **the rerun of a study of 20 trials × 8 folds** — built cheaply first (500 timesteps,
  ``--hp n_envs=8 --hp batch_size=64``: a rerun never trains, so its cost does not depend on the
  training size), then the identical command run again, median of 3; target < 15 s; and the
  lookup floor of ``bench_process`` in the same store, for a ratio that survives a busy machine.

"Whole process" is spawn to exit, with the output going to files. A ``tune --workers 2`` that
trains nothing still starts the pool's fork server, which outlives the command while it imports
torch, MLflow and SB3, holding the command's stdout and stderr: read through pipes (``| jq``,
``capture_output=True``) the output ends only when the server does — timed once, as its own row.
And each timed process starts once the fork servers of the earlier ones have exited, so that none
shares the cores with a leftover.

Run alone: ``python bench/bench_tune.py [--timesteps 20000] [--workers 2] [--trials 4] [--folds 6]
[--rerun-trials 20] [--rerun-folds 8] [--rerun-timesteps 500] [--repeat 3] [--skip-first]
[--skip-rerun]``. A quick look on a busy machine: ``--quick`` (2 trials × 2 folds at 2,000 steps;
a rerun of 3 trials × 2 folds, 1 repeat).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

Row = tuple[str, str, str]

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SYMBOL = "TUNEBENCH"
START = dt.date(2014, 1, 1)
TRAIN_WINDOW, TEST_WINDOW = "3y", "3m"
FIRST_TEST = dt.date(2017, 1, 1)  # START + the 3-year train window
#: what a cheap study is built with: a rerun trains nothing, so the training size does not matter
CHEAP_HP = ("n_envs=8", "batch_size=64")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _end(folds: int) -> str:
    """The last day of the ``folds``-th 3-month test window (the first starts on FIRST_TEST)."""
    months = FIRST_TEST.month - 1 + 3 * folds
    first_after = dt.date(FIRST_TEST.year + months // 12, months % 12 + 1, 1)
    return (first_after - dt.timedelta(days=1)).isoformat()


def _window_args(folds: int) -> list[str]:
    return ["--symbols", SYMBOL, "--start", START.isoformat(), "--end", _end(folds), "--train-window", TRAIN_WINDOW,
            "--test-window", TEST_WINDOW, "--data-source", "synthetic"]


def _trainkit(uri: str, argv: list[str], cwd: str, *, pipe: bool = False) -> tuple[float, Any]:
    """One whole ``python -m trainkit`` process: (seconds, its JSON), started once the previous
    processes' fork servers have exited (:func:`_settle`). The seconds run from spawn to the
    process's exit, its output going to files; ``pipe=True``: to the end of its output read
    through pipes (what ``trainkit … --json | jq`` or ``subprocess.run(capture_output=True)``
    waits for), which also waits for any child that holds them open."""
    _settle(cwd)
    cmd = [sys.executable, "-m", "trainkit", "--tracking-uri", uri, *argv]
    SPAWNED[0] = time.time()
    if pipe:
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(), check=False, timeout=7200)
        seconds = time.perf_counter() - t
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
            t = time.perf_counter()
            child = subprocess.Popen(cmd, stdout=fout, stderr=ferr, cwd=cwd, env=_env())
            code = child.wait(timeout=7200)
            seconds = time.perf_counter() - t
            fout.seek(0)
            ferr.seek(0)
            out, err = fout.read(), ferr.read()
    if code != 0:
        raise SystemExit(f"trainkit {' '.join(argv)} failed ({code}) in {cwd}:\n{_stderr(err)}")
    return seconds, json.loads(out)


def _stderr(text: str, keep: int = 3000) -> str:
    """The end of a process's stderr without MLflow's progress bars (which would fill it)."""
    lines = [part for line in text.splitlines() for part in line.split("\r")]
    return "\n".join(x for x in lines if x.strip() and "Downloading artifacts" not in x)[-keep:]


def _forkservers(root: str) -> list[int]:
    """Live fork servers of processes this bench started in ``root`` (their ``sys.path``, which
    a server gets on its command line, begins with it). Linux only (``/proc``); read, never ended."""
    if not os.path.isdir("/proc"):
        return []
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            continue
        if "multiprocessing.forkserver" in cmd and f"'{root}'" in cmd:
            found.append(int(pid))
    return found


#: when the last trainkit process was started (epoch seconds, as MLflow's run times)
SPAWNED = [0.0]

#: the longest wait of _settle in this run (seconds)
SETTLED = [0.0]


def _settle(root: str, timeout: float = 120.0) -> None:
    """Wait until the fork servers of the previous processes have exited. ``trainkit tune
    --workers 2`` starts its server even when it trains nothing, and the server outlives the
    command while it imports torch, MLflow and SB3: timed now, the next process would share the
    cores with it."""
    t = time.perf_counter()
    while _forkservers(root) and time.perf_counter() - t < timeout:
        time.sleep(0.25)
    SETTLED[0] = max(SETTLED[0], time.perf_counter() - t)


def _check_folds(uri: str, folds: int, timesteps: int, cwd: str) -> None:
    """The walk-forward of these windows has exactly ``folds`` folds (reads only: no store made)."""
    _, docs = _trainkit(uri, ["walkforward", *_window_args(folds), "--timesteps", str(timesteps), "--dry-run",
                              "--json"], cwd)
    if docs[0]["n_folds"] != folds:
        raise SystemExit(f"{START}..{_end(folds)} ({TRAIN_WINDOW}/{TEST_WINDOW}) has {docs[0]['n_folds']} folds, "
                         f"not {folds}")


def _tune(uri: str, folds: int, trials: int, timesteps: int, workers: int, cwd: str,
          hp: tuple[str, ...] = (), *, pipe: bool = False) -> tuple[float, dict[str, Any]]:
    argv = ["tune", *_window_args(folds), "--timesteps", str(timesteps), "--trials", str(trials), "--workers",
            str(workers), "--sampler-seed", "0", "--json"]
    for kv in hp:
        argv += ["--hp", kv]
    seconds, docs = _trainkit(uri, argv, cwd, pipe=pipe)
    return seconds, docs[0]


# ---------------------------------------------------------------------------- one fold's miss
class _Misses:
    """One fold's miss per config, in this process, in a store of its own (never the tune's),
    timed after the imports and warm-ups a pool worker starts with (``trainkit._worker_preload``,
    whose module is not imported here: it would set one-thread variables for this process and
    the processes it starts)."""

    def __init__(self, root: str, folds: int, timesteps: int) -> None:
        from trainkit import TrainingManager, agents
        from trainkit.store import flavor
        from trainkit.walkforward import plan_walk_forward

        self.manager = TrainingManager(f"sqlite:///{os.path.join(root, 'miss.db')}")
        agents.warm_up()
        flavor.warm_up()
        self.plan = plan_walk_forward(SYMBOL, START.isoformat(), _end(folds), TRAIN_WINDOW, TEST_WINDOW,
                                      data_source="synthetic", timesteps=timesteps)
        self.seconds: dict[str, float] = {}  # config hash -> one fold's miss
        self.learn: dict[str, float] = {}  # config hash -> its learn() (the run's train_seconds)

    def of(self, hyperparams: dict[str, Any] | None = None) -> float:
        """One miss of the first fold of the config (the plan's, or with ``hyperparams``)."""
        from trainkit.walkforward import run_fold
        from trainkit.walkforward.plan import with_hyperparams

        plan = with_hyperparams(self.plan, hyperparams) if hyperparams else self.plan
        task = plan.tasks[0]
        if task.config.config_hash not in self.seconds:
            t = time.perf_counter()
            fold = run_fold(self.manager, task)
            self.seconds[task.config.config_hash] = time.perf_counter() - t
            assert fold is not None and fold.status == "trained", fold
            run = self.manager.store.client.get_run(fold.training_run_id)
            self.learn[task.config.config_hash] = run.data.metrics.get("train_seconds", float("nan"))
        return self.seconds[task.config.config_hash]

    def of_trial(self, params: dict[str, Any]) -> float:
        from trainkit.search import default_space

        space = default_space(self.plan.base.algo, self.plan.base.hyperparams)
        return self.of(space.to_hyperparams(params))


# ---------------------------------------------------------------------------- the pool's warm-up
def _worker_ready(uri: str, hold: float) -> None:
    """A pool task: open the store as a worker's first fold does, then hold the worker so that
    the other task needs another one."""
    from trainkit.fanout import worker_cache

    worker_cache(uri, "trainkit")
    time.sleep(hold)


_POOL_WARM_UP = """
import sys, time
from functools import partial
sys.path.insert(0, {bench!r})
from trainkit.executors import LocalExecutor
import bench_tune
hold = 0.5
t = time.perf_counter()
with LocalExecutor({workers}) as ex:  # starts the fork server, as the tune command's executor does
    for _, value in ex.map_unordered(partial(bench_tune._worker_ready, {uri!r}), [hold] * {workers}):
        if isinstance(value, Exception):
            raise value
    print(time.perf_counter() - t - hold)
"""


def _pool_warm_up(uri: str, workers: int, cwd: str) -> float:
    """From ``LocalExecutor(workers)`` in a fresh process to every worker forked from a cold fork
    server, initialised and holding its store: what the first fold of each worker pays before
    training."""
    code = _POOL_WARM_UP.format(bench=str(BENCH), workers=workers, uri=uri)
    _settle(cwd)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=_env(),
                          check=False, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"pool warm-up failed ({proc.returncode}):\n{_stderr(proc.stderr)}")
    return float(proc.stdout.split()[-1])


# ---------------------------------------------------------------------------- where a run's time went
def _timeline(uri: str, spawned: float, seconds: float) -> dict[str, float]:
    """The folds of a run, read back from the store it filled: each from its model run's creation
    (lease taken, before training) to its backtest run's end, as seconds since the process was
    spawned. Returns the time before the first fold, the time inside the folds' span in which no
    fold was in flight (the parent's work between batches: record, claim, ask), the time after
    the last fold (the last trials recorded, the study summarised, exit), and per fold in a
    worker: its mean time and mean learn()."""
    from mlflow.tracking import MlflowClient

    from trainkit.store import contract as C

    client = MlflowClient(uri)

    def runs(name: str) -> list[Any]:
        exp = client.get_experiment_by_name(name)
        return client.search_runs([exp.experiment_id], max_results=5000) if exp else []

    backtests = {r.data.tags.get(C.TAG_SOURCE_RUN_ID, ""): r for r in runs(C.BACKTEST_EXPERIMENT)}
    spans, learns = [], []
    for m in runs(C.DEFAULT_EXPERIMENT):
        bt = backtests.get(m.info.run_id)
        if bt is None or m.info.start_time is None or bt.info.end_time is None:
            continue
        spans.append((m.info.start_time / 1e3 - spawned, bt.info.end_time / 1e3 - spawned))
        learns.append(m.data.metrics.get("train_seconds", float("nan")))
    spans.sort()
    covered, reach = 0.0, spans[0][0]
    for a, b in spans:  # the union of the folds' intervals
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    first, last = spans[0][0], max(b for _, b in spans)
    return {"before": first, "idle": (last - first) - covered, "after": seconds - last,
            "fold": statistics.mean(b - a for a, b in spans), "learn": statistics.mean(learns), "n": len(spans)}


# ---------------------------------------------------------------------------- the rows
def first_run(timesteps: int = 20_000, workers: int = 2, trials: int = 4, folds: int = 6) -> list[Row]:
    root = tempfile.mkdtemp(prefix="tk-bench-tune-")
    os.environ.setdefault("TRAINKIT_CACHE_DIR", os.path.join(root, "cache"))
    uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        _check_folds(uri, folds, timesteps, root)
        misses = _Misses(root, folds, timesteps)
        miss = misses.of()
        first_s, first = _tune(uri, folds, trials, timesteps, workers, root)
        spawned = SPAWNED[0]
        again_s, again = _tune(uri, folds, trials, timesteps, workers, root)
        warm_s = _pool_warm_up(uri, workers, root)
        _settle(root)
        trial_misses = [misses.of_trial(t["params"]) for t in first["trials"]]
        trial_learns = [misses.learn[h] for h in misses.seconds]
        when = _timeline(uri, spawned, first_s)
    finally:
        os.chdir(cwd)
    models = trials * folds
    assert first["n_trials"] == trials and all(t["state"] == "complete" for t in first["trials"]), first["trials"]
    assert first["trained"] == models, f"{first['trained']} models trained, not {models} (shared configs?)"
    assert again["trained"] == 0 and again["n_trials"] == trials, again
    ideal = models * miss / workers
    ideal_own = folds * sum(trial_misses) / workers
    net = first_s - warm_s
    label = f"{trials} trials × {folds} folds, {timesteps:,} steps, --workers {workers}"
    return [
        (f"tune: one fold's miss ({TRAIN_WINDOW} train, {TEST_WINDOW} test; default config = trial 0)", f"{miss:.2f} s",
         "train + backtest + logging, in process, fresh store, warmed as a worker"),
        ("tune: one fold's miss, each trial's own config (mean)", f"{statistics.mean(trial_misses):.2f} s",
         "trials " + ", ".join(f"{s:.1f}" for s in trial_misses) + " s"),
        (f"tune: pool warm-up, --workers {workers}", f"{warm_s:.1f} s",
         "cold fork server -> every worker up with its store open, own process"),
        (f"tune: first run ({label})", f"{first_s:.0f} s",
         f"whole process, fresh store; {first['trained']} models; {first_s / ideal:.2f}x the ideal with the warm-up"),
        ("tune: first run - pool warm-up, / (trials × folds × miss / workers)", f"{net / ideal:.2f}x",
         f"ideal {ideal:.0f} s, run {net:.0f} s; target <= 1.3"),
        ("tune: the same, ideal from each trial's own miss", f"{net / ideal_own:.2f}x",
         f"ideal folds × Σ miss / workers = {ideal_own:.0f} s"),
        ("tune: first run, a fold in a worker (mean) / one fold's miss", f"{when['fold'] / miss:.2f}x",
         (f"{when['fold']:.1f} s from its model run to its backtest's end; learn() {when['learn']:.1f} s in a worker, "
          f"{statistics.mean(trial_learns):.1f} s in process (mean of the configs)")),
        ("tune: first run, outside the folds", f"{when['before'] + when['idle'] + when['after']:.0f} s",
         (f"{when['before']:.0f} s before the first fold, {when['idle']:.0f} s with no fold in flight between them, "
          f"{when['after']:.0f} s after the last")),
        ("tune: the same command again (all trials complete)", f"{again_s:.1f} s", "trains nothing, whole process"),
    ]


def rerun(trials: int = 20, folds: int = 8, timesteps: int = 500, workers: int = 2, repeat: int = 3) -> list[Row]:
    root = tempfile.mkdtemp(prefix="tk-bench-tune-rerun-")
    os.environ.setdefault("TRAINKIT_CACHE_DIR", os.path.join(root, "cache"))
    uri = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
    _check_folds(uri, folds, timesteps, root)
    build_s, built = _tune(uri, folds, trials, timesteps, workers, root, CHEAP_HP)
    assert built["n_trials"] == trials, built
    times = []
    for _ in range(repeat):
        s, doc = _tune(uri, folds, trials, timesteps, workers, root, CHEAP_HP)
        assert doc["trained"] == 0 and doc["n_trials"] == trials and doc["study_run_id"] == built["study_run_id"], doc
        times.append(s)
    median = statistics.median(times)
    piped_s, _ = _tune(uri, folds, trials, timesteps, workers, root, CHEAP_HP, pipe=True)
    floor = _lookup_floor(root, repeat)
    return [
        (f"tune: build a study of {trials} trials × {folds} folds ({timesteps} steps, --hp {' '.join(CHEAP_HP)})",
         f"{build_s:.0f} s", f"{built['trained']} models, --workers {workers}; setup for the row below"),
        (f"tune: rerun of that study ({trials} trials × {folds} folds)", f"{median:.1f} s",
         f"median of {repeat} ({', '.join(f'{s:.1f}' for s in times)}); spawn to exit; target < 15 s"),
        ("tune: that rerun / the lookup floor (bench_process) in its store", f"{median / floor:.2f}x",
         f"floor {floor:.1f} s, median of {repeat}: import mlflow, MlflowClient, one search_runs"),
        ("tune: that rerun read through pipes (| jq), until its output closes", f"{piped_s:.1f} s",
         f"one run; its --workers {workers} fork server holds stdout/stderr until it has warmed up"),
        ("tune: a fork server outliving a timed process, longest wait", f"{SETTLED[0]:.0f} s",
         "each timed process here started once the earlier ones' servers had exited"),
    ]


def _lookup_floor(root: str, repeat: int) -> float:
    """What any cached answer must pay, in the same store (``bench_process.LOOKUP_FLOOR``)."""
    from bench_process import LOOKUP_FLOOR

    times = []
    for _ in range(repeat):
        _settle(root)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", LOOKUP_FLOOR % ("0" * 32)], capture_output=True, text=True,
                              cwd=root, env=_env(), check=False, timeout=300)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"lookup floor failed ({proc.returncode}):\n{_stderr(proc.stderr)}")
    return statistics.median(times)


def run(timesteps: int = 20_000, workers: int = 2, trials: int = 4, folds: int = 6, rerun_trials: int = 20,
        rerun_folds: int = 8, rerun_timesteps: int = 500, repeat: int = 3, first: bool = True,
        again: bool = True) -> list[Row]:
    rows: list[Row] = []
    if first:
        rows += first_run(timesteps, workers, trials, folds)
    if again:
        rows += rerun(rerun_trials, rerun_folds, rerun_timesteps, workers, repeat)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--folds", type=int, default=6)
    ap.add_argument("--rerun-trials", type=int, default=20)
    ap.add_argument("--rerun-folds", type=int, default=8)
    ap.add_argument("--rerun-timesteps", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-first", action="store_true", help="only the rerun rows")
    ap.add_argument("--skip-rerun", action="store_true", help="only the first-run rows")
    ap.add_argument("--quick", action="store_true",
                    help="2 trials × 2 folds at 2,000 steps; a rerun of 3 trials × 2 folds, once")
    args = ap.parse_args()
    if args.quick:
        args.timesteps, args.trials, args.folds = 2_000, 2, 2
        args.rerun_trials, args.rerun_folds, args.repeat = 3, 2, 1
    sys.path.insert(0, str(ROOT))
    rows = run(args.timesteps, args.workers, args.trials, args.folds, args.rerun_trials, args.rerun_folds,
               args.rerun_timesteps, args.repeat, first=not args.skip_first, again=not args.skip_rerun)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
