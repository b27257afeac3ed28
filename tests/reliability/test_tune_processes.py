"""``trainkit tune`` as real processes: two tuners on one study, Ctrl-C in the middle of a
trial's training and the rerun that takes it up, and a study on the team's PostgreSQL-backed
``mlflow server`` that leaves MLflow's own database schema alone.

Every trial is a cached walk-forward (trainkit/search/tune.py); the study lives in MLflow
(experiment ``trainkit-tune``: a study run, a nested run per trial), trial numbers are handed
out under the study's lease, a RUNNING trial beats like a training lease. The processes are
``python -m trainkit …`` as a user runs them; the outcome is read back with ``MlflowClient``
(and, on PostgreSQL, with psycopg), never through trainkit, so trainkit's own bookkeeping cannot
hide a mistake. Training is real SB3 at 1000 timesteps on synthetic prices: a study's trial is
a walk-forward of 4 folds (train 1y, test 6m over 2014..2016), i.e. 4 models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .rel_support import (
    PYTHON,
    Result,
    all_runs,
    child_env,
    cli,
    describe,
    start_barrier_cli,
    wait_all,
)

TUNE_EXP, CACHE_EXP, WF_EXP = "trainkit-tune", "trainkit", "trainkit-walkforward"
CLAIM, NUMBER, STATE, STUDY = "trainkit.claim_hash", "trainkit.trial_number", "trainkit.trial_state", "trainkit.study"
PARENT, WF_RUN, SOURCE_HASH = "mlflow.parentRunId", "trainkit.walkforward_run_id", "trainkit.source_config_hash"

#: the tiny walk-forward every trial is: folds test 2015H1, 2015H2, 2016H1, 2016H2
WINDOW = ["--start", "2014-01-01", "--end", "2016-12-31", "--train-window", "1y", "--test-window", "6m"]
FOLDS = 4


def tune_argv(uri: str, symbol: str, study: str, trials: int, timesteps: int = 1000) -> list[str]:
    return ["--tracking-uri", uri, "tune", "--symbols", symbol, "--data-source", "synthetic", *WINDOW,
            "--timesteps", str(timesteps), "--hp", "n_envs=8", "--hp", "batch_size=64",
            "--trials", str(trials), "--study", study, "--json"]


def tune_doc(res: Result) -> dict[str, Any]:
    """The one study document of a successful ``tune --json``."""
    assert res.rc == 0, str(res)
    assert "Traceback" not in res.err, str(res)
    try:
        doc = json.loads(res.out)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc})\n{res}") from None
    assert isinstance(doc, list) and len(doc) == 1, str(res)
    return doc[0]


# ----------------------------------------------------------------------------- the store, read back
def trial_runs(uri: str, study: str) -> list[Any]:
    """Every trial run of ``study`` (deleted ones too): nested runs carrying a trial number."""
    return [r for r in all_runs(uri, TUNE_EXP) if r.data.tags.get(STUDY) == study and NUMBER in r.data.tags]


def study_runs(uri: str, study: str) -> list[Any]:
    """The active study runs named ``study`` (one study per name)."""
    return [r for r in all_runs(uri, TUNE_EXP) if r.data.tags.get(STUDY) == study and "trainkit.study_identity"
            in r.data.tags and PARENT not in r.data.tags and r.info.lifecycle_stage == "active"]


def finished_models(uri: str) -> list[Any]:
    """The FINISHED training runs of the cache experiment that published a model."""
    return [r for r in all_runs(uri, CACHE_EXP) if r.info.status == "FINISHED" and "config_hash" in r.data.tags]


def live_leases(uri: str) -> list[Any]:
    """RUNNING runs holding a lease (``trainkit.claim_hash``) in the cache and tune experiments."""
    return [r for exp in (CACHE_EXP, TUNE_EXP) for r in all_runs(uri, exp)
            if r.info.status == "RUNNING" and CLAIM in r.data.tags]


def fold_hashes(uri: str, walkforward_run_id: str) -> set[str]:
    """The config hashes of the models a walk-forward's folds read (its nested fold runs)."""
    folds = [r for r in all_runs(uri, WF_EXP) if r.data.tags.get(PARENT) == walkforward_run_id]
    return {r.data.tags[SOURCE_HASH] for r in folds}


