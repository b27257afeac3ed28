"""The Ray executor on a real Ray cluster: real trainings through
``TrainingManager.iter_models(requests, RayExecutor(address=…))`` against a real tracking store.

The module starts its own 2-CPU cluster (``ray start --head`` with its own ``--temp-dir`` under
/tmp, token authentication with a random token, no dashboard, no usage stats) in a session of
its own, and stops exactly that cluster at the end. Not with ``ray stop``: it has no
``--address`` or ``--temp-dir`` and stops every Ray process of the user on the machine. The
fixture ends the cluster's session instead (SIGTERM, then SIGKILL) and checks that none of its
processes is left.

The tracking store is sqlite in a temp dir: the cluster is on this machine, so its workers
open the same file (a *remote* cluster address with a local-file store is refused; see
``test_remote_cluster_with_a_local_store_is_refused_before_anything_is_submitted``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import pytest

from trainkit.config import parse_bool
from trainkit.errors import ConfigError
from trainkit.executors import RayExecutor, WorkerDied, absolute_tracking_uri, is_local_ray_address, make_executor

from support import FAST, PYTHON, free_port

ray = pytest.importorskip("ray")

WINDOW = ("2020-01-01", "2021-12-31")
HP = {k: v for k, v in FAST.items() if k != "timesteps"}


# ------------------------------------------------------------------------------ the cluster
class RayCluster:
    """A real Ray head node on this machine, in a session of its own."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="tk-ray-", dir="/tmp")  # Ray's socket paths must stay short
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.sid: int | None = None

    def start(self) -> None:
        proc = subprocess.Popen(
            [str(Path(PYTHON).parent / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(self.port),
             "--disable-usage-stats", "--include-dashboard=false", "--temp-dir", self.temp_dir],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, start_new_session=True,
        )
        self.sid = proc.pid  # the session every process of the cluster (workers included) stays in
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{out[-3000:]}")

    def pids(self) -> list[int]:
        """The processes of this cluster (its session), alive or zombie."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == self.sid and fields[0] != "Z":
                found.append(int(entry))
        return found

    def task_pids(self, name: str) -> list[int]:
        """Workers of this cluster running the task named ``name`` (Ray titles them ray::<name>)."""
        out = []
        for pid in self.pids():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.strip() == f"ray::{name}" or cmd.startswith(f"ray::{name} "):
                out.append(pid)
        return out

    def stop(self) -> None:
        if self.sid is None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.pids():
                break
        left = self.pids()
        subprocess.run(["rm", "-rf", self.temp_dir], check=False)
        assert not left, f"Ray processes left running: {left}"


def _reload_ray_auth_settings() -> None:
    """Ray reads RAY_AUTH_MODE and the token once, when it is imported; re-read them after the
    environment changed (what Ray's own ``_enable_token_auth`` does)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster()
    c.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_AUTH_MODE", "token")
            mp.setenv("RAY_AUTH_TOKEN", c.env["RAY_AUTH_TOKEN"])
            mp.delenv("RAY_ADDRESS", raising=False)
            _reload_ray_auth_settings()
            try:
                yield c
            finally:
                if ray.is_initialized():
                    ray.shutdown()
        _reload_ray_auth_settings()
    finally:
        c.stop()


# ------------------------------------------------------------------------------ helpers
def _requests(manager, symbols, timesteps: int = FAST["timesteps"]):
    from trainkit.manager import ModelRequest

    return [ModelRequest(manager.config_for(s, *WINDOW, data_source="synthetic", timesteps=timesteps, **HP))
            for s in symbols]


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("trainkit")
    return client.search_runs([exp.experiment_id]) if exp else []


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _leases(uri: str) -> list:
    return [r for r in _runs(uri) if r.info.status == "RUNNING" and r.data.tags.get("trainkit.claim_hash")]


def _one_finished_model_per_config(uri: str, hashes: set[str]) -> dict[str, str]:
    runs = _runs(uri)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    finished: dict[str, list[str]] = {}
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get("config_hash"):
            finished.setdefault(r.data.tags["config_hash"], []).append(r.info.run_id)
    assert set(finished) == hashes and all(len(v) == 1 for v in finished.values()), finished
    return {h: v[0] for h, v in finished.items()}


DRIVER = r'''
import json, sys
from trainkit import TrainingManager
from trainkit.executors import RayExecutor
from trainkit.manager import ModelRequest

address, uri, timesteps, hp, *symbols = sys.argv[1:]
manager = TrainingManager(uri)
requests = [ModelRequest(manager.config_for(s, "2020-01-01", "2021-12-31", data_source="synthetic",
                                            timesteps=int(timesteps), **json.loads(hp))) for s in symbols]
print("submitting", flush=True)
try:
    for o in manager.iter_models(requests, RayExecutor(address=address)):
        r = o.result
        print(json.dumps({"symbol": o.request.config.symbol, "status": r.status if r else "error",
                          "run_id": r.run_id if r else None, "error": str(o.error) if o.error else None}), flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
'''


def _driver(tmp_path: Path, cluster: RayCluster, uri: str, symbols, timesteps: int) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [PYTHON, str(script), cluster.address, uri, str(timesteps), json.dumps(HP), *symbols],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.env["RAY_AUTH_TOKEN"]},
    )


