"""The team server goes away while a client trains (issue 15): PostgreSQL + `mlflow server` with
proxied artifacts, the server SIGKILLed mid-training and started again on the same port and
database.

* Away for less than ``TRAINKIT_SERVER_RETRY_S``: the trainer keeps its training — metrics are
  buffered, not dropped, the publish waits for the server — and publishes once it is back.
* Away for longer: the trainer fails with one line naming the server (exit 1); its lease goes
  stale and the next client takes over and trains.

Either way nothing is left RUNNING and exactly one FINISHED model exists per config."""

from __future__ import annotations

import time

import pytest

from .team_support import WINDOW_CLI, all_runs, describe, mlflow_client

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.team]


def _wait_for_lease(uri: str, symbol: str, timeout: float = 120) -> str:
    """The run id of the RUNNING lease on ``symbol``, as soon as it exists (training started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in all_runs(uri, "trainkit"):
            if (r.data.tags.get("trainkit.symbol") == symbol and r.info.status == "RUNNING"
                    and r.data.tags.get("trainkit.claim_state") == "training"):  # won its tie: training now
                return r.info.run_id
        time.sleep(0.2)
    raise AssertionError(f"no lease on {symbol} within {timeout} s:\n{describe(all_runs(uri, 'trainkit'))}")


def _models(uri: str, symbol: str) -> list:
    return [r for r in all_runs(uri, "trainkit") if r.data.tags.get("trainkit.symbol") == symbol]


def test_a_server_restart_shorter_than_the_retry_budget_loses_nothing(team_server, make_client) -> None:
    carol = make_client("carol", TRAINKIT_SERVER_RETRY_S="150", TRAINKIT_HEARTBEAT="1", TRAINKIT_STALE_AFTER="90")
    uri = team_server.uri
    running = carol.start("train", "--symbols", "RSTA", *WINDOW_CLI, "--data-source", "synthetic",
                          "--timesteps", "40000", "--json")
    lease = _wait_for_lease(uri, "RSTA")
    team_server.kill()  # mid-training: heartbeats and metric flushes now fail
    time.sleep(20)
    team_server.start()  # same port, same database
    res = running.result(timeout=300)
    rows = res.json()
    assert [(r["symbol"], r["status"], r["run_id"]) for r in rows] == [("RSTA", "trained", lease)], str(res)
    assert "retrying" in res.err or "keeping them" in res.err  # it said what it was doing

    runs = _models(uri, "RSTA")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(lease, "FINISHED")], describe(runs)
    run = runs[0]
    assert run.data.tags["config_hash"] == rows[0]["config_hash"] and "trainkit.claim_hash" not in run.data.tags
    # the learning curves logged while the server was away were kept and sent afterwards
    client = mlflow_client(uri)
    curves = {k for k in run.data.metrics if "/" in k}  # SB3's rollout/ and train/ keys
    assert curves, run.data.metrics
    points = sum(len(client.get_metric_history(lease, k)) for k in curves)
    assert points >= 10 * len(curves) // 2, points
    steps = sorted({m.step for m in client.get_metric_history(lease, sorted(curves)[0])})
    assert steps[-1] >= 30_000, steps  # the end of training, logged after the outage

    # the model is whole: another client is served it
    again = make_client("dan").cli("train", "--symbols", "RSTA", *WINDOW_CLI, "--data-source", "synthetic",
                                   "--timesteps", "40000", "--json")
    assert [(r["status"], r["run_id"]) for r in again.json()] == [("cached", lease)]


def test_a_server_away_longer_than_the_budget_fails_cleanly_and_the_next_client_takes_over(team_server, make_client) -> None:
    uri = team_server.uri
    erin = make_client("erin", TRAINKIT_SERVER_RETRY_S="6", TRAINKIT_HEARTBEAT="1", TRAINKIT_STALE_AFTER="4")
    running = erin.start("train", "--symbols", "RSTB", *WINDOW_CLI, "--data-source", "synthetic",
                         "--timesteps", "40000", "--json")
    lease = _wait_for_lease(uri, "RSTB")
    team_server.kill()
    res = running.result(timeout=300)
    team_server.start()
    assert res.rc == 1, str(res)
    errors = [ln for ln in res.err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and uri in errors[0] and "TRAINKIT_SERVER_RETRY_S" in errors[0], str(res)
    assert "Traceback" not in res.err

    time.sleep(5)  # the dead trainer's lease is now older than TRAINKIT_STALE_AFTER
    frank = make_client("frank", TRAINKIT_HEARTBEAT="1", TRAINKIT_STALE_AFTER="4")
    rows = frank.cli("train", "--symbols", "RSTB", *WINDOW_CLI, "--data-source", "synthetic",
                     "--timesteps", "40000", "--json").json()
    assert rows[0]["status"] == "trained" and rows[0]["run_id"] != lease
    runs = {r.info.run_id: r for r in _models(uri, "RSTB")}
    assert runs[lease].info.status == "FAILED" and "stale" in runs[lease].data.tags.get("trainkit.failure", ""), describe(list(runs.values()))
    finished = [r for r in runs.values() if r.info.status == "FINISHED"]
    assert [r.info.run_id for r in finished] == [rows[0]["run_id"]]
    assert not [r for r in runs.values() if r.info.status == "RUNNING"], describe(list(runs.values()))
