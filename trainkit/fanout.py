"""One fan-out: many independent tasks over one model cache, through any executor.

Training many models (``trainkit train --workers``), the folds of a walk-forward and the trials
of a search all have the same shape: a list of picklable items, a module-level ``work(cache,
item)`` function, and an executor that runs it here, in local worker processes or as Ray
tasks. This module is the one place that shape is written:

* in process, ``work`` gets the caller's :class:`~trainkit.cache.ModelCache` (its progress
  bars, its store connection);
* elsewhere, each worker process keeps **one** ``ModelCache`` per (tracking URI, experiment)
  for all its tasks, and the executor is told which store its workers must reach
  (``Executor.use_store``: Ray refuses a store its nodes cannot reach, before submitting);
* results stream back in completion order as ``(item, value)``; a
  :class:`~trainkit.errors.TrainkitError` is a value (one task's failure does not stop the
  others), anything else is a bug and is raised;
* when the consumer stops early (Ctrl-C, an error, ``break``) the executor's stream is closed,
  so it cancels the work still in flight.

Dedupe is not done here: identical items train once because every request goes through the
store's lease (docs/ARCHITECTURE.md, *The lease*).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from trainkit.errors import TrainkitError

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.cache import ModelCache
    from trainkit.executors import Executor

T = TypeVar("T")
R = TypeVar("R")

#: (tracking URI, experiment) -> the ModelCache of this worker process, reused by its tasks
_worker_caches: dict[tuple[str, str], Any] = {}


def worker_cache(tracking_uri: str, experiment_name: str) -> ModelCache:
    """This process's :class:`ModelCache` for the store (made on its first task)."""
    key = (tracking_uri, experiment_name)
    if key not in _worker_caches:
        from trainkit.cache import ModelCache

        _worker_caches[key] = ModelCache(tracking_uri, experiment_name)
    return _worker_caches[key]


def _in_worker(tracking_uri: str, experiment_name: str, work: Callable[[Any, T], R], item: T) -> R:
    return work(worker_cache(tracking_uri, experiment_name), item)


def fan_out(cache: ModelCache, executor: Executor | None, work: Callable[[ModelCache, T], R],
            items: Iterable[T]) -> Iterator[tuple[T, R | TrainkitError]]:
    """Run ``work(cache, item)`` for every item through ``executor`` (default: one after the
    other in this process), yielding ``(item, result or TrainkitError)`` as each finishes.
    ``work`` must be picklable for an executor that is not ``in_process``: a module-level
    function, or a ``functools.partial`` of one."""
    items = list(items)
    if not items:
        return
    if executor is None:
        from trainkit.executors import LocalExecutor

        executor = LocalExecutor(1)
    if executor.in_process:
        fn: Callable[[T], R] = partial(work, cache)
    else:
        executor.use_store(cache.tracking_uri)
        fn = partial(_in_worker, cache.tracking_uri, cache.experiment_name, work)
    results = executor.map_unordered(fn, items)
    try:
        for item, value in results:
            if isinstance(value, BaseException) and not isinstance(value, TrainkitError):
                raise value  # a bug, not a task's failure
            yield item, value
    finally:
        results.close()  # stopped early (Ctrl-C, an error, break): the executor cancels its work now
