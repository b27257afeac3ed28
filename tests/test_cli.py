"""The `trainkit` command line, for real: real MLflow (sqlite in a temp dir), real SB3 at small
timesteps. Most calls run in-process through :func:`trainkit.cli.run` (one import of torch and
MLflow for the whole module); what only a real process shows — `--help` speed and imports, the
console script, stdout purity, Ctrl-C, `--workers` — runs as a subprocess."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import FAST_CLI, HEAVY_MODULES, PYTHON, assert_same_model, free_port, run_cli, same_weights, stored_policy
from trainkit.cli import expand_multi_value

HEX64 = re.compile(r"^[0-9a-f]{64}$")
URI = re.compile(r"runs:/([0-9a-f]{32})/model")


@pytest.fixture
def store(sqlite_uri: str) -> str:
    """conftest's ``sqlite_uri``: an empty store (a copy of the session's migrated template) in
    tmp_path, the working directory. Safe to read while a subprocess writes to it."""
    return sqlite_uri


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from trainkit.cli import run

    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")

    def call(*args: str) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    yield call
    # the CLI points the trainkit logger at the (now closed) captured stderr: undo that
    logger = logging.getLogger("trainkit")
    for h in [h for h in logger.handlers if getattr(h, "_trainkit_cli", False)]:
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--symbols", "A", "B", "C", "--x", "1"], ["--symbols", "A", "--symbols", "B", "--symbols", "C", "--x", "1"]),
        (["--x", "1", "--symbols", "A"], ["--x", "1", "--symbols", "A"]),
        (["--symbols=A", "B"], ["--symbols", "A", "--symbols", "B"]),
        (["--symbols", "^GSPC", "BRK-B", "--json"], ["--symbols", "^GSPC", "--symbols", "BRK-B", "--json"]),
        (["--symbols", "--json"], ["--symbols", "--json"]),  # click reports the missing value
        (["--symbols", "A", "--", "B"], ["--symbols", "A", "--", "B"]),
    ],
)
def test_symbols_after_one_option_are_expanded(args, expected):
    assert expand_multi_value(args, ("--symbols",)) == expected


def test_help_imports_nothing_heavy():
    """docs/ARCHITECTURE.md, "Rooms": ``--help`` imports no torch, MLflow, SB3 or pandas. The cause
    of a quick ``--help`` is checked here; its time is measured by ``make bench``
    (bench/bench_timings.py), not asserted."""
    probe = (
        "import sys, io, contextlib\n"
        "from trainkit.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [run(['--help']), run(['train', '--help']), run(['clear', '--help']), run(['backtest', '--help'])]\n"
        f"heavy = [m for m in {HEAVY_MODULES + ('rich',)!r} if m in sys.modules]\n"
        "print(codes, heavy)\n"
    )
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True).stdout.split("] ")
    assert out[0] == "[0, 0, 0, 0", out
    assert out[1].strip() == "[]", f"--help imported heavy modules: {out[1]}"
    # the whole `python -m trainkit --help` process, as a user runs it: every module it imports
    proc = subprocess.run([PYTHON, "-X", "importtime", "-m", "trainkit", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "trainkit.cli" in imported, "importtime output not understood: " + proc.stderr[-500:]
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY_MODULES)
    assert not heavy, f"`trainkit --help` imported {heavy}"


def test_cli_modules_import_downward_only():
    """docs/ARCHITECTURE.md, "Rooms": the package ``trainkit.cli`` adds every command to the group;
    no module of it imports the package back (no import cycle), and the interpreter internals of
    the fast exit live in one small module."""
    import ast

    import trainkit

    root = Path(trainkit.__file__).parent
    for path in (root / "cli").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert "trainkit.cli" not in names, f"{path.name} imports the package trainkit.cli"
    internals = ("threading._shutdown", "atexit._run_exitfuncs", "os._exit")
    users = sorted(p.name for p in (root / "cli").glob("*.py") if any(i in p.read_text() for i in internals))
    assert users == ["exit.py"], users
    assert len((root / "cli" / "exit.py").read_text().splitlines()) <= 80


def test_executor_choices_are_the_registry():
    from trainkit.cli import train, walkforward
    from trainkit.executors import executor_names

    for command in (train, walkforward):
        option = next(p for p in command.params if p.name == "executor")
        assert tuple(option.type.choices) == executor_names()


def test_console_script_and_module_are_the_same_cli():
    script = Path(PYTHON).parent / "trainkit"
    a = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    b = run_cli("--version")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout and "trainkit" in a.stdout


# ----------------------------------------------------------------------------- exit code 2
@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--symbols", "AAPL", "BAD!"], "invalid symbol"),
        (["train", "--symbols", "AA PL"], "outside quotes"),  # one quoted token is one (bad) symbol
        (["train", "--symbols", ""], "symbol is empty"),
        (["train", "--symbols", "AAPL", "--hp", "foo=1"], "unknown hyperparameter"),
        (["train", "--symbols", "AAPL", "--hp", "learning_rate"], "KEY=VALUE"),
        (["train", "--symbols", "AAPL", "--hp", "n_steps=abc"], "n_steps"),
        (["train", "--symbols", "AAPL", "--train-start", "2022-01-01", "--train-end", "2021-01-01"], "before"),
        (["train", "--symbols", "AAPL", "--train-start", "2020-13-01"], "not a valid date"),
        (["train", "--symbols", "AAPL", "--data-source", "bloomberg"], "unknown data source"),
        (["train", "--symbols", "AAPL", "--data-source", "csv:/nonexistent/prices.csv"], "CSV file not found"),
        (["train", "--symbols", "AAPL", "--feature-count", "99"], "feature-count"),
        (["train", "--symbols", "AAPL", "--workers", "0"], "workers"),
        (["train", "--symbols", "AAPL", "--algo", "sac"], "algo"),
        (["train", "--symbols", "AAPL", "--force=maybe"], "force"),
        (["train", "--symbols"], "requires an argument"),
        (["train", "--train-start", "2020-01-01"], "--symbols"),
        (["clear", "--older-than", "3x"], "neither a date nor a duration"),
        (["clear", "--config-hash", "abc"], "64-hex"),
        (["list", "--symbol", "A..B"], "invalid symbol"),
        (["backtest", "--model-uri", "model.zip", "--start", "2023-01-01", "--end", "2023-06-30"], "not a model URI"),
        (["backtest", "--model-uri", "runs:/0123456789abcdef0123456789abcdef/model", "--start", "2023-06-30", "--end", "2023-01-01"], "before"),
            (["backtest", "--model-uri", "runs:/abc/model", "--start", "2023-01-01", "--end", "2023-06-30"], "32 hex"),
            (["register", "--model-uri", "runs:/abc/model"], "32 hex"),
            (["register", "--model-uri", "models:/m-0123456789abcdef0123456789abcdef", "--name", "bad name"], "invalid registered model name"),
            (["register", "--model-uri", "models:/m-0123456789abcdef0123456789abcdef", "--alias", "latest"], "invalid alias"),
        (["register", "--model-uri", "s3://bucket/model"], "not a model URI"),
        (["frobnicate"], "No such command"),
        (["train", "--symbols", ","], "give at least one symbol"),
        (["train", "--symbols", "AAPL", "--executor", "dask"], "'dask' is not one of 'local', 'ray'"),
        (["signal", "--model-uri", "runs:/0123456789abcdef0123456789abcdef/model", "--date", "2020-13-01"],
         "--date '2020-13-01' is not a valid date"),
        (["walkforward", "--symbols", "AAPL", "--start", "2020-01-01", "--seeds", "0", "x"], "'x' is not a seed"),
    ],
)
def test_invalid_input_exits_2_with_one_line_and_no_io(cli, tmp_path, args, needle):
    db = tmp_path / "untouched.db"
    res = cli("--tracking-uri", f"sqlite:///{db}", *args)
    assert res.code == 2, res
    assert needle.lower() in one_error_line(res.err).lower()
    assert res.out == ""
    assert not db.exists(), "validation must happen before any I/O"


# ----------------------------------------------------------------------------- exit code 1
def test_runtime_failure_exits_1_one_line_and_traceback_only_with_verbose(cli, store):
    res = cli("train", "--symbols", "AAPL", "--no-fallback", *FAST_CLI)
    assert res.code == 1
    line = one_error_line("\n".join(ln for ln in res.err.splitlines() if ln.startswith("error")))
    assert line.startswith("error: AAPL:") and "yfinance" in line
    assert "Traceback" not in res.err and res.out == ""

    message = line.removeprefix("error: AAPL: ")

    res = cli("-v", "train", "--symbols", "AAPL", "--no-fallback", "--json", *FAST_CLI)
    assert res.code == 1
    assert "Traceback" in res.err
    rows = res.json  # --json still prints its one document: the failed row, with the same message
    assert rows == [{"symbol": "AAPL", "status": "error", "error": message, "exit_code": 1}]
    assert f"error: AAPL: {message}" in res.err.splitlines()  # and stderr still has its one line


def test_unreachable_server_exits_1_naming_the_uri(cli, monkeypatch):
    """Reported by trainkit's ``/health`` check, before any MLflow request (whose retries would
    take minutes), with MLflow's retries bounded for the calls after it (docs/ARCHITECTURE.md,
    "MLflow pitfalls"). How fast that is, ``make bench`` measures."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "")  # restored after the test ...
        monkeypatch.delenv(name)  # ... and unset during it, as for a user who never set them
    uri = f"http://127.0.0.1:{free_port()}"
    res = cli("--tracking-uri", uri, "list")
    assert res.code == 1
    line = one_error_line(res.err)
    assert line.startswith(f"error: cannot reach the MLflow tracking server at {uri} ("), line  # the health check's words
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("2", "10")


