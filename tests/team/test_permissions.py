"""A team server with users and permissions (issue 24): a real ``mlflow server --app-name
basic-auth`` on PostgreSQL, the team made through MLflow's auth API (tests/team/auth_server.py:
``admin``; ``trainer`` and ``trainer2`` with EDIT on every experiment trainkit uses; ``viewer``
with READ), and each member running the public CLI as a real process with their own credentials.

What each role gets is one line on stderr and the documented exit code, with nothing half-done
in the store; and no password is ever written, printed or logged. The tests of this module run
in order against one server: the last one searches everything the others left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .auth_server import EXPERIMENTS, MlflowAuthServer
from .team_support import TeamClient, together

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.team]

WINDOW = ["--train-start", "2020-01-01", "--train-end", "2020-12-31"]
TINY = ["--data-source", "synthetic", "--timesteps", "256", "--hp", "n_envs=2", "--hp", "n_steps=64",
        "--hp", "batch_size=64", "--hp", "n_epochs=1"]
HP = {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1}


def config_hash(symbol: str) -> str:
    """The hash the CLI computes for ``symbol`` with WINDOW and TINY (a pure function: no I/O)."""
    from trainkit.config import TrainConfig

    return TrainConfig.create(symbol, "2020-01-01", "2020-12-31", data_source="synthetic", timesteps=256,
                              hyperparams=HP).config_hash


WF = ["--start", "2015-01-01", "--end", "2016-12-31", "--train-window", "1y", "--test-window", "6m"]


@pytest.fixture(scope="module")
def auth(postgres, tmp_path_factory: pytest.TempPathFactory):
    """The server, its team made by the admin, and the admin's credentials in this process (the
    tests read the store as the admin; the clients' environments carry only their own)."""
    postgres._run("createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "mlflow_auth")
    backend = postgres.uri.rsplit("/", 1)[0] + "/mlflow_auth"
    server = MlflowAuthServer(backend, tmp_path_factory.mktemp("auth-server"))
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in server.as_user("admin").items():
                mp.setenv(k, v)
            mp.setenv("MLFLOW_TRACKING_URI", server.uri)
            server.make_team()
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def team_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-team")


@pytest.fixture
def member(auth: MlflowAuthServer, team_root: Path):
    """``member("viewer")``: a client signed in as that user (``uri=`` and ``user=None`` for
    the odd ones: credentials in the URI, or none at all)."""
    def make(name: str, *, user: str | None = "", uri: str | None = None, **env: str) -> TeamClient:
        creds = {} if user is None else auth.as_user(user or name)
        return TeamClient(name, team_root, uri or auth.uri, extra_env={**creds, **env})

    return make


def runs_of(symbol: str) -> list:
    """Every run of ``symbol`` in every experiment, deleted ones too (read as the admin)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return [r for r in client.search_runs(exps, run_view_type=ViewType.ALL, max_results=5000)
            if r.data.tags.get("trainkit.symbol") == symbol or r.data.tags.get("symbol") == symbol]


def one_error_line(res, *needles: str) -> str:
    assert res.rc == 1, str(res)
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), str(res)
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def cached(auth: MlflowAuthServer, team_root: Path) -> dict:
    """A model the trainer trained: what the viewer is served."""
    trainer = TeamClient("trainer", team_root, auth.uri, extra_env=auth.as_user("trainer"))
    [row] = trainer.cli("train", "--symbols", "PERM", *WINDOW, *TINY, "--json").json()
    assert row["status"] == "trained"
    return row


def test_a_viewer_reads_and_is_served_and_a_miss_fails_before_any_fetch_or_lease(auth, member, cached) -> None:
    viewer = member("viewer", TRAINKIT_YF_PROXY="http://127.0.0.1:9")  # a fetch would fail, and say so
    uri = cached["model_uri"]
    assert cached["run_id"] in {m["run_id"] for m in viewer.cli("list", "--json").json()}
    assert viewer.cli("explain", "--symbols", "PERM", *WINDOW, *TINY).rc == 0
    [hit] = viewer.cli("train", "--symbols", "PERM", *WINDOW, *TINY, "--json").json()
    assert (hit["status"], hit["model_uri"]) == ("cached", uri)
    [dry] = viewer.cli("train", "--symbols", "PERMB", *WINDOW, *TINY, "--dry-run", "--json").json()
    assert dry["cached"] is False
    loaded = viewer.start_python("import mlflow, sys; m = mlflow.pyfunc.load_model(sys.argv[1]); print(type(m).__name__)",
                                 uri).result()
    assert loaded.rc == 0 and "PyFuncModel" in loaded.out, str(loaded)
    sig = viewer.cli("signal", "--model-uri", uri, "--data-source", "synthetic", "--json")
    assert sig.rc == 0 and "position" in sig.json(), str(sig)
    quiet = viewer.cli("backtest", "--model-uri", uri, "--start", "2021-01-01", "--end", "2021-06-30", "--no-log",
                       "--json").json()
    assert quiet["run_id"] is None and "sharpe" in quiet["metrics"]
    before = {r.info.run_id for r in runs_of("PERM")}

    # a backtest that would be recorded: refused, naming the way not to record it
    one_error_line(viewer.cli("backtest", "--model-uri", uri, "--start", "2021-01-01", "--end", "2021-06-30"),
                   "user 'viewer' has READ on experiment 'trainkit-backtests'", "needs EDIT", "--no-log")
    # a miss: refused before any data is fetched (no Yahoo attempt, no fallback) or any lease taken
    miss = viewer.cli("train", "--symbols", "PERMB", *WINDOW, "--data-source", "yfinance", "--timesteps", "256")
    one_error_line(miss, "user 'viewer' has READ on experiment 'trainkit'", "needs EDIT", "nothing was done")
    assert "yfinance" not in miss.err.lower() and "synthetic" not in miss.err, str(miss)
    assert runs_of("PERMB") == []
    assert {r.info.run_id for r in runs_of("PERM")} == before


def test_a_trainer_with_edit_walks_forward_tunes_registers_but_cannot_clear(auth, member, cached) -> None:
    trainer = member("trainer")
    wf = trainer.cli("walkforward", "--symbols", "PERMW", *WF, *TINY, "--json").json()
    assert len(wf) == 1 and wf[0]["run_id"]
    # a study of one trial: the walk-forward's own config (its folds are cached), so it costs
    # only what a search writes — the study, its lease, the trial
    [tune] = trainer.cli("tune", "--symbols", "PERMW", *WF, *TINY, "--trials", "1", "--json").json()
    assert tune["n_trials"] == 1 and [t["state"] for t in tune["trials"]] == ["complete"], tune
    reg = trainer.cli("register", "--model-uri", cached["model_uri"], "--alias", "candidate", "--json").json()
    assert reg["version"] and reg["name"] == "trainkit-PERM"

    listed = {m["run_id"] for m in trainer.cli("list", "--json").json()}
    cleared = trainer.cli("clear", "--yes", "--include-registered")
    one_error_line(cleared, "user 'trainer' has EDIT on experiment 'trainkit'", "needs MANAGE", "nothing was done")
    assert {m["run_id"] for m in trainer.cli("list", "--json").json()} == listed  # nothing deleted
    # an experiment the trainer made is the trainer's (MANAGE): clear works there; and an admin, whom
    # the server grants nothing explicitly there, is not refused by trainkit either
    own = ("--experiment", "perm-own")
    [mine] = trainer.cli(*own, "train", "--symbols", "PERMO", *WINDOW, *TINY, "--json").json()
    assert trainer.cli(*own, "clear", "--yes", "--symbol", "PERMO").rc == 0
    [again] = trainer.cli(*own, "train", "--symbols", "PERMO", *WINDOW, *TINY, "--json").json()
    assert again["status"] == "trained" and again["run_id"] != mine["run_id"]
    admin = member("admin")
    assert admin.cli(*own, "clear", "--yes", "--symbol", "PERMO").rc == 0
    assert admin.cli(*own, "list", "--json", "--symbol", "PERMO").json() == []
    from mlflow.tracking import MlflowClient

    running = [r.info.run_id for e in EXPERIMENTS for r in MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(e).experiment_id], "attributes.status = 'RUNNING'")]
    assert running == []


def test_leases_work_with_edit_alone_a_lost_tie_and_another_users_stale_lease(auth, member, team_root) -> None:
    trainer, trainer2 = member("trainer"), member("trainer2")
    # trainer2 died holding a lease on PERMS an hour ago: a RUNNING run whose heartbeat stopped then
    made = trainer2.start_python(
        "import sys, time; from mlflow.tracking import MlflowClient; c = MlflowClient();"
        "e = c.get_experiment_by_name('trainkit').experiment_id;"
        "r = c.create_run(e, start_time=int((time.time() - 3600) * 1000), tags={'trainkit.claim_hash': sys.argv[1],"
        " 'trainkit.heartbeat': str(time.time() - 3600), 'trainkit.symbol': 'PERMS'}); print(r.info.run_id)", config_hash("PERMS")).result()
    assert made.rc == 0, str(made)
    stale = made.out.strip()
    [row] = trainer.cli("train", "--symbols", "PERMS", *WINDOW, *TINY, "--json").json()
    assert (row["status"], row["config_hash"]) == ("trained", config_hash("PERMS"))
    from mlflow.tracking import MlflowClient

    taken = MlflowClient().get_run(stale)
    assert taken.info.status == "FAILED" and "stale" in taken.data.tags["trainkit.failure"], taken

    # a tie between the two trainers, their claims held until both are in the store
    barrier = team_root / "perm-race"
    args = ("train", "--symbols", "PERMR", *WINDOW, *TINY, "--json")
    results = together(trainer.start_at_barrier(barrier, 2, *args, at_lease=(config_hash("PERMR"), 2)),
                       trainer2.start_at_barrier(barrier, 2, *args, at_lease=(config_hash("PERMR"), 2)))
    rows = [r.json()[0] for r in results]
    assert sorted(r["status"] for r in rows) == ["cached", "trained"], rows
    runs = runs_of("PERMR")
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("config_hash")]
    released = [r for r in runs if r is not finished[0]]
    assert len(finished) == 1 and len(released) == 1, runs  # both claims met in the store
    # the loser could not delete its lease run (no MANAGE): it ended KILLED, tagged, and no lease
    loser = released[0]
    assert (loser.info.status, loser.info.lifecycle_stage) == ("KILLED", "active"), loser
    assert "trainkit.claim_hash" not in loser.data.tags and "tie" in loser.data.tags["trainkit.failure"]


def test_credentials_missing_wrong_or_a_rejected_host_each_say_their_fix(auth, member) -> None:
    one_error_line(member("nobody", user=None).cli("list"), "requires a login", "are missing",
                   "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    wrong = member("wrong", user=None, MLFLOW_TRACKING_USERNAME="viewer", MLFLOW_TRACKING_PASSWORD="not-it")
    one_error_line(wrong.cli("list"), "were refused", "MLFLOW_TRACKING_USERNAME")
    by_ip = member("by-ip", user="viewer", uri=auth.uri.replace("localhost", "127.0.0.1"))
    line = one_error_line(by_ip.cli("list"), "--allowed-hosts", "'127.0.0.1:")
    assert "permission denied" not in line.lower()
    # credentials in the URI: they work (an Authorization header, the health check included), and are never shown
    pw = auth.passwords["viewer"]
    in_uri = member("in-uri", user=None, uri=auth.uri.replace("http://", f"http://viewer:{pw}@"))
    res = in_uri.cli("list", "--json")
    assert res.rc == 0 and isinstance(res.json(), list), str(res)  # signed in (else: a 401)
    missing = in_uri.cli("train", "--symbols", "PERMU", *WINDOW, *TINY)
    one_error_line(missing, "user 'viewer'", f"at {auth.uri}")
    assert pw not in missing.err + missing.out + res.err + res.out
    # a name and no password may be a token put where a user name goes: refused, and never shown
    token = auth.passwords["trainer"]
    misplaced = member("token-in-uri", user=None, uri=auth.uri.replace("http://", f"http://{token}@")).cli("list")
    assert misplaced.rc == 2 and "MLFLOW_TRACKING_TOKEN" in misplaced.err, str(misplaced)
    assert token not in misplaced.err + misplaced.out


def test_no_password_is_written_printed_or_logged(auth, team_root) -> None:
    """Everything the tests above left: every run and logged model of every experiment (tags,
    params, names, descriptions, text artifacts), the registry, and every client's stdout and
    stderr. None holds a password."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    secrets = [p for u, p in auth.passwords.items() if u != "admin"]
    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(exps, run_view_type=ViewType.ALL, max_results=5000)
    assert len(runs) > 10, "the tests above must have run first"
    texts: list[str] = []
    for r in runs:
        texts.append(json.dumps([r.info.run_name, r.data.tags, r.data.params, sorted(r.data.metrics)]))
        texts.extend(_artifact_texts(client, r.info.run_id))
    for lm in client.search_logged_models(exps, max_results=1000):
        texts.append(json.dumps([lm.name, lm.tags, lm.params, lm.source_run_id]))
    for rm in client.search_registered_models():
        texts.append(json.dumps([rm.name, rm.tags, rm.description]))
        for v in client.search_model_versions(f"name = '{rm.name}'"):
            texts.append(json.dumps([v.source, v.tags, v.run_id, v.description]))
    logs = sorted(team_root.rglob("logs/*"))
    assert logs
    texts.extend(p.read_text(errors="replace") for p in logs)
    found = [(i, s) for i, t in enumerate(texts) for s in secrets if s in t]
    assert not found, f"a password was found in {len(found)} place(s): {[texts[i][:200] for i, _ in found]}"


def _artifact_texts(client, run_id: str, path: str = "") -> list[str]:
    """Every text artifact of a run (json, yaml, csv, txt, md, MLmodel), read."""
    import tempfile

    out = []
    for f in client.list_artifacts(run_id, path or None):
        if f.is_dir:
            out.extend(_artifact_texts(client, run_id, f.path))
        elif f.path.rsplit("/", 1)[-1] == "MLmodel" or f.path.endswith((".json", ".yaml", ".yml", ".csv", ".txt", ".md")):
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(run_id, f.path, tmp)
                out.append(Path(local).read_text(errors="replace"))
    return out

