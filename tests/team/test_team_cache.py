"""The team set-up the README recommends, for real: PostgreSQL, ``mlflow server`` on it with
proxied artifacts, and two team members (separate working directories, separate download
caches) that share nothing but the server's URL.

One scenario, step by step (each test reads what the module fixture and the earlier steps
did; they run in file order):
1. alice and bob ask for the same uncached config at the same moment (a start barrier), and
   each for one config of their own: the shared one trains once, served to the other;
2. each lists the other's models;
3. each loads the other's models: the same actions on the same observations;
4. each backtests the other's model;
5. each clears the other's model, and both see it gone.
Everything goes through the public CLI (``python -m trainkit …``) and ``trainkit.load_model``;
the outcome is read back with ``MlflowClient``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from support import FAST_CLI

from .team_support import WINDOW_CLI, Result, TeamClient, all_runs, describe, go_times, mlflow_client, together

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.team]

SHARED, OWN = "TEAM", {"alice": "TEAMA", "bob": "TEAMB"}
STEPS = 4096  # a few seconds of training: the loser meets a live claim, not a finished model
EXPERIMENT = "trainkit"  # the cache's default experiment, as a team would use it
TEST_WINDOW = ["--start", "2023-01-02", "--end", "2023-06-30"]

LOAD_AND_ACT = """
import json, sys
import numpy as np
import trainkit
out = {}
for uri in sys.argv[1:]:
    model = trainkit.load_model(uri)
    obs = np.random.default_rng(0).standard_normal((32, *model.observation_space.shape)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    out[uri] = {"actions": np.asarray(actions).tolist(), "num_timesteps": int(model.num_timesteps)}
print(json.dumps(out))
"""


def _fast_cli(steps: int | None = None) -> list[str]:
    args = list(FAST_CLI)
    if steps is not None:
        args[args.index("--timesteps") + 1] = str(steps)
    return args


def _train_args(*symbols: str, steps: int | None = None) -> list[str]:
    return ["train", "--symbols", *symbols, *WINDOW_CLI, "--data-source", "synthetic", *_fast_cli(steps), "--json"]


@pytest.fixture(scope="module")
def team(team_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The race: alice trains SHARED then TEAMA, bob SHARED then TEAMB, released together."""
    if not team_server.alive():  # an earlier test took it away
        team_server.start()
    root = tmp_path_factory.mktemp("team")
    clients = {name: TeamClient(name, root, team_server.uri) for name in ("alice", "bob")}
    barrier = root / "barrier"
    runs = [clients[name].start_at_barrier(barrier, 2, *_train_args(SHARED, OWN[name], steps=STEPS))
            for name in clients]
    return {"uri": team_server.uri, "server": team_server, "clients": clients,
            "results": dict(zip(clients, together(*runs, timeout=400))), "go": go_times(barrier)}


def _rows(res: Result) -> dict[str, dict]:
    doc = res.json()
    assert isinstance(doc, list), str(res)
    return {row["symbol"]: row for row in doc}


def _models(team: dict, symbol: str) -> dict[str, dict]:
    """symbol -> the JSON row of whoever trained it (SHARED: the winner's row)."""
    rows = {name: _rows(res) for name, res in team["results"].items()}
    if symbol == SHARED:
        return next(r[SHARED] for r in rows.values() if r[SHARED]["status"] == "trained")
    owner = next(name for name, sym in OWN.items() if sym == symbol)
    return rows[owner][symbol]


def _other(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def test_identical_requests_from_two_clients_train_once(team: dict) -> None:
    alice, bob = (team["results"][n] for n in ("alice", "bob"))
    for res in (alice, bob):
        assert res.rc == 0 and "Traceback" not in res.err, str(res)
    go = team["go"]
    assert len(go) == 2 and go[1] - go[0] < 1.0, f"not released together: {go}"

    a, b = _rows(alice), _rows(bob)
    assert set(a) == {SHARED, OWN["alice"]} and set(b) == {SHARED, OWN["bob"]}, (a, b)
    shared = [a[SHARED], b[SHARED]]
    assert sorted(r["status"] for r in shared) == ["cached", "trained"], shared
    assert shared[0]["config_hash"] == shared[1]["config_hash"], shared
    assert shared[0]["model_uri"] == shared[1]["model_uri"] and shared[0]["run_id"] == shared[1]["run_id"], shared
    assert a[OWN["alice"]]["status"] == "trained" and b[OWN["bob"]]["status"] == "trained", (a, b)

    # the server agrees: one FINISHED run per hash, and nothing left RUNNING
    uri, h = team["uri"], shared[0]["config_hash"]
    runs = all_runs(uri, EXPERIMENT)
    finished = [r for r in runs if r.data.tags.get("config_hash") == h and r.info.status == "FINISHED"]
    assert [r.info.run_id for r in finished] == [shared[0]["run_id"]], describe(finished)
    for row in (a[OWN["alice"]], b[OWN["bob"]]):
        own = [r for r in runs if r.data.tags.get("config_hash") == row["config_hash"] and r.info.status == "FINISHED"]
        assert [r.info.run_id for r in own] == [row["run_id"]], describe(own)
    left = [r for r in runs if r.info.status == "RUNNING"]
    assert not left, "runs left RUNNING after both clients exited:\n" + describe(left)

    # proxied artifacts: the models live on the server's disk, reached only through its API
    for r in finished:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:"), r.info.artifact_uri
    assert any(f.endswith(".zip") for _d, _s, files in os.walk(team["server"].artifacts) for f in files), \
        "no model file in the server's --artifacts-destination"
    how = ", ".join(f"{n} {r[SHARED]['status']} in {r[SHARED]['seconds']}s" for n, r in (("alice", a), ("bob", b)))
    print(f"released {go[1] - go[0]:.3f}s apart; shared config: {how}; "
          f"processes took {alice.seconds:.1f}s and {bob.seconds:.1f}s")


def test_each_client_lists_what_the_other_trained(team: dict) -> None:
    clients = team["clients"]
    results = dict(zip(clients, together(*(c.start("list", "--json") for c in clients.values()))))
    for name, res in results.items():
        listed = res.json()
        assert isinstance(listed, list), str(res)
        by_run = {m["run_id"]: m for m in listed}
        for symbol in (SHARED, OWN[_other(name)], OWN[name]):
            row = _models(team, symbol)
            assert row["run_id"] in by_run, f"{name} does not list {symbol} ({row['run_id']})\n{res}"
            m = by_run[row["run_id"]]
            assert (m["symbol"], m["config_hash"], m["model_uri"]) == (symbol, row["config_hash"], row["model_uri"]), m
            assert m["status"] == "ready", m
        assert sum(m["symbol"] == SHARED for m in listed) == 1, f"{name} lists SHARED more than once\n{res}"


def test_each_client_loads_what_the_other_trained(team: dict) -> None:
    clients = team["clients"]
    uris = [_models(team, s)["model_uri"] for s in (SHARED, *OWN.values())]
    results = dict(zip(clients, together(*(c.start_python(LOAD_AND_ACT, *uris) for c in clients.values()))))
    loaded = {name: res.json() for name, res in results.items()}
    for uri in uris:
        assert loaded["alice"][uri] == loaded["bob"][uri], f"alice and bob act differently with {uri}"
    assert loaded["alice"][uris[0]]["num_timesteps"] >= STEPS
    for c in clients.values():  # nothing of the server's store lands in a client's directory
        assert not (c.cwd / "mlruns").exists() and not (c.cwd / "mlflow.db").exists(), sorted(os.listdir(c.cwd))


def test_each_client_backtests_what_the_other_trained(team: dict) -> None:
    clients = team["clients"]
    targets = {name: _models(team, OWN[_other(name)]) for name in clients}
    results = dict(zip(clients, together(*(
        clients[name].start("backtest", "--model-uri", targets[name]["model_uri"], *TEST_WINDOW, "--json")
        for name in clients))))
    c = mlflow_client(team["uri"])
    for name, res in results.items():
        doc = res.json()
        target = targets[name]
        assert doc["model_uri"] == target["model_uri"] and doc["source_run_id"] == target["run_id"], doc
        assert doc["symbol"] == OWN[_other(name)] and doc["n_days"] > 100, doc
        assert doc["run_id"], f"the backtest was not logged\n{res}"
        run = c.get_run(doc["run_id"])
        assert run.info.status == "FINISHED", run.info
        assert run.data.tags.get("trainkit.source_run_id") == target["run_id"], run.data.tags


def test_each_client_clears_what_the_other_trained(team: dict) -> None:
    clients = team["clients"]
    targets = {name: _models(team, OWN[_other(name)]) for name in clients}
    results = dict(zip(clients, together(*(
        clients[name].start("clear", "--config-hash", targets[name]["config_hash"], "--yes", "--json")
        for name in clients))))
    for name, res in results.items():
        doc = res.json()
        assert doc["deleted"] is True, doc
        assert [m["run_id"] for m in doc["removed"]] == [targets[name]["run_id"]], doc

    c = mlflow_client(team["uri"])
    for target in targets.values():
        assert c.get_run(target["run_id"]).info.lifecycle_stage == "deleted"
    shared = _models(team, SHARED)
    assert c.get_run(shared["run_id"]).info.lifecycle_stage == "active"

    # both see the other's clear: only the shared model is left
    for name, res in zip(clients, together(*(cl.start("list", "--json") for cl in clients.values()))):
        ours = [m["run_id"] for m in res.json() if m["symbol"] in (SHARED, *OWN.values())]
        assert ours == [shared["run_id"]], f"{name} still lists cleared models\n{res}"