def test_unknown_model_is_exit_1(cli, store):
    res = cli("register", "--model-uri", "runs:/0123456789abcdef0123456789abcdef/model")
    assert res.code == 1, res
    one_error_line(res.err)


# ----------------------------------------------------------------------------- train
def test_train_one_line_per_symbol_then_cached(cli, store):
    res = cli("train", "--symbols", "aapl", "MSFT", "--data-source", "synthetic", *FAST_CLI)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert len(lines) == 2
    runs = {}
    for line, sym in zip(lines, ("AAPL", "MSFT")):
        m = re.fullmatch(rf"{sym}\s+trained\s+(runs:/([0-9a-f]{{32}})/model)\s+\d+\.\ds", line)
        assert m, line
        runs[sym] = m.group(2)
    assert runs["AAPL"] != runs["MSFT"]

    # the same request again: served from the cache, as JSON for scripts
    res = cli("train", "--symbols", "AAPL", "MSFT", "--data-source", "synthetic", "--json", *FAST_CLI)
    assert res.code == 0, res.err
    rows = res.json
    assert [r["symbol"] for r in rows] == ["AAPL", "MSFT"]
    for r in rows:
        assert r["status"] == "cached"
        assert r["run_id"] == runs[r["symbol"]]
        assert r["model_uri"] == f"runs:/{r['run_id']}/model"
        assert HEX64.match(r["config_hash"])
        assert isinstance(r["seconds"], float)

    # --dry-run: each config's hash and whether it is cached; trains nothing
    res = cli("train", "--symbols", "MSFT", "NVDA", "--data-source", "synthetic", "--dry-run", *FAST_CLI)
    assert res.code == 0, res.err
    msft, nvda = res.out.splitlines()
    assert msft.split()[:3] == ["MSFT", rows[1]["config_hash"], "cached"] and runs["MSFT"] in msft
    assert nvda.split()[0] == "NVDA" and "not cached" in nvda
    dry = cli("train", "--symbols", "NVDA", "--data-source", "synthetic", "--dry-run", "--json", *FAST_CLI).json
    assert dry[0]["cached"] is False and dry[0]["config"]["symbol"] == "NVDA"
    assert cli("list", "--symbol", "NVDA", "--json").json == []

    # --force retrains (a new run); --force=false (MLproject's spelling) does not
    forced = cli("train", "--symbols", "AAPL", "--data-source", "synthetic", "--force", "--json", *FAST_CLI).json[0]
    assert forced["status"] == "trained" and forced["run_id"] != runs["AAPL"]
    assert forced["config_hash"] == rows[0]["config_hash"]
    again = cli("train", "--symbols", "AAPL", "--data-source", "synthetic", "--force=false", "--json", *FAST_CLI).json[0]
    assert again["status"] == "cached"


