"""Isolation: ``list`` and ``clear`` see only trainkit's runs. Foreign runs in the very same
experiment — even ones tagged ``config_hash`` or dressed up as a claim — are never listed and
survive ``clear --yes`` with no filter. Values that reach MLflow filter strings are refused
(or quoted) so no input can widen a query, through the CLI (test_bad_input.py) and the Python API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .rel_support import cli, client, describe, train_inprocess

INJECTIONS = ["A' OR 1=1", "X' OR tags.config_hash LIKE '%", "' or ''='", "ISO\\'", "ISO' --"]


def _foreign_runs(uri: str, trainkit_hash: str) -> dict[str, str]:
    """Runs another tool could have put in the trainkit experiment, with trainkit-looking tags."""
    c = client(uri)
    exp_id = c.get_experiment_by_name("trainkit").experiment_id
    made = {}
    for name, tags, status in [
        ("foreign-x", {"config_hash": "x"}, "FINISHED"),
        ("foreign-hash", {"config_hash": trainkit_hash, "trainkit.symbol": "ISO"}, "FINISHED"),
        ("foreign-claim", {"trainkit.claim_hash": trainkit_hash, "trainkit.heartbeat": f"{time.time() + 3600:.3f}",
                           "trainkit.symbol": "ISO"}, None),
    ]:
        run = c.create_run(exp_id, run_name=name, tags=tags)
        if status:
            c.set_terminated(run.info.run_id, status)
        made[run.info.run_id] = status or "RUNNING"
    return made


@pytest.mark.slow
def test_list_and_clear_see_only_trainkit_runs(sqlite_uri: str, tmp_path: Path) -> None:
    from trainkit.manager import TrainingManager

    model = train_inprocess(sqlite_uri, "ISO")
    foreign = _foreign_runs(sqlite_uri, model.config.config_hash)
    env = {"MLFLOW_TRACKING_URI": sqlite_uri}

    res = cli("list", "--json", env=env, cwd=tmp_path)
    assert res.rc == 0, str(res)
    assert [r["run_id"] for r in json.loads(res.out)] == [model.run_id], res.out

    res = cli("clear", "--yes", "--json", env=env, cwd=tmp_path)
    assert res.rc == 0, str(res)
    doc = json.loads(res.out)
    assert [r["run_id"] for r in doc["removed"]] == [model.run_id], doc
    assert doc["deleted"] is True

    c = client(sqlite_uri)
    for run_id, status in foreign.items():
        run = c.get_run(run_id)
        assert run.info.lifecycle_stage == "active" and run.info.status == status, describe([run])
    assert c.get_run(model.run_id).info.lifecycle_stage == "deleted"
    exp_id = c.get_experiment_by_name("trainkit").experiment_id
    assert model.record.model_id not in [m.model_id for m in c.search_logged_models(experiment_ids=[exp_id])], \
        "clear left the run's LoggedModel loadable (docs/ARCHITECTURE.md, 'MLflow pitfalls')"
    assert TrainingManager(sqlite_uri).list_cached_models() == []


def test_filter_values_cannot_widen_a_query(sqlite_uri: str) -> None:
    """The Python API refuses injection attempts in every value that reaches a filter string,
    and nothing is deleted by trying."""
    from trainkit.errors import ConfigError
    from trainkit.manager import TrainingManager

    manager = TrainingManager(sqlite_uri)
    exp_id = manager.store.experiment_id
    c = client(sqlite_uri)
    victim = c.create_run(exp_id, run_name="foreign", tags={"config_hash": "0" * 64, "trainkit.symbol": "A"})
    c.set_terminated(victim.info.run_id, "FINISHED")
    for bad in INJECTIONS:
        with pytest.raises(ConfigError):
            manager.list_cached_models(symbol=bad)
        with pytest.raises(ConfigError):
            manager.clear_cache(symbol=bad)
        with pytest.raises(ConfigError):
            manager.clear_cache(config_hash=bad)
        with pytest.raises(ConfigError):
            manager.store.find(bad)
    assert c.get_run(victim.info.run_id).info.lifecycle_stage == "active"
    assert manager.clear_cache() == []  # a foreign run with a 64-hex config_hash is not trainkit's
    assert c.get_run(victim.info.run_id).info.lifecycle_stage == "active"
