"""Crash: a trainer SIGKILLed mid-training leaves nothing servable, its claim goes stale, the
next request trains and serves the model, the dead run ends FAILED, other models are untouched."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .rel_support import (
    PYTHON,
    Result,
    WINDOW_CLI,
    all_runs,
    assert_same_model,
    child_env,
    cli,
    client,
    config_hash,
    describe,
    fast_cli,
    finished_with_hash,
    kill,
    running,
    stored_policy,
    train_inprocess,
)

STEPS = 16_000  # several seconds of training: the kill lands mid-training, the retrain stays short
STALE = {"TRAINKIT_STALE_AFTER": "3", "TRAINKIT_HEARTBEAT": "0.5"}


def _wait_for_training_claim(uri: str, h: str, victim: subprocess.Popen, timeout: float = 120) -> object:
    """Poll MLflow until the victim's claim run is RUNNING and has won its tie (it trains next)."""
    c = client(uri)
    exp_id = c.get_experiment_by_name("trainkit").experiment_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert victim.poll() is None, "the trainer exited before it could be killed"
        runs = c.search_runs([exp_id], filter_string=f"tags.`trainkit.claim_hash` = '{h}' and attributes.status = 'RUNNING'")
        if runs and runs[0].data.tags.get("trainkit.claim_state") == "training":
            return runs[0]
        time.sleep(0.1)
    raise AssertionError("no training claim appeared in MLflow")


def _progress(err: Path) -> list[str]:
    """The trainer's progress lines so far (``training SYM ppo:  10% …``, one per 10 %)."""
    return [line for line in err.read_text().splitlines() if line.startswith("training ") and "%" in line]


@pytest.mark.slow
def test_sigkill_mid_training_then_the_next_request_trains(sqlite_uri: str, tmp_path: Path) -> None:
    from trainkit.errors import ModelNotFoundError
    from trainkit.manager import TrainingManager
    from trainkit.store import load_model

    c = client(sqlite_uri)
    keep = train_inprocess(sqlite_uri, "KEEP")  # another cached model, which must come through untouched
    keep_before = c.get_run(keep.run_id)

    h = config_hash("CRSH", timesteps=STEPS)
    argv = ["train", "--symbols", "CRSH", *WINDOW_CLI, "--data-source", "synthetic", *fast_cli(STEPS), "--json"]
    env = {**STALE, "MLFLOW_TRACKING_URI": sqlite_uri}
    victim_err = tmp_path / "victim.err"
    victim = subprocess.Popen([PYTHON, "-m", "trainkit", *argv], env=child_env(env), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=open(victim_err, "w"), stdin=subprocess.DEVNULL)
    try:
        claim = _wait_for_training_claim(sqlite_uri, h, victim)
        claim_id = claim.info.run_id
        deadline = time.monotonic() + 60  # training prints a line at every 10 %: wait for the first
        while not _progress(victim_err):
            assert time.monotonic() < deadline, "no training progress within 60 s"
            assert victim.poll() is None, "the trainer exited before it could be killed"
            time.sleep(0.05)
    finally:
        kill(victim)  # SIGKILL: no handler, no cleanup, no Python
    killed_at = time.monotonic()
    progress = _progress(victim_err)
    assert progress and "100%" not in progress[-1], f"not killed mid-training: {progress}"

    # nothing servable: no model in the store for this hash, and the claim run holds no model
    dead = c.get_run(claim_id)
    assert dead.info.status == "RUNNING" and "trainkit.model_id" not in dead.data.tags, describe([dead])
    assert not finished_with_hash(sqlite_uri, h)
    exp_id = c.get_experiment_by_name("trainkit").experiment_id
    assert [m.model_id for m in c.search_logged_models(experiment_ids=[exp_id])] == [keep_before.data.tags["trainkit.model_id"]]
    with pytest.raises(ModelNotFoundError):
        load_model(f"runs:/{claim_id}/model", tracking_uri=sqlite_uri)

    # the next request: waits out the dead claim's heartbeat, takes over, trains, serves
    recovery = cli(*argv, env=env, cwd=tmp_path)
    since_kill = time.monotonic() - killed_at
    assert recovery.rc == 0, str(recovery)
    assert "Traceback" not in recovery.err, str(recovery)
    assert "stale" in recovery.err.lower(), f"the takeover was not reported\n{recovery}"
    [row] = json.loads(recovery.out)
    assert row["status"] == "trained" and row["config_hash"] == h, row
    assert row["run_id"] != claim_id

    served = finished_with_hash(sqlite_uri, h)
    assert [r.info.run_id for r in served] == [row["run_id"]], describe(served)
    recovered = load_model(row["model_uri"], tracking_uri=sqlite_uri)
    assert recovered.num_timesteps >= STEPS
    assert_same_model(recovered, stored_policy(sqlite_uri, row["run_id"]), what=row["model_uri"])

    dead = c.get_run(claim_id)
    assert dead.info.status == "FAILED", describe([dead])
    assert "trainkit.claim_hash" not in dead.data.tags and "config_hash" not in dead.data.tags, describe([dead])
    assert "stale" in dead.data.tags.get("trainkit.failure", ""), describe([dead])
    assert not running(sqlite_uri), "runs left RUNNING:\n" + describe(running(sqlite_uri))

    # the other cached model: same run, same tags, still FINISHED, still loads, still the answer
    keep_after = c.get_run(keep.run_id)
    assert keep_after.info.status == "FINISHED" and keep_after.info.lifecycle_stage == "active"
    assert keep_after.data.tags == keep_before.data.tags
    assert_same_model(load_model(keep.model_uri, tracking_uri=sqlite_uri), keep.model, what="the untouched model")
    found = TrainingManager(sqlite_uri).store.find(keep.config.config_hash)
    assert found is not None and found.run_id == keep.run_id
    print(f"killed claim {claim_id[:8]} mid-training (last line: {progress[-1].strip()}); "
          f"recovered in {recovery.seconds:.1f}s ({since_kill:.1f}s after the kill), dead run FAILED")


