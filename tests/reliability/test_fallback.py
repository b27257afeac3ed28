"""Fallback honesty: a yfinance request Yahoo does not answer trains on synthetic data and says
so everywhere — run tags, the console, ``list --json``, and again when the fallback model is
served from the cache; ``--no-fallback`` turns it into an error that creates nothing.

Yahoo is unreachable ON PURPOSE, on any machine: tests/conftest.py points ``TRAINKIT_YF_PROXY``
at a closed port on 127.0.0.1 and the CLI subprocesses inherit it, so the real yfinance call is
refused at once (each test checks that this is why it failed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .rel_support import FAST_CLI, WINDOW_CLI, assert_clean_failure, cli, client, snapshot


@pytest.mark.slow
def test_offline_yfinance_falls_back_and_says_so(sqlite_uri: str, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": sqlite_uri}
    res = cli("train", "--symbols", "FBK", *WINDOW_CLI, *FAST_CLI, env=env, cwd=tmp_path)  # yfinance is the default
    assert res.rc == 0 and "Traceback" not in res.err, str(res)
    [line] = [ln for ln in res.out.splitlines() if ln.strip()]
    assert line.startswith("FBK") and "fell back to synthetic" in line, str(res)
    assert "synthetic" in res.err.lower() and "yfinance" in res.err.lower(), f"no warning on stderr\n{res}"
    run_id = line.split("runs:/", 1)[1].split("/", 1)[0]

    tags = client(sqlite_uri).get_run(run_id).data.tags
    assert tags["trainkit.data_source"] == "yfinance"
    assert tags["trainkit.data_source_effective"] == "synthetic"
    assert "TRAINKIT_YF_PROXY" in tags.get("trainkit.fallback_reason", ""), tags  # refused on purpose
    assert "SYNTHETIC" in tags.get("mlflow.note.content", ""), "the run's description does not warn"

    res = cli("list", "--json", env=env, cwd=tmp_path)
    assert res.rc == 0, str(res)
    [row] = json.loads(res.out)
    assert row["run_id"] == run_id and row["status"] == "fallback" and row["fell_back"] is True, row
    assert row["data_source"] == "yfinance" and row["data_source_effective"] == "synthetic" and row["fallback_reason"]

    # served from the cache, it still says what it is (Yahoo is still down, so no retrain)
    res = cli("train", "--symbols", "FBK", *WINDOW_CLI, *FAST_CLI, "--json", env=env, cwd=tmp_path)
    assert res.rc == 0, str(res)
    [row] = json.loads(res.out)
    assert row["run_id"] == run_id and row["status"] == "cached", row
    assert row["fallback_reason"], f"the cached row hides the fallback: {row}"
    assert "synthetic" in res.err.lower(), f"serving a fallback model without a warning\n{res}"
    print(f"fallback reason: {tags['trainkit.fallback_reason'][:120]}")


def test_no_fallback_is_an_error_and_creates_nothing(sqlite_uri: str, tmp_path: Path) -> None:
    before = snapshot(sqlite_uri) if Path(sqlite_uri.split("sqlite:///", 1)[1]).exists() else {}
    res = cli("train", "--symbols", "FBKN", *WINDOW_CLI, *FAST_CLI, "--no-fallback",
              env={"MLFLOW_TRACKING_URI": sqlite_uri}, cwd=tmp_path)
    assert_clean_failure(res, 1, "yfinance", "fallback", "TRAINKIT_YF_PROXY")
    assert snapshot(sqlite_uri) == before
