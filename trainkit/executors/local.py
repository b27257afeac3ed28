"""The local executor: requests run on this machine, in this process or in a pool of worker
processes forked from a warm fork server.

* ``LocalExecutor(workers=1)``: in this process, one after the other (progress bars and the
  caller's store object are reused).
* ``LocalExecutor(workers=N)``: N worker processes, one torch/BLAS thread each, forked from a
  warm fork server (see :class:`LocalExecutor`). Ctrl-C reaches the workers (same process
  group): they mark their runs KILLED and release their leases; the pool is then stopped
  (:func:`stop_pool`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from trainkit.errors import ConfigError, TrainkitError
from trainkit.executors.base import THREAD_VARS, Executor, R, T, WorkerDied

log = logging.getLogger("trainkit")

#: imported once by the fork server the local pool's workers are forked from (warms them)
PRELOAD_MODULE = "trainkit._worker_preload"


def pool_context() -> Any:
    """The multiprocessing context of the local pool: ``forkserver`` with
    :data:`PRELOAD_MODULE` preloaded where the platform has it, else ``spawn``.

    Why: a spawned worker starts cold and pays about 4 s (MLflow, torch, stable-baselines3,
    ``torch._dynamo``) before its first model — more than a 100k-step model takes to train. The
    fork server pays that once per process, and every worker after it (this pool's, and the
    next call's) is a fork of a warm, single-threaded process that holds no connection or
    lease. ``fork`` from the caller would be faster still but copies its threads' locks and its
    open store connections; it is never used."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD_MODULE])  # no effect once the server runs (it is warm then)
    return ctx


def start_warming() -> None:
    """Start the local pool's fork server now, without waiting for it: it warms up on another
    core while this process does its own imports and lookups. A no-op when it already runs,
    or where the platform has no fork server."""
    if pool_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class LocalExecutor(Executor):
    """This machine: in-process when ``workers == 1`` (or one item), else a pool of worker
    processes (never more than there are items).

    The workers are forked from a fork server that imported and warmed trainkit once
    (:func:`pool_context`); ``warm=True`` (the default) starts it when the executor is made, so
    that it warms while the caller prepares its requests. It lives as long as this process, so
    later pools start warm at once. Each worker takes the caller's environment variables,
    working directory and ``sys.path`` as they are when the pool starts (what a spawned process
    would inherit; the fork server's are those of the moment it started)."""

    def __init__(self, workers: int = 1, *, verbose: int = 0, warm: bool = True) -> None:
        if int(workers) < 1:
            raise ValueError("workers must be at least 1")
        self.workers = int(workers)
        self.verbose = verbose
        self._held = 0  # `with` depth: keep the pool (and its warm workers) between calls
        self._kept: Any = None  # the pool kept while held
        if warm and self.workers > 1:
            start_warming()

    @property
    def in_process(self) -> bool:
        return self.workers <= 1

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    def __enter__(self) -> LocalExecutor:
        """Inside ``with executor:`` the worker processes are kept between calls (each keeps its
        store connection); they are stopped on exit. Outside, every call has its own pool."""
        self._held += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._held = max(0, self._held - 1)
        if not self._held and self._kept is not None:
            pool, self._kept = self._kept, None
            pool.shutdown(wait=True)

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

    def _new_pool(self, n: int) -> Any:
        import concurrent.futures as cf
        import sys

        caller = WorkerContext(self.verbose, dict(os.environ), os.getcwd(), list(sys.path))
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=pool_context(), initializer=worker_init,
                                      initargs=(caller,))

    def _pool(self, fn: Callable[[T], R], items: list[T]) -> Iterator[tuple[T, R | Exception]]:
        import concurrent.futures as cf

        n = min(self.workers, len(items))
        if self._held:  # workers are started as tasks need them, up to `workers`, and kept
            pool = self._kept = self._kept or self._new_pool(self.workers)
        else:
            pool = self._new_pool(n)
        log.info("running %d requests in %d worker processes", len(items), n)
        broken = False
        try:
            futures = {pool.submit(fn, item): item for item in items}
            for fut in cf.as_completed(futures):
                try:
                    value: Any = fut.result()
                except cf.process.BrokenProcessPool as exc:
                    broken = True
                    value = WorkerDied(f"worker process died ({str(exc).strip() or type(exc).__name__})")
                except TrainkitError as exc:
                    value = exc
                yield futures[fut], value
        except BaseException:  # Ctrl-C, or the consumer stopped early
            self._forget(pool)
            stop_pool(pool)
            raise
        if broken or not self._held:  # a broken pool takes no more work: the next call starts another
            self._forget(pool)
            pool.shutdown(wait=True)

    def _forget(self, pool: Any) -> None:
        if pool is self._kept:
            self._kept = None


@dataclass(frozen=True)
class WorkerContext:
    """What a local worker takes from its caller when the pool starts (picklable)."""

    verbose: int = 0
    environ: dict[str, str] | None = None  # the caller's os.environ; None: keep the worker's own
    cwd: str | None = None
    sys_path: list[str] | None = None


def worker_init(caller: WorkerContext | int = 0) -> None:
    """First thing in each worker process: the caller's environment, working directory and
    ``sys.path`` (a fork server's are those of the moment it started), one thread per numeric
    library (training pins torch to one thread anyway; this keeps OpenMP/BLAS pools from
    oversubscribing the cores), and trainkit's logging on stderr as in the caller. An ``int``
    is just the verbosity (Ray tasks: their environment comes from ``runtime_env``)."""
    import sys

    if isinstance(caller, int):
        caller = WorkerContext(verbose=caller)
    if caller.environ is not None:
        os.environ.clear()
        os.environ.update(caller.environ)
    if caller.cwd is not None:
        with contextlib.suppress(OSError):
            os.chdir(caller.cwd)
    if caller.sys_path is not None:
        sys.path[:] = caller.sys_path
    os.environ.update(THREAD_VARS)
    logger = logging.getLogger("trainkit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_Redacting("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    verbose = caller.verbose
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)


class _Redacting(logging.Formatter):
    """A worker's log lines with their secrets masked, as the CLI's are (settings.redact_text)."""

    def format(self, record: logging.LogRecord) -> str:
        from trainkit.settings import redact_text

        return redact_text(super().format(record))


def stop_pool(pool: Any, grace: float = 10.0) -> None:
    """Ctrl-C: workers in the terminal's process group got SIGINT too and mark their runs
    KILLED; give them a moment, then interrupt (and finally terminate) any still running.

    ``concurrent.futures`` has no public list of a pool's processes, so this reads the pool's
    private ``_processes``: it may, being the function of the pool's owner (this module makes
    every pool it stops), and nothing else in trainkit does. That stops this pool's workers only,
    not every child of the process (another pool's, a test's)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown() drops it
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


def local_executor(*, workers: int = 1, verbose: int = 0, address: str | None = None, tracking_uri: str | None = None,
                   **options: Any) -> LocalExecutor:
    """The ``local`` row of the executor registry. ``address`` names a Ray cluster: refused
    (exit 2) rather than silently ignored, since the user asked for a cluster and would get
    this machine. ``tracking_uri`` is not needed: workers here reach whatever the caller does."""
    if address:
        raise ConfigError("--ray-address needs --executor ray")
    return LocalExecutor(workers, verbose=verbose, **options)