def test_hyperparameters_and_options_change_the_hash_defaults_do_not(cli, store):
    def hash_of(*extra: str) -> str:
        res = cli("train", "--symbols", "AAPL", "--data-source", "synthetic", "--dry-run", "--json", *extra)
        assert res.code == 0, res.err
        return res.json[0]["config_hash"]

    base = hash_of()
    assert hash_of("--hp", "learning_rate=0.001", "--hp", "net_arch=64,64", "--cost-bps", "5", "--allow-short") == base
    changed = {hash_of("--hp", "learning_rate=3e-4"), hash_of("--hp", "net_arch=32,32"), hash_of("--no-short"),
               hash_of("--seed", "1"), hash_of("--timesteps", "5000"), hash_of("--feature-count", "8"),
               hash_of("--algo", "a2c"), hash_of("--episode-length", "100"), hash_of("--data-seed", "7")}
    assert base not in changed and len(changed) == 9
    assert hash_of("--no-fallback") == base  # a request option, not part of the model


def test_fallback_is_reported_as_such(cli, store):
    res = cli("train", "--symbols", "AAPL", *FAST_CLI)  # yfinance is unreachable here
    assert res.code == 0, res.err
    assert re.fullmatch(r"AAPL\s+fell back to synthetic\s+runs:/[0-9a-f]{32}/model\s+\d+\.\ds", res.out.strip())
    assert "warning:" in res.err and "synthetic" in res.err
    row = cli("train", "--symbols", "AAPL", "--json", *FAST_CLI).json[0]
    assert row["status"] == "cached" and row["fallback_reason"]
    listed = cli("list", "--json").json
    assert listed[0]["data_source"] == "yfinance" and listed[0]["data_source_effective"] == "synthetic"
    assert listed[0]["status"] == "fallback" and listed[0]["fell_back"] is True
    assert "FALLBACK" in cli("list").out