@pytest.mark.slow
def test_frozen_trainer_that_resumes_after_a_takeover_publishes_nothing(sqlite_uri: str, tmp_path: Path) -> None:
    """docs/ARCHITECTURE.md, "The lease": a trainer that stalls (SIGSTOP) long enough to be judged dead is taken over;
    when it resumes it must notice and publish nothing of its own — one FINISHED model, and
    both processes answer with the taker's URI."""
    import signal

    h = config_hash("FRZ", timesteps=STEPS)
    argv = ["train", "--symbols", "FRZ", *WINDOW_CLI, "--data-source", "synthetic", *fast_cli(STEPS), "--json"]
    env = {**STALE, "MLFLOW_TRACKING_URI": sqlite_uri}
    client(sqlite_uri).create_experiment("trainkit")  # so the poll below has an experiment to search
    out, err = tmp_path / "frozen.out", tmp_path / "frozen.err"
    frozen = subprocess.Popen([PYTHON, "-m", "trainkit", *argv], env=child_env(env), cwd=tmp_path,
                              stdout=open(out, "w"), stderr=open(err, "w"), stdin=subprocess.DEVNULL)
    try:
        claim = _wait_for_training_claim(sqlite_uri, h, frozen)
        os.kill(frozen.pid, signal.SIGSTOP)
        taker = cli(*argv, env=env, cwd=tmp_path)  # waits out the silent heartbeat, takes over, trains
    finally:
        if frozen.poll() is None:
            os.kill(frozen.pid, signal.SIGCONT)
    frozen.wait(timeout=180)
    assert taker.rc == 0, str(taker)
    [taken] = json.loads(taker.out)
    assert taken["status"] == "trained" and taken["run_id"] != claim.info.run_id, taken

    resumed = Result_of(frozen, out, err)
    assert resumed.rc == 0 and "Traceback" not in resumed.err, str(resumed)
    assert "taken over" in resumed.err, (f"the resumed trainer did not notice the takeover\n{resumed}\n"
                                         f"the taker: {taker}\n" + describe(all_runs(sqlite_uri, "trainkit")))
    [row] = json.loads(resumed.out)
    assert row["model_uri"] == taken["model_uri"], f"the resumed trainer served its own model: {row}"
    served = finished_with_hash(sqlite_uri, h)
    assert [r.info.run_id for r in served] == [taken["run_id"]], describe(served)
    assert client(sqlite_uri).get_run(claim.info.run_id).info.status == "FAILED"
    assert not running(sqlite_uri), describe(running(sqlite_uri))
    print(f"frozen claim {claim.info.run_id[:8]} taken over by {taken['run_id'][:8]}; the resumed trainer "
          f"answered {row['status']} with the taker's URI")


def Result_of(proc: subprocess.Popen, out: Path, err: Path) -> Result:  # noqa: N802
    return Result(list(proc.args[3:]), proc.returncode, out.read_text(), err.read_text(), float("nan"))  # type: ignore[index]
