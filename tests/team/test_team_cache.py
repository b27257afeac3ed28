"""The team set-up the README recommends, for real: PostgreSQL, ``mlflow server`` on it with
proxied artifacts, and two team members (separate working directories, separate download
caches) that share nothing but the server's URL.

One scenario, step by step (each test reads what the module fixture and the earlier steps
did; they run in file order):
1. alice and bob ask for the same uncached config at the same moment, and each for one config
   of their own: the shared one trains once, served to the other. Released together (the start
   barrier, tests/barrier_cli.py), two processes still reach the lease tens to hundreds of
   milliseconds apart, and the first lease would be visible before the other looks: no race at
   all. So, as in the sqlite and server races of tests/reliability/test_concurrency.py, both
   are also held inside the lease's race window until both are there (each has looked, seen no
   live lease, and is about to create its own; timing only, the protocol runs unchanged), and
   the test shows the claims met: both created a lease run, exactly one trained;
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

from .team_support import (
    WINDOW_CLI,
    Result,
    TeamClient,
    all_runs,
    claim_times,
    config_hash,
    describe,
    go_times,
    mlflow_client,
    together,
)

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
    """The race: alice trains SHARED then TEAMA, bob SHARED then TEAMB, released together and
    held again in the race window of SHARED's lease until both are there."""
    if not team_server.alive():  # an earlier test took it away
        team_server.start()
    root = tmp_path_factory.mktemp("team")
    clients = {name: TeamClient(name, root, team_server.uri) for name in ("alice", "bob")}
    barrier = root / "barrier"
    shared_hash = config_hash(SHARED, STEPS)
    runs = [clients[name].start_at_barrier(barrier, 2, *_train_args(SHARED, OWN[name], steps=STEPS),
                                           at_lease=(shared_hash, 2))
            for name in clients]
    return {"uri": team_server.uri, "server": team_server, "clients": clients, "shared_hash": shared_hash,
            "results": dict(zip(clients, together(*runs, timeout=400))), "go": go_times(barrier),
            "claims": claim_times(barrier)}


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


def _claims(runs: list, symbol: str) -> list:
    """The lease runs requests for ``symbol`` created, whatever became of them: a training run
    starts as a lease (tagged ``trainkit.symbol``, the config's fields as params) and keeps those
    tags and params when it is published, loses its tie (released: ended KILLED, deleted or
    not), fails or is taken over; only ``ViewType.ALL`` (``all_runs``) still shows a deleted one.
    Only the shared config of this module is ever requested for ``symbol``."""
    return [r for r in runs if r.data.tags.get("trainkit.symbol") == symbol]


def test_identical_requests_from_two_clients_train_once(team: dict) -> None:
    alice, bob = (team["results"][n] for n in ("alice", "bob"))
    for res in (alice, bob):
        assert res.rc == 0 and "Traceback" not in res.err, str(res)
    go, claims = team["go"], team["claims"]
    assert len(go) == 2 and go[1] - go[0] < 1.0, f"not released together: {go}"
    assert len(claims) == 2 and claims[1] - claims[0] < 1.0, f"not both in the lease's race window together: {claims}"

    a, b = _rows(alice), _rows(bob)
    assert set(a) == {SHARED, OWN["alice"]} and set(b) == {SHARED, OWN["bob"]}, (a, b)
    shared = [a[SHARED], b[SHARED]]
    assert sorted(r["status"] for r in shared) == ["cached", "trained"], shared
    assert shared[0]["config_hash"] == shared[1]["config_hash"] == team["shared_hash"], shared
    assert shared[0]["model_uri"] == shared[1]["model_uri"] and shared[0]["run_id"] == shared[1]["run_id"], shared
    assert a[OWN["alice"]]["status"] == "trained" and b[OWN["bob"]]["status"] == "trained", (a, b)

    # the server agrees: one FINISHED run per hash, and nothing left RUNNING
    uri, h = team["uri"], shared[0]["config_hash"]
    runs = all_runs(uri, EXPERIMENT)  # ViewType.ALL: deleted runs too
    finished = [r for r in runs if r.data.tags.get("config_hash") == h and r.info.status == "FINISHED"]
    assert [r.info.run_id for r in finished] == [shared[0]["run_id"]], describe(finished)

    # the claims met: each client created a lease run for the shared config, exactly one of them
    # trained and published, the other lost the tie while the winner's lease was open
    winner = finished[0]
    leases = _claims(runs, SHARED)
    assert len(leases) == 2, (f"{len(leases)} lease run(s) for the shared config, not one per client: the claims "
                              f"did not compete (released to the lease at {claims})\n" + describe(leases))
    def fields(run: Any) -> dict[str, str]:  # the config's fields (log_model adds model_sha256 to a published run)
        return {k: v for k, v in run.data.params.items() if k != "model_sha256"}

    assert {"symbol", "timesteps", "data_seed", "algo"} <= set(fields(winner)), winner.data.params
    for r in leases:  # every one a claim on this very config
        assert fields(r) == fields(winner), f"{r.info.run_id} claimed another config: {r.data.params}"
    assert [r.info.run_id for r in leases if r.info.status == "FINISHED"] == [winner.info.run_id], describe(leases)
    loser = next(r for r in leases if r.info.run_id != winner.info.run_id)
    assert loser.info.status == "KILLED", describe([loser])  # released (lost the tie), whether deleted or kept
    assert not {"config_hash", "trainkit.model_id", "trainkit.model_uri"} & set(loser.data.tags), describe([loser])
    assert not [m for m in mlflow_client(uri).search_logged_models(experiment_ids=[winner.info.experiment_id])
                if m.source_run_id == loser.info.run_id], "the losing lease logged a model"
    assert loser.info.start_time <= winner.info.end_time and loser.info.end_time >= winner.info.start_time, (
        f"the two leases did not overlap: loser {loser.info.start_time}..{loser.info.end_time}, "
        f"winner {winner.info.start_time}..{winner.info.end_time}")
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
    print(f"released {go[1] - go[0]:.3f}s apart, claimed {claims[1] - claims[0]:.3f}s apart; 2 lease runs, "
          f"the loser {loser.info.status}/{loser.info.lifecycle_stage}; shared config: {how}; "
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
