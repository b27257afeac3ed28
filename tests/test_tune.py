"""``trainkit tune`` (trainkit/search/): an Optuna study whose trials are cached walk-forwards.

What is checked: a rerun trains and writes nothing; ``--trials N+k`` trains only the k new
trials; a fresh study with the same seed asks the same configs (and finds them cached); a
config already walked forward is a free trial; Optuna's tables never go into MLflow's database;
bad input is exit 2 in one line before anything is written; ``--dry-run`` writes nothing and
lists exactly what the real run then does; configs trainkit rejects never become trials; the
MLflow layout of a study; one study per symbol.

Everything is real: Optuna, small PPO models (2 folds of 1000 timesteps) on synthetic prices, a
sqlite store copied from the session's migrated template. One store is tuned once for the module
(a walk-forward, then a study of ``N`` trials); the tests that write get their own copy of it
(database and artifacts, the artifact paths rewritten). Budget: about 3 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import copy_sqlite_store
from test_walkforward import cli  # noqa: F401  (fixture: the CLI in-process, (code, out, err))

SYMBOL = "TUNA"
N = 2  #: the module study's trials
START, END = "2015-01-01", "2016-12-31"  # 1y train / 6m test: 2 folds
WINDOW = {"start": START, "end": END, "train_window": "1y", "test_window": "6m"}
HP = {"n_envs": 8, "batch_size": 64}
OPTS = {"data_source": "synthetic", "timesteps": 1000, "hyperparams": HP}
HP_CLI = ["--hp", "n_envs=8", "--hp", "batch_size=64"]
STUDY = f"{SYMBOL}-ppo-1y-6m"  # the default study name
FOLDS = 2

TRIAL_KEYS = {"number", "state", "params", "value", "walkforward_run_id", "trained"}
BEST_KEYS = {"number", "params", "value", "walkforward_run_id", "deflated_sharpe", "pbo", "n_configs", "selection"}


def tune_args(*symbols: str, end: str = END, timesteps: int = 1000, hp: list[str] | None = None) -> list[str]:
    return ["tune", "--symbols", *(symbols or (SYMBOL,)), "--start", START, "--end", end, "--train-window", "1y",
            "--test-window", "6m", "--data-source", "synthetic", "--timesteps", str(timesteps),
            *(HP_CLI if hp is None else hp)]


# ============================================================================ reading the store
def all_runs(uri: str) -> dict[str, tuple[str, str, str]]:
    """run id -> (experiment, status, lifecycle) of every run of every experiment, deleted ones too."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    names = {e.experiment_id: e.name for e in c.search_experiments(view_type=ViewType.ALL)}
    runs = c.search_runs(list(names), run_view_type=ViewType.ALL, max_results=5000) if names else []
    return {r.info.run_id: (names[r.info.experiment_id], r.info.status, r.info.lifecycle_stage) for r in runs}


def experiments(uri: str) -> set[str]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    return {e.name for e in MlflowClient(uri).search_experiments(view_type=ViewType.ALL)}


def tune_runs(uri: str) -> list[Any]:
    """Every run of experiment trainkit-tune, deleted ones too (none when it does not exist)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("trainkit-tune")
    return [] if exp is None else c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=5000)


def trial_runs(uri: str, study_run_id: str | None = None) -> list[Any]:
    """The trial runs (deleted ones too), of one study when ``study_run_id`` is given."""
    return [r for r in tune_runs(uri) if "trainkit.trial_number" in r.data.tags
            and (study_run_id is None or r.data.tags.get("mlflow.parentRunId") == study_run_id)]


def study_runs(uri: str) -> list[Any]:
    return [r for r in tune_runs(uri) if "trainkit.study_identity" in r.data.tags
            and "mlflow.parentRunId" not in r.data.tags]


def study_state(uri: str, run_id: str) -> tuple:
    """What is logged on a study run: its metrics (with their history), params, tags and artifacts."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    run = c.get_run(run_id)
    history = {k: [(m.value, m.step, m.timestamp) for m in c.get_metric_history(run_id, k)] for k in run.data.metrics}
    return history, run.data.params, run.data.tags, sorted(a.path for a in c.list_artifacts(run_id))


def model_runs(uri: str, ids: set[str]) -> list[Any]:
    """The runs among ``ids`` that trained a model (experiment ``trainkit``)."""
    from mlflow.tracking import MlflowClient

    runs = all_runs(uri)
    c = MlflowClient(uri)
    return [c.get_run(i) for i in ids if runs[i][0] == "trainkit"]


