"""Concurrency: identical requests from several processes train once; different ones don't wait.

One race per store: N=4 ``trainkit train`` processes ask for the same uncached config, all
released at the same moment by a file barrier (barrier_cli.py: each process does its imports
first, so the requests reach the store within milliseconds). The stores:

* ``sqlite``: an empty store that already exists (a copy of the session's migrated template),
  as a team's store is on every day but the first;
* ``sqlite-fresh``: a brand-new file (docs/ARCHITECTURE.md, "MLflow pitfalls": its first
  migration must survive the race; the migration lock staggers the processes by seconds, so
  the claims need not meet there);
* ``server``: a real ``mlflow server``, where a fifth process asks for a different config in
  the same race.

Released together, processes still reach the lease tens to hundreds of milliseconds apart,
and the first lease is then visible before the others look: they wait without ever competing.
So on ``sqlite`` and ``server`` the N processes are also held at a second barrier inside the
lease's race window — each has looked and seen no live lease, and is about to create its own
(rel_support.ACQUIRE_BARRIER_LAUNCHER: timing only, the protocol runs unchanged) — and the
claims must really have competed: every one of them created a lease run, exactly one trained,
the others lost the tie. The outcome is read back with MlflowClient, not through trainkit.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .rel_support import (
    WINDOW_CLI,
    Result,
    all_runs,
    assert_same_model,
    claim_times,
    client,
    config_hash,
    copy_sqlite_store,
    describe,
    fast_cli,
    finished_with_hash,
    go_times,
    isolated_env,
    running,
    start_barrier_cli,
    stored_policy,
    wait_all,
)

N = 4
STEPS = 8192  # a few seconds of training: the losers really wait on a live claim


def _race(root: Path, uri: str, exp: str, *, other_config: bool, at_lease: bool) -> dict:
    """N identical requests (and one other config) released together. ``at_lease``: the N are
    also held in the lease's race window until all N are there
    (rel_support.ACQUIRE_BARRIER_LAUNCHER), so their claims meet in the store however long each
    took to get there."""
    same = ["--experiment", exp, "train", "--symbols", "CONC", *WINDOW_CLI, "--data-source", "synthetic",
            *fast_cli(STEPS), "--json"]
    other = ["--experiment", exp, "-v", "train", "--symbols", "PARB", *WINDOW_CLI, "--data-source", "synthetic",
             *fast_cli(STEPS), "--json"]
    logs = root / "logs"
    argvs = [same] * N + ([other] if other_config else [])
    procs = start_barrier_cli(len(argvs), root / "barrier", argvs, env=isolated_env(root, uri), cwd=root, logs=logs,
                              at_lease=(config_hash("CONC", timesteps=STEPS), N) if at_lease else None)
    results = wait_all(procs, logs)
    return {"uri": uri, "exp": exp, "same": results[:N], "other": results[N] if other_config else None,
            "go": go_times(root / "barrier"), "claims": claim_times(root / "barrier")}


@pytest.fixture(scope="module")
def race_sqlite(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict:
    root = tmp_path_factory.mktemp("race-sqlite")
    return _race(root, copy_sqlite_store(sqlite_template, root), "trainkit", other_config=False, at_lease=True)


@pytest.fixture(scope="module")
def race_sqlite_fresh(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("race-sqlite-fresh")
    db = root / "mlflow.db"
    assert not db.exists()  # brand new (docs/ARCHITECTURE.md, "MLflow pitfalls")
    return _race(root, f"sqlite:///{db}", "trainkit", other_config=False, at_lease=False)


@pytest.fixture(scope="module")
def race_server(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> dict:
    return _race(tmp_path_factory.mktemp("race-server"), mlflow_server.uri, f"trainkit-race-{uuid.uuid4().hex[:8]}",
                 other_config=True, at_lease=True)


@pytest.fixture(params=["sqlite", "sqlite-fresh", pytest.param("server", marks=pytest.mark.server)])
def race(request: pytest.FixtureRequest) -> dict:
    return request.getfixturevalue(f"race_{request.param.replace('-', '_')}")


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def contested_race(request: pytest.FixtureRequest) -> dict:
    """The races on a store that exists before the requests arrive: the claims meet there."""
    return request.getfixturevalue(f"race_{request.param}")


def _row(res: Result) -> dict:
    assert res.rc == 0, str(res)
    assert "Traceback" not in res.err, str(res)
    doc = json.loads(res.out)
    assert isinstance(doc, list) and len(doc) == 1, str(res)
    return doc[0]


@pytest.mark.slow
def test_identical_requests_train_exactly_once(race: dict) -> None:
    uri, exp = race["uri"], race["exp"]
    assert len(race["go"]) == N + (race["other"] is not None), f"not all processes passed the barrier: {race['go']}"
    rows = [_row(res) for res in race["same"]]
    expected_hash = config_hash("CONC", timesteps=STEPS)
    assert {r["config_hash"] for r in rows} == {expected_hash}
    assert len({r["model_uri"] for r in rows}) == 1, rows
    assert len({r["run_id"] for r in rows}) == 1, rows
    assert sorted(r["status"] for r in rows) == ["cached"] * (N - 1) + ["trained"], rows

    # the store agrees: one FINISHED run with this hash and its LoggedModel, nothing left RUNNING
    winner = rows[0]["run_id"]
    finished = finished_with_hash(uri, expected_hash, exp)
    assert [r.info.run_id for r in finished] == [winner], describe(finished)
    exp_id = client(uri).get_experiment_by_name(exp).experiment_id
    other_run = _row(race["other"])["run_id"] if race["other"] is not None else None
    conc_models = [m for m in client(uri).search_logged_models(experiment_ids=[exp_id]) if m.source_run_id != other_run]
    assert [m.model_id for m in conc_models] == [finished[0].data.tags["trainkit.model_id"]]
    left = running(uri, exp)
    assert not left, "runs left RUNNING after every process exited:\n" + describe(left)
    losers = [r for r in all_runs(uri, exp) if r.data.tags.get("trainkit.symbol") == "CONC" and r.info.run_id != winner]
    assert all(r.info.status != "FINISHED" and "config_hash" not in r.data.tags for r in losers), describe(losers)

    from trainkit.store import load_model

    served = load_model(rows[0]["model_uri"], tracking_uri=uri)
    assert served.num_timesteps >= STEPS
    if uri.startswith("sqlite:"):  # the artifacts are on this disk: the served model is the stored one
        assert_same_model(served, stored_policy(uri, winner), what=rows[0]["model_uri"])
    print(f"{N} identical requests within {race['go'][-1] - race['go'][0]:.3f}s: 1 trained, {N - 1} cached, "
          f"{len(losers)} losing claim run(s) ended; seconds per process {sorted(r['seconds'] for r in rows)}")


def _lease_runs(race: dict) -> list:
    """Every run (deleted ones included) that a CONC request created: each is a lease run, made
    by a process that saw no live lease at that moment. A loser of the tie ends and deletes
    its own, so only ``ViewType.ALL`` still shows it."""
    name = f"CONC-ppo-{config_hash('CONC', timesteps=STEPS)[:8]}"
    return [r for r in all_runs(race["uri"], race["exp"]) if r.info.run_name == name]


@pytest.mark.slow
def test_the_claims_really_competed_and_exactly_one_trained(contested_race: dict) -> None:
    """The race is a race: every process created a lease run for the same hash (they met in the
    store, not one after the other), exactly one of them trained and published, and every
    other lease lost the tie: ended KILLED and deleted, with no metric and no model, while the
    winner's lease was still open."""
    race = contested_race
    rows = [_row(res) for res in race["same"]]
    winner_id = next(r["run_id"] for r in rows if r["status"] == "trained")
    leases = _lease_runs(race)
    assert len(race["claims"]) == N, f"not every request reached the lease's race window: {race['claims']}"
    assert len(leases) == N, (f"{len(leases)} of {N} processes created a lease: the claims did not all compete "
                              f"(created at {race['claims']})\n" + describe(leases))
    trained = [r for r in leases if r.info.status == "FINISHED"]
    assert [r.info.run_id for r in trained] == [winner_id], describe(leases)
    winner = trained[0]
    assert winner.data.tags["config_hash"] == rows[0]["config_hash"] and winner.data.metrics, describe([winner])
    losers = [r for r in leases if r.info.run_id != winner_id]
    for r in losers:
        assert (r.info.status, r.info.lifecycle_stage) == ("KILLED", "deleted"), describe([r])
        assert "config_hash" not in r.data.tags and "trainkit.model_id" not in r.data.tags, describe([r])
        assert not r.data.metrics, f"a losing lease logged training metrics: {r.data.metrics}"
        # it existed while the winner's lease was open: the two claims overlapped in time
        assert r.info.start_time <= winner.info.end_time and r.info.end_time >= winner.info.start_time, (
            f"loser {r.info.start_time}..{r.info.end_time}, winner {winner.info.start_time}..{winner.info.end_time}")
    print(f"{len(leases)} of {N} processes created a lease; 1 trained, {len(losers)} lost the tie and were deleted")


