"""Concurrency: identical requests from several processes train once; different ones don't wait.

One race per backend: N=4 ``trainkit train`` processes ask for the same uncached config, all
released at the same moment by a file barrier (barrier_cli.py: each process does its imports
first, so the requests reach the store within milliseconds). On sqlite the store is a brand-new
file (docs/ARCHITECTURE.md, "MLflow pitfalls": its first migration must survive the race); the other backend is a real
``mlflow server``, where a fifth process asks for a different config in the same race (on a fresh
sqlite file the migration lock staggers the processes by seconds, which would blur the timing).
The outcome is read back with MlflowClient, not through trainkit.
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
    client,
    config_hash,
    describe,
    fast_cli,
    finished_with_hash,
    go_times,
    isolated_env,
    running,
    start_barrier_cli,
    wait_all,
)

N = 4
STEPS = 8192  # a few seconds of training: the losers really wait on a live claim


def _race(root: Path, uri: str, exp: str, *, other_config: bool) -> dict:
    same = ["--experiment", exp, "train", "--symbols", "CONC", *WINDOW_CLI, "--data-source", "synthetic",
            *fast_cli(STEPS), "--json"]
    other = ["--experiment", exp, "-v", "train", "--symbols", "PARB", *WINDOW_CLI, "--data-source", "synthetic",
             *fast_cli(STEPS), "--json"]
    logs = root / "logs"
    argvs = [same] * N + ([other] if other_config else [])
    procs = start_barrier_cli(len(argvs), root / "barrier", argvs, env=isolated_env(root, uri), cwd=root, logs=logs)
    results = wait_all(procs, logs)
    return {"uri": uri, "exp": exp, "same": results[:N], "other": results[N] if other_config else None,
            "go": go_times(root / "barrier")}


@pytest.fixture(scope="module")
def race_sqlite(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("race-sqlite")
    db = root / "mlflow.db"
    assert not db.exists()  # brand new (docs/ARCHITECTURE.md, "MLflow pitfalls")
    return _race(root, f"sqlite:///{db}", "trainkit", other_config=False)


@pytest.fixture(scope="module")
def race_server(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> dict:
    return _race(tmp_path_factory.mktemp("race-server"), mlflow_server.uri, f"trainkit-race-{uuid.uuid4().hex[:8]}",
                 other_config=True)


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def race(request: pytest.FixtureRequest) -> dict:
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
    assert len(race["go"]) == N + (race["other"] is not None) and race["go"][-1] - race["go"][0] < 1.0, f"not started together: {race['go']}"
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

    assert load_model(rows[0]["model_uri"], tracking_uri=uri).num_timesteps >= STEPS
    print(f"{N} identical requests within {race['go'][-1] - race['go'][0]:.3f}s: 1 trained, {N - 1} cached, "
          f"{len(losers)} losing claim run(s) ended; seconds per process {sorted(r['seconds'] for r in rows)}")


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