# ------------------------------------------------------------------------------ no cluster needed
def test_what_counts_as_a_local_cluster_and_absolute_store_paths(tmp_path, monkeypatch) -> None:
    for local in (None, "", "auto", "local", "127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:10001", "[::1]:6379"):
        assert is_local_ray_address(local), local
    for remote in ("10.0.0.5:6379", "ray://head.example:10001", "head:6379", "192.168.1.2"):
        assert not is_local_ray_address(remote), remote
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_tracking_uri("file:./mlruns") == f"file://{tmp_path}/mlruns"
    assert absolute_tracking_uri("mlruns") == str(tmp_path / "mlruns")
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert isinstance(make_executor("ray", workers=3, address="auto"), RayExecutor)
    with pytest.raises(ConfigError, match="--executor ray"):
        make_executor("local", address="10.0.0.5:6379")


def test_no_credential_reaches_a_ray_task_unless_asked_for_and_then_with_a_warning(monkeypatch, caplog) -> None:
    """Ray shows a job's runtime environment on its dashboard and in its logs (ray #28276): the
    tasks' environment carries no password, token, user name or URL with a password in it —
    unless TRAINKIT_RAY_FORWARD_SECRETS=true, which says what it forwards."""
    from trainkit.executors import ray_worker_env

    secret = {"MLFLOW_TRACKING_PASSWORD": "pw-123456", "MLFLOW_TRACKING_TOKEN": "tok-123456",
              "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k-123456",
              "TRAINKIT_YF_PROXY": "http://bob:proxypw@proxy.example:3128"}
    for k, v in secret.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    env = ray_worker_env("http://mlflow.example:5000")
    assert not set(secret) & set(env) and env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7", env
    assert not any(v in json.dumps(env) for v in secret.values())
    monkeypatch.setenv("TRAINKIT_RAY_FORWARD_SECRETS", "true")
    with caplog.at_level("WARNING", logger="trainkit"):
        env = ray_worker_env("http://mlflow.example:5000")
    assert {k: env[k] for k in secret} == secret
    assert "MLFLOW_TRACKING_PASSWORD" in caplog.text and "pw-123456" not in caplog.text


def test_remote_cluster_with_a_local_store_is_refused_before_anything_is_submitted(sqlite_uri, monkeypatch) -> None:
    from trainkit import TrainingManager

    manager = TrainingManager(sqlite_uri)
    requests = _requests(manager, ["AAPL"])
    for executor, how in ((RayExecutor(address="10.255.0.1:6379"), "argument"), (RayExecutor(), "RAY_ADDRESS")):
        if how == "RAY_ADDRESS":
            monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
        with pytest.raises(ConfigError) as err:
            next(manager.iter_models(requests, executor))
        message = str(err.value)
        assert err.value.exit_code == 2 and "\n" not in message
        assert "http(s)://" in message and "sqlite:///" in message, message
        assert not ray.is_initialized()  # refused before connecting, so before submitting
    assert _runs(sqlite_uri) == []
    # a tracking server on this machine's loopback is just as unreachable from other machines
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # the URI's credentials move there:
        monkeypatch.setenv(name, "")  # for this test only (restored afterwards)
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="127.0.0.1 is this machine only") as err:
        list(RayExecutor("10.255.0.1:6379", tracking_uri="http://user:secret@127.0.0.1:5000").map_unordered(str, [1]))
    assert "secret" not in str(err.value) and not ray.is_initialized()


