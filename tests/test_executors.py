"""The local pool's workers: forked warm from the fork server, yet with the caller's
environment, working directory and sys.path as they are when the pool starts."""

from __future__ import annotations

import os
import sys

import pytest

from trainkit.executors import LocalExecutor, pool_context, start_warming


def _probe(_item: int) -> dict[str, object]:
    """What a worker process sees when its first task starts (imports nothing itself)."""
    return {
        "pid": os.getpid(),
        "warm": [m for m in ("mlflow.pyfunc", "stable_baselines3", "torch._dynamo", "trainkit.manager")
                 if m in sys.modules],
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
        assert seen["warm"] == ["mlflow.pyfunc", "stable_baselines3", "torch._dynamo", "trainkit.manager"]
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
