"""One torch thread, the one rule for every policy build, training run and forward pass.

Why one: the networks are tiny, so several torch threads only contend — SB3 rebuilds (and
orthogonally initialises) a policy before loading its weights, and on a busy machine those
small QR decompositions wait on each other (measured: ~550 ms median vs ~18 ms with one thread
on 2 loaded cores); and a result must not depend on the caller's thread count (the same config
gives the same weights, and the same policy the same actions, in any process:
docs/ARCHITECTURE.md, "Threads"). Training (:mod:`trainkit.agents`) and loading
(:mod:`trainkit.store.flavor`) both use this context manager; the standalone
``pyfunc_model.py`` keeps its own copy (it imports no trainkit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["one_torch_thread"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(1)`` and restore the caller's setting after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