# ------------------------------------------------------------------------------ a real cluster
@pytest.mark.slow
def test_tasks_get_the_store_settings_and_errors_come_back_unwrapped(cluster, sqlite_uri, tmp_path, monkeypatch) -> None:
    password = secrets.token_urlsafe(12)  # the driver's credential: the tasks (and Ray's files) never see it
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    with RayExecutor(address=cluster.address, tracking_uri=sqlite_uri, max_retries=1) as ex:
        env = dict(ex.map_unordered(os.getenv, ["TRAINKIT_CLAIM_SETTLE", "TRAINKIT_CACHE_DIR", "OMP_NUM_THREADS",
                                                "MKL_NUM_THREADS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID",
                                                "MLFLOW_TRACKING_PASSWORD"]))
        assert env == {"TRAINKIT_CLAIM_SETTLE": "0.3", "TRAINKIT_CACHE_DIR": os.environ["TRAINKIT_CACHE_DIR"],
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": sqlite_uri,
                       "MLFLOW_RUN_ID": None, "MLFLOW_TRACKING_PASSWORD": None}
        leaked = subprocess.run(["grep", "-rlF", password, cluster.temp_dir], capture_output=True, text=True).stdout
        assert leaked == "", f"the password is in Ray's files: {leaked}"  # its logs and runtime-env records
        assert dict(ex.map_unordered(os.path.abspath, ["."])) == {".": str(tmp_path)}  # the driver's directory
        got = dict(ex.map_unordered(partial(parse_bool, name="force"), ["true", "maybe"]))
        assert got["true"] is True
        assert type(got["maybe"]) is ConfigError and "force must be true or false" in str(got["maybe"])
        with pytest.raises(ValueError, match="invalid literal"):  # a bug in a task is raised, not returned
            list(ex.map_unordered(int, ["x"]))
        died = dict(ex.map_unordered(os._exit, [3]))[3]  # the worker dies, is retried once, dies again
        assert isinstance(died, WorkerDied) and died.exit_code == 1 and "1 retries" in str(died), died
        assert ray.is_initialized()  # kept across calls inside `with`
    assert not ray.is_initialized()  # then disconnected; the cluster stays up
    assert cluster.pids()


