"""Run many independent model requests: here, in local processes, or on a Ray cluster.

An executor knows nothing about models, stores or leases: it maps a picklable function over
items and yields ``(item, result or exception)`` as each finishes, in completion order. Dedupe
stays in the store — two executors (or two machines) given the same configs train each once,
because every request goes through the lease protocol.

* :mod:`~trainkit.executors.base`: the :class:`Executor` base class (the protocol) and the
  registry of executors by name (:func:`register_executor`, :func:`make_executor`).
* :mod:`~trainkit.executors.local`: :class:`LocalExecutor`, in this process or in worker
  processes forked from a warm fork server.
* :mod:`~trainkit.executors.ray_cluster`: :class:`RayExecutor`, one Ray task per item (ray is
  imported only when it connects).

The built-in rows of the registry are registered here, once, so that importing any of these
modules makes ``local`` and ``ray`` known. Importing this package imports no ray, mlflow,
torch or pandas.
"""

from __future__ import annotations

from trainkit.executors.base import (
    THREAD_VARS,
    Executor,
    ExecutorFactory,
    WorkerDied,
    executor_names,
    make_executor,
    register_executor,
)
from trainkit.executors.local import (
    PRELOAD_MODULE,
    LocalExecutor,
    WorkerContext,
    local_executor,
    pool_context,
    start_warming,
    stop_pool,
    worker_init,
)
from trainkit.executors.ray_cluster import (
    LOCAL_RAY_ADDRESSES,
    RayExecutor,
    absolute_tracking_uri,
    is_local_ray_address,
    ray_executor,
    ray_worker_env,
)

register_executor("local", local_executor)
register_executor("ray", ray_executor)

__all__ = [
    "LOCAL_RAY_ADDRESSES", "PRELOAD_MODULE", "THREAD_VARS", "Executor", "ExecutorFactory", "LocalExecutor",
    "RayExecutor", "WorkerContext", "WorkerDied", "absolute_tracking_uri", "executor_names", "is_local_ray_address",
    "local_executor", "make_executor", "pool_context", "ray_executor", "ray_worker_env", "register_executor",
    "start_warming", "stop_pool", "worker_init",
]
