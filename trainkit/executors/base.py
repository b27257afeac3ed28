"""What every executor is, and the registry of executors by name (what ``--executor`` takes).

An executor knows nothing about models, stores or leases: it maps a picklable function over
items and yields ``(item, result or exception)`` as each finishes, in completion order. Dedupe
stays in the store — two executors (or two machines) given the same configs train each once,
because every request goes through the lease protocol.

The registry is the one list of executor names: :func:`make_executor` and
:func:`executor_names` read it, and a new executor (another cluster) is one
:func:`register_executor` call, not an edit of every place that lists them. The built-in rows
(``local``, ``ray``) are registered by :mod:`trainkit.executors`; a factory imports its heavy
dependencies only when it is called (or later), so registering one costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from trainkit.errors import ConfigError, RuntimeFailure

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeFailure):
    """A worker process (or cluster task) died before it returned a result."""


class Executor:
    """Runs ``fn`` over ``items``; yields ``(item, fn(item) or the exception it raised)`` as
    each finishes. ``in_process`` executors call ``fn`` in the caller's process (a closure is
    fine); the others need a picklable ``fn`` (a module-level function or a partial of one).

    The base class is the protocol, with no-op defaults: ``use_store(tracking_uri)`` names the
    store the workers must reach (an executor whose workers run elsewhere checks they can,
    before anything is submitted), and ``with executor:`` keeps resources (workers, a
    connection) across calls. :func:`trainkit.fanout.fan_out` is the one caller that matters."""

    in_process: bool = True

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | Exception]]:
        """The one method every executor defines: a generator, so that closing it early
        (Ctrl-C, the consumer stopping) lets the executor cancel what is still running."""
        raise NotImplementedError

    def use_store(self, tracking_uri: str) -> None:
        """The tracking store the workers write to; nothing to do for workers on this machine."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


#: one thread per numeric library in every worker process and Ray task (training also pins torch
#: to one thread): N workers on N cores do not oversubscribe them
THREAD_VARS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


#: makes an executor from ``make_executor``'s keywords (``workers``, ``verbose``, ``address``,
#: ``tracking_uri``) and the executor's own options
ExecutorFactory = Callable[..., Executor]

#: name -> factory, in registration order (the order ``--executor`` lists them)
_EXECUTORS: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Make ``name`` an executor that :func:`make_executor` (and so ``--executor``) accepts,
    made by ``factory(workers=…, verbose=…, address=…, tracking_uri=…, **options)``. Like
    joblib's ``register_store_backend``: a name registered again is replaced, so a plugin can
    override a built-in. ``factory`` must import heavy dependencies (a cluster's client) only
    when it runs, since registering happens when :mod:`trainkit.executors` is imported."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"an executor name must be a non-empty string without surrounding blanks, not {name!r}")
    if not callable(factory):
        raise ValueError(f"the factory of executor {name!r} must be callable, not {type(factory).__name__}")
    _EXECUTORS[name] = factory


def executor_names() -> tuple[str, ...]:
    """The names ``--executor`` takes (the registry's keys, in registration order)."""
    return tuple(_EXECUTORS)


def make_executor(name: str = "local", *, workers: int = 1, verbose: int = 0, address: str | None = None,
                  tracking_uri: str | None = None, **options: Any) -> Executor:
    """An executor by name (what ``--executor`` takes), made by the factory registered under
    it from ``workers``, ``verbose``, ``address`` (a cluster's), ``tracking_uri`` (the store the
    workers must reach) and the executor's own ``options`` (``max_retries``, …). What each name
    makes of them is said once, by its factory (``local_executor``, ``ray_executor``). An
    unknown name is a :class:`~trainkit.errors.ConfigError` (exit 2, a ``ValueError``) that
    lists the registered ones."""
    factory = _EXECUTORS.get(name)
    if factory is None:
        *others, last = executor_names() or ("(none registered)",)
        raise ConfigError(f"unknown executor {name!r}: use {', '.join(others) + ' or ' if others else ''}{last}")
    return factory(workers=workers, verbose=verbose, address=address, tracking_uri=tracking_uri, **options)
