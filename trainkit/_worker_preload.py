"""Imported once by the local executor's fork server, never by anything else: importing it
warms the process that imports it.

Every worker of ``LocalExecutor(workers > 1)`` is forked from that server (multiprocessing's
``forkserver`` start method with this module preloaded), so each starts with what a first
cache miss would otherwise pay for itself, about 4 s on this kind of machine: what a worker runs
imported (:mod:`trainkit.fanout` and :mod:`trainkit.cache`, with MLflow, torch and
stable-baselines3), ``torch._dynamo`` imported (:func:`trainkit.agents.warm_up`), and
MLflow's installed-package map filled (:func:`trainkit.store.flavor.warm_up`). With 100k-step
models training in about 1.5 s, that start-up would otherwise be most of a small batch.

The server is one clean process: it holds no store connection, no lease and no thread (forking
a process that has threads can deadlock the child), and it runs numeric code on one thread so
that no OpenMP pool exists to be copied into the children. A failure here only leaves workers
colder: it is logged at debug level and the server still serves.
"""

from __future__ import annotations

import logging
import os

from trainkit.executors import THREAD_VARS

os.environ.update(THREAD_VARS)  # before torch is imported: no OpenMP pool to copy into the children


def _warm() -> None:
    import torch

    torch.set_num_threads(1)
    # what a worker runs: trainkit.fanout's worker side over a trainkit.cache.ModelCache (mlflow,
    # torch, stable-baselines3 and the store with them); not the trainkit.manager facade
    from trainkit import agents, cache, fanout  # noqa: F401
    from trainkit.store import flavor

    agents.warm_up()
    flavor.warm_up()


try:
    _warm()
except Exception as _exc:  # noqa: BLE001 - colder workers, not broken ones
    logging.getLogger("trainkit").debug("the worker fork server could not warm up: %s", _exc)