# ----------------------------------------------------------------------------- 1. two tuners, one study
def test_two_concurrent_tuners_share_one_study_and_train_every_config_once(sqlite_uri: str, tmp_path: Path) -> None:
    """Two ``tune --trials 4 --study S`` processes released together (a start barrier) on one
    sqlite store: both succeed on the same study; the lease gives every fold's config hash to
    exactly one trainer and every trial number to exactly one trial; the study holds its total
    (overshoot at most the two trials in flight); the two commands' ``trained`` add up to the
    models in the store."""
    study, trials = "S", 4
    argv = tune_argv(sqlite_uri, "TUNC", study, trials)
    logs = tmp_path / "logs"
    procs = start_barrier_cli(2, tmp_path / "barrier", [argv, argv], env=None, cwd=tmp_path, logs=logs)
    results = wait_all(procs, logs, timeout=240)
    docs = [tune_doc(res) for res in results]

    # one study: both commands ran it, no second study run survived the creation race
    studies = study_runs(sqlite_uri, study)
    assert len(studies) == 1, describe(studies)
    assert {d["study_run_id"] for d in docs} == {studies[0].info.run_id}, docs

    # every config hash trained exactly once
    models = finished_models(sqlite_uri)
    per_hash = Counter(r.data.tags["config_hash"] for r in models)
    twice = {h: n for h, n in per_hash.items() if n != 1}
    assert not twice, f"config hashes trained more than once: {twice}\n" + describe(models)

    # distinct trial numbers, and the study holds its total with at most the in-flight overshoot
    runs = trial_runs(sqlite_uri, study)
    numbers = Counter(int(r.data.tags[NUMBER]) for r in runs)
    assert all(n == 1 for n in numbers.values()), f"trial numbers shared by two trial runs: {numbers}\n" + describe(runs)
    complete = [r for r in runs if r.data.tags.get(STATE) == "complete" and r.info.status == "FINISHED"]
    assert trials <= len(complete) <= trials + 2, f"{len(complete)} complete trials for --trials {trials}\n" + describe(runs)
    assert not [r for r in runs if r.info.status == "RUNNING"], describe(runs)
    assert not live_leases(sqlite_uri), describe(live_leases(sqlite_uri))
    # every complete trial is a full walk-forward of models that are in the store
    stored = set(per_hash)
    for r in complete:
        hashes = fold_hashes(sqlite_uri, r.data.tags[WF_RUN])
        assert len(hashes) == FOLDS and hashes <= stored, (r.info.run_name, hashes - stored)

    # what the commands say they trained is what the store holds
    trained = [d["trained"] for d in docs]
    assert all(n > 0 for n in trained), f"one tuner trained nothing (trained {trained}): they did not run side by side"
    assert sum(trained) == len(models), f"trained {trained} by the two commands, {len(models)} models in the store"
    print(f"two tuners: trained {trained}, {len(complete)} complete trials, numbers {sorted(numbers)}, "
          f"{len(models)} models, each hash once")