@pytest.mark.slow
def test_trainings_stream_back_and_a_second_run_is_served_from_the_cache(cluster, sqlite_uri) -> None:
    from trainkit import TrainingManager

    manager = TrainingManager(sqlite_uri)
    requests = _requests(manager, ["AAPL", "MSFT", "NVDA"])  # three tasks on two CPUs
    with RayExecutor(address=cluster.address) as ex:  # one connection (and its warm workers) for both passes
        outcomes = list(manager.iter_models(requests, ex))  # as each finishes
        assert sorted(o.request.config.symbol for o in outcomes) == ["AAPL", "MSFT", "NVDA"]
        assert all(o.ok and o.result.status == "trained" and o.result.model is None for o in outcomes), outcomes
        runs = _one_finished_model_per_config(sqlite_uri, {r.config.config_hash for r in requests})
        assert {o.result.run_id for o in outcomes} == set(runs.values())

        again = manager.get_models(requests, ex)  # in request order, the models loaded here
        assert ray.is_initialized()
    assert not ray.is_initialized()  # disconnected; the cluster stays up
    assert [o.result.status for o in again] == ["cached"] * 3
    assert [o.result.run_id for o in again] == [runs[r.config.config_hash] for r in requests]
    from support import assert_same_model, stored_policy

    for o in again:  # the models loaded here are the ones the workers published
        assert_same_model(o.result.model, stored_policy(sqlite_uri, o.result.run_id), what=o.request.config.symbol)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_its_lease_taken_over(cluster, sqlite_uri, monkeypatch) -> None:
    from trainkit import TrainingManager

    # the workers get these through runtime_env: a lease 8 s without a heartbeat (every 2 s) is
    # stale, so the retry takes the dead worker's lease over within seconds, not minutes
    monkeypatch.setenv("TRAINKIT_HEARTBEAT", "2")
    monkeypatch.setenv("TRAINKIT_STALE_AFTER", "8")
    manager = TrainingManager(sqlite_uri)
    [request] = _requests(manager, ["KILL"], timesteps=12_000)
    stream = manager.iter_models([request], RayExecutor(address=cluster.address, max_retries=2))

    import threading

    box: dict = {}
    consumer = threading.Thread(target=lambda: box.update(outcomes=list(stream)))
    consumer.start()
    [lease] = _wait_for(lambda: _leases(sqlite_uri), 180, "the task's lease")
    [pid] = _wait_for(lambda: cluster.task_pids("trainkit:KILL"), 30, "the task's worker")
    time.sleep(1.0)  # mid-training
    os.kill(pid, signal.SIGKILL)
    consumer.join(240)
    assert not consumer.is_alive()
    assert not ray.is_initialized()  # each call connects and lets go (no `with`)

    [outcome] = box["outcomes"]
    assert outcome.ok and outcome.result.status == "trained", outcome  # Ray retried it and the retry trained
    assert outcome.result.run_id != lease.info.run_id
    assert not os.path.exists(f"/proc/{pid}")
    dead = manager.store.get_run(lease.info.run_id)
    assert dead.info.status == "FAILED" and "stale" in dead.data.tags.get("trainkit.failure", "")  # taken over
    assert "trainkit.claim_hash" not in dead.data.tags
    _one_finished_model_per_config(sqlite_uri, {request.config.config_hash})


@pytest.mark.slow
def test_two_drivers_on_one_cluster_train_each_config_once(cluster, sqlite_uri, tmp_path) -> None:
    from trainkit import TrainingManager

    symbols = ["AAPL", "MSFT"]
    TrainingManager(sqlite_uri)  # the store exists before the two drivers race for it
    drivers = [_driver(tmp_path, cluster, sqlite_uri, symbols, 2048) for _ in range(2)]
    rows = []
    for d in drivers:
        out, err = d.communicate(timeout=300)
        assert d.returncode == 0, err[-3000:]
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(rows) == 4 and all(r["status"] in ("trained", "cached") for r in rows), rows
    by_symbol: dict[str, set[str]] = {}
    for r in rows:
        by_symbol.setdefault(r["symbol"], set()).add(r["run_id"])
    assert all(len(ids) == 1 for ids in by_symbol.values()), by_symbol  # both drivers got the same model
    assert sorted(r["status"] for r in rows) == ["cached", "cached", "trained", "trained"], rows
    manager = TrainingManager(sqlite_uri)
    _one_finished_model_per_config(sqlite_uri, {r.config.config_hash for r in _requests(manager, symbols, 2048)})


@pytest.mark.slow
def test_ctrl_c_in_the_driver_cancels_the_tasks_and_their_runs_end_killed(cluster, sqlite_uri, tmp_path) -> None:
    from trainkit import TrainingManager

    TrainingManager(sqlite_uri)
    proc = _driver(tmp_path, cluster, sqlite_uri, ["CTRLA", "CTRLB"], 50_000_000)
    try:
        _wait_for(lambda: len(_leases(sqlite_uri)) == 2, 180, "both tasks training", proc)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert out.strip().splitlines()[-1] == "interrupted"
    runs = _runs(sqlite_uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_id, r.info.status) for r in runs]
    assert not any(r.data.tags.get("trainkit.claim_hash") for r in runs)  # leases released
    assert all("Ctrl-C" in r.data.tags.get("trainkit.failure", "") for r in runs)
    _wait_for(lambda: not cluster.task_pids("trainkit:CTRLA") and not cluster.task_pids("trainkit:CTRLB"), 30,
              "the cancelled tasks to end")
