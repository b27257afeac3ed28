"""Read paths write nothing (docs/ARCHITECTURE.md, *Read paths write nothing*): on a tracking
URI whose sqlite file does not exist, `list`, `explain`, `train --dry-run`, `walkforward
--dry-run`, `clear`, `register`, `signal` and `backtest` answer ("no store at …", an empty list, exit 1 where a model was named) and leave
the directory exactly as it was — no database, no lock file, no `mlruns`, no experiment. And a
cache hit of `train` answers without importing torch or stable-baselines3: it verifies the
model's sha256 and prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support import FAST_CLI, PYTHON, run_cli

MODEL = "runs:/0123456789abcdef0123456789abcdef/model"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def missing(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory with no store, and the environment pointing at one there."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TRAINKIT_CACHE_DIR": str(tmp_path / "cache")}
    return tmp_path, env


@pytest.mark.parametrize("args, code, needle", [
    (["list"], 0, "no cached models (no store at sqlite:///"),
    (["list", "--json"], 0, "[]"),
    (["explain", "--symbols", "NEW", "--data-source", "synthetic"], 0, "no store at sqlite:///"),
    (["train", "--symbols", "NEW", "--data-source", "synthetic", "--dry-run", "--json"], 0, '"cached": false'),
    (["walkforward", "--symbols", "NEW", "--start", "2014-01-01", "--end", "2018-12-31", "--data-source", "synthetic",
      "--dry-run", "--json"], 0, '"would_train": '),
    (["clear", "--symbol", "NEW", "--yes"], 0, "nothing to remove"),
    (["register", "--model-uri", MODEL], 1, "no store at sqlite:///"),
    (["signal", "--model-uri", MODEL], 1, "no store at sqlite:///"),
    (["backtest", "--model-uri", MODEL, "--start", "2023-01-01", "--end", "2023-06-30"], 1, "no store at sqlite:///"),
])
def test_a_read_on_a_missing_store_answers_and_creates_nothing(missing, args: list[str], code: int, needle: str) -> None:
    root, env = missing
    res = run_cli(*args, env=env, cwd=root)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert needle in res.stdout + res.stderr
    if code:
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # one line, no traceback
    assert _files(root) == [], f"{args[0]} wrote {_files(root)}"


def test_list_json_on_a_missing_store_is_an_empty_list(missing) -> None:
    root, env = missing
    assert json.loads(run_cli("list", "--json", env=env, cwd=root).stdout) == []


_HIT = """
import sys
from trainkit.cli import run
code = run(sys.argv[1:])
heavy = sorted(m for m in ("torch", "stable_baselines3", "gymnasium") if m in sys.modules)
print("HEAVY", ",".join(heavy), "EXIT", code)
"""


@pytest.mark.slow
def test_a_cache_hit_verifies_and_answers_without_torch(sqlite_uri: str, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": sqlite_uri, "TRAINKIT_CACHE_DIR": str(tmp_path / "cache")}
    args = ["train", "--symbols", "HITS", "--data-source", "synthetic", *FAST_CLI]
    first = run_cli(*args, env=env, cwd=tmp_path)
    assert first.returncode == 0 and " trained " in first.stdout, first.stderr
    import os

    for extra in ([], ["--dry-run"]):
        res = subprocess.run([PYTHON, "-c", _HIT, *args, *extra], capture_output=True, text=True, cwd=tmp_path,
                             env={**os.environ, **env}, timeout=300)
        assert "HEAVY  EXIT 0" in res.stdout, (res.stdout, res.stderr)
        assert " cached " in res.stdout or "cached" in res.stdout
    for cmd in (["list"], ["explain", *args[1:]]):
        res = subprocess.run([PYTHON, "-c", _HIT, *cmd], capture_output=True, text=True, cwd=tmp_path,
                             env={**os.environ, **env}, timeout=300)
        assert "HEAVY  EXIT 0" in res.stdout, (cmd, res.stdout, res.stderr)


@pytest.mark.slow
def test_a_cache_hit_whose_bytes_changed_is_refused_without_loading(sqlite_uri: str, tmp_path: Path) -> None:
    """Verification is real on the fast path: a hit whose policy.zip no longer matches its
    recorded sha256 is tagged broken and retrained, never reported as cached."""
    from reliability.rel_support import policy_zip_path

    from trainkit import TrainingManager

    env = {"MLFLOW_TRACKING_URI": sqlite_uri, "TRAINKIT_CACHE_DIR": str(tmp_path / "cache")}
    args = ["train", "--symbols", "HITB", "--data-source", "synthetic", *FAST_CLI]
    assert run_cli(*args, env=env, cwd=tmp_path).returncode == 0
    manager = TrainingManager(sqlite_uri)
    [model] = manager.list_cached_models("HITB")
    zip_path = policy_zip_path(sqlite_uri, manager.store.client.get_run(model.run_id))
    zip_path.write_bytes(zip_path.read_bytes() + b"tampered")
    res = run_cli(*args, env=env, cwd=tmp_path)
    assert res.returncode == 0 and " trained " in res.stdout, (res.stdout, res.stderr)
    assert "unusable" in res.stderr