# ----------------------------------------------------------------------------- 2. Ctrl-C mid-training
def _wait_mid_training(proc: subprocess.Popen, uri: str, *, models_before: int, timeout: float) -> list[Any]:
    """Block until the tuner holds a RUNNING training lease in experiment ``trainkit`` (a model
    is being trained) after at least ``models_before`` models were published; return the lease
    runs. Fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the tuner exited ({proc.returncode}) before the moment to interrupt it came")
        try:
            runs = all_runs(uri, CACHE_EXP)
        except Exception:  # noqa: BLE001 - a read racing the tuner's writes on sqlite: look again
            runs = []
        published = sum(r.info.status == "FINISHED" and "config_hash" in r.data.tags for r in runs)
        leases = [r for r in runs if r.info.status == "RUNNING" and CLAIM in r.data.tags]
        if published >= models_before and leases:
            return leases
        time.sleep(0.1)
    pytest.fail(f"no training lease after {models_before} published models within {timeout:.0f}s")


def test_ctrl_c_mid_training_fails_the_trial_releases_leases_and_rerun_trains_only_the_rest(
        sqlite_uri: str, tmp_path: Path) -> None:
    """``tune --trials 2`` gets a real SIGINT (what Ctrl-C sends; with one worker the model
    trains in this very process) while trial 1 is training its second fold or later: exit 130;
    that trial is ``fail`` with its run KILLED; no lease is left RUNNING (training or trial) and
    nothing at all is left RUNNING. The same command again exits 0, takes the trial up in place
    (same run, same number, no new trial) and trains exactly the folds that had no model."""
    study = "S2"
    argv = tune_argv(sqlite_uri, "TUNI", study, 2, timesteps=3000)  # ~3 s of training per model: room to hit it
    out, err = tmp_path / "tune.out", tmp_path / "tune.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([PYTHON, "-m", "trainkit", *argv], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                cwd=tmp_path, env=child_env())
    try:
        # trial 0 complete (4 models) and trial 1 past its first fold: a fifth model is published
        leases = _wait_mid_training(proc, sqlite_uri, models_before=FOLDS + 1, timeout=240)
        inflight = [r for r in trial_runs(sqlite_uri, study) if r.info.status == "RUNNING"]
        os.kill(proc.pid, signal.SIGINT)  # ours, by pid
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    interrupted = Result(argv, proc.returncode, out.read_text(), err.read_text(), float("nan"))
    assert interrupted.rc == 130, str(interrupted)
    assert "Traceback" not in interrupted.err, str(interrupted)

    # the trial in flight: failed, its run KILLED
    assert len(inflight) == 1, describe(inflight)
    (trial,) = [r for r in trial_runs(sqlite_uri, study) if r.info.run_id == inflight[0].info.run_id]
    number = int(trial.data.tags[NUMBER])
    assert number == 1, describe([trial])
    assert trial.data.tags.get(STATE) == "fail", describe([trial])
    assert trial.info.status == "KILLED", describe([trial])
    # the model being trained was cut short: its lease ended KILLED, unpublished
    (cut,) = [r for r in all_runs(sqlite_uri, CACHE_EXP) if r.info.run_id == leases[0].info.run_id]
    assert cut.info.status == "KILLED" and "config_hash" not in cut.data.tags, describe([cut])
    assert "train_seconds" not in cut.data.metrics, "the model had finished training when the SIGINT came"
    # leases released, nothing left RUNNING
    assert not live_leases(sqlite_uri), describe(live_leases(sqlite_uri))
    left = [r for r in all_runs(sqlite_uri) if r.info.status == "RUNNING"]
    assert not left, "runs left RUNNING after Ctrl-C:\n" + describe(left)

    # what the rerun must train: the folds of the study's two trials without a FINISHED model
    before = {r.data.tags["config_hash"] for r in finished_models(sqlite_uri)}
    first = [r for r in trial_runs(sqlite_uri, study) if int(r.data.tags[NUMBER]) == 0]
    assert len(first) == 1 and first[0].data.tags.get(STATE) == "complete", describe(first)
    first_hashes = fold_hashes(sqlite_uri, first[0].data.tags[WF_RUN])
    assert len(first_hashes) == FOLDS and first_hashes <= before, (first_hashes, before)
    missing = 2 * FOLDS - len(before)
    assert 1 <= missing < FOLDS, f"{len(before)} models before the rerun: trial 1 was not mid-walk-forward"

    again = cli(*argv, timeout=300)
    doc = tune_doc(again)
    runs = trial_runs(sqlite_uri, study)
    assert len(runs) == 2, "the rerun made a new trial instead of taking the interrupted one up\n" + describe(runs)
    assert sorted(int(r.data.tags[NUMBER]) for r in runs) == [0, 1], describe(runs)
    assert all(r.data.tags.get(STATE) == "complete" and r.info.status == "FINISHED" for r in runs), describe(runs)
    (resumed,) = [r for r in runs if r.info.run_id == trial.info.run_id]
    assert int(resumed.data.tags[NUMBER]) == number, describe([resumed])
    assert doc["n_trials"] == 2, doc
    assert doc["trained"] == missing, (f"the rerun trained {doc['trained']}, but {missing} fold(s) had no model "
                                       f"({len(before)} of {2 * FOLDS} were published before the interrupt)")
    # the same, by config hash: trial 1's folds are its walk-forward's, each trained once
    all_hashes = first_hashes | fold_hashes(sqlite_uri, resumed.data.tags[WF_RUN])
    assert len(all_hashes) == 2 * FOLDS, all_hashes
    assert doc["trained"] == len(all_hashes - before), (doc["trained"], all_hashes - before)
    per_hash = Counter(r.data.tags["config_hash"] for r in finished_models(sqlite_uri))
    assert set(per_hash) == all_hashes and set(per_hash.values()) == {1}, per_hash
    assert not live_leases(sqlite_uri), describe(live_leases(sqlite_uri))
    print(f"interrupted trial {number} after {len(before)} of {2 * FOLDS} models; the rerun trained {doc['trained']}")


# ----------------------------------------------------------------------------- 3. MLflow's schema on PostgreSQL
OPTUNA_TABLES = {"studies", "trials", "version_info", "study_directions", "study_user_attributes",
                 "study_system_attributes", "trial_params", "trial_values", "trial_intermediate_values",
                 "trial_user_attributes", "trial_system_attributes", "trial_heartbeats"}


@pytest.fixture(scope="module")
def pg_team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A throw-away PostgreSQL with ``mlflow server`` on it (tests/pg_support.py, as
    tests/team/conftest.py sets them up; skipped, or failed in CI, the same way when PostgreSQL
    is not installed): ``(postgres, server)``."""
    from pg_support import MlflowPgServer, PostgresServer, missing_reason

    reason = missing_reason()
    try:
        import psycopg  # noqa: F401  (the server's driver and our reader: pip install -e '.[postgres]')
    except ImportError:
        reason = reason or "psycopg is not installed: pip install -e '.[postgres]'"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the team tests: {reason}", pytrace=False)
        pytest.skip(reason)
    postgres = PostgresServer(dbname="mlflow").start()
    server = MlflowPgServer(postgres.uri, tmp_path_factory.mktemp("tune-mlflow-server"))
    try:
        server.start()
        yield postgres, server
    finally:
        server.stop()
        postgres.stop()