def fold_hashes(params: dict[str, Any], hp: dict[str, Any] = HP) -> set[str]:
    """The config hashes of the folds of the trial with sampled values ``params`` (as trainkit
    plans them: the module's window and options, the trial's hyperparameters)."""
    from trainkit.search import default_space
    from trainkit.walkforward import plan_walk_forward
    from trainkit.walkforward.plan import with_hyperparams

    plan = plan_walk_forward(SYMBOL, START, END, "1y", "6m", data_source="synthetic", timesteps=1000, hyperparams=hp)
    space = default_space("ppo", plan.base.hyperparams)
    return {t.config.config_hash for t in with_hyperparams(plan, space.to_hyperparams(params)).tasks}


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def check_json_shape(doc: Any, symbols: list[str]) -> None:
    """The documented ``--json`` shape: a list with one object per symbol."""
    assert isinstance(doc, list) and [d["symbol"] for d in doc] == symbols
    for d in doc:
        assert {"symbol", "study", "n_trials", "trained", "best", "trials"} <= set(d), sorted(d)
        assert set(d["best"]) == BEST_KEYS, d["best"]
        assert d["trials"] and all(set(t) == TRIAL_KEYS for t in d["trials"]), d["trials"]
        assert isinstance(d["n_trials"], int) and isinstance(d["trained"], int)
        assert isinstance(d["best"]["number"], int) and isinstance(d["best"]["value"], float)
        assert isinstance(d["best"]["params"], dict) and isinstance(d["best"]["walkforward_run_id"], str)
        # the best trial's selection evidence, counted over every config tried on the window
        assert 0.0 <= d["best"]["deflated_sharpe"] <= 1.0 and d["best"]["n_configs"] >= d["n_configs"]
        assert d["best"]["selection"]["walkforward_run_id"] == d["best"]["walkforward_run_id"]
        assert [t["number"] for t in d["trials"]] == sorted(t["number"] for t in d["trials"])


# ============================================================================ stores
def clone_store(src: Path, dst: Path) -> str:
    """A copy of the store in ``src`` (its database and artifacts) at ``dst``, every artifact
    path rewritten to the copy: writing to it leaves the original untouched."""
    shutil.copytree(src, dst)
    db = dst / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("logged_models", "artifact_location")):
            con.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (str(src), str(dst)))
    return f"sqlite:///{db}"


