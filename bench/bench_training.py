"""Benchmark: the trading env's raw loop and training throughput (issue 9).

Rows (name, value, note), all on real GOOG daily bars (``backtesting.test.GOOG``) with the
default 21 features, one torch thread:

* raw ``TradingEnv.step`` loop vs a null gymnasium env with the same spaces (their ratio);
* the vectorised training env (``TradingVecEnv``, 16 episodes per call), in env-steps/s;
* ``learn()`` throughput of trainkit's default config vs stable-baselines3's default PPO (one
  env, ``PPO("MlpPolicy", env)``) on the same env and data, and their ratio;
* trainkit's whole ``train()`` call (model construction + learn) and the peak RSS.

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

    # -- trainkit default training, timed as train() runs it (SB3 reports learn()'s own fps)
    class _Sink:
        fps = 0.0

        def log(self, step: int, metrics: dict[str, float]) -> None:
            self.fps = metrics.get("time/fps", self.fps)

        def flush(self) -> None:
            pass

    cfg = TrainConfig.create("GOOG", TRAIN_START, TRAIN_END, data_source="synthetic", timesteps=timesteps)
    hp = dict(cfg.hyperparams)
    train_s, tk_rate = [], 0.0
    for _ in range(2):  # the first call in a process also pays torch's lazy imports
        sink = _Sink()
        t0 = time.perf_counter()
        model = agents.train(cfg, fs, progress=False, metrics_sink=sink)
        train_s.append(time.perf_counter() - t0)
        tk_rate = max(tk_rate, sink.fps)
    tk_learn_s = model.num_timesteps / tk_rate
    rss_tk = _rss_mb()

    # -- SB3 defaults on the same env and data
    sb3 = PPO("MlpPolicy", TradingEnv.from_features(fs), seed=0, device="cpu", verbose=0)  # SB3 wraps it: Monitor + DummyVecEnv
    t0 = time.perf_counter()
    sb3.learn(total_timesteps=sb3_timesteps)
    sb3_s = time.perf_counter() - t0
    sb3_rate = sb3.num_timesteps / sb3_s

    arch = "x".join(str(x) for x in hp["net_arch"])
    rows.append((
        "train: trainkit default (ppo) learn()",
        f"{tk_rate:,.0f} steps/s",
        f"{model.num_timesteps:,} steps in {tk_learn_s:.1f} s; n_envs {hp['n_envs']}, n_steps {hp['n_steps']}, "
        f"batch {hp['batch_size']}, epochs {hp['n_epochs']}, net {arch}",
    ))
    rows.append((
        "train: SB3-default PPO learn()",
        f"{sb3_rate:,.0f} steps/s",
        f"{sb3.num_timesteps:,} steps in {sb3_s:.1f} s (measured on {sb3_timesteps:,}, not {timesteps:,}); "
        "1 env, n_steps 2048, batch 64, 10 epochs",
    ))
    rows.append(("train: trainkit default / SB3 default", f"{tk_rate / sb3_rate:.1f}x", "target >= 12x"))
    rows.append((
        "train: trainkit train() whole call",
        f"{train_s[1]:.2f} s",
        f"{timesteps:,} timesteps incl. env and model construction; {train_s[0]:.2f} s for the first call in "
        "the process (torch's lazy imports)",
    ))
    rows.append(("train: peak RSS after trainkit learn()", f"{rss_tk:.0f} MB", "ru_maxrss, whole process"))
    rows.append(("train: peak RSS at the end", f"{_rss_mb():.0f} MB", "after the SB3-default run too"))
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
