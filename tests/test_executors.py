"""The executors package: the registry of executors by name (what ``--executor`` takes), an
import that stays light, and the local pool's workers — forked warm from the fork server, yet
with the caller's environment, working directory and sys.path as they are when the pool
starts, and stopped on Ctrl-C without touching any other child of the caller."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainkit.errors import ConfigError
from trainkit.executors import (
    Executor,
    LocalExecutor,
    RayExecutor,
    executor_names,
    make_executor,
    pool_context,
    register_executor,
    start_warming,
    stop_pool,
)
from trainkit.executors import base as executors_base

#: what the fork server warms: what a worker runs (trainkit.fanout over trainkit.cache), not the
#: trainkit.manager facade
WARMED = ("mlflow.pyfunc", "stable_baselines3", "torch._dynamo", "trainkit.cache", "trainkit.fanout")


def _probe(_item: int) -> dict[str, object]:
    """What a worker process sees when its first task starts (imports nothing itself)."""
    return {
        "pid": os.getpid(),
        "warm": [m for m in WARMED if m in sys.modules],
        "manager": "trainkit.manager" in sys.modules,
        "cwd": os.getcwd(),
        "set": os.environ.get("TK_EXECUTOR_PROBE"),
        "gone": os.environ.get("TK_EXECUTOR_GONE"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "path": list(sys.path),
    }


def test_workers_are_forked_warm_with_the_callers_environment(tmp_path, monkeypatch):
    if pool_context().get_start_method() != "forkserver":
        pytest.skip("no fork server on this platform: workers are spawned cold")
    monkeypatch.setenv("TK_EXECUTOR_GONE", "from before the server started")
    start_warming()  # the server keeps the environment and directory of this moment
    monkeypatch.delenv("TK_EXECUTOR_GONE")
    monkeypatch.setenv("TK_EXECUTOR_PROBE", "after")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "extra"))

    results = list(LocalExecutor(2).map_unordered(_probe, [1, 2]))

    assert sorted(item for item, _ in results) == [1, 2]
    for _item, seen in results:
        assert isinstance(seen, dict), seen
        assert seen["pid"] != os.getpid()
        # warmed by trainkit._worker_preload in the fork server, before any task ran
        assert seen["warm"] == list(WARMED) and not seen["manager"]
        assert seen["cwd"] == str(tmp_path)
        assert seen["set"] == "after" and seen["gone"] is None
        assert seen["omp"] == "1"
        assert seen["path"][0] == str(tmp_path / "extra")


def test_the_caller_does_not_import_the_preload_module():
    """Importing the preload module warms (and pins to one thread) the process that imports
    it: only the fork server may."""
    assert "trainkit._worker_preload" not in sys.modules


def _pid(_item: int) -> int:
    import time

    time.sleep(0.3)  # long enough that both workers take a task
    return os.getpid()


def test_with_keeps_the_workers_between_calls_and_stops_them_after():
    ex = LocalExecutor(2)
    with ex:
        first = {pid for _, pid in ex.map_unordered(_pid, [1, 2, 3, 4])}
        second = {pid for _, pid in ex.map_unordered(_pid, [5, 6, 7, 8])}
    assert os.getpid() not in first and len(first) == 2
    assert second == first  # the same two processes, kept warm
    for pid in first:  # stopped when the block ended
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    third = {pid for _, pid in ex.map_unordered(_pid, [9, 10])}  # outside `with`: a pool of its own
    assert third.isdisjoint(first)


# ------------------------------------------------------------------------------ the registry
def test_the_registry_names_are_what_make_executor_accepts_and_an_unknown_name_lists_them():
    assert executor_names() == ("local", "ray")
    for name in executor_names():
        assert isinstance(make_executor(name, workers=1), Executor)
    assert isinstance(make_executor("local", workers=3, warm=False), LocalExecutor)
    assert isinstance(make_executor("ray", workers=3), RayExecutor)  # made, not connected: no ray needed
    with pytest.raises(ConfigError, match=r"unknown executor 'dask': use local or ray$"):
        make_executor("dask")


def test_a_registered_executor_is_made_by_name_with_the_common_keywords(monkeypatch):
    monkeypatch.setattr(executors_base, "_EXECUTORS", dict(executors_base._EXECUTORS))  # undone after the test
    seen: dict[str, object] = {}

    def factory(**kwargs: object) -> Executor:
        seen.update(kwargs)
        return Executor()

    register_executor("inline", factory)
    assert executor_names() == ("local", "ray", "inline")
    assert type(make_executor("inline", workers=2, shards=4)) is Executor
    assert seen == {"workers": 2, "verbose": 0, "address": None, "tracking_uri": None, "shards": 4}
    with pytest.raises(ConfigError, match=r"use local, ray or inline$"):
        make_executor("nope")
    for name, bad in ((" inline", factory), ("", factory), ("x", "not callable")):
        with pytest.raises(ValueError):
            register_executor(name, bad)  # type: ignore[arg-type]


def test_importing_the_executors_imports_no_heavy_library():
    """``--help`` and the registry must stay fast: ray only when a Ray executor connects, the
    rest only in the workers."""
    code = ("import sys, trainkit.executors as e; e.make_executor('ray'); "
            "print(sorted(m for m in ('ray', 'mlflow', 'torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ stopping a pool
def _sleep(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return os.getpid()


def test_stop_pool_stops_its_own_workers_and_no_other_child():
    import concurrent.futures as cf
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    bystander = ctx.Process(target=_sleep, args=(60.0,))  # another child of this process
    bystander.start()
    try:
        pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        pool.submit(_sleep, 60.0)
        workers = [p for p in multiprocessing.active_children() if p.pid != bystander.pid]
        assert workers
        stop_pool(pool, grace=0.5)
        assert not any(p.is_alive() for p in workers)
        assert bystander.is_alive()
    finally:
        bystander.terminate()
        bystander.join(10)