@dataclass
class Tuned:
    root: Path
    uri: str
    wf: Any  # the walk-forward of the study's own options, run before the study
    result: Any  # TuneResult of the first tune
    runs_before_tune: dict


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Tuned:
    """The module's store: a walk-forward of the options (what ``trainkit walkforward`` with the
    same options would run), then a study of ``N`` trials over the default space. Read-only for
    the tests: those that write take a copy (``store``)."""
    from trainkit.manager import TrainingManager

    root = tmp_path_factory.mktemp("tune-store")
    uri = copy_sqlite_store(sqlite_template, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRAINKIT_CACHE_DIR", str(tmp_path_factory.mktemp("tune-cache")))
        mp.setenv("TRAINKIT_CLAIM_SETTLE", "0.3")
        mp.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        manager = TrainingManager(uri)
        wf = manager.walk_forward(SYMBOL, **WINDOW, **OPTS)
        before = all_runs(uri)
        result = manager.tune(SYMBOL, **WINDOW, trials=N, **OPTS)
    assert result.n_trials == N and [t.state for t in result.trials] == ["complete"] * N
    return Tuned(root, uri, wf, result, before)


@pytest.fixture
def store(tuned: Tuned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the module's tuned store, in force (MLFLOW_TRACKING_URI, working directory)."""
    uri = clone_store(tuned.root, tmp_path / "store")
    monkeypatch.chdir(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _summary(trials: Any) -> list[tuple]:
    return [(t.number, t.state, dict(t.params), t.value, t.walkforward_run_id) for t in trials]


# ============================================================================ 1. a rerun
def test_rerunning_the_same_tune_trains_nothing_and_creates_no_run_and_no_trial(tuned: Tuned, store: str, cli) -> None:
    from trainkit.manager import TrainingManager

    before, exps, logged = all_runs(store), experiments(store), study_state(store, tuned.result.study_run_id)
    assert len(trial_runs(store)) == N

    res = TrainingManager(store).tune(SYMBOL, **WINDOW, trials=N, **OPTS)
    assert res.trained == 0 and [t.trained for t in res.trials] == [0] * N
    assert _summary(res.trials) == _summary(tuned.result.trials)
    assert (res.study, res.study_run_id) == (STUDY, tuned.result.study_run_id)
    assert all_runs(store) == before and experiments(store) == exps
    assert len(trial_runs(store)) == N

    code, out, err = cli("--tracking-uri", store, *tune_args(), "--trials", N, "--json")
    assert code == 0, err
    doc = json.loads(out)
    check_json_shape(doc, [SYMBOL])
    row = doc[0]
    assert (row["study"], row["n_trials"], row["trained"]) == (STUDY, N, 0)
    assert [t["trained"] for t in row["trials"]] == [0] * N
    assert [(t["number"], t["state"], t["params"], t["value"], t["walkforward_run_id"]) for t in row["trials"]] == [
        (t.number, t.state, t.params, pytest.approx(t.value, rel=1e-12), t.walkforward_run_id) for t in tuned.result.trials]
    best = tuned.result.best
    assert {k: row["best"][k] for k in ("number", "params", "value", "walkforward_run_id")} == {
        "number": best.number, "params": best.params, "value": pytest.approx(best.value, rel=1e-12),
        "walkforward_run_id": best.walkforward_run_id}
    # the selection evidence of the rerun is the first run's: nothing was tried on the window since
    assert (row["best"]["deflated_sharpe"], row["best"]["n_configs"]) == (
        pytest.approx(tuned.result.evidence.deflated_sharpe, rel=1e-12), tuned.result.evidence.n_configs)
    assert all_runs(store) == before and experiments(store) == exps
    assert len(trial_runs(store)) == N
    assert study_state(store, tuned.result.study_run_id) == logged  # nothing logged on the study run either


# ============================================================================ 2. more trials
K = 2


def test_more_trials_train_only_the_new_trials_folds_and_add_exactly_the_missing_trials(tuned: Tuned, store: str) -> None:
    from trainkit.manager import TrainingManager

    before = all_runs(store)
    res = TrainingManager(store).tune(SYMBOL, **WINDOW, trials=N + K, **OPTS)
    new = set(all_runs(store)) - set(before)

    assert [t.number for t in res.trials] == list(range(N + K)) and res.n_trials == N + K
    assert _summary(res.trials[:N]) == _summary(tuned.result.trials)
    assert [t.trained for t in res.trials[:N]] == [0] * N  # the old trials: nothing trained
    new_trials = res.trials[N:]
    assert res.trained == sum(t.trained for t in new_trials) > 0
    # exactly k new trial runs, numbered N..N+k-1
    added = [r for r in trial_runs(store, res.study_run_id) if r.info.run_id in new]
    assert sorted(int(r.data.tags["trainkit.trial_number"]) for r in added) == list(range(N, N + K))
    assert len(trial_runs(store)) == N + K
    # the models trained are the new trials' folds, and as many as the result says
    trained = model_runs(store, new)
    assert len(trained) == res.trained
    new_hashes = set().union(*(fold_hashes(t.params) for t in new_trials))
    old_hashes = set().union(*(fold_hashes(t.params) for t in tuned.result.trials))
    assert {r.data.tags["config_hash"] for r in trained} <= new_hashes - old_hashes


# ============================================================================ 3. a fresh study, same seed
def test_a_fresh_study_with_the_same_seed_asks_the_same_configs_and_trains_nothing(tuned: Tuned, store: str,
                                                                                   cli) -> None:
    from trainkit.manager import TrainingManager

    before = all_runs(store)
    res = TrainingManager(store).tune(SYMBOL, **WINDOW, trials=N, study="replay", **OPTS)
    assert res.study == "replay" and res.study_run_id != tuned.result.study_run_id
    assert [t.params for t in res.trials] == [t.params for t in tuned.result.trials]  # same asks, same order
    assert [t.walkforward_run_id for t in res.trials] == [t.walkforward_run_id for t in tuned.result.trials]
    assert res.trained == 0 and [t.trained for t in res.trials] == [0] * N
    new = set(all_runs(store)) - set(before)
    assert {all_runs(store)[i][0] for i in new} == {"trainkit-tune"}  # a study and its trials, no model

    # the seed is what makes them equal: another seed asks another trial 1 (a dry run: nothing trained)
    code, out, err = cli("--tracking-uri", store, *tune_args(), "--trials", N, "--study", "other-seed",
                         "--sampler-seed", "1", "--dry-run", "--json")
    assert code == 0, err
    nxt = json.loads(out)[0]["next"]
    assert [r["number"] for r in nxt] == list(range(N))
    assert nxt[0]["params"] == tuned.result.trials[0].params  # trial 0 is the options' own config either way
    assert nxt[1]["params"] != tuned.result.trials[1].params


# ============================================================================ 4. a config already walked forward
def test_the_walk_forward_of_the_options_is_trial_0_and_trains_nothing(tuned: Tuned) -> None:
    """``TrainingManager.walk_forward`` with the study's own options ran first (the fixture): the
    study's trial 0 is that config (README: "Trial 0 of a fresh study is the config the options
    describe (the defaults, plus your --hp)"), so it read the walk-forward back."""
    first = tuned.result.trials[0]
    assert first.hyperparams == {k: v for k, v in tuned.wf.plan.base.hyperparams.items() if k in first.hyperparams}
    assert first.trained == 0
    assert first.walkforward_run_id == tuned.wf.run_id


def test_a_config_already_walked_forward_is_a_trial_that_trains_nothing(sqlite_uri: str) -> None:
    """The same with ``--hp`` values inside the default space (batch 128 divides the 8 x 16 rollout)."""
    from trainkit.manager import TrainingManager

    opts = dict(OPTS, hyperparams={"n_envs": 8, "batch_size": 128})
    manager = TrainingManager(sqlite_uri)
    wf = manager.walk_forward("TUNW", **WINDOW, **opts)
    assert [f.status for f in wf.folds] == ["trained"] * FOLDS
    before = all_runs(sqlite_uri)
    res = TrainingManager(sqlite_uri).tune("TUNW", **WINDOW, trials=1, **opts)
    (trial,) = res.trials
    assert (trial.state, trial.trained, res.trained) == ("complete", 0, 0)
    assert trial.walkforward_run_id == wf.run_id
    assert trial.value == pytest.approx(wf.metrics["sharpe"], rel=1e-12)
    new = set(all_runs(sqlite_uri)) - set(before)
    assert {all_runs(sqlite_uri)[i][0] for i in new} == {"trainkit-tune"}  # no model, no walk-forward run


# ============================================================================ 5. no Optuna tables
def test_mlflows_alembic_version_is_unchanged_and_no_optuna_table_exists(tuned: Tuned, sqlite_template: Path) -> None:
    def tables_and_version(db: Path) -> tuple[set[str], list]:
        with contextlib.closing(sqlite3.connect(db)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return tables, con.execute("SELECT version_num FROM alembic_version").fetchall()

    tables0, version0 = tables_and_version(sqlite_template)
    tables, version = tables_and_version(tuned.root / "mlflow.db")
    assert len(version0) == 1 and version == version0
    assert tables == tables0
    optuna = sorted(t for t in tables if t.startswith(("studies", "study_", "trials", "trial_")) or t == "version_info")
    assert not optuna, optuna
    assert sorted(p.name for p in tuned.root.glob("*.db")) == ["mlflow.db"]  # and no second database


# ============================================================================ 6. bad input
SPACES = {
    "unknown.yaml": "bogus_rate: {type: float, low: 0.1, high: 0.2}\n",
    "empty.yaml": "learning_rate: {type: float, low: 0.01, high: 0.001, log: true}\n",
    "malformed.yaml": "learning_rate: {type: float, low: [0.1\ngamma: :\n",
}


@pytest.mark.parametrize("extra, needle", [
    (["--space", "unknown.yaml"], "bogus_rate is not a hyperparameter of ppo"),
    (["--space", "empty.yaml"], "empty range"),
    (["--space", "malformed.yaml"], "not valid YAML"),
    (["--trials", "0"], "--trials"),
    (["--objective", "n_trades"], "not a walk-forward metric"),
    (["--objective", "bogus"], "not a walk-forward metric"),
], ids=["unknown-hp", "empty-range", "malformed-yaml", "trials-0", "objective-n_trades", "objective-bogus"])
def test_bad_input_is_exit_2_in_one_line_before_a_store_is_opened(cli, tmp_path: Path, monkeypatch, extra,
                                                                   needle) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in SPACES.items():
        (tmp_path / name).write_text(text)
    db = tmp_path / "mlflow.db"
    code, out, err = cli("--tracking-uri", f"sqlite:///{db}", *tune_args(), "--trials", "2", *extra)
    assert code == 2, err
    assert needle in one_line_error(err), err
    assert not out.strip()
    assert not db.exists() and not (tmp_path / "mlruns").exists()  # no store was even opened


@pytest.mark.parametrize("args, part", [
    (tune_args("TUNB") + ["--study", STUDY], "symbol"),
    (tune_args(end="2017-06-30"), "window"),  # the default name is the same: TUNA-ppo-1y-6m
    (tune_args() + ["--space", "space.yaml"], "space"),
    (tune_args() + ["--objective", "sortino"], "objective"),
    (tune_args(timesteps=2000), "options"),
], ids=["symbol", "window", "space", "objective", "options"])
def test_a_study_that_exists_as_a_study_of_something_else_is_exit_2_before_anything_is_written(
        store: str, cli, args, part) -> None:
    Path("space.yaml").write_text("learning_rate: {type: float, low: 0.0001, high: 0.003, log: true}\n")
    before, exps, trials = all_runs(store), experiments(store), len(trial_runs(store))
    code, out, err = cli("--tracking-uri", store, *args, "--trials", N + 1)
    assert code == 2, err
    line = one_line_error(err)
    assert f"study '{STUDY}' exists with another " in line, line
    differing = line.split(" exists with another ", 1)[1].split(":", 1)[0].split(", ")
    assert part in differing, line  # (a smaller space also leaves the other hyperparameters to the options)
    assert not out.strip()
    assert all_runs(store) == before and experiments(store) == exps and len(trial_runs(store)) == trials


# ============================================================================ 7. dry runs
def test_a_dry_run_on_no_store_creates_nothing_and_lists_the_first_trials(cli, fresh_sqlite_uri: str,
                                                                         tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    code, out, err = cli("--tracking-uri", fresh_sqlite_uri, *tune_args(), "--trials", 3, "--dry-run")
    assert code == 0, err
    assert f"study {STUDY} (would be created) holds 0 of 3 trials" in out, out
    assert "learning_rate" in out and "net_arch" in out  # the space is printed
    code, out, err = cli("--tracking-uri", fresh_sqlite_uri, *tune_args(), "--trials", 3, "--dry-run", "--json")
    assert code == 0, err
    (doc,) = json.loads(out)
    assert (doc["symbol"], doc["study"], doc["exists"], doc["n_trials"], doc["trials"]) == (SYMBOL, STUDY, False, 0, 3)
    assert [r["number"] for r in doc["next"]] == [0, 1, 2]
    assert all((r["folds"], r["models_cached"], r["would_train"], r["retry"]) == (FOLDS, 0, FOLDS, False)
               for r in doc["next"])
    assert len({json.dumps(r["params"], sort_keys=True) for r in doc["next"]}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a dry run made files"  # no mlflow.db, no mlruns
    assert not db.exists()


def test_a_dry_run_after_a_tune_lists_exactly_what_the_real_run_then_does(tuned: Tuned, store: str, cli) -> None:
    before = all_runs(store)
    code, out, err = cli("--tracking-uri", store, *tune_args(), "--trials", N, "--dry-run")
    assert code == 0, err
    assert f"study {STUDY} (exists) holds {N} of {N} trials" in out and "nothing to run" in out, out
    code, out, err = cli("--tracking-uri", store, *tune_args(), "--trials", N, "--dry-run", "--json")
    assert code == 0, err
    (doc,) = json.loads(out)
    assert (doc["exists"], doc["n_trials"], doc["next"]) == (True, N, [])

    code, out, err = cli("--tracking-uri", store, *tune_args(), "--trials", N + 1, "--dry-run", "--json")
    assert code == 0, err
    (doc,) = json.loads(out)
    (nxt,) = doc["next"]
    assert nxt["number"] == N and not nxt["retry"]
    assert all_runs(store) == before  # the dry runs wrote nothing

    code, out, err = cli("--tracking-uri", store, *tune_args(), "--trials", N + 1, "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert [t["number"] for t in row["trials"]] == list(range(N + 1))
    ran = row["trials"][N]
    assert ran["params"] == nxt["params"]  # the asks are deterministic
    assert ran["state"] == "complete" and ran["trained"] == nxt["would_train"] == row["trained"]


# ============================================================================ 8. impossible combinations
def test_configs_trainkit_rejects_are_never_trials(sqlite_uri: str, tmp_path: Path, cli) -> None:
    from trainkit.search import load_space, make_spec
    from trainkit.search.study import sample
    from trainkit.walkforward import plan_walk_forward

    space_file = tmp_path / "space.yaml"
    space_file.write_text("batch_size: {type: categorical, choices: [64, 4096]}\n")  # 4096 > 8 x 16
    hp = ["--hp", "n_envs=8", "--hp", "n_steps=16", "--hp", "batch_size=64"]
    args = [*tune_args("TUNX", hp=hp), "--space", str(space_file), "--trials", "3"]
    # the sampler does ask for 4096 for these trials: trainkit has to refuse it
    plan = plan_walk_forward("TUNX", START, END, "1y", "6m", data_source="synthetic", timesteps=1000,
                             hyperparams={"n_envs": 8, "n_steps": 16, "batch_size": 64})
    spec = make_spec(plan, load_space(str(space_file), "ppo"))
    assert any(sample(spec, [], n, a)["batch_size"] == 4096 for n in (1, 2) for a in range(3))

    code, out, err = cli("--tracking-uri", sqlite_uri, *args, "--dry-run", "--json")
    assert code == 0, err
    listed = json.loads(out)[0]["next"]
    assert [r["number"] for r in listed] == [0, 1, 2]
    assert [r["params"]["batch_size"] for r in listed] == [64, 64, 64]

    code, out, err = cli("--tracking-uri", sqlite_uri, *args, "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["n_trials"] == 3 and [t["number"] for t in row["trials"]] == [0, 1, 2]
    assert [(t["state"], t["params"]["batch_size"]) for t in row["trials"]] == [("complete", 64)] * 3
    assert row["trained"] == FOLDS  # one config: trained once, the duplicates read it back
    runs = trial_runs(sqlite_uri)
    assert len(runs) == 3  # no run for a rejected config, not even a deleted one
    assert {r.data.params["hp.batch_size"] for r in runs} == {"64"}


# ============================================================================ 9. the MLflow layout
def test_a_study_is_one_run_with_a_nested_run_per_trial_and_optunas_pictures(tuned: Tuned, tmp_path: Path) -> None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from trainkit.search import default_space
    from trainkit.walkforward import plan_walk_forward

    client = MlflowClient(tuned.uri)
    res = tuned.result
    (study,) = study_runs(tuned.uri)
    assert study.info.run_id == res.study_run_id
    assert study.info.run_name == STUDY and study.data.tags["mlflow.runName"] == STUDY
    assert study.info.status == "FINISHED" and study.info.lifecycle_stage == "active"

    trials = sorted(trial_runs(tuned.uri, study.info.run_id), key=lambda r: int(r.data.tags["trainkit.trial_number"]))
    assert [int(r.data.tags["trainkit.trial_number"]) for r in trials] == list(range(N))
    # nothing else is active in the experiment (the study's lease runs are deleted)
    exp = client.get_experiment_by_name("trainkit-tune").experiment_id
    active = {r.info.run_id for r in client.search_runs([exp], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)}
    assert active == {study.info.run_id, *(r.info.run_id for r in trials)}

    plan = plan_walk_forward(SYMBOL, START, END, "1y", "6m", data_source="synthetic", timesteps=1000, hyperparams=HP)
    names = default_space("ppo", plan.base.hyperparams).names()
    for run, t in zip(trials, res.trials):
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["mlflow.parentRunId"] == study.info.run_id
        assert tags["trainkit.trial_state"] == "complete" and run.info.status == "FINISHED"
        assert set(params) == {f"hp.{n}" for n in names}
        for n in names:
            v = t.hyperparams[n]
            assert params[f"hp.{n}"] == (json.dumps(v) if isinstance(v, list) else str(v)), n
        assert metrics["value"] == pytest.approx(t.value, rel=1e-12)
        assert tags["trainkit.walkforward_run_id"] == t.walkforward_run_id

    m = study.data.metrics
    assert (m["n_trials"], m["n_configs"]) == (N, N)
    assert m["best_value"] == pytest.approx(res.best.value, rel=1e-12)
    arts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert "optimization_history.png" in arts
    values = {t.value for t in res.trials}
    assert len(values) >= 2  # two configs, two values: Optuna can rank the parameters
    assert "param_importances.png" in arts
    local = Path(client.download_artifacts(study.info.run_id, "", str(tmp_path)))
    for name in ("optimization_history.png", "param_importances.png"):
        assert (local / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_complete_trial_gets_a_history_but_no_param_importances(tmp_path: Path, store: str) -> None:
    """Optuna cannot rank parameters on a single value: no importance picture then."""
    from mlflow.tracking import MlflowClient

    from trainkit.manager import TrainingManager

    res = TrainingManager(store).tune(SYMBOL, **WINDOW, trials=1, study="single", **OPTS)
    assert res.trained == 0 and res.n_trials == 1  # trial 0 is cached in the module's store
    arts = {a.path for a in MlflowClient(store).list_artifacts(res.study_run_id)}
    assert "optimization_history.png" in arts and "param_importances.png" not in arts


# ============================================================================ 10. several symbols
def test_several_symbols_with_a_study_name_get_one_study_each(store: str, cli) -> None:
    code, out, err = cli("--tracking-uri", store, *tune_args(SYMBOL, "TUNB"), "--study", "multi", "--trials", 1,
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    check_json_shape(doc, [SYMBOL, "TUNB"])
    assert [(d["study"], d["n_trials"]) for d in doc] == [(f"multi-{SYMBOL}", 1), ("multi-TUNB", 1)]
    assert doc[0]["trained"] == 0 and doc[1]["trained"] == FOLDS  # TUNA's trial 0 is cached in the module's store
    names = {r.info.run_name: r for r in study_runs(store)}
    assert {f"multi-{SYMBOL}", "multi-TUNB"} <= set(names) and "multi" not in names
    for d in doc:
        run = names[d["study"]]
        assert json.loads(run.data.tags["trainkit.study_identity"])["symbol"] == d["symbol"]
        assert len(trial_runs(store, run.info.run_id)) == 1


def test_a_median_pruner_stops_a_trial_below_the_median_and_leaves_its_later_folds_untrained(sqlite_uri: str) -> None:
    """4 folds, 6 trials: every pruned trial stopped after a fold where its running value was below
    the median of the complete trials before it, logged no walk-forward, and its later folds'
    models were never trained. The seed is one where the pruner does stop a trial."""
    from statistics import median

    from mlflow.tracking import MlflowClient

    from trainkit.manager import TrainingManager
    from trainkit.walkforward import plan_walk_forward
    from trainkit.walkforward.plan import with_hyperparams

    window = {**WINDOW, "start": "2014-01-01"}  # 4 folds of 6 months
    res = TrainingManager(sqlite_uri).tune(SYMBOL, **window, trials=6, pruner="median", sampler_seed=3, **OPTS)
    records = {r.data.tags["trainkit.trial_number"]: r for r in trial_runs(sqlite_uri, res.study_run_id)}
    pruned = [t for t in res.trials if t.state == "pruned"]
    client = MlflowClient(sqlite_uri)
    exp = client.get_experiment_by_name("trainkit").experiment_id
    trained = {r.data.tags["config_hash"] for r in client.search_runs([exp], "attributes.status = 'FINISHED'", max_results=1000)
               if "config_hash" in r.data.tags}
    assert pruned, [(t.number, t.state, t.value) for t in res.trials]
    assert res.n_trials == 6 and all(t.state in ("complete", "pruned") for t in res.trials)
    for t in pruned:
        run = records[str(t.number)]
        running = {int(k): v for k, v in json.loads(run.data.tags["trainkit.trial_running"]).items()}
        stop = max(running)
        assert stop < 3 and t.walkforward_run_id is None and "value" not in run.data.metrics
        earlier = [json.loads(records[str(e.number)].data.tags["trainkit.trial_running"])[str(stop)]
                   for e in res.trials if e.state == "complete" and e.number < t.number]
        assert len(earlier) >= 3 and running[stop] < median(earlier)
        plan = with_hyperparams(plan_walk_forward(SYMBOL, window["start"], END, "1y", "6m", data_source="synthetic",
                                                  timesteps=1000, hyperparams=HP), t.hyperparams)
        hashes = [task.config.config_hash for task in plan.tasks]
        assert set(hashes[:stop + 1]) <= trained, "a pruned trial's folds up to its stop are cached"
        assert not set(hashes[stop + 1:]) & trained, "a pruned trial trained folds after the one it stopped at"
