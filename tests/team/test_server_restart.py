"""The team server goes away while a client trains (issue 15): PostgreSQL + `mlflow server` with
proxied artifacts, the server SIGKILLed mid-training and started again on the same port and
database.

* Away for less than ``TRAINKIT_SERVER_RETRY_S``: the trainer keeps its training — metrics are
  buffered, not dropped, the publish waits for the server — and publishes once it is back.
* Away for longer: the trainer fails with one line naming the server (exit 1); its lease goes
  stale and the next client takes over and trains.

Either way nothing is left RUNNING and exactly one FINISHED model exists per config.

"Mid-training" is arranged, not left to luck (issue 24): a small training is over in a second,
and a kill timed from outside would land while the model is being published. The first test's
trainer runs the CLI unchanged under TRAINER_HOOK, which only writes marks and holds the
training thread inside SB3's ``learn()`` until the test has killed, then restarted, the server
(as tests/reliability/sigint_cli.py arms its signal when a phase begins)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from support import FAST_CLI

from .team_support import WINDOW_CLI, Running, all_runs, describe, mlflow_client

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.team]

#: ``python -c TRAINER_HOOK MARKS trainkit-args…``: ``trainkit.cli.main(args)``, unchanged but
#: for two wrappers that write marks (JSON files in MARKS) and hold the training thread:
#:
#: * around ``learn()`` of the SB3 model that ``agents.build_model`` returns: ``learn-start``
#:   and ``learn-end`` (with the time, and the timesteps done);
#: * around ``log`` of the metrics sink that ``ModelStore.metrics_sink`` returns (SB3's logger
#:   calls it once per rollout here): after the real call, a line in ``logged`` (step, keys,
#:   time, inside ``learn()`` or not). Inside ``learn()``, at the first call once the lease has
#:   won its tie (the tie is decided by the store, so it must be decided before the kill) whose
#:   points the sink still holds (not in the store yet), it writes ``before`` and waits for the
#:   test's ``killed``; at the next call (made while the server is dead), ``outage``, and waits
#:   for the test's ``restarted``. Only this thread sends the sink's points, so those held at
#:   ``before`` are still unsent when the server dies.
TRAINER_HOOK = r"""
import json, os, sys, time
from mlflow.tracking import MlflowClient
import trainkit.agents as agents
from trainkit.store.model_store import ModelStore

marks, argv = sys.argv[1], sys.argv[2:]
state = {"in_learn": False, "phase": "before"}

def mark(name, **info):
    path = os.path.join(marks, name)
    with open(path + ".tmp", "w") as fh:
        json.dump({"time": time.time(), **info}, fh)
    os.replace(path + ".tmp", path)

def wait_for(name, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(marks, name)):
        if time.monotonic() > deadline:
            sys.exit(f"trainer hook: the test never wrote {name!r}")
        time.sleep(0.02)

real_build_model = agents.build_model

def build_model(*args, **kwargs):
    model = real_build_model(*args, **kwargs)
    real_learn = model.learn

    def learn(*a, **k):
        mark("learn-start")
        state["in_learn"] = True
        try:
            return real_learn(*a, **k)
        finally:
            state["in_learn"] = False
            del model.learn  # the model is saved (pickled) next: no trace of the hook on it
            mark("learn-end", num_timesteps=int(model.num_timesteps))

    model.learn = learn
    return model

agents.build_model = build_model
real_metrics_sink = ModelStore.metrics_sink

def metrics_sink(self, run_id):
    sink = real_metrics_sink(self, run_id)
    real_log, client = sink.log, MlflowClient()

    def log(step, metrics):
        real_log(step, metrics)
        with open(os.path.join(marks, "logged"), "a") as fh:
            fh.write(json.dumps({"step": int(step), "keys": sorted(metrics), "time": time.time(),
                                 "in_learn": state["in_learn"], "phase": state["phase"]}) + "\n")
        if not state["in_learn"]:
            return
        if state["phase"] == "before":
            if client.get_run(run_id).data.tags.get("trainkit.claim_state") != "training":
                return  # the tie is not decided yet
            if any(m.step == step for m in client.get_metric_history(run_id, sorted(metrics)[0])):
                return  # this rollout's points were sent already: hold at one still buffered
            mark("before", step=int(step), keys=sorted(metrics), run_id=run_id)
            wait_for("killed")
            state["phase"] = "outage"
        elif state["phase"] == "outage":
            mark("outage", step=int(step))
            wait_for("restarted")
            state["phase"] = "after"

    sink.log = log
    return sink

ModelStore.metrics_sink = metrics_sink
import trainkit.cli

trainkit.cli.main(argv)
"""

RESTART_STEPS = 2048  # 16 rollouts of 2 x 64 steps, one metrics dump each: a few seconds of learn()
FLUSH_SECONDS = 5.0  # how often the trainer's metrics sink sends what it has (store.runs.MlflowMetricsSink)


def _fast_cli(steps: int) -> list[str]:
    args = list(FAST_CLI)
    args[args.index("--timesteps") + 1] = str(steps)
    return args


def _wait_for_mark(marks: Path, name: str, running: Running, timeout: float = 180) -> dict:
    """The JSON of the trainer hook's mark ``name``, as soon as it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (marks / name).exists():
            return json.loads((marks / name).read_text())
        if running.proc.poll() is not None:
            raise AssertionError(f"the trainer exited before the mark {name!r}\n{running.result()}\n"
                                 f"marks: {sorted(p.name for p in marks.iterdir())}")
        time.sleep(0.05)
    raise AssertionError(f"no mark {name!r} within {timeout} s: {sorted(p.name for p in marks.iterdir())}")


