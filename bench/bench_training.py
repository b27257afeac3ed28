"""Benchmark: the trading env's raw loop and training throughput (issues 9, 16).

Rows (name, value, note), all on real GOOG daily bars (``backtesting.test.GOOG``) with the
default 21 features, one torch thread:

* raw ``TradingEnv.step`` loop vs a null gymnasium env with the same spaces (their ratio);
* the vectorised training env (``TradingVecEnv``, 16 episodes per call), in env-steps/s;
* trainkit's default PPO, A2C and DQN (``trainkit.hyperparams``), each timed as one whole
  ``train()`` call (env and model construction + ``learn()``), with each training's peak RSS;
* stable-baselines3's default PPO (one env, ``PPO("MlpPolicy", env)``) ``learn()`` on the same
  env and data, its peak RSS, and the ratios of trainkit's steps/s to it.

Run alone: ``python bench/bench_training.py [--timesteps 100000] [--sb3-timesteps 20000]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

Row = tuple[str, str, str]

TRAIN_START, TRAIN_END = dt.date(2005, 7, 1), dt.date(2011, 12, 30)


def _feature_set():
    from backtesting.test import GOOG

    from trainkit.features import build_features

    return build_features(GOOG, 21, start=TRAIN_START, end=TRAIN_END)


def _null_env_class(n_features: int):
    import gymnasium
    from gymnasium import spaces

    class NullEnv(gymnasium.Env):
        """Same spaces as TradingEnv, no work at all: the ceiling of a gymnasium step loop."""

        def __init__(self, episode_length: int = 252) -> None:
            self.observation_space = spaces.Box(-np.inf, np.inf, (n_features + 1,), np.float32)
            self.action_space = spaces.Discrete(3)
            self._obs = np.zeros(n_features + 1, np.float32)
            self._len = episode_length
            self._t = 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self._t = 0
            return self._obs, {}

        def step(self, action):
            self._t += 1
            return self._obs, 0.0, False, self._t >= self._len, {}

    return NullEnv


def _loop_rate(env, n: int) -> float:
    actions = np.random.default_rng(0).integers(0, 3, n).tolist()
    env.reset(seed=0)
    step, reset = env.step, env.reset
    t0 = time.perf_counter()
    for a in actions:
        if step(a)[3]:
            reset()
    return n / (time.perf_counter() - t0)


def _best(fn, repeat: int = 3) -> float:
    return max(fn() for _ in range(repeat))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0), so the next
    peak belongs to what runs next; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak RSS since the last :func:`_reset_peak_rss` (else since the process started)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _rss_mb()


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _rss_mb()


def _describe(algo: str, hp: dict) -> str:
    arch = "x".join(str(x) for x in hp["net_arch"])
    if algo == "ppo":
        return f"{hp['n_envs']} envs x {hp['n_steps']} steps, batch {hp['batch_size']}, {hp['n_epochs']} epochs, net {arch}"
    if algo == "a2c":
        return f"{hp['n_envs']} envs x {hp['n_steps']} steps, net {arch}"
    return (f"{hp['n_envs']} envs, train_freq {hp['train_freq']}, {hp['gradient_steps']} gradient step(s), "
            f"batch {hp['batch_size']}, net {arch}")


def run(timesteps: int = 100_000, sb3_timesteps: int = 20_000, env_steps: int = 500_000) -> list[Row]:
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import PPO

    from trainkit import agents
    from trainkit.config import TrainConfig
    from trainkit.env import TradingEnv

    fs = _feature_set()
    days, n_feat = fs.matrix.shape
    rows: list[Row] = []
    data_note = f"GOOG {TRAIN_START}..{TRAIN_END}, {days} days x {n_feat} features"

    # -- raw env loop
    env_rate = _best(lambda: _loop_rate(TradingEnv.from_features(fs), env_steps))
    null_rate = _best(lambda: _loop_rate(_null_env_class(n_feat)(), env_steps))
    rows.append(("env: TradingEnv.step loop", f"{env_rate:,.0f} steps/s", data_note))
    rows.append(("env: null gymnasium env, same spaces", f"{null_rate:,.0f} steps/s", "returns a constant obs"))
    rows.append(("env: TradingEnv / null env", f"{env_rate / null_rate:.2f}x", "target >= 0.15x"))

    venv = agents.TradingVecEnv(TradingEnv.from_features(fs), 16)
    venv.seed(0)
    venv.reset()
    acts = np.random.default_rng(0).integers(0, 3, (2000, 16))

    def vec_rate() -> float:
        t0 = time.perf_counter()
        for a in acts:
            venv.step(a)
        return acts.size / (time.perf_counter() - t0)

    rows.append(("env: TradingVecEnv, 16 episodes per step", f"{_best(vec_rate):,.0f} env-steps/s", "training env"))

    # -- trainkit's defaults, each algorithm, timed as train() runs it: env and model
    # construction + learn(), one torch thread. Peak RSS is each training's own (VmHWM reset
    # before it), next to the RSS the process already had (imports, data).
    def timed_train(algo: str) -> tuple[float, float, float, object, dict]:
        cfg = TrainConfig.create("GOOG", TRAIN_START, TRAIN_END, data_source="synthetic", timesteps=timesteps, algo=algo)
        before = _current_rss_mb()
        _reset_peak_rss()
        t0 = time.perf_counter()
        model = agents.train(cfg, fs, progress=False)
        seconds = time.perf_counter() - t0
        return seconds, _peak_rss_mb(), before, model, dict(cfg.hyperparams)

    first_s = timed_train("ppo")[0]  # the first call in a process also pays torch's lazy imports and first calls
    rates: dict[str, float] = {}
    for algo in ("ppo", "a2c", "dqn"):
        seconds, peak, before, model, hp = timed_train(algo)
        rates[algo] = model.num_timesteps / seconds
        rows.append((
            f"train: trainkit default {algo} train()",
            f"{rates[algo]:,.0f} steps/s",
            f"{model.num_timesteps:,} steps in {seconds:.2f} s; {_describe(algo, hp)}"
            + (f"; {first_s:.2f} s as the first call in the process" if algo == "ppo" else ""),
        ))
        rows.append((
            f"train: peak RSS during trainkit {algo} train()",
            f"{peak:.0f} MB",
            f"whole process; {before:.0f} MB before it (imports, data), so +{max(peak - before, 0):.0f} MB for training",
        ))

    # -- SB3 defaults on the same env and data
    _reset_peak_rss()
    before = _current_rss_mb()
    sb3 = PPO("MlpPolicy", TradingEnv.from_features(fs), seed=0, device="cpu", verbose=0)  # SB3 wraps it: Monitor + DummyVecEnv
    t0 = time.perf_counter()
    sb3.learn(total_timesteps=sb3_timesteps)
    sb3_s = time.perf_counter() - t0
    sb3_rate = sb3.num_timesteps / sb3_s
    rows.append((
        "train: SB3-default PPO learn()",
        f"{sb3_rate:,.0f} steps/s",
        (f"{sb3.num_timesteps:,} steps in {sb3_s:.1f} s (measured on {sb3_timesteps:,}, not {timesteps:,}); "
         "1 env, n_steps 2048, batch 64, 10 epochs, net 64x64"),
    ))
    rows.append(("train: peak RSS during SB3-default PPO learn()", f"{_peak_rss_mb():.0f} MB",
                 f"whole process; {before:.0f} MB before it"))
    for algo in ("ppo", "a2c", "dqn"):
        rows.append((f"train: trainkit {algo} / SB3-default PPO", f"{rates[algo] / sb3_rate:.1f}x",
                     "steps/s ratio, same env and data" + ("; target >= 25x for a whole miss" if algo == "ppo" else "")))
    rows.append(("train: peak RSS of the whole bench", f"{_rss_mb():.0f} MB", "ru_maxrss"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--sb3-timesteps", type=int, default=20_000)
    parser.add_argument("--env-steps", type=int, default=500_000)
    args = parser.parse_args(argv)
    for name, value, note in run(args.timesteps, args.sb3_timesteps, args.env_steps):
        print(f"{name:<45} {value:>20}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