def _schema(postgres: Any) -> tuple[list[str], set[str]]:
    """MLflow's Alembic version rows and every table of the database (schema.name)."""
    import psycopg

    with psycopg.connect(postgres.uri, connect_timeout=10) as con:
        versions = [row[0] for row in con.execute("SELECT version_num FROM alembic_version")]
        tables = {f"{s}.{t}" for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")}
    return versions, tables


@pytest.mark.server
@pytest.mark.team
def test_tune_on_the_postgres_team_server_leaves_mlflows_alembic_version_alone(pg_team: tuple[Any, Any]) -> None:
    """A study run through the team's ``mlflow server`` (PostgreSQL behind it) keeps to MLflow's
    API: MLflow's ``alembic_version`` row is the same before and after, no Optuna table
    (``studies``, ``trials``, ``version_info``, …) appears, and no table at all is added."""
    postgres, server = pg_team
    versions, tables = _schema(postgres)
    assert len(versions) == 1, f"MLflow's database should hold one Alembic version row: {versions}"
    assert "public.runs" in tables, sorted(tables)  # it is MLflow's database, migrated by the server

    doc = tune_doc(cli(*tune_argv(server.uri, "TUNP", "SP", 2), timeout=300))
    assert doc["n_trials"] == 2 and doc["trained"] == 2 * FOLDS, doc
    runs = trial_runs(server.uri, "SP")  # the study really is on this server
    assert len(runs) == 2 and all(r.data.tags.get(STATE) == "complete" for r in runs), describe(runs)

    versions_after, tables_after = _schema(postgres)
    assert versions_after == versions, f"MLflow's Alembic version changed: {versions} -> {versions_after}"
    optuna = {t for t in tables_after if t.split(".", 1)[1] in OPTUNA_TABLES}
    assert not optuna, f"Optuna tables in MLflow's database: {sorted(optuna)}"
    assert tables_after == tables, f"tables added: {sorted(tables_after - tables)}, removed: {sorted(tables - tables_after)}"
    print(f"alembic_version {versions[0]} unchanged; {len(tables)} tables, none of Optuna's")