# ----------------------------------------------------------------------------- list / register / clear
LIST_KEYS = {"run_id", "model_uri", "config_hash", "symbol", "train_start", "train_end", "timesteps", "algo",
             "feature_count", "data_source", "data_source_effective", "status", "created"}


def test_list_register_clear(cli, store):
    assert cli("list").out.startswith("no cached models")
    assert cli("list", "--json").json == []
    rows = cli("train", "--symbols", "AAPL", "MSFT", "--data-source", "synthetic", "--json", *FAST_CLI).json
    by_sym = {r["symbol"]: r for r in rows}

    listed = cli("list", "--json").json
    assert {m["symbol"] for m in listed} == {"AAPL", "MSFT"}
    for m in listed:
        assert LIST_KEYS <= set(m)
        assert m["run_id"] == by_sym[m["symbol"]]["run_id"] and m["config_hash"] == by_sym[m["symbol"]]["config_hash"]
        assert m["timesteps"] == 256 and m["feature_count"] == 21 and m["algo"] == "ppo"
        assert (m["train_start"], m["train_end"]) == ("2020-01-01", "2022-12-31")
        created = _dt.datetime.fromisoformat(m["created"])
        assert created.tzinfo is not None and abs(_dt.datetime.now(_dt.timezone.utc) - created).total_seconds() < 600
    only = cli("list", "--symbol", "aapl", "--json").json
    assert [m["symbol"] for m in only] == ["AAPL"]

    table = cli("list").out
    for r in rows:  # full run id, 8-char hash, window, source on one line per model
        line = next(ln for ln in table.splitlines() if r["run_id"] in ln)
        assert r["symbol"] in line and r["config_hash"][:8] in line and "2020-01-01..2022-12-31" in line
        assert "synthetic" in line and "256" in line

    reg = cli("register", "--model-uri", by_sym["AAPL"]["model_uri"], "--alias", "champion")
    assert reg.code == 0, reg.err
    assert "trainkit-AAPL version 1" in reg.out and "models:/trainkit-AAPL@champion" in reg.out
    from trainkit import load_model

    aapl, msft = (stored_policy(store, by_sym[s]["run_id"]) for s in ("AAPL", "MSFT"))
    assert not same_weights(aapl, msft)  # so the comparison below can tell them apart
    assert_same_model(load_model("models:/trainkit-AAPL@champion"), aapl, what="models:/trainkit-AAPL@champion")

    # no terminal and no --yes: show the plan, refuse (exit 2), delete nothing
    res = cli("clear")
    assert res.code == 2 and "--yes" in one_error_line(res.err)
    assert by_sym["MSFT"]["run_id"] in res.out and "keeping 1 registered" in res.out
    assert "pass --include-registered" in res.out
    assert len(cli("list", "--json").json) == 2

    res = cli("clear", "--dry-run", "--json")
    plan = res.json
    assert res.code == 0 and plan["deleted"] is False
    assert [m["run_id"] for m in plan["removed"]] == [by_sym["MSFT"]["run_id"]]
    assert [m["run_id"] for m in plan["kept"]] == [by_sym["AAPL"]["run_id"]] and "registered" in plan["kept"][0]["reason"]

    res = cli("clear", "--older-than", "2000-01-01", "--yes")  # nothing that old
    assert res.code == 0 and "nothing to remove" in res.out
    res = cli("clear", "--yes")
    assert res.code == 0 and "deleted 1 model(s)" in res.out
    assert [m["symbol"] for m in cli("list", "--json").json] == ["AAPL"]
    # a deleted model is gone from the cache: the same request trains again
    row = cli("train", "--symbols", "MSFT", "--data-source", "synthetic", "--register", "--json", *FAST_CLI).json[0]
    assert row["status"] == "trained" and row["run_id"] != by_sym["MSFT"]["run_id"]
    assert row["registered"] == "trainkit-MSFT/1"  # train --register

    res = cli("clear", "--config-hash", by_sym["AAPL"]["config_hash"], "--include-registered", "--purge", "--yes", "--json")
    assert res.code == 0, res.err
    assert res.json["deleted"] is True and [m["symbol"] for m in res.json["removed"]] == ["AAPL"]
    (msft,) = cli("list", "--json").json
    assert msft["symbol"] == "MSFT" and msft["registered"] == ["trainkit-MSFT/1"]


