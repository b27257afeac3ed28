"""Ctrl-C in every phase of a request: always exit 130 with one line, never a traceback; the
run (if one exists yet) ends KILLED with its lease released; nothing is left RUNNING; and the
next request trains at once (no waiting for staleness) and is served normally.

The SIGINT is real (sent to the process by itself, as a terminal's Ctrl-C would be) and is
armed when the phase begins (tests/reliability/sigint_cli.py), so each phase is hit on purpose
rather than by the luck of timing on a loaded machine."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from .rel_support import PYTHON, WINDOW_CLI, child_env, cli, client

HERE = Path(__file__).resolve().parent
# long enough that "training" is interrupted in the middle, short enough for a test
TRAIN = ["--data-source", "synthetic", "--timesteps", "30000", "--hp", "n_envs=4", "--hp", "n_steps=64",
         "--hp", "batch_size=256", "--hp", "n_epochs=1"]


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["import", "data", "claim", "training", "logging", "publish"])
def test_ctrl_c_in_every_phase_exits_130_and_leaves_nothing_running(sqlite_uri: str, tmp_path: Path, phase: str) -> None:
    symbol = "INT" + phase[:3].upper()
    mark = tmp_path / "fired"
    t0 = time.monotonic()
    proc = subprocess.run(
        [PYTHON, str(HERE / "sigint_cli.py"), phase, "train", "--symbols", symbol, *WINDOW_CLI, *TRAIN],
        capture_output=True, text=True, env=child_env({"SIGINT_MARK": str(mark)}), timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert mark.read_text() == phase, "the phase never began: this test would prove nothing"
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.strip().splitlines()[-1] == "interrupted", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""

    c = client(sqlite_uri)
    exp = c.get_experiment_by_name("trainkit")
    runs = c.search_runs([exp.experiment_id], run_view_type=3) if exp else []
    assert not [r for r in runs if r.info.status == "RUNNING"], [(r.info.run_id, r.info.status) for r in runs]
    assert not [r for r in runs if "trainkit.claim_hash" in r.data.tags]  # every lease released
    assert not [r for r in runs if "config_hash" in r.data.tags]  # nothing half-published is servable
    if phase in ("import", "data"):
        assert runs == []  # no run before data and imports are done
    else:
        assert [r.info.status for r in runs] == ["KILLED"]
        assert "Ctrl-C" in runs[0].data.tags.get("trainkit.failure", "") or "interrupted" in runs[0].data.tags.get(
            "trainkit.failure", "")

    # released at once: the next request trains without waiting for the lease to go stale
    again = cli("-v", "train", "--symbols", symbol, *WINDOW_CLI, *TRAIN, "--json", timeout=300)
    assert again.rc == 0, str(again)
    assert "waiting for it" not in again.err
    served = cli("train", "--symbols", symbol, *WINDOW_CLI, *TRAIN, "--json", timeout=300)
    assert served.rc == 0 and '"status": "cached"' in served.out, str(served)
    assert time.monotonic() - t0 < 280
