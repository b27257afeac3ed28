"""Run many independent model requests: here, in local processes, or (later) on a cluster.

An executor knows nothing about models, stores or leases: it maps a picklable function over
items and yields ``(item, result or exception)`` as each finishes, in completion order. Dedupe
stays in the store — two executors (or two machines) given the same configs train each once,
because every request goes through the lease protocol.

* :class:`LocalExecutor` ``(workers=1)``: in this process, one after the other (progress bars
  and the caller's store object are reused).
* :class:`LocalExecutor` ``(workers=N)``: N spawned processes, one torch/BLAS thread each.
  Ctrl-C reaches the workers (same process group): they mark their runs KILLED and release
  their leases; the pool is then stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from trainkit.errors import RuntimeFailure, TrainkitError

log = logging.getLogger("trainkit")

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeFailure):
    """A worker process (or cluster task) died before it returned a result."""


class Executor(Protocol):
    """Runs ``fn`` over ``items``; yields ``(item, fn(item) or the exception it raised)`` as
    each finishes. ``in_process`` executors call ``fn`` in the caller's process (a closure is
    fine); the others need a picklable ``fn`` (a module-level function or a partial of one)."""

    in_process: bool

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | Exception]]: ...


class LocalExecutor:
    """This machine: in-process when ``workers == 1`` (or one item), else a pool of spawned
    processes (never more than there are items)."""

    def __init__(self, workers: int = 1, *, verbose: int = 0) -> None:
        if int(workers) < 1:
            raise ValueError("workers must be at least 1")
        self.workers = int(workers)
        self.verbose = verbose

    @property
    def in_process(self) -> bool:
        return self.workers <= 1

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | Exception]]:
        items = list(items)
        if self.in_process:
            for item in items:
                try:
                    yield item, fn(item)
                except TrainkitError as exc:  # one request's failure does not stop the others
                    yield item, exc
            return
        yield from self._pool(fn, items)

    def _pool(self, fn: Callable[[T], R], items: list[T]) -> Iterator[tuple[T, R | Exception]]:
        import concurrent.futures as cf
        import multiprocessing

        n = min(self.workers, len(items))
        pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=worker_init, initargs=(self.verbose,))
        log.info("running %d requests in %d worker processes", len(items), n)
        try:
            futures = {pool.submit(fn, item): item for item in items}
            for fut in cf.as_completed(futures):
                try:
                    value: Any = fut.result()
                except cf.process.BrokenProcessPool as exc:
                    value = WorkerDied(f"worker process died ({str(exc).strip() or type(exc).__name__})")
                except TrainkitError as exc:
                    value = exc
                yield futures[fut], value
        except BaseException:  # Ctrl-C, or the consumer stopped early
            stop_pool(pool)
            raise
        pool.shutdown(wait=True)


def worker_init(verbose: int) -> None:
    """First thing in each spawned worker: one thread per numeric library (training pins torch
    to one thread anyway; this keeps OpenMP/BLAS pools from oversubscribing the cores), and
    trainkit's logging on stderr as in the parent."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    logger = logging.getLogger("trainkit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)


def stop_pool(pool: Any, grace: float = 10.0) -> None:
    """Ctrl-C: workers in the terminal's process group got SIGINT too and mark their runs
    KILLED; give them a moment, then interrupt (and finally terminate) any still running."""
    import multiprocessing

    procs = multiprocessing.active_children()  # the pool's workers (it has no public list of them)
    pool.shutdown(wait=False, cancel_futures=True)
    for wait, last_resort in ((grace, False), (5.0, True)):
        deadline = time.monotonic() + wait
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        alive = [p for p in procs if p.is_alive()]
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(OSError):
                if last_resort:
                    p.terminate()
                else:
                    os.kill(p.pid, signal.SIGINT)


def make_executor(name: str = "local", *, workers: int = 1, verbose: int = 0, **options: Any) -> Executor:
    """An executor by name (what ``--executor`` takes)."""
    if name == "local":
        return LocalExecutor(workers, verbose=verbose)
    raise ValueError(f"unknown executor {name!r}: use local")
