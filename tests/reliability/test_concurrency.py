"""Concurrency: identical requests from several processes train once; different ones don't wait.

Each request is a real ``trainkit train`` process. A file barrier (barrier_cli.py) holds every
process after its imports, so the requests hit the store within milliseconds of each other —
on a brand-new sqlite file (Decision 1: its first migration must survive the race) and on a real
``mlflow server``. The outcome is read back with MlflowClient, not through trainkit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rel_support import (
    START,
    WINDOW_CLI,
    all_runs,
    client,
    config_hash,
    describe,
    fast_cli,
    finished_with_hash,
    go_times,
    running,
    start_barrier_cli,
    wait_all,
)

N = 4
STEPS = 2048  # long enough that the losers really wait on a live claim


def _store(request: pytest.FixtureRequest, backend: str) -> tuple[str, str]:
    if backend == "sqlite":
        return request.getfixturevalue("sqlite_uri"), "trainkit"
    return request.getfixturevalue("server_uri"), request.getfixturevalue("experiment_name")


def _rows(results: list) -> list[dict]:
    rows = []
    for res in results:
        assert res.rc == 0, str(res)
        assert "Traceback" not in res.err, str(res)
        doc = json.loads(res.out)
        assert isinstance(doc, list) and len(doc) == 1, str(res)
        rows.append(doc[0])
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("server", marks=pytest.mark.server)])
def test_identical_requests_train_exactly_once(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                                               logs: Path) -> None:
    uri, exp = _store(request, backend)
    if backend == "sqlite":
        db = Path(uri.split("sqlite:///", 1)[1])
        assert not db.exists(), "the store must be brand new (Decision 1)"
    expected_hash = config_hash("CONC", timesteps=STEPS)
    argv = ["--experiment", exp, "train", "--symbols", "CONC", *WINDOW_CLI, "--data-source", "synthetic",
            *fast_cli(STEPS), "--json"]

    procs = start_barrier_cli(N, tmp_path / "barrier", [argv] * N, env={"MLFLOW_TRACKING_URI": uri},
                              cwd=tmp_path, logs=logs)
    results = wait_all(procs, logs)
    gos = go_times(tmp_path / "barrier")
    assert len(gos) == N and gos[-1] - gos[0] < 1.0, f"the requests did not start together: {gos}"

    rows = _rows(results)
    assert {r["config_hash"] for r in rows} == {expected_hash}
    assert len({r["model_uri"] for r in rows}) == 1, rows
    assert len({r["run_id"] for r in rows}) == 1, rows
    assert sorted(r["status"] for r in rows) == ["cached"] * (N - 1) + ["trained"], rows

    # the store agrees: one FINISHED run with this hash, one LoggedModel, nothing left RUNNING
    finished = finished_with_hash(uri, expected_hash, exp)
    assert [r.info.run_id for r in finished] == [rows[0]["run_id"]], describe(finished)
    exp_id = client(uri).get_experiment_by_name(exp).experiment_id
    models = client(uri).search_logged_models(experiment_ids=[exp_id])
    assert len(models) == 1, [m.model_id for m in models]
    assert models[0].model_id == finished[0].data.tags["trainkit.model_id"]
    left = running(uri, exp)
    assert not left, "runs left RUNNING after every process exited:\n" + describe(left)
    # the losers' claims are gone from view (deleted or ended), never FINISHED
    others = [r for r in all_runs(uri, exp) if r.info.run_id != rows[0]["run_id"]]
    assert all(r.info.status != "FINISHED" for r in others), describe(others)
    assert all("config_hash" not in r.data.tags for r in others), describe(others)

    from trainkit.store import load_model

    model = load_model(rows[0]["model_uri"], tracking_uri=uri)
    assert model.num_timesteps >= STEPS
    print(f"[{backend}] {N} requests within {gos[-1] - gos[0]:.3f}s: 1 trained, {N - 1} cached; "
          f"seconds per process: {sorted(r['seconds'] for r in rows)}; {len(others)} abandoned claim run(s)")


@pytest.mark.slow
def test_different_configs_train_in_parallel(sqlite_uri: str, tmp_path: Path, logs: Path) -> None:
    """Two different configs at once: neither waits for the other's claim, so their training
    runs overlap in time (serialised by a claim, the second would start after the first ended)."""
    steps = 8192
    argvs = [["-v", "train", "--symbols", sym, *WINDOW_CLI, "--data-source", "synthetic", *fast_cli(steps), "--json"]
             for sym in ("PARA", "PARB")]
    procs = start_barrier_cli(2, tmp_path / "barrier", argvs, env={"MLFLOW_TRACKING_URI": sqlite_uri},
                              cwd=tmp_path, logs=logs)
    results = wait_all(procs, logs)
    rows = _rows(results)
    assert [r["status"] for r in rows] == ["trained", "trained"], rows
    for res in results:
        assert "waiting" not in res.err.lower(), f"a request waited for another config's trainer\n{res}"

    runs = {r.info.run_id: r for r in all_runs(sqlite_uri, "trainkit")}
    spans = sorted((runs[r["run_id"]].info.start_time, runs[r["run_id"]].info.end_time) for r in rows)
    (s1, e1), (s2, e2) = spans
    overlap = min(e1, e2) - max(s1, s2)
    shorter = min(e1 - s1, e2 - s2)
    print(f"run spans {(e1 - s1) / 1000:.1f}s and {(e2 - s2) / 1000:.1f}s, overlapping {overlap / 1000:.1f}s; "
          f"seconds per process: {[r['seconds'] for r in rows]}")
    assert overlap >= 0.5 * shorter, f"training runs were serialised: spans {spans}"
    assert max(r["seconds"] for r in rows) < 1.6 * min(r["seconds"] for r in rows) + 2.0, rows
    assert os.environ["MLFLOW_TRACKING_URI"] == sqlite_uri and START