def test_clear_asks_on_a_terminal(cli, store):
    import pty

    run_id = cli("train", "--symbols", "AAPL", "--data-source", "synthetic", "--json", *FAST_CLI).json[0]["run_id"]
    master, slave = pty.openpty()  # stdin is a terminal: clear shows the plan and asks
    proc = subprocess.Popen([PYTHON, "-m", "trainkit", "clear", "--symbol", "AAPL"], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        os.write(master, b"y\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert "Delete 1 model(s)? [y/N]" in err
    assert run_id in out and "deleted 1 model(s)" in out
    assert cli("list", "--json").json == []


# ----------------------------------------------------------------------------- real processes
def test_workers_in_a_real_process_with_json_on_stdout_only(cli, store):
    """Two symbols on ``--workers`` train at the same time, each in its own worker process:
    their training runs (read back with MlflowClient) overlap in time. Enough timesteps that
    training, not the workers' start-up, is most of each run."""
    steps = ["--timesteps", "24000", *FAST_CLI[2:]]
    # -v: info logs (and MLflow's) go to stderr; stdout must still be exactly one JSON document
    p = run_cli("-v", "train", "--symbols", "AAPL", "MSFT", "--data-source", "synthetic", "--workers", "4",
                "--json", *steps)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)  # fails on anything besides the one document
    assert [r["symbol"] for r in rows] == ["AAPL", "MSFT"] and {r["status"] for r in rows} == {"trained"}
    assert "in 2 worker processes" in p.stderr  # never more workers than symbols
    assert "info:" in p.stderr

    from mlflow import MlflowClient

    client = MlflowClient(store)
    (a_start, a_end), (m_start, m_end) = [
        (run.info.start_time, run.info.end_time) for run in (client.get_run(r["run_id"]) for r in rows)
    ]
    overlap = min(a_end, m_end) - max(a_start, m_start)
    assert overlap > 0, (f"the two symbols trained one after the other: AAPL {a_start}..{a_end}, "
                         f"MSFT {m_start}..{m_end} (ms)")
    # the workers trained exactly the configs the sequential path asks for: now cached
    cached = cli("train", "--symbols", "AAPL", "MSFT", "--data-source", "synthetic", "--json", *steps).json
    assert [(r["status"], r["run_id"]) for r in cached] == [("cached", r["run_id"]) for r in rows]


def test_ctrl_c_exits_130_and_marks_the_run_killed(store):
    proc = subprocess.Popen(
        [PYTHON, "-m", "trainkit", "train", "--symbols", "AAPL", "--data-source", "synthetic",
         "--timesteps", "50000000", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _running(store):
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err and out == ""
    from mlflow import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name("trainkit")
    statuses = [r.info.status for r in client.search_runs([exp.experiment_id])]
    assert statuses == ["KILLED"]


def test_ctrl_c_with_workers_kills_every_run_and_leaves_no_process(store):
    """A terminal's Ctrl-C reaches the whole process group: the command, its fork server and
    the workers forked from it. Exit 130; both trainings end KILLED; no process of the
    command's group outlives it (the fork server goes with its parent)."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "trainkit", "train", "--symbols", "AAPL", "MSFT", "--data-source", "synthetic", "--workers", "2",
         "--timesteps", "50000000", "--hp", "n_envs=2", "--hp", "n_steps=64", "--hp", "batch_size=64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _running(store) < 2:
            time.sleep(0.5)
        assert _running(store) == 2, "both workers never started training: this test would prove nothing"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        group_left = _wait_group_gone(proc.pid, 15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err and out == ""
    assert group_left == [], f"processes of the command outlived it: {group_left}"
    from mlflow import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name("trainkit")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]
    assert not [r for r in runs if "trainkit.claim_hash" in r.data.tags]  # leases released


def _wait_group_gone(pgid: int, timeout: float) -> list[int]:
    """The pids still in process group ``pgid`` after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == pgid and fields[0] != "Z":
                    left.append(int(entry))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _running(uri: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name("trainkit")
    except Exception:
        return 0
    return len(client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")) if exp else 0
