"""Training engine: vectorised env equivalence, real SB3 training at small timesteps, metrics,
progress, stop requests, persistence, policy evaluation and end-to-end determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from trainkit import agents
from trainkit.agents import TradingVecEnv, run_policy, train
from trainkit.algorithms import algorithm_names
from trainkit.store.flavor import load_policy, save_policy
from trainkit.config import TrainConfig
from trainkit.env import TradingEnv
from trainkit.errors import ConfigError, TrainingInterrupted
from trainkit.hyperparams import ALGORITHM_DEFAULTS

REPO = Path(__file__).resolve().parent.parent

#: tiny but real: one or two PPO/A2C updates, a few DQN gradient steps
SMALL = {
    "ppo": dict(timesteps=512, n_envs=4, n_steps=64, batch_size=128, n_epochs=1),
    "a2c": dict(timesteps=512, n_envs=4, n_steps=8),
    "dqn": dict(timesteps=600, n_envs=2, learning_starts=200, buffer_size=1000, batch_size=32, train_freq=4,
                target_update_interval=100),
}


def _fs(seed: int = 0, n: int = 300, f: int = 5) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        matrix=rng.standard_normal((n, f)).astype(np.float32),
        closes=100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n))),
    )


def _config(algo: str = "ppo", seed: int = 0, **over: object) -> TrainConfig:
    opts = {**SMALL[algo], **over}
    timesteps = opts.pop("timesteps")
    return TrainConfig.create("TEST", "2015-01-01", "2019-12-31", data_source="synthetic", timesteps=timesteps,
                              algo=algo, seed=seed, episode_length=50, **opts)


class _Sink:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.flushes = 0
        self.threads: set[int] = set()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.threads.add(torch.get_num_threads())
        self.rows.append((step, metrics))

    def flush(self) -> None:
        self.flushes += 1


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_each_algorithm_builds_its_sb3_class_with_the_table_values(algo: str) -> None:
    """The names users type are exactly these, in this order (the CLI's choices and the hash
    depend on them), and each builds the SB3 class of that name with the defaults of the
    hyperparameter table: the table is what trains, not a second copy of it."""
    from stable_baselines3 import A2C, DQN, PPO

    assert algorithm_names() == ("ppo", "a2c", "dqn") and tuple(ALGORITHM_DEFAULTS) == algorithm_names()
    defaults = ALGORITHM_DEFAULTS[algo]
    config = TrainConfig.create("TEST", "2015-01-01", "2019-12-31", data_source="synthetic", algo=algo,
                                episode_length=50)
    assert {k: config.hyperparams[k] for k in defaults} == defaults  # resolved from the table
    model = agents.build_model(config, _fs(f=5))
    assert type(model) is {"ppo": PPO, "a2c": A2C, "dqn": DQN}[algo]
    assert model.n_envs == defaults["n_envs"]
    assert model.gamma == defaults["gamma"] and model.learning_rate == defaults["learning_rate"]
    for key in ("n_steps", "batch_size", "n_epochs", "ent_coef", "vf_coef", "gae_lambda", "buffer_size",
                "learning_starts", "exploration_fraction", "exploration_final_eps", "gradient_steps"):
        if key in defaults:
            assert getattr(model, key) == defaults[key], key
    hidden = [m.out_features for m in model.policy.modules() if isinstance(m, torch.nn.Linear)]
    assert hidden[: len(defaults["net_arch"])] == list(defaults["net_arch"]), hidden


@pytest.mark.parametrize("allow_short", [True, False])
def test_vec_env_matches_dummy_vec_env_of_single_envs(allow_short: bool) -> None:
    """The fast vectorised env is a drop-in for DummyVecEnv over TradingEnv: same starts, obs,
    rewards, truncations, terminal observations and infos, seeded alike."""
    fs = _fs(1, n=80)
    kw = dict(cost_bps=7.0, allow_short=allow_short, episode_length=9)
    n_envs = 5
    fast = TradingVecEnv(TradingEnv.from_features(fs, **kw), n_envs)
    slow = DummyVecEnv([lambda: TradingEnv.from_features(fs, **kw) for _ in range(n_envs)])
    fast.seed(123)
    slow.seed(123)
    np.testing.assert_array_equal(fast.reset(), slow.reset())
    assert fast.reset_infos == slow.reset_infos
    rng = np.random.default_rng(0)
    n_done = 0
    for _ in range(60):
        acts = rng.integers(0, 3 if allow_short else 2, n_envs)
        o1, r1, d1, i1 = fast.step(acts)
        o2, r2, d2, i2 = slow.step(acts)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        assert o1.dtype == o2.dtype == np.float32 and r1.dtype == r2.dtype
        for a, b in zip(i1, i2):
            assert a.keys() == b.keys()
            if "terminal_observation" in a:
                np.testing.assert_array_equal(a.pop("terminal_observation"), b.pop("terminal_observation"))
            assert a == b
        n_done += int(d1.sum())
    assert n_done >= 2 * n_envs  # episodes really ended and restarted
    with pytest.raises(ValueError):
        fast.step(np.full(n_envs, 3))


def test_train_ppo_streams_metrics_with_one_thread_and_restores_threads() -> None:
    sink = _Sink()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = train(_config("ppo"), _fs(), progress=False, metrics_sink=sink)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert model.num_timesteps >= 512
    assert sink.rows and sink.flushes >= 1 and sink.threads == {1}
    keys = set().union(*(m.keys() for _, m in sink.rows))
    assert {"time/fps", "train/value_loss", "train/entropy_loss", "train/policy_gradient_loss"} <= keys
    assert "rollout/ep_rew_mean" in keys  # episodes of 50 days completed and were reported
    steps = [s for s, _ in sink.rows]
    assert steps == sorted(steps) and steps[-1] == model.num_timesteps
    assert all(isinstance(v, float) for _, m in sink.rows for v in m.values())


@pytest.mark.parametrize("algo", ["a2c", "dqn"])
def test_train_other_algorithms(algo: str) -> None:
    sink = _Sink()
    model = train(_config(algo), _fs(), progress=False, metrics_sink=sink)
    assert type(model).__name__ == algo.upper()
    assert model.n_envs == SMALL[algo]["n_envs"]
    acts, _ = model.predict(np.zeros((3, 6), dtype=np.float32), deterministic=True)
    assert set(np.asarray(acts).tolist()) <= {0, 1, 2}
    assert sink.rows  # something was reported


def test_should_stop_interrupts_training() -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    cfg = _config("ppo", timesteps=100_000)
    with pytest.raises(TrainingInterrupted, match="stopped after"):
        train(cfg, _fs(), progress=False, should_stop=stop)
    assert len(calls) == 2


def test_progress_lines_on_a_non_terminal_and_silence_when_off(capfd: pytest.CaptureFixture[str]) -> None:
    train(_config("ppo"), _fs(), progress=None)
    out, err = capfd.readouterr()
    assert out == ""
    lines = [ln for ln in err.splitlines() if "training TEST ppo" in ln]
    assert lines and lines[-1].split(":")[1].strip().startswith("100%")
    assert "steps/s" in lines[-1]
    train(_config("ppo"), _fs(), progress=False)
    out, err = capfd.readouterr()
    assert out == "" and "training TEST" not in err


def test_save_and_load_round_trip_to_the_exact_path(tmp_path: Path) -> None:
    fs = _fs()
    model = train(_config("ppo"), fs, progress=False)
    path = tmp_path / "policy.bin"  # no .zip: SB3 alone would write policy.bin.zip
    save_policy(model, str(path))
    assert path.is_file() and not (tmp_path / "policy.bin.zip").exists()
    loaded = load_policy(str(path), "PPO")
    obs = np.hstack([fs.matrix, np.zeros((len(fs.matrix), 1), np.float32)])
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.device.type == "cpu"
    with pytest.raises(ConfigError, match="unknown algorithm"):
        load_policy(str(path), "sac")


@pytest.mark.parametrize("allow_short", [True, False])
def test_run_policy_matches_stepping_the_env(allow_short: bool) -> None:
    fs = _fs(2)
    cost = 5.0
    model = train(_config("ppo", allow_short=allow_short, cost_bps=cost), fs, progress=False)
    res = run_policy(model, fs, cost_bps=cost, allow_short=allow_short)
    n = len(fs.closes)
    assert res["positions"].shape == res["actions"].shape == (n,)
    assert res["gross_returns"].shape == res["costs"].shape == res["net_returns"].shape == (n - 1,)

    env = TradingEnv.from_features(fs, cost_bps=cost, allow_short=allow_short, episode_length=None, random_start=False)
    obs, _ = env.reset()
    positions, log_rewards = [], []
    for _ in range(n - 1):
        a = int(model.predict(obs, deterministic=True)[0])
        obs, r, _, trunc, info = env.step(a)
        positions.append(info["position"])
        log_rewards.append(r)
    np.testing.assert_array_equal(res["positions"][:-1], positions)
    assert int(model.predict(obs, deterministic=True)[0]) == res["actions"][-1]

    pos = np.asarray(positions)
    simple = fs.closes[1:] / fs.closes[:-1] - 1.0
    prev = np.r_[0.0, pos[:-1]]
    np.testing.assert_allclose(res["gross_returns"], pos * simple)
    np.testing.assert_allclose(res["costs"], cost / 1e4 * np.abs(pos - prev))
    np.testing.assert_allclose(res["net_returns"], res["gross_returns"] - res["costs"])
    # the env's log-return rewards tell the same story
    np.testing.assert_allclose(log_rewards, pos * np.diff(np.log(fs.closes)) - res["costs"], atol=1e-12)
    if not allow_short:
        assert set(np.unique(res["positions"])) <= {0.0, 1.0}


def test_run_policy_rejects_a_mismatched_feature_set() -> None:
    model = train(_config("ppo"), _fs(), progress=False)
    with pytest.raises(ConfigError, match="features"):
        run_policy(model, _fs(f=7), cost_bps=5.0, allow_short=True)
    with pytest.raises(ConfigError, match="allow_short"):
        run_policy(model, _fs(), cost_bps=5.0, allow_short=False)


def test_training_is_deterministic_within_a_process() -> None:
    fs = _fs(3)
    a = train(_config("ppo", seed=5), fs, progress=False)
    b = train(_config("ppo", seed=5), fs, progress=False)
    c = train(_config("ppo", seed=6), fs, progress=False)
    pa, pb, pc = (torch.nn.utils.parameters_to_vector(m.policy.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


_CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    from types import SimpleNamespace
    import numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from trainkit.agents import train, run_policy
    from trainkit.config import TrainConfig
    rng = np.random.default_rng(11)
    fs = SimpleNamespace(matrix=rng.standard_normal((400, 6)).astype(np.float32),
                         closes=100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400))))
    cfg = TrainConfig.create("TEST", "2015-01-01", "2019-12-31", data_source="synthetic", timesteps=2048,
                             seed=9, episode_length=60, n_envs=4, n_steps=128, batch_size=256, n_epochs=2)
    model = train(cfg, fs, progress=False)
    res = run_policy(model, fs, cost_bps=cfg.cost_bps, allow_short=cfg.allow_short)
    params = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()
    print(json.dumps({"actions": hashlib.sha256(res["actions"].tobytes()).hexdigest(),
                      "params": hashlib.sha256(params.tobytes()).hexdigest(),
                      "net": float(res["net_returns"].sum())}))
    """
)


def test_same_config_same_actions_in_two_fresh_processes() -> None:
    """docs/ARCHITECTURE.md, "Threads": the hash means the same weights everywhere, whatever threads the caller set."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, threads], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=REPO)
        for threads in ("1", "2")
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
