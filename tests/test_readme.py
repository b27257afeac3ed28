"""Every command in README.md works as shown.

The fenced ``bash`` blocks run in order as one bash script, and the ``python`` blocks run in
order in one interpreter (a shared namespace, as a reader pasting them would have), both against
a fresh sqlite store in a temp directory. Two substitutions keep this fast and are the only
changes: ``trainkit train`` and ``trainkit walkforward`` get ``--timesteps 256`` and small batches appended (a bash function
shadows the command), and ``timesteps=100000`` in Python becomes the same small settings. A
block that cannot run here (a server, conda, PostgreSQL, ``make``) must be preceded by
``<!-- not run here: <why>; covered by <tests/file.py::test_name or .ci/…> -->`` and the named
tests must exist. ``console``/``text`` blocks are output, not commands."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support import FAST, FAST_CLI, PYTHON, REPO
from test_cli import cli, store  # noqa: F401  (fixtures)

README = REPO / "README.md"
_FENCE = re.compile(r"(?P<before>(?:^<!--(?P<note>[^\n]*?)-->\n)?)^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)

#: bash: `trainkit train`, `walkforward` and `tune` get small timesteps (and small PPO batches) appended
BASH_PREAMBLE = f"""set -euo pipefail
trainkit() {{
  local is_train=0 algo=ppo prev=""
  for a in "$@"; do [[ $a == train || $a == walkforward || $a == tune ]] && is_train=1; [[ $prev == --algo ]] && algo=$a; prev=$a; done
  if (( is_train )); then
    if [[ $algo == ppo ]]; then command trainkit "$@" {" ".join(FAST_CLI)}
    else command trainkit "$@" --timesteps {FAST["timesteps"]} --hp n_envs=2; fi
  else command trainkit "$@"; fi
}}
"""
PY_TIMESTEPS = "timesteps=100000"
PY_FAST = ", ".join(f"{k}={v}" for k, v in FAST.items())


def blocks(lang: str | None = None) -> list[dict]:
    out = []
    for m in _FENCE.finditer(README.read_text()):
        if lang is None or m.group("lang") == lang:
            out.append({"lang": m.group("lang"), "body": m.group("body"), "note": (m.group("note") or "").strip(),
                        "line": README.read_text()[: m.start("body")].count("\n")})
    return out


def runnable(lang: str) -> list[str]:
    return [b["body"] for b in blocks(lang) if not b["note"].startswith("not run here")]


def test_every_block_is_run_or_names_the_test_that_covers_it():
    langs = {b["lang"] for b in blocks()}
    assert langs <= {"bash", "python", "console", "text"}, f"unexpected fence languages {langs}"
    skipped = [b for b in blocks() if b["note"].startswith("not run here")]
    assert skipped, "the README has server/conda blocks: they must be marked"
    for b in skipped:
        assert b["lang"] in ("bash", "python")
        refs = re.findall(r"(tests/[\w/]+\.py)::(\w+)", b["note"])
        ci = re.findall(r"(\.ci/\w+)", b["note"])
        assert refs or ci, f"README line {b['line']}: a skipped block must name the test that covers it"
        for path, name in refs:
            assert re.search(rf"^(async )?def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name} does not exist"
        for path in ci:
            assert (REPO / path).is_file()
    # the snippets of issue 5 are in the README verbatim, and run
    text = README.read_text()
    for snippet in (
        'from trainkit import TrainingManager\ntrainer = TrainingManager()\nmodel, model_uri = trainer.get_model(symbol="AAPL", '
        'train_start="2020-01-01", train_end="2022-12-31",\n                                     feature_count=21, '
        'data_source="yfinance", timesteps=100000)\ncached_models = trainer.list_cached_models(symbol="AAPL")\n',
        "trainkit train --symbols AAPL MSFT --train-start 2020-01-01 --train-end 2022-12-31\ntrainkit list\n"
        "trainkit list --symbol AAPL\ntrainkit clear --symbol AAPL --older-than 2022-01-01\n",
    ):
        assert any(snippet in b for b in runnable("bash") + runnable("python")), snippet[:60]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_bash_blocks(store, tmp_path):  # noqa: F811
    script = BASH_PREAMBLE + "\n".join(f"echo '### block {i}'\n{b}" for i, b in enumerate(runnable("bash")))
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=_env(),
                       timeout=600)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    out = p.stdout
    # what the README says these print
    assert re.search(r"^AAPL\s+(trained|fell back to synthetic|cached)\s+runs:/[0-9a-f]{32}/model\s+\d+\.\ds$", out, re.M)
    assert re.search(r"^MSFT\s+(trained|fell back to synthetic|cached)\s+runs:/", out, re.M)
    assert "nothing to remove" in out  # nothing is older than 2022-01-01
    assert re.search(r"^AAPL\s+[0-9a-f]{64}\s+not cached \(would train\)", out, re.M)  # --dry-run
    assert re.search(r'^\s+"config_hash": "[0-9a-f]{64}",$', out, re.M)  # train --json
    assert re.search(r"^deleted [12] model\(s\)", out, re.M)  # clear --symbol MSFT --yes (fallback + synthetic)
    assert re.search(r"^registered runs:/[0-9a-f]{32}/model as trainkit-AAPL version 1: .*models:/trainkit-AAPL@champion", out, re.M)
    assert re.search(r"^backtest of models:/trainkit-AAPL@champion \(AAPL\) over 2023-01-01..2023-12-31", out, re.M)
    assert re.search(r"^sharpe\s+-?\d+\.\d{4}$", out, re.M)
    assert re.search(r"^AAPL: 8 folds × 2 seeds, sliding 3y train / 6m test", out, re.M)  # walkforward
    assert re.search(r"^stitched\s+2018-01-01..2021-12-31\s+2 seeds", out, re.M)
    assert re.search(r"^AAPL: study AAPL-ppo-2y-1y — 6 finished trials, \d distinct configs", out, re.M)  # tune
    assert re.search(r"^best: trial \d, sharpe -?\d+\.\d{3} — ", out, re.M)


@pytest.mark.slow
def test_python_blocks(store, tmp_path):  # noqa: F811
    code = "\n".join(b.replace(PY_TIMESTEPS, PY_FAST) for b in runnable("python"))
    assert code.count("n_epochs=1") == 4, "the README's Python must pass timesteps=100000 where it trains or hashes"
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env(),
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    # the list loop printed the model, the UI filter found its run, and predict gave 3 actions
    assert re.search(r"^AAPL ppo 2020-01-01 2022-12-31 \w+ [0-9a-f]{8} runs:/[0-9a-f]{32}/model$", p.stdout, re.M)
    assert re.search(r"^[0-9a-f]{64} \['[0-9a-f]{32}'\]$", p.stdout, re.M), p.stdout
    assert re.search(r"^\[[012] [012] [012]\] trainkit-AAPL 1$", p.stdout, re.M), p.stdout
    assert re.search(r"^4 -?\d+\.\d+ 2018-01-0\d [0-9a-f]{32}$", p.stdout, re.M), p.stdout  # walk_forward


def test_make_train_runs_the_documented_command():
    documented = re.search(r"`make train` runs `(trainkit train [^`]+)`", README.read_text()).group(1)
    p = subprocess.run(["make", "-n", "train"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stdout.splitlines() if "trainkit train" in ln]
    assert line.split("/")[-1] == documented  # `.venv/bin/trainkit train …`
    assert any(documented in b for b in runnable("bash")), "the command make train runs is run by test_bash_blocks"


@pytest.mark.slow
@pytest.mark.server
def test_cli_against_a_shared_tracking_server(cli, server_uri):  # noqa: F811
    """The team setup of the README, with the server's sqlite backend standing in for PostgreSQL:
    one client trains, the next is served from the cache; the UI filter finds the run."""
    args = ("--tracking-uri", server_uri, "--experiment", "readme-team")
    first = cli(*args, "train", "--symbols", "AAPL", "--data-source", "synthetic", "--json", *FAST_CLI)
    assert first.code == 0, first.err
    second = cli(*args, "train", "--symbols", "AAPL", "--data-source", "synthetic", "--json", *FAST_CLI)
    assert second.json[0]["status"] == "cached" and second.json[0]["run_id"] == first.json[0]["run_id"]
    from mlflow import MlflowClient

    client = MlflowClient(server_uri)
    exp = client.get_experiment_by_name("readme-team")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.config_hash = '{first.json[0]['config_hash']}'")
    assert [r.info.run_id for r in runs] == [first.json[0]["run_id"]]
    purge = cli(*args, "clear", "--purge", "--yes")
    assert purge.code == 1 and "mlflow gc" in purge.err  # as the README says: the server's admin purges


@pytest.mark.slow
def test_the_make_test_output_is_the_suites() -> None:
    """The README's make-test block comes from a real run (tools/readme_output.py): its counts
    are the suite's as it is now, so a test added without regenerating it fails here."""
    if os.environ.get("TRAINKIT_README_OUTPUT"):
        pytest.skip("make readme-output is running the suite to write this block")
    block = re.search(r"<!-- output: make-test.*?```console\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md has no make-test output block"
    text = block.group(1)
    collected = int(re.search(r"collected (\d+) items", text).group(1))
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|skipped|failed|errors?)", text.splitlines()[-1])}
    assert counts.get("failed", 0) == 0 and sum(counts.values()) == collected, text.splitlines()[-1]
    res = subprocess.run([PYTHON, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    now = int(re.search(r"(\d+) tests? collected", res.stdout).group(1))
    assert collected == now, (f"README.md's make test output says {collected} items; the suite has {now}: "
                              "run `make readme-output`")
