"""The deferred tie of a lease (what the manager uses): a trainer starts at once, and the tie
with claimants that raced it is decided once the settle time has passed — by the lease, on the
next ``should_stop()`` (polled by training) or ``is_holder()`` (before publishing)."""

from __future__ import annotations

import time

import pytest

import trainkit

from support import FAST


def _competitor(store, config, start_offset_ms: int, state: str | None = None) -> str:
    """A lease made by hand, as another trainer's process would have made it."""
    from trainkit.store import TAG_CLAIM, TAG_CLAIM_STATE, TAG_HEARTBEAT, TAG_SYMBOL, TAG_VERSION

    tags = {TAG_CLAIM: config.config_hash, TAG_HEARTBEAT: f"{time.time():.3f}", TAG_SYMBOL: config.symbol,
            TAG_VERSION: trainkit.__version__}
    if state:
        tags[TAG_CLAIM_STATE] = state
    run = store.client.create_run(store.experiment_id, run_name=config.run_name(), tags=tags,
                                  start_time=int(time.time() * 1000) + start_offset_ms)
    return run.info.run_id


def _provenance():
    from trainkit.store import DataProvenance

    return DataProvenance("synthetic", "synthetic", None, "0" * 64)


@pytest.fixture
def setup(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRAINKIT_CLAIM_SETTLE", "1.0")
    manager = trainkit.TrainingManager(sqlite_uri)
    config = manager.config_for("TIE", "2020-01-01", "2021-06-30", data_source="synthetic", **FAST)
    return manager.store, config


def test_a_deferred_lease_that_loses_its_tie_stops_and_releases(setup) -> None:
    store, config = setup
    t0 = time.monotonic()
    lease = store.acquire(config, _provenance(), defer_tie=True)
    assert lease is not None and time.monotonic() - t0 < 1.0  # no settle sleep before training starts
    older = _competitor(store, config, start_offset_ms=-60_000)  # raced us, created "before" us
    assert not lease.should_stop()  # the settle time has not passed: keep training
    time.sleep(1.1)
    assert lease.should_stop() and lease.lost_tie  # decided now: the older claimant wins
    assert not lease.is_holder()
    run = store.client.get_run(lease.run_id)
    assert run.info.lifecycle_stage == "deleted" and "trainkit.claim_hash" not in run.data.tags
    live, _ = store.leases.holders(config.config_hash)
    assert [r.info.run_id for r in live] == [older]


def test_a_deferred_lease_that_wins_is_marked_training_before_publishing(setup) -> None:
    store, config = setup
    lease = store.acquire(config, _provenance(), defer_tie=True)
    younger = _competitor(store, config, start_offset_ms=+60_000)
    try:
        t0 = time.monotonic()
        assert lease.is_holder()  # waits out the settle time, then decides: ours is older
        assert time.monotonic() - t0 > 0.5
        assert store.client.get_run(lease.run_id).data.tags["trainkit.claim_state"] == "training"
        assert not lease.should_stop()
        live, _ = store.leases.holders(config.config_hash)
        assert sorted(r.info.run_id for r in live) == sorted([lease.run_id, younger])  # they did compete
    finally:
        lease.fail("test over")


def test_a_claim_already_training_beats_a_deferred_lease(setup) -> None:
    store, config = setup
    lease = store.acquire(config, _provenance(), defer_tie=True)
    winner = _competitor(store, config, start_offset_ms=+60_000, state="training")  # clock skew: reads younger
    assert not lease.is_holder() and lease.lost_tie
    assert [r.info.run_id for r in store.leases.holders(config.config_hash)[0]] == [winner]


@pytest.mark.slow
def test_the_manager_waits_for_a_live_claim_and_trains_when_its_holder_gives_up(setup, monkeypatch) -> None:
    """Through the manager: a request that finds a live claim waits for its holder (no lease of
    its own), and trains once that holder gives up without a model."""
    store, config = setup
    older = _competitor(store, config, start_offset_ms=-60_000)
    manager = trainkit.TrainingManager(store.tracking_uri)
    waited: list[str] = []

    def finish_the_winner(holder: str) -> None:  # play the winner: publish nothing, then give up
        waited.append(holder)
        store.client.set_terminated(older, status="FAILED")

    result = manager.get("TIE", "2020-01-01", "2021-06-30", data_source="synthetic", progress=False,
                         on_wait=finish_the_winner, **FAST)
    assert waited == [older]  # it waited for the older claimant, whose claim was live
    assert result.status == "trained"  # the winner gave up: this request trained after all
