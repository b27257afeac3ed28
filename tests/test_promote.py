"""Honest selection end to end: ``trainkit tune`` and ``walkforward`` report the deflated
Sharpe ratio and PBO counted from the store, and ``trainkit promote`` moves an alias only when
the evidence passes its gate (trainkit/walkforward/evidence.py, trainkit/promotion.py,
trainkit/store/promotions.py).

What is checked, on data the tests generate:

* on a random walk (synthetic prices, several data seeds) the best of 8 tuned configs is refused
  — exit 3, one line with the figures, nothing written — whatever its raw Sharpe;
* a second study, and a plain walk-forward, on the same symbol and window count the first
  study's configs (and a config already tried counts once);
* on a planted edge (a CSV whose returns mean-revert: examples/planted_edge.py) ``promote`` registers the chosen config trained
  on the latest training window, moves the alias, records the move, tags the version with its
  evidence and lists it on the LoggedModel; ``signal`` on the alias answers with it and says
  since when and on what evidence, writing nothing; ``--dry-run`` changes nothing;
* ``--rollback`` restores the previous version and records it; with nothing to roll back to it
  is exit 2;
* ``--max-pbo`` refuses on PBO, and when PBO cannot be computed;
* ``trainkit list --sort METRIC --oos-window START..END`` ranks the models measured on one
  out-of-sample window, best first, and refuses to rank across windows;
* a registry that does not answer, or fails after the version (or after the alias) was written,
  leaves the alias where it was and records nothing (exit 1, naming the registry); a version the
  alias never reached says ``trainkit.promoted=false``.

Everything is real: Optuna, small PPO models (one fold of 1000 timesteps; on the edge two folds of
8000), sqlite stores copied from the session's migrated template. Budget: about 4 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import copy_sqlite_store, free_port, run_cli
from test_tune import all_runs, clone_store, experiments
from test_walkforward import cli  # noqa: F401  (fixture: the CLI in-process, (code, out, err))

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from planted_edge import planted_edge  # noqa: E402  (the README's generator of prices with an edge)

START, END = "2015-01-01", "2016-06-30"  # 1y train / 6m test: one fold, tested on 2016H1
FAST = ["--timesteps", "1000", "--hp", "n_envs=8", "--hp", "batch_size=64"]
HP = {"n_envs": 8, "batch_size": 64}
OPTS = {"timesteps": 1000, "hyperparams": HP}
#: a PPO that learns the planted edge (examples/planted_edge.py) in one fold's budget: myopic (gamma 0), 8000 steps
EDGE_OPTS = {"timesteps": 8000, "hyperparams": {**HP, "gamma": 0.0, "learning_rate": 0.003, "n_epochs": 10}}
EDGE_END = "2016-12-31"  # two folds, tested on 2016H1 and 2016H2
WINDOW = ["--start", START, "--end", END, "--train-window", "1y", "--test-window", "6m"]
DATA_SEEDS = (1, 2, 3)
TRIALS = 8
WALK = "RWALK"
EDGE = "EDGE"


def tune_args(seed: int, study: str, trials: int = TRIALS, sampler_seed: int = 0) -> list[str]:
    return ["tune", "--symbols", WALK, *WINDOW, "--data-source", "synthetic", "--data-seed", str(seed), *FAST,
            "--study", study, "--trials", str(trials), "--sampler-seed", str(sampler_seed), "--json"]


def registry(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def alias_version(uri: str, name: str, alias: str = "champion") -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(registry(uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


# ============================================================================ the stores
@contextlib.contextmanager
def module_store(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, name: str) -> Iterator[tuple]:
    """A module's store, in force while it is filled: ``(root, uri, manager)``."""
    from trainkit.manager import TrainingManager

    root = tmp_path_factory.mktemp(name)
    uri = copy_sqlite_store(sqlite_template, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRAINKIT_CACHE_DIR", str(tmp_path_factory.mktemp(f"{name}-cache")))
        mp.setenv("TRAINKIT_CLAIM_SETTLE", "0.3")
        mp.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        yield root, uri, TrainingManager(uri)


@pytest.fixture(scope="module")
def walks(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict[str, Any]:
    """One store with a study of 8 configs per data seed of a random walk (``rw-<seed>``).
    Read-only for the tests: those that write take a copy."""
    with module_store(tmp_path_factory, sqlite_template, "walks") as (root, uri, manager):
        docs = {seed: manager.tune(WALK, START, END, "1y", "6m", trials=TRIALS, study=f"rw-{seed}",
                                   data_source="synthetic", data_seed=seed, **OPTS).to_dict()
                for seed in DATA_SEEDS}
    return {"uri": uri, "root": root, "docs": docs}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict[str, Any]:
    """One store with two walk-forwards (two seeds: two configs) of the planted edge."""
    with module_store(tmp_path_factory, sqlite_template, "edge") as (root, uri, manager):
        csv = planted_edge(root / "edge.csv")
        runs = [manager.walk_forward(EDGE, START, EDGE_END, "1y", "6m", seeds=(seed,), data_source=f"csv:{csv}",
                                     **EDGE_OPTS).to_dict()
                for seed in (0, 1)]
    return {"uri": uri, "root": root, "csv": csv, "runs": runs}


# ============================================================================ 1. a random walk
def test_on_a_random_walk_the_best_of_8_tuned_configs_is_refused_on_every_data_seed(walks, cli) -> None:
    uri = walks["uri"]
    best_sharpes = []
    for seed in DATA_SEEDS:
        doc = walks["docs"][seed]
        best = doc["best"]
        assert doc["n_trials"] == TRIALS and best["n_configs"] == TRIALS, doc  # each data seed: its own window
        assert best["deflated_sharpe"] < 0.95, best
        best_sharpes.append(best["selection"]["sharpe"])
        before, exps = all_runs(uri), experiments(uri)
        code, out, err = cli("--tracking-uri", uri, "promote", "--symbol", WALK, "--study", f"rw-{seed}", "--json")
        assert code == 3, (out, err)
        line = err.strip().splitlines()[-1]
        assert line.startswith("not promoted: deflated Sharpe ") and f"over {best['n_configs']} configs tried on " \
            f"{WALK} {START}..{END}" in line, err
        res = json.loads(out)
        assert res["promoted"] is False and res["reason"].startswith("not promoted: ") and res["version"] is None
        assert res["walkforward_run_id"] == best["walkforward_run_id"] and res["n_configs"] == best["n_configs"]
        # nothing changed: no run, no experiment, no registered model
        assert all_runs(uri) == before and experiments(uri) == exps
        assert registry(uri).search_registered_models() == []
    print("best raw Sharpe per data seed:", best_sharpes)


def test_a_refusal_through_the_real_process_is_exit_3_in_one_line(walks) -> None:
    p = run_cli("--tracking-uri", walks["uri"], "promote", "--symbol", WALK, "--study", f"rw-{DATA_SEEDS[0]}")
    assert p.returncode == 3, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "not promoted: deflated Sharpe" in p.stderr
    assert "refused: models:/trainkit-RWALK@champion is unchanged" in p.stdout


def test_a_second_study_and_a_plain_walkforward_count_the_first_studys_configs(walks, cli, tmp_path: Path) -> None:
    from trainkit.store import ModelStore
    from trainkit.walkforward.evidence import evidence_for

    uri = copy_sqlite_store_of(walks["root"], tmp_path)
    seed = DATA_SEEDS[0]
    first = walks["docs"][seed]["best"]["n_configs"]
    code, out, err = cli("--tracking-uri", uri, *tune_args(seed, "second", trials=2, sampler_seed=7))
    assert code == 0, err
    doc = json.loads(out)[0]
    new = {json.dumps(t["params"], sort_keys=True) for t in doc["trials"]} - {
        json.dumps(t["params"], sort_keys=True) for t in walks["docs"][seed]["trials"]}
    assert doc["best"]["n_configs"] == first + len(new), (doc["best"]["n_configs"], first, new)
    # the default config is trial 0 of both studies: walked forward again, it counts once
    code, out, err = cli("--tracking-uri", uri, "walkforward", "--symbols", WALK, *WINDOW, "--data-source",
                         "synthetic", "--data-seed", seed, *FAST, "--json")
    assert code == 0, err
    wf = json.loads(out)[0]
    assert wf["n_configs"] == first + len(new) and 0.0 <= wf["deflated_sharpe"] <= 1.0
    store = ModelStore(uri, create=False)
    ev = evidence_for(store, wf["run_id"])
    assert ev.n_configs == wf["n_configs"] and ev.pbo is not None and ev.pbo_candidates == ev.n_configs
    # another data seed is another window: the new configs are not counted there
    for other in DATA_SEEDS[1:]:
        assert evidence_for(store, walks["docs"][other]["best"]["walkforward_run_id"]).n_configs == TRIALS


def copy_sqlite_store_of(root: Path, dst: Path) -> str:
    """A private copy of a module store (database and artifacts, paths rewritten)."""
    return clone_store(root, dst / "store")


# ============================================================================ 2. a planted edge
def test_on_a_planted_edge_promote_moves_the_alias_and_signal_answers_with_it(edge, cli, tmp_path: Path) -> None:
    uri = copy_sqlite_store_of(edge["root"], tmp_path)
    best = max(edge["runs"], key=lambda r: r["metrics"]["sharpe"])
    # each walk-forward's own snapshot counted the configs on the window when it was logged
    assert [r["n_configs"] for r in edge["runs"]] == [1, 2], [r["selection"] for r in edge["runs"]]
    name = f"trainkit-{EDGE}"
    # a dry run shows the decision and changes nothing
    before, exps = all_runs(uri), experiments(uri)
    code, out, err = cli("--tracking-uri", uri, "promote", "--symbol", EDGE, "--walkforward-run", best["run_id"],
                         "--dry-run", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["promoted"] is False and dry["would_promote"] is True and dry["dry_run"] is True
    assert all_runs(uri) == before and experiments(uri) == exps and alias_version(uri, name) is None

    code, out, err = cli("--tracking-uri", uri, "promote", "--symbol", EDGE, "--walkforward-run", best["run_id"],
                         "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["promoted"] is True and res["version"] == "1" and res["alias"] == "champion"
    assert res["deflated_sharpe"] >= 0.95 and res["n_configs"] == 2 and res["previous_version"] is None
    assert alias_version(uri, name) == "1"
    client = registry(uri)
    mv = client.get_model_version(name, "1")
    assert mv.source.startswith("models:/m-")
    tags = mv.tags
    assert tags["trainkit.promoted"] == "true" and tags["trainkit.n_configs"] == "2"
    assert float(tags["trainkit.deflated_sharpe"]) >= 0.95 and tags["trainkit.walkforward_run_id"] == best["run_id"]
    assert tags["trainkit.gate"] == "deflated_sharpe>=0.95"
    # the LoggedModel lists its version (the UI shows it as registered)
    listed = json.loads(client.get_logged_model(mv.source.split("/", 1)[1]).tags["mlflow.modelVersions"])
    assert [(e["name"], str(e["version"])) for e in listed] == [(name, "1")]
    # trained on the latest training window of the fold grid: the one a longer walk-forward adds next
    run = client.get_run(res["model_uri"].split("/")[1])
    assert (run.data.params["train_start"], run.data.params["train_end"]) == ("2016-01-01", "2016-12-31")
    # the move is recorded
    code, out, err = cli("--tracking-uri", uri, "promote", "--history", "--name", name, "--json")
    assert code == 0, err
    moves = json.loads(out)
    assert [(m["action"], m["from_version"], m["to_version"]) for m in moves] == [("promote", None, "1")]
    assert moves[0]["evidence"]["trainkit.n_configs"] == "2"
    # signal on the alias: the position, since when and on what evidence; it writes nothing
    before = all_runs(uri)
    code, out, err = cli("--tracking-uri", uri, "signal", "--model-uri", f"models:/{name}@champion", "--date",
                         "2016-12-30", "--json")
    assert code == 0, err
    sig = json.loads(out)
    assert sig["position"] in (-1, 0, 1) and sig["promotion"]["version"] == "1"
    assert sig["promotion"]["since"] == moves[0]["time"] and sig["promotion"]["action"] == "promote"
    assert sig["promotion"]["evidence"]["trainkit.deflated_sharpe"] == tags["trainkit.deflated_sharpe"]
    assert all_runs(uri) == before


def test_rollback_restores_the_previous_version_and_records_it(edge, cli, tmp_path: Path) -> None:
    uri = copy_sqlite_store_of(edge["root"], tmp_path)
    name = f"trainkit-{EDGE}"
    first, second = edge["runs"]
    for wf in (first, second):  # a gate of 0 lets both through: two promotions
        code, out, err = cli("--tracking-uri", uri, "promote", "--symbol", EDGE, "--walkforward-run", wf["run_id"],
                             "--min-dsr", "0")
        assert code == 0, err
    assert alias_version(uri, name) == "2"
    code, out, err = cli("--tracking-uri", uri, "promote", "--rollback", "--name", name, "--json")
    assert code == 0, err
    move = json.loads(out)
    assert (move["action"], move["from_version"], move["to_version"]) == ("rollback", "2", "1")
    assert alias_version(uri, name) == "1"
    code, out, err = cli("--tracking-uri", uri, "promote", "--history", "--name", name, "--json")
    assert [(m["action"], m["from_version"], m["to_version"]) for m in json.loads(out)] == [
        ("promote", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1")]
    # version 1 came from nothing: there is nothing further back
    before = all_runs(uri)
    code, out, err = cli("--tracking-uri", uri, "promote", "--rollback", "--name", name)
    assert code == 2 and "nothing to roll back to" in err and len(err.strip().splitlines()) == 1
    assert all_runs(uri) == before and alias_version(uri, name) == "1"


def test_a_registry_that_does_not_answer_leaves_the_alias_and_records_nothing(edge, cli, tmp_path: Path,
                                                                              monkeypatch) -> None:
    uri = copy_sqlite_store_of(edge["root"], tmp_path)
    first, second = edge["runs"]
    code, out, err = cli("--tracking-uri", uri, "promote", "--symbol", EDGE, "--walkforward-run", first["run_id"],
                         "--min-dsr", "0")
    assert code == 0, err
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", closed)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    before, exps = all_runs(uri), experiments(uri)
    code, out, err = cli("--tracking-uri", uri, "promote", "--symbol", EDGE, "--walkforward-run", second["run_id"],
                         "--min-dsr", "0")
    assert code == 1, (out, err)
    assert len(err.strip().splitlines()) == 1 and "model registry" in err and closed in err, err
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    # it failed before training (the registry is asked first) and wrote nothing
    assert all_runs(uri) == before and experiments(uri) == exps
    assert alias_version(uri, f"trainkit-{EDGE}") == "1"
    assert [str(v.version) for v in registry(uri).search_model_versions(f"name = 'trainkit-{EDGE}'")] == ["1"]


# ============================================================================ 3. bad input
@pytest.mark.parametrize("args, needle", [
    (["--symbol", "AAPL"], "either --study NAME or --walkforward-run"),
    (["--symbol", "AAPL", "--study", "x", "--walkforward-run", "y"], "either --study NAME or --walkforward-run"),
    (["--symbol", "AAPL", "--study", "x", "--min-dsr", "1.5"], "is not a probability"),
    (["--symbol", "AAPL", "--study", "x", "--max-pbo", "nan"], "is not a probability"),
    (["--history"], "needs --name"),
    (["--rollback", "--history", "--name", "trainkit-AAPL"], "exclude each other"),
], ids=["no-source", "two-sources", "min-dsr", "max-pbo", "history-name", "history-rollback"])
def test_bad_input_is_exit_2_in_one_line_before_a_store_is_opened(cli, tmp_path: Path, monkeypatch, args,
                                                                  needle) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("promote", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_study_is_exit_2_naming_it(walks, cli) -> None:
    before = all_runs(walks["uri"])
    code, out, err = cli("--tracking-uri", walks["uri"], "promote", "--symbol", WALK, "--study", "nope")
    assert code == 2 and "no study 'nope'" in err, err
    assert all_runs(walks["uri"]) == before


# ============================================================================ 4. a registry failing half-way
class FailingRegistry:
    """A proxy in front of a real MLflow server that answers 500 to the calls ``fail`` names
    (method, path ending) and passes everything else through: a registry that fails half-way."""

    def __init__(self, upstream: str, fail: tuple[tuple[str, str], ...]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import requests

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if any(self.command == m and self.path.split("?")[0].endswith(f) for m, f in proxy.fail):
                    proxy.failed.append(self.path)
                    self._send(500, b'{"error_code": "INTERNAL_ERROR", "message": "the registry failed"}')
                    return
                r = requests.request(self.command, upstream + self.path, data=body, timeout=30,
                                     headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                self._send(r.status_code, r.content)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.fail, self.failed = fail, []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_registry_failing_after_the_version_leaves_the_alias_and_tags_the_version_not_promoted(
        server_uri: str, cli, monkeypatch) -> None:
    symbol = "HALF"
    name = f"trainkit-{symbol}"
    code, out, err = cli("walkforward", "--symbols", symbol, *WINDOW, "--data-source", "synthetic", *FAST, "--json")
    assert code == 0, err
    wf = json.loads(out)[0]
    code, out, err = cli("promote", "--symbol", symbol, "--walkforward-run", wf["run_id"], "--min-dsr", "0", "--json")
    assert code == 0, err
    first = json.loads(out)
    client = registry(server_uri)
    model_id = client.get_model_version(name, "1").source.split("/", 1)[1]
    # the server lists the version on the LoggedModel itself; trainkit does not list it twice
    assert [str(e["version"]) for e in json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])] == ["1"]

    proxy = FailingRegistry(server_uri, fail=(("POST", "/registered-models/alias"),))
    try:
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", proxy.uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        code, out, err = cli("promote", "--symbol", symbol, "--walkforward-run", wf["run_id"], "--min-dsr", "0")
    finally:
        proxy.close()
    assert proxy.failed, "the alias call never reached the proxy"
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "model registry" in err and proxy.uri in err and "champion" in err, err
    # the alias stays where it was, the new version says it was not promoted, no record claims otherwise
    assert alias_version(server_uri, name) == first["version"] == "1"
    assert client.get_model_version(name, "2").tags["trainkit.promoted"] == "false"
    code, out, err = cli("promote", "--history", "--name", name, "--json")
    assert [m["to_version"] for m in json.loads(out)] == ["1"]

    # the registry fails *after* the alias moved: it is put back, and nothing records the move
    proxy = FailingRegistry(server_uri, fail=(("POST", "/model-versions/set-tag"),))
    try:
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", proxy.uri)
        code, out, err = cli("promote", "--symbol", symbol, "--walkforward-run", wf["run_id"], "--min-dsr", "0")
    finally:
        proxy.close()
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "models:/trainkit-HALF@champion points at version 1 again" in err, err
    assert alias_version(server_uri, name) == "1"
    assert client.get_model_version(name, "3").tags["trainkit.promoted"] == "false"
    code, out, err = cli("promote", "--history", "--name", name, "--json")
    assert [m["to_version"] for m in json.loads(out)] == ["1"]


def test_max_pbo_refuses_on_pbo_and_when_pbo_cannot_be_computed(walks, edge, cli) -> None:
    best = walks["docs"][DATA_SEEDS[0]]["best"]
    pbo = best["pbo"]
    assert pbo is not None and pbo > 0.01, best  # 8 configs on the same days: PBO is computed
    limit = round(pbo - 0.01, 4)
    code, out, err = cli("--tracking-uri", walks["uri"], "promote", "--symbol", WALK, "--study", f"rw-{DATA_SEEDS[0]}",
                         "--min-dsr", "0", "--max-pbo", limit, "--json")
    assert code == 3 and json.loads(out)["promoted"] is False
    assert f"not promoted: PBO {pbo:.2f} > {limit:g} over {TRIALS} configs" in err, err
    # the edge has 2 configs on its window: no PBO, so a PBO gate cannot pass
    best_edge = max(edge["runs"], key=lambda r: r["metrics"]["sharpe"])
    code, out, err = cli("--tracking-uri", edge["uri"], "promote", "--symbol", EDGE, "--walkforward-run",
                         best_edge["run_id"], "--max-pbo", "0.5")
    assert code == 3 and "PBO cannot be computed" in err, err
    assert registry(edge["uri"]).search_registered_models() == []


def test_signal_on_an_alias_set_by_hand_says_so_and_writes_nothing(edge, cli, tmp_path: Path) -> None:
    uri = copy_sqlite_store_of(edge["root"], tmp_path)
    model_uri = edge["runs"][0]["folds"][-1]["model_uri"]
    code, out, err = cli("--tracking-uri", uri, "register", "--model-uri", model_uri, "--alias", "champion")
    assert code == 0, err
    before, exps = all_runs(uri), experiments(uri)
    code, out, err = cli("--tracking-uri", uri, "signal", "--model-uri", f"models:/trainkit-{EDGE}@champion",
                         "--date", "2016-12-30", "--json")
    assert code == 0, err
    st = json.loads(out)["promotion"]
    assert (st["version"], st["since"], st["action"], st["evidence"]) == ("1", None, None, {})
    assert all_runs(uri) == before and experiments(uri) == exps  # no trainkit-promotions made by a read
    code, out, err = cli("--tracking-uri", uri, "signal", "--model-uri", f"models:/trainkit-{EDGE}@champion",
                         "--date", "2016-12-30")
    assert "champion is version 1 (set by hand: no promotion recorded)" in out


# ============================================================================ 5. ranking on one window
def test_list_ranks_the_models_measured_on_one_out_of_sample_window_best_first(edge, walks, cli) -> None:
    uri = edge["uri"]
    fold = edge["runs"][0]["folds"][0]
    window = f"{fold['test_start']}..{fold['test_end']}"
    before, exps = all_runs(uri), experiments(uri)
    code, out, err = cli("--tracking-uri", uri, "list", "--sort", "sharpe", "--oos-window", window, "--json")
    assert code == 0, err
    rows = json.loads(out)
    measured = {r["folds"][0]["model_uri"]: r["folds"][0]["metrics"] for r in edge["runs"]}  # the two configs
    assert [r["model_uri"] for r in rows] == sorted(measured, key=lambda u: -measured[u]["sharpe"])
    assert [r["sharpe"] for r in rows] == pytest.approx([measured[r["model_uri"]]["sharpe"] for r in rows], rel=1e-12)
    assert {(r["test_start"], r["test_end"]) for r in rows} == {(fold["test_start"], fold["test_end"])}
    # lower is better for volatility; the table has the metric as a column
    code, out, err = cli("--tracking-uri", uri, "list", "--sort", "annualized_volatility", "--oos-window", window, "--json")
    assert [r["model_uri"] for r in json.loads(out)] == sorted(measured, key=lambda u: measured[u]["annualized_volatility"])
    code, out, err = cli("--tracking-uri", uri, "list", "--sort", "sortino", "--oos-window", window)
    assert code == 0 and "sortino" in out.splitlines()[1] and len(out.strip().splitlines()) == 4, out
    assert all_runs(uri) == before and experiments(uri) == exps  # a read
    # across windows it refuses to rank; the random walks' data seeds are three price series on one window
    code, out, err = cli("--tracking-uri", uri, "list", "--sort", "sharpe")
    assert code == 2 and "ranks markets, not models" in err
    code, out, err = cli("--tracking-uri", walks["uri"], "list", "--oos-window", f"2016-01-01..{END}", "--json")
    rows = json.loads(out)
    assert len(rows) == TRIALS * len(DATA_SEEDS) and len({r["prices"] for r in rows}) == len(DATA_SEEDS)
