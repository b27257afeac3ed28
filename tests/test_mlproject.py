"""MLproject and conda.yaml: their content is checked against the CLI and the lock, and
`mlflow run . --env-manager local` is run for real (docs/ARCHITECTURE.md, "MLflow pitfalls"): a miss under `--experiment-name
trainkit` trains into the project run; a hit from another experiment trains nothing and tags
the project run with the cached model it was served."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from support import PYTHON, REPO
from test_cli import store  # noqa: F401  (fixture: a fresh sqlite store copied from a migrated template)


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[_norm(name)] = version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_conda_env_pins_the_locked_versions_of_every_runtime_dependency():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml" and "python_env" not in project
    env = yaml.safe_load((REPO / "conda.yaml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    pins = {_norm(name): version for name, version in (p.split("==") for p in pip if "==" in p)}
    lock = _lock()
    for name, version in pins.items():
        assert name in lock, f"{name} is not in requirements.lock"
        assert lock[name].split("+")[0] == version, f"{name}: conda.yaml {version} != lock {lock[name]}"
    assert pins["torch"] == "2.13.0"
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {_norm(re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0]) for d in runtime}
    assert names <= set(pins), f"not pinned in conda.yaml: {names - set(pins)}"


def test_entry_points_match_the_cli():
    from trainkit.cli import train

    project = yaml.safe_load((REPO / "MLproject").read_text())
    main = project["entry_points"]["main"]
    params = main["parameters"]
    assert params["symbol"] == "string"  # required: no default
    assert set(params) == {"symbol", "train_start", "train_end", "feature_count", "data_source", "timesteps",
                           "algo", "seed", "force"}
    cli_defaults = {p.name: p.default for p in train.params}
    for name, spec in params.items():
        if name == "symbol":
            continue
        assert spec["type"] == "string"
        assert spec["default"] == str(cli_defaults[name]).lower() if name == "force" else str(cli_defaults[name]), name
        assert "{" + name + "}" in main["command"]
    assert main["command"].startswith("python -m trainkit train --symbols {symbol}")
    bt = project["entry_points"]["backtest"]
    assert set(bt["parameters"]) == {"model_uri", "start", "end"}
    assert bt["command"].startswith("python -m trainkit backtest")


TRAIN_PARAMS = ("symbol=AAPL", "data_source=synthetic", "timesteps=256", "algo=a2c")


def _mlflow_run(tmp_path: Path, experiment: str, *params: str, entry_point: str = "main") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}"}
    args = [PYTHON, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local",
            "--experiment-name", experiment]
    for p in params:
        args += ["-P", p]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_mlflow_run_uses_the_project_run(store, tmp_path):  # noqa: F811
    from mlflow import MlflowClient

    repo_before = {p.name for p in REPO.iterdir()}
    client = MlflowClient(store)

    # a miss in experiment trainkit: the project run *is* the training run
    p = _mlflow_run(tmp_path, "trainkit", *TRAIN_PARAMS)
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"AAPL\s+trained\s+runs:/([0-9a-f]{32})/model", p.stdout)
    assert m, p.stdout
    model_run = client.get_run(m.group(1))
    assert model_run.info.status == "FINISHED"
    assert model_run.data.tags["mlflow.source.type"] == "PROJECT"
    assert model_run.data.tags["mlflow.project.entryPoint"] == "main"
    assert re.fullmatch(r"[0-9a-f]{64}", model_run.data.tags["config_hash"])
    assert model_run.data.params["algo"] == "a2c" and model_run.data.params["timesteps"] == "256"
    trainkit_exp = client.get_experiment_by_name("trainkit").experiment_id
    assert [r.info.run_id for r in client.search_runs([trainkit_exp])] == [model_run.info.run_id]
    from trainkit import load_model

    from support import assert_same_model, stored_policy

    # the project run's model loads by URI as the very policy stored in it
    assert_same_model(load_model(f"runs:/{model_run.info.run_id}/model"), stored_policy(store, model_run.info.run_id))

    # the same request from another experiment: a hit, recorded in that project run
    p = _mlflow_run(tmp_path, "elsewhere", *TRAIN_PARAMS, "force=false")
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(rf"AAPL\s+cached\s+runs:/{model_run.info.run_id}/model", p.stdout), p.stdout
    other_exp = client.get_experiment_by_name("elsewhere").experiment_id
    (project_run,) = client.search_runs([other_exp])
    tags = project_run.data.tags
    assert project_run.info.status == "FINISHED"
    assert tags["trainkit.cache_hit"] == "true"
    assert tags["trainkit.model_uri"] == f"runs:/{model_run.info.run_id}/model"
    assert tags["trainkit.model_run_id"] == model_run.info.run_id
    assert "config_hash" not in tags  # a run without a model never carries config_hash
    assert len(client.search_runs([trainkit_exp])) == 1  # nothing trained

    # the backtest entry point (its experiment made here: the command runs in the repository)
    client.create_experiment("trainkit-backtests", artifact_location=str(tmp_path / "backtest-artifacts"))
    uri = f"runs:/{model_run.info.run_id}/model"
    p = _mlflow_run(tmp_path, "elsewhere", f"model_uri={uri}", "start=2023-01-01", "end=2023-06-30", entry_point="backtest")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"backtest of {uri} (AAPL) over 2023-01-01..2023-06-30" in p.stdout and "sharpe" in p.stdout
    bt_exp = client.get_experiment_by_name("trainkit-backtests").experiment_id
    (bt,) = client.search_runs([bt_exp])
    assert bt.data.tags["trainkit.model_uri"] == uri and bt.data.tags["trainkit.source_run_id"] == model_run.info.run_id
    (project_bt,) = client.search_runs([other_exp], "tags.`mlflow.project.entryPoint` = 'backtest'")
    assert project_bt.data.tags["trainkit.backtest_run_id"] == bt.info.run_id
    assert "config_hash" not in project_bt.data.tags

    assert {p.name for p in REPO.iterdir()} == repo_before, "mlflow run wrote into the repository"