@pytest.mark.slow
@pytest.mark.server
def test_different_config_does_not_wait(race_server: dict) -> None:
    """The fifth request of the server race (another config) never waited for the CONC claim:
    its training run overlaps the CONC winner's for most of its length (serialised by a claim,
    it would start only after that run ended), so two configs take about the time of one."""
    race = race_server
    other = _row(race["other"])
    assert other["status"] == "trained", other
    assert "waiting" not in race["other"].err.lower(), f"it waited for another config's trainer\n{race['other']}"
    winner = next(r for r in map(_row, race["same"]) if r["status"] == "trained")
    runs = {r.info.run_id: r for r in all_runs(race["uri"], race["exp"])}
    (s1, e1), (s2, e2) = [(runs[r["run_id"]].info.start_time, runs[r["run_id"]].info.end_time) for r in (winner, other)]
    overlap = min(e1, e2) - max(s1, s2)
    print(f"CONC run {(e1 - s1) / 1000:.1f}s and PARB run {(e2 - s2) / 1000:.1f}s overlap by {overlap / 1000:.1f}s; "
          f"PARB took {other['seconds']}s, CONC winner {winner['seconds']}s")
    assert overlap > 0.5 * min(e1 - s1, e2 - s2), f"the two trainings were serialised: CONC {s1}..{e1}, PARB {s2}..{e2}"
