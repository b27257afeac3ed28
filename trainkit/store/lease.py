"""Leases: how identical requests on many processes and machines train a config once.

A lease reserves one config hash for one trainer, and it lives in the tracking store itself
(so sqlite, PostgreSQL and a remote server behave alike; no side files, no other service).
The shape is Prefect's ``LockManager`` protocol — acquire / wait / is-holder / release —
with the two things a training lock needs on top: a heartbeat, and taking over a holder that
died.

The protocol (docs/ARCHITECTURE.md, "The lease"):

1. A lease is a RUNNING run in the cache experiment tagged ``trainkit.claim_hash = <hash>``
   and ``trainkit.heartbeat = <unix seconds>``, refreshed every ``TRAINKIT_HEARTBEAT`` seconds
   by a thread through ``MlflowClient.set_tag`` (never the fluent API: it is per-thread and
   silently starts new runs).
2. :meth:`LeaseManager.acquire`: stale leases (:func:`~trainkit.store.records.is_stale`) are
   marked FAILED first. If another live lease exists, it returns ``None`` (call
   :meth:`LeaseManager.wait`). Otherwise it creates one, lets ``TRAINKIT_CLAIM_SETTLE`` seconds
   pass so concurrent claimants become visible, and decides the tie: a lease already marked
   ``training`` wins, else the oldest ``start_time``, then ``run_id``. The loser deletes its
   lease (ends it KILLED, and deletes it where allowed) and gets ``None``; the winner marks itself ``training`` and gets a :class:`Lease`.
3. The holder re-checks :meth:`Lease.is_holder` before it publishes: a holder that stalled
   past ``TRAINKIT_STALE_AFTER`` may have been taken over, and then publishes nothing.
4. It ends in exactly one of: published (the run turns FINISHED with ``config_hash``, then the
   lease tags go: waiters see the lease or the model, never neither), :meth:`Lease.release`
   (no model: the run ends KILLED and tagged, and is deleted where the user may), :meth:`Lease.fail` (FAILED, or KILLED on Ctrl-C, released
   at once so waiters take over without waiting for staleness).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from trainkit import settings
from trainkit.store.contract import (
    CLAIM_STATE_TRAINING,
    TAG_CLAIM,
    TAG_CLAIM_STATE,
    TAG_FAILURE,
    TAG_HEARTBEAT,
    quote,
)
from trainkit.store.records import is_stale, lease_order, won_tie

log = logging.getLogger("trainkit")


class Lease:
    """A held lease: the RUNNING run ``run_id`` reserving ``config_hash`` for this process,
    kept alive by a heartbeat thread until it is published, released or failed.

    Holds a client and ids only — nothing else of the store."""

    def __init__(self, client: Any, tracking_uri: str, run_id: str, config_hash: str, *, external: bool = False,
                 start_time: int = 0) -> None:
        self.client, self.tracking_uri = client, tracking_uri
        self.run_id, self.config_hash = run_id, config_hash
        self.start_time = int(start_time or 0)  # ms; orders competing leases (oldest wins)
        self.external = external  # a run we did not create (mlflow run's project run): never ended or deleted by us
        self.lost = threading.Event()  # set once we learn another trainer took the lease over
        self._tie: tuple[float, Callable[[], bool]] | None = None  # (monotonic deadline, did we win?)
        self.lost_tie = False  # lost to an older claimant that raced us (normal), not taken over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"trainkit-heartbeat-{run_id[:8]}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Lease(run_id={self.run_id!r}, config_hash={self.config_hash[:8]!r}…)"

    # ---- heartbeat
    def _beat(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)  # the thread's own client
        while not self._stop.wait(settings.TRAINKIT_HEARTBEAT.get()):
            try:
                run = client.get_run(self.run_id)
                if run.info.status != "RUNNING" or run.data.tags.get(TAG_CLAIM) != self.config_hash:
                    self.lost.set()  # someone judged us stale and took over
                    return
                client.set_tag(self.run_id, TAG_HEARTBEAT, f"{time.time():.3f}")
            except Exception as exc:  # a passing network fault: try again next beat
                log.debug("heartbeat of %s failed: %s", self.run_id, exc)

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # ---- the tie
    def settle_by(self, deadline: float, won: Callable[[], bool]) -> None:
        """Decide the tie at ``deadline`` (``time.monotonic``) with ``won()`` (see
        :meth:`LeaseManager.acquire`)."""
        self._tie = (deadline, won)

    def settle(self) -> bool:
        """Decide the tie now if it is still open, waiting for its deadline: the winner marks
        itself ``training``; a loser releases its lease (and counts as lost). True if we hold it."""
        if self._tie is None:
            return not self.lost.is_set()
        deadline, won = self._tie
        wait = deadline - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        winner = not self.lost.is_set() and won()  # a failed look-up leaves the tie open
        self._tie = None
        if winner:
            self.mark_won()
            return True
        log.info("lease %s lost its tie to an older claimant: released", self.run_id)
        self.release("lost the tie to an older claimant")
        self.lost_tie = True
        self.lost.set()
        return False

    # ---- questions
    def should_stop(self) -> bool:
        """Polled by training: has the lease been lost — taken over (learnt by the heartbeat) or,
        once the settle time has passed, lost the tie to an older claimant?"""
        if self._tie is not None and time.monotonic() >= self._tie[0]:
            return not self.settle()
        return self.lost.is_set()

    def is_holder(self) -> bool:
        """Ask the store: is this lease still ours (its tie won, RUNNING, still tagged with our hash)?"""
        if not self.settle():
            return False
        run = self.client.get_run(self.run_id)
        if run.info.status == "RUNNING" and run.data.tags.get(TAG_CLAIM) == self.config_hash:
            return True
        self.lost.set()
        return False

    # ---- endings
    def mark_won(self) -> None:
        """Say that this lease won its tie and is training (see :func:`won_tie`)."""
        with contextlib.suppress(Exception):
            self.client.set_tag(self.run_id, TAG_CLAIM_STATE, CLAIM_STATE_TRAINING)

    def release(self, reason: str = "released without a model") -> None:
        """Give the hash up without a model (lost the tie, or a model appeared meanwhile): the
        claim tag goes first (from then on the run is no lease), the run ends KILLED with
        ``reason`` in ``trainkit.failure``, then it is deleted — it never held anything. The
        delete needs MANAGE on the experiment; a trainer with EDIT alone (a team server's
        usual grant) cannot, and the run stays, KILLED and tagged: the protocol never needs
        the delete. A lease that was taken over is left as the taker marked it (FAILED)."""
        self.stop_heartbeat()
        if self.lost.is_set():
            return
        with contextlib.suppress(Exception):
            self.client.delete_tag(self.run_id, TAG_CLAIM)
        if self.external:
            return
        with contextlib.suppress(Exception):
            self.client.set_tag(self.run_id, TAG_FAILURE, reason)
        with contextlib.suppress(Exception):  # on its own: a failed tag must not leave the run RUNNING
            self.client.set_terminated(self.run_id, status="KILLED")
        try:
            self.client.delete_run(self.run_id)
        except Exception as exc:  # 403 without MANAGE: the KILLED, tagged run is the record
            log.debug("lease run %s ended KILLED, not deleted: %s", self.run_id, exc)

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """End without a model: FAILED (an error) or KILLED (Ctrl-C), released at once so a
        waiting process takes over without waiting for the lease to go stale."""
        self.stop_heartbeat()
        if self.lost.is_set():
            return
        with contextlib.suppress(Exception):
            self.client.set_tag(self.run_id, TAG_FAILURE, reason[:5000])
        with contextlib.suppress(Exception):
            self.client.delete_tag(self.run_id, TAG_CLAIM)
        if not self.external:  # `mlflow run` ends its own run when our process exits non-zero
            for attempt in range(3):  # a store still busy with what an interrupt cut short
                try:
                    self.client.set_terminated(self.run_id, status=status)
                    break
                except Exception as exc:
                    log.debug("ending lease %s failed (attempt %d): %s", self.run_id, attempt + 1, exc)
                    time.sleep(0.5)

    def drop_tags(self) -> None:
        """After publishing (the run is FINISHED and carries ``config_hash``): remove the lease
        tags. In this order a waiter sees the lease or the model, never neither."""
        self.stop_heartbeat()
        for tag in (TAG_CLAIM, TAG_CLAIM_STATE, TAG_HEARTBEAT):
            with contextlib.suppress(Exception):
                self.client.delete_tag(self.run_id, tag)


class LeaseManager:
    """Leases on config hashes in one experiment of one tracking store.

    ``create_run(tags) -> (run_id, start_time)`` makes the RUNNING run that becomes a lease:
    the store decides its name, params and experiment (or adopts ``mlflow run``'s project run),
    so this class knows nothing about configs or models."""

    def __init__(self, conn: Any, experiment_id: Callable[[], str]) -> None:
        self.conn = conn
        self._experiment_id = experiment_id

    @property
    def client(self) -> Any:
        return self.conn.client

    # ---- questions
    def holders(self, config_hash: str) -> tuple[list[Any], list[Any]]:
        """``(live, stale)`` lease runs on ``config_hash``, newest first."""
        runs = self.conn.search(
            [self._experiment_id()], f"tags.`{TAG_CLAIM}` = {quote(config_hash)} and attributes.status = 'RUNNING'"
        )
        now, limit = time.time(), settings.TRAINKIT_STALE_AFTER.get()
        live, stale = [], []
        for r in runs:
            (stale if is_stale(r, now, limit) else live).append(r)
        return live, stale

    def is_leased(self, config_hash: str) -> bool:
        """Is a live lease held on ``config_hash`` (by anyone)?"""
        return bool(self.holders(config_hash)[0])

    # ---- taking over
    def take_over_stale(self, config_hash: str, *, keep: str | None = None, label: str = "") -> list[str]:
        """Mark leases whose trainer stopped sending heartbeats FAILED, so they stop counting.
        Returns their run ids."""
        taken = []
        for r in self.holders(config_hash)[1]:
            if r.info.run_id == keep:
                continue
            log.warning("training lease %s%s is stale (no heartbeat for %ss): taking over", r.info.run_id,
                        f" for {label}" if label else "", int(settings.TRAINKIT_STALE_AFTER.get()))
            # FAILED first: that alone ends the lease (a trainer that wakes up sees it is no longer
            # the holder). Only a lease that really ended counts as taken over; the tags are the record.
            try:
                self.client.set_terminated(r.info.run_id, status="FAILED")
            except Exception as exc:
                log.debug("could not end the stale lease %s: %s", r.info.run_id, exc)
                continue
            with contextlib.suppress(Exception):
                self.client.set_tag(r.info.run_id, TAG_FAILURE, "stale claim: its trainer stopped sending heartbeats")
            with contextlib.suppress(Exception):
                self.client.delete_tag(r.info.run_id, TAG_CLAIM)
            taken.append(r.info.run_id)
        return taken

    # ---- acquire / wait
    def acquire(self, config_hash: str, create_run: Callable[[], tuple[str, int, bool]], *, label: str = "",
                defer_tie: bool = False) -> Lease | None:
        """A :class:`Lease` if this process now holds ``config_hash``, else ``None`` (another
        live lease exists or won the tie: :meth:`wait` for it). ``create_run()`` returns
        ``(run_id, start_time_ms, external)`` of a RUNNING run already tagged as a lease.

        The tie between claimants that raced is decided ``TRAINKIT_CLAIM_SETTLE`` seconds after
        the lease was created. By default this call waits for that. With ``defer_tie`` it
        returns the lease at once and the tie is decided by the lease itself, on the first
        :meth:`Lease.should_stop` or :meth:`Lease.is_holder` after the settle time: a trainer
        starts at once instead of sleeping, and a loser stops training, releases its lease and
        waits for the winner."""
        self.take_over_stale(config_hash, label=label)
        if self.holders(config_hash)[0]:
            return None
        run_id, start_time, external = create_run()  # ends its run itself if interrupted half-way
        try:
            lease = Lease(self.client, self.conn.tracking_uri, run_id, config_hash, external=external,
                          start_time=start_time)
        except BaseException:  # Ctrl-C between the run and its lease object: end the run here
            with contextlib.suppress(Exception):
                self.client.delete_tag(run_id, TAG_CLAIM)
                if not external:
                    self.client.set_terminated(run_id, status="KILLED")
            raise

        def won() -> bool:
            live, _stale = self.holders(config_hash)
            return self.wins((lease.start_time, lease.run_id), [r for r in live if r.info.run_id != run_id])

        lease.settle_by(time.monotonic() + settings.TRAINKIT_CLAIM_SETTLE.get(), won)
        if defer_tie:
            return lease
        try:
            return lease if lease.settle() else None
        except BaseException:  # Ctrl-C or an error while claiming: release at once
            lease.fail("interrupted while claiming", status="KILLED")
            raise

    @staticmethod
    def wins(order: tuple[int, str], others: list[Any]) -> bool:
        """Does a lease with ``order = (start_time_ms, run_id)`` win the tie against the other
        live leases ``others``? One already marked training always wins; else the oldest."""
        if any(won_tie(r) for r in others):
            return False  # someone already won (and may have a clock behind ours)
        return all(order < lease_order(r) for r in others)

    def wait(self, config_hash: str, *, poll_seconds: float = 1.0, on_wait: Callable[[str], Any] | None = None,
             until: Callable[[], bool] | None = None, label: str = "") -> None:
        """Block while a live lease on ``config_hash`` exists; return once none does (its holder
        published, failed, or went stale and was marked so) or ``until()`` is true.
        ``on_wait(holder_run_id)`` is called once, when waiting starts."""
        told = False
        while True:
            self.take_over_stale(config_hash, label=label)
            # a waiter outlives a restart of the server too (TRAINKIT_SERVER_RETRY_S)
            live, _ = self.conn.retrying("waiting for another trainer", lambda: self.holders(config_hash))
            if not live or (until is not None and until()):
                return
            if not told:
                told = True
                holder = min(live, key=lease_order).info.run_id
                log.info("%s: another trainer (run %s) is training this config; waiting for it", label or config_hash[:8], holder)
                if on_wait is not None:
                    on_wait(holder)
            time.sleep(poll_seconds * (0.75 + 0.5 * (os.getpid() % 100) / 100))  # spread the pollers
