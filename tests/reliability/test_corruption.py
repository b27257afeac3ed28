"""Corruption: a cached model whose policy.zip was altered or deleted is caught by its sha256
*before* anything is unpickled, never served, tagged ``trainkit.broken`` and retrained; loading
it by URI (``trainkit.load_model``, ``trainkit backtest``) is refused.

"Before anything is unpickled" is checked with a canary: the altered zip is a real SB3 zip with
one extra cloudpickled entry whose unpickling creates a directory. SB3 unpickles every such
entry on load, so the directory appears iff someone loaded the zip (a control load proves it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from .rel_support import (
    WINDOW_CLI,
    assert_clean_failure,
    assert_same_model,
    cli,
    client,
    describe,
    fast_cli,
    finished_with_hash,
    policy_zip_path,
    train_inprocess,
)


class _Canary:
    """Unpickling this calls ``os.mkdir(path)``: a visible trace of deserialisation."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


def write_canary_zip(original: bytes, dst: Path, marker: Path) -> None:
    """``original`` (an SB3 zip) with a cloudpickled canary added to its ``data`` entry."""
    src = zipfile.ZipFile(io.BytesIO(original))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            payload = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(payload)
                data["trainkit_canary"] = {":type:": "<class 'object'>",
                                           ":serialized:": base64.b64encode(pickle.dumps(_Canary(marker))).decode()}
                payload = json.dumps(data).encode()
            out.writestr(item, payload)
    dst.write_bytes(buf.getvalue())


@pytest.mark.slow
def test_altered_or_missing_model_is_refused_tagged_and_retrained(sqlite_uri: str, tmp_path: Path) -> None:
    import trainkit
    from trainkit.store.flavor import load_policy
    from trainkit.errors import IntegrityError

    c = client(sqlite_uri)
    altered = train_inprocess(sqlite_uri, "CORR")
    missing = train_inprocess(sqlite_uri, "MISS")
    alt_zip = policy_zip_path(sqlite_uri, c.get_run(altered.run_id))
    miss_zip = policy_zip_path(sqlite_uri, c.get_run(missing.run_id))
    original = alt_zip.read_bytes()
    assert hashlib.sha256(original).hexdigest() == c.get_run(altered.run_id).data.tags["trainkit.model_sha256"]

    # control: the planted zip does run its canary when SB3 loads it without verification
    control = tmp_path / "control-canary"
    write_canary_zip(original, tmp_path / "control.zip", control)
    load_policy(str(tmp_path / "control.zip"), "ppo")
    assert control.is_dir(), "the canary does not fire: this test would prove nothing"

    marker = tmp_path / "canary"
    write_canary_zip(original, alt_zip, marker)
    miss_zip.unlink()

    # loading by URI refuses both, and nothing was unpickled
    with pytest.raises(IntegrityError, match="sha256|verif"):
        trainkit.load_model(altered.model_uri)
    with pytest.raises(IntegrityError, match="missing|policy.zip"):
        trainkit.load_model(missing.model_uri)
    assert not marker.exists(), "the altered model was unpickled before it was verified"

    res = cli("backtest", "--model-uri", altered.model_uri, "--start", "2023-01-02", "--end", "2023-06-30",
              env={"MLFLOW_TRACKING_URI": sqlite_uri}, cwd=tmp_path)
    assert_clean_failure(res, 1, altered.model_uri)
    assert not marker.exists(), "backtest unpickled the altered model before verifying it"

    # the next request for each config: detected, tagged broken, retrained, the new model served
    res = cli("train", "--symbols", "CORR", "MISS", *WINDOW_CLI, "--data-source", "synthetic", *fast_cli(), "--json",
              env={"MLFLOW_TRACKING_URI": sqlite_uri}, cwd=tmp_path)
    assert res.rc == 0 and "Traceback" not in res.err, str(res)
    rows = {r["symbol"]: r for r in json.loads(res.out)}
    assert not marker.exists(), "train unpickled the altered model before verifying it"
    for old in (altered, missing):
        row = rows[old.config.symbol]
        assert row["config_hash"] == old.config.config_hash, "the CLI and the seed disagree on the config"
        assert row["status"] == "trained" and row["run_id"] != old.run_id, row
        broken = c.get_run(old.run_id).data.tags.get("trainkit.broken", "")
        assert broken, f"run {old.run_id} was not tagged trainkit.broken"
        served = finished_with_hash(sqlite_uri, old.config.config_hash)
        assert {r.info.run_id for r in served} == {old.run_id, row["run_id"]}, describe(served)
        # the retrained model is this config's model: the same weights and actions as the one
        # trained in this process before the corruption (training is a function of the config)
        assert_same_model(trainkit.load_model(row["model_uri"]), old.model, what=f"retrained {old.config.symbol}")
        print(f"{old.config.symbol}: broken run tagged ({broken[:90]}…), retrained as {row['run_id'][:8]}")

    # and from now on the new model answers, the broken one never does
    from trainkit.manager import TrainingManager

    store = TrainingManager(sqlite_uri).store
    for old in (altered, missing):
        assert store.find(old.config.config_hash).run_id == rows[old.config.symbol]["run_id"]
    assert not marker.exists()