def _tell(marks: Path, name: str) -> None:
    (marks / name).write_text(repr(time.time()))


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


def test_a_server_restart_shorter_than_the_retry_budget_loses_nothing(team_server, make_client, tmp_path) -> None:
    carol = make_client("carol", TRAINKIT_SERVER_RETRY_S="150", TRAINKIT_HEARTBEAT="1", TRAINKIT_STALE_AFTER="90")
    uri = team_server.uri
    marks = tmp_path / "marks"
    marks.mkdir()
    args = ["train", "--symbols", "RSTA", *WINDOW_CLI, "--data-source", "synthetic", *_fast_cli(RESTART_STEPS), "--json"]
    running = carol.start_python(TRAINER_HOOK, str(marks), *args)

    before = _wait_for_mark(marks, "before", running)  # learn() runs, held after logging a rollout's metrics
    lease = _wait_for_lease(uri, "RSTA", timeout=5)
    assert before["run_id"] == lease
    in_store_at_kill = {(m.key, m.step) for k in mlflow_client(uri).get_run(lease).data.metrics
                        for m in mlflow_client(uri).get_metric_history(lease, k)}
    t_kill = time.time()
    team_server.kill()  # SIGKILL: heartbeats and metric flushes now fail
    t_dead = time.time()
    # held past the sink's flush interval, the trainer's next log tries to send and cannot
    time.sleep(max(0.0, before["time"] + FLUSH_SECONDS + 0.5 - time.time()))
    _tell(marks, "killed")
    outage = _wait_for_mark(marks, "outage", running)  # a rollout logged while the server is dead
    t_restart = time.time()
    team_server.start()  # same port, same database
    t_up = time.time()
    _tell(marks, "restarted")
    res = running.result(timeout=300)
    rows = res.json()
    assert [(r["symbol"], r["status"], r["run_id"]) for r in rows] == [("RSTA", "trained", lease)], str(res)
    # the sink tried to send while the server was dead, and said it kept the metrics
    assert "keeping them until the server answers" in res.err, str(res)
    assert "were not logged" not in res.err and "oldest training metric points" not in res.err, str(res)

    # the kill landed inside learn(), which went on through the outage and past the restart
    learn_start, learn_end = (json.loads((marks / m).read_text()) for m in ("learn-start", "learn-end"))
    assert learn_start["time"] < before["time"] < t_kill < t_dead < outage["time"] < t_restart < t_up < learn_end["time"]
    assert learn_end["num_timesteps"] >= RESTART_STEPS, learn_end
    logged = [json.loads(line) for line in (marks / "logged").read_text().splitlines()]
    in_learn = [p for p in logged if p["in_learn"]]
    during = {"before the kill": [p for p in in_learn if p["time"] < t_kill],
              "while the server was dead": [p for p in in_learn if t_dead < p["time"] < t_restart],
              "after the restart": [p for p in in_learn if p["time"] > t_up]}
    assert all(during.values()), {k: len(v) for k, v in during.items()}

    runs = _models(uri, "RSTA")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(lease, "FINISHED")], describe(runs)
    run = runs[0]
    assert run.data.tags["config_hash"] == rows[0]["config_hash"] and "trainkit.claim_hash" not in run.data.tags
    # every metric point the trainer logged, before, during and after the outage, is in the run,
    # with the time it was logged at
    client = mlflow_client(uri)
    history = {(m.key, m.step): m.timestamp for k in run.data.metrics for m in client.get_metric_history(lease, k)}
    missing = [(k, p["step"]) for p in logged for k in p["keys"] if (k, p["step"]) not in history]
    assert not missing, f"{len(missing)} logged metric points are not in the run: {missing[:10]}"
    stamps = sorted(history.values())
    assert [t for t in stamps if t < t_kill * 1000], "no metric in the run was logged before the kill"
    assert [t for t in stamps if t_dead * 1000 < t < t_restart * 1000], "none was logged while the server was dead"
    assert [t for t in stamps if t > t_up * 1000], "none was logged after the restart"
    assert max(step for _key, step in history) >= RESTART_STEPS
    # the rollout held at the kill was still in the trainer's buffer then, and reached the run after the restart
    held = {(k, before["step"]) for k in before["keys"]}
    assert held and not held & in_store_at_kill, sorted(held & in_store_at_kill)
    assert all(history[point] < t_kill * 1000 for point in held), "logged before the kill"
    unsent = {(k, p["step"]) for p in during["before the kill"] for k in p["keys"]} - in_store_at_kill
    print(f"learn() {learn_end['time'] - learn_start['time']:.1f}s; server dead {t_restart - t_kill:.1f}s, back after "
          f"{t_up - t_restart:.1f}s; points logged in learn(): {', '.join(f'{len(v)} rollouts {k}' for k, v in during.items())}; "
          f"{len(unsent)} points logged before the kill were still buffered at the kill; "
          f"trainer took {res.seconds:.1f}s")

    # the model is whole: another client is served it
    again = make_client("dan").cli(*args)
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
