"""Training: algorithms by name, a fast vectorised env, progress, metrics and stop requests.

Where the speed comes from (measured in ``bench/bench_training.py``): stable-baselines3 spends
its time in per-step policy forwards and in many small gradient steps, not in the env. So the
defaults (:mod:`trainkit.hyperparams`) batch ``n_envs`` episodes per forward and take fewer,
larger gradient steps; and :class:`TradingVecEnv` steps all episodes with a few numpy
operations instead of ``DummyVecEnv``'s per-env Python loop and per-step ``deepcopy`` of infos.

Reproducibility: :func:`train` is a pure function of ``(config, FeatureSet)``. Everything random
is seeded from ``config.seed`` (python, numpy, torch, action space, episode starts), and training
runs with one torch thread whatever the caller had set (docs/ARCHITECTURE.md, "Threads"), so the
same config gives the same weights in any process.

This module knows nothing about MLflow: metrics go to a :class:`MetricsSink` the caller passes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from trainkit import signals_core as _core
from trainkit.algorithms import algorithm_spec
from trainkit.env import TradingEnv, position_levels
from trainkit.errors import ConfigError, TrainingInterrupted
from trainkit.threads import one_torch_thread

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.config import TrainConfig
    from trainkit.features import FeatureSet

__all__ = [
    "MetricsSink",
    "TradingVecEnv",
    "build_model",
    "make_vec_env",
    "run_policy",
    "train",
    "warm_up",
]

#: Hyperparameters trainkit consumes itself; every other key is a keyword of the SB3 class.
_TRAINKIT_KEYS = ("n_envs", "net_arch", "activation")

#: optional ``activation`` hyperparameter -> torch module class of the hidden layers. Absent
#: (the defaults), SB3's own choice stands: on the learning tests ReLU learned the two-feature
#: edge about as well as tanh, the one-feature edge slightly worse, and overfitted a random walk
#: more in sample.
_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}

#: On-policy algorithms log (and stream metrics) about once per this many timesteps.
_LOG_EVERY_STEPS = 4096


class MetricsSink(Protocol):
    """Where training metrics go (the store's MLflow sink, or anything else)."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def flush(self) -> None: ...


# ---------------------------------------------------------------------------- vectorised env
class TradingVecEnv(VecEnv):
    """``n_envs`` independent episodes of one :class:`~trainkit.env.TradingEnv`, stepped together.

    Same observations, rewards, truncations, infos and episode starts as
    ``DummyVecEnv([TradingEnv(...)] * n_envs)`` seeded alike (``tests/test_agents.py`` checks
    it), but a step is a handful of numpy fancy-indexing operations over the env's precomputed
    tables instead of ``n_envs`` Python calls plus a ``deepcopy`` of every info dict.
    """

    def __init__(self, env: TradingEnv, n_envs: int) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        self.env = env  # before VecEnv.__init__, which asks it for render_mode
        super().__init__(n_envs, env.observation_space, env.action_space)
        self._obs = env.obs_table
        self._rew = env.reward_table
        self._levels = position_levels(env.allow_short)
        self._n_actions = len(self._levels)
        self._t = np.zeros(n_envs, dtype=np.int64)
        self._end = np.zeros(n_envs, dtype=np.int64)
        self._pos = np.full(n_envs, env.flat_action, dtype=np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * n_envs
        self._actions = np.zeros(n_envs, dtype=np.int64)

    def _start_episode(self, i: int) -> int:
        seed = self._seeds[i]
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = gymnasium.utils.seeding.np_random(seed)
        start = self.env.draw_start(self._rngs[i], self._options[i] or None)  # type: ignore[arg-type]
        self._t[i] = start
        self._end[i] = start + self.env.episode_length
        self._pos[i] = self.env.flat_action
        self.reset_infos[i] = {"position": 0.0, "day": start}
        return start

    def reset(self) -> np.ndarray:
        for i in range(self.num_envs):
            self._start_episode(i)
        self._reset_seeds()
        self._reset_options()
        return self._obs[self._pos, self._t]

    def step_async(self, actions: np.ndarray) -> None:
        acts = np.asarray(actions).reshape(-1)
        if acts.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {acts.shape[0]}")
        if acts.min() < 0 or acts.max() >= self._n_actions:
            raise ValueError(f"actions must be in 0..{self._n_actions - 1}, got {acts}")
        self._actions = acts.astype(np.int64, copy=False)

    def step_wait(self) -> VecEnvStepReturn:
        t, acts = self._t, self._actions
        rewards = self._rew[t, self._pos, acts].astype(np.float32)
        self._pos = acts.copy()
        t += 1
        obs = self._obs[acts, t]  # fancy indexing: a fresh array
        dones = t >= self._end
        positions = self._levels[acts].tolist()
        days = (t - 1).tolist()
        infos: list[dict[str, Any]] = [
            {"position": p, "day": d, "TimeLimit.truncated": False} for p, d in zip(positions, days)
        ]
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                infos[i]["TimeLimit.truncated"] = True
                infos[i]["terminal_observation"] = obs[i].copy()
                obs[i] = self._obs[self.env.flat_action, self._start_episode(i)]
            self._reset_seeds()
            self._reset_options()
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    # the VecEnv introspection API, answered by the single template env
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError("TradingVecEnv shares one template env: its attributes are read-only")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        return [getattr(self.env, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


def make_vec_env(fs: Any, *, n_envs: int, cost_bps: float, allow_short: bool, episode_length: int | None) -> VecMonitor:
    """The training env: :class:`TradingVecEnv` over the FeatureSet, with episode statistics
    (``rollout/ep_rew_mean``) from ``VecMonitor``."""
    env = TradingEnv.from_features(
        fs, cost_bps=cost_bps, allow_short=allow_short, episode_length=episode_length, random_start=True
    )
    return VecMonitor(TradingVecEnv(env, n_envs))


# ---------------------------------------------------------------------------- metrics and callbacks
class _SinkWriter(KVWriter):
    """SB3 logger output → :class:`MetricsSink`: one ``log`` per SB3 dump (about once per
    rollout), numeric values only, a ``flush`` at most every ``flush_every`` seconds."""

    def __init__(self, sink: MetricsSink, flush_every: float = 10.0) -> None:
        self.sink = sink
        self.flush_every = flush_every
        self._last_flush = time.monotonic()
        self.last_step = -1

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        metrics: dict[str, float] = {}
        for key, value in key_values.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            v = float(value)
            if math.isfinite(v):
                metrics[key] = v
        if metrics:
            self.sink.log(int(step), metrics)
            self.last_step = int(step)
        now = time.monotonic()
        if now - self._last_flush >= self.flush_every:
            self._last_flush = now
            self.sink.flush()

    def close(self) -> None:
        self.sink.flush()


class _ControlCallback(BaseCallback):
    """Progress display and stop requests, polled cheaply from SB3's loop."""

    def __init__(self, total: int, label: str, progress: str, should_stop: Callable[[], bool] | None) -> None:
        super().__init__()
        self.total = total
        self.label = label
        self.mode = progress  # "bar" | "lines" | "off"
        self.should_stop = should_stop
        self.stopped = False
        self._t0 = time.monotonic()
        self._last_poll = self._last_draw = self._t0
        self._next_pct = 10
        self._bar: Any = None
        self._task: Any = None

    # --- stop requests
    def _poll(self) -> bool:
        if self.should_stop is not None and not self.stopped:
            self._last_poll = time.monotonic()
            if self.should_stop():
                self.stopped = True
        return not self.stopped

    # --- progress
    def _on_training_start(self) -> None:
        self._t0 = time.monotonic()
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="")

    def _rate(self) -> float:
        return self.num_timesteps / max(time.monotonic() - self._t0, 1e-9)

    def _show(self, final: bool = False) -> None:
        n = min(self.num_timesteps, self.total)
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(self._task, completed=n, rate=f"{self._rate():,.0f} steps/s")
        elif self.mode == "lines":
            pct = 100 * n // max(self.total, 1)
            if pct >= self._next_pct or final:
                print(f"{self.label}: {pct:3d}% {n:,}/{self.total:,} steps, {self._rate():,.0f} steps/s",
                      file=sys.stderr, flush=True)
                self._next_pct = (pct // 10 + 1) * 10

    def _on_step(self) -> bool:
        now = time.monotonic()
        if self.mode != "off" and now - self._last_draw >= 0.2:
            self._last_draw = now
            self._show()
        if self.should_stop is not None and now - self._last_poll >= 0.5:
            return self._poll()
        return not self.stopped

    def _on_rollout_end(self) -> None:
        self._poll()

    def close(self) -> None:
        if self.mode != "off" and not self.stopped:
            self._show(final=True)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ---------------------------------------------------------------------------- training
def _progress_mode(progress: bool | None) -> str:
    if progress is False:
        return "off"
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty else "lines"


def build_model(config: TrainConfig, fs: Any) -> BaseAlgorithm:
    """The untrained, seeded SB3 model for ``config`` on the FeatureSet (call with one torch
    thread set, as :func:`train` does, for reproducible weights)."""
    spec = algorithm_spec(config.algo)  # its class comes from the algorithm table
    hp = dict(config.hyperparams)
    n_envs = int(hp.get("n_envs", 1))
    net_arch = [int(x) for x in hp.get("net_arch", [64, 64])]
    policy_kwargs: dict[str, Any] = {"net_arch": net_arch}
    if "activation" in hp:  # absent: SB3's own default (tanh for ppo/a2c, ReLU for dqn)
        activation = str(hp["activation"]).lower()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}: choose one of {', '.join(_ACTIVATIONS)}")
        policy_kwargs["activation_fn"] = _ACTIVATIONS[activation]
    kwargs = {k: v for k, v in hp.items() if k not in _TRAINKIT_KEYS}
    venv = make_vec_env(
        fs, n_envs=n_envs, cost_bps=config.cost_bps, allow_short=config.allow_short,
        episode_length=config.episode_length,
    )
    return spec.model_class()(
        "MlpPolicy",
        venv,
        policy_kwargs=policy_kwargs,
        seed=int(config.seed),
        device="cpu",
        verbose=0,
        **kwargs,
    )


def train(
    config: TrainConfig,
    fs: FeatureSet,
    *,
    progress: bool | None = None,
    metrics_sink: MetricsSink | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BaseAlgorithm:
    """Train ``config.algo`` on the FeatureSet for ``config.timesteps`` and return the model.

    * ``progress``: ``False`` silent; otherwise a rich bar on stderr when stderr is a terminal,
      else a line on stderr every 10 %.
    * ``metrics_sink``: receives SB3's logged values (``rollout/ep_rew_mean``, ``train/*`` loss
      terms, ``time/fps`` …) about once per 4096 timesteps, keyed by timestep.
    * ``should_stop``: polled after every rollout (and at most every 0.5 s within one); when it
      returns True training stops and :class:`~trainkit.errors.TrainingInterrupted` is raised.

    Runs with one torch thread (:func:`~trainkit.threads.one_torch_thread`) and restores the
    caller's setting afterwards.
    """
    # argument validation of torch distributions costs ~20% of a policy forward at this size
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    control: _ControlCallback | None = None
    writer: _SinkWriter | None = None
    try:
        with one_torch_thread():
            model = build_model(config, fs)
            if metrics_sink is not None:
                writer = _SinkWriter(metrics_sink)
                model.set_logger(Logger(folder=None, output_formats=[writer]))
            label = f"training {config.symbol} {config.algo}"
            control = _ControlCallback(config.timesteps, label, _progress_mode(progress), should_stop)
            _learn(model, config, control, writer)
        if control.stopped:
            raise TrainingInterrupted(
                f"training of {config.symbol} ({config.algo}) was stopped after {model.num_timesteps:,} of "
                f"{config.timesteps:,} timesteps"
            )
        return model
    finally:
        if control is not None:
            control.close()
        if writer is not None:
            writer.sink.flush()
        torch.distributions.Distribution.set_default_validate_args(validate)


def _learn(model: BaseAlgorithm, config: TrainConfig, control: _ControlCallback, writer: _SinkWriter | None) -> None:
    """``model.learn`` logging about once per :data:`_LOG_EVERY_STEPS` timesteps, then the
    logs still pending. On-policy algorithms count log intervals in rollouts of
    ``n_steps * n_envs`` timesteps, off-policy ones in episodes (the row's ``on_policy``)."""
    on_policy = algorithm_spec(config.algo).on_policy
    per_iter = int(config.hyperparams.get("n_steps", 1)) * model.n_envs
    if on_policy:
        iterations = math.ceil(config.timesteps / per_iter)
        log_interval = max(1, min(round(_LOG_EVERY_STEPS / per_iter), math.ceil(iterations / 10)))
    else:
        log_interval = 4  # episodes
    model.learn(total_timesteps=int(config.timesteps), callback=control,
                log_interval=log_interval, progress_bar=False)
    if writer is None:
        return
    # the last update's losses (and the final rollout stats) are still pending
    if model.num_timesteps > writer.last_step:
        if on_policy:
            model.dump_logs(model.num_timesteps // per_iter)  # type: ignore[call-arg]
        else:
            model.dump_logs()  # type: ignore[call-arg]
    else:
        model.logger.dump(step=model.num_timesteps)


# ---------------------------------------------------------------------------- start-up
def warm_up() -> None:
    """Import what training would otherwise import lazily, before the caller holds a lease.

    torch imports ``torch._dynamo`` (and with it sympy, ~800 modules, about a second) from the
    first ``Optimizer`` it builds. A Ctrl-C that lands inside that lazy import leaves a
    half-imported sympy behind and surfaces later as an unrelated ``AttributeError`` instead of
    an interrupt; done here, before a lease exists, an interrupt is just an interrupt. (Saving
    and loading the SB3 zip is the model flavor's: :mod:`trainkit.store.flavor`.)"""
    import torch._dynamo  # noqa: F401


# ---------------------------------------------------------------------------- evaluation
def run_policy(model: BaseAlgorithm, fs: Any, *, cost_bps: float, allow_short: bool) -> dict[str, np.ndarray]:
    """Trade the deterministic policy over the whole FeatureSet, starting flat on day 0.

    Returns ``actions`` and ``positions`` [T] (the position held from day t to t+1; the last one
    is what the policy would hold after the last day and earns nothing here), and
    ``gross_returns``, ``costs``, ``net_returns`` [T-1]: the strategy's simple daily returns
    (``position * (close[t+1]/close[t] - 1)``), the cost of the position change made at t
    (``cost_bps / 1e4 * |Δposition|``) and their difference.

    The walk is the served model's: :func:`trainkit.signals_core.walk`.
    """
    matrix = np.asarray(fs.matrix, dtype=np.float32)
    closes = np.asarray(fs.closes, dtype=np.float64)
    n_days, n_feat = matrix.shape
    obs_dim = int(model.observation_space.shape[0])  # type: ignore[index]
    if obs_dim != n_feat + 1:
        raise ConfigError(
            f"the model expects {obs_dim - 1} features but the feature set has {n_feat}: "
            "build features with the model's feature_count"
        )
    levels = position_levels(allow_short)
    n_pos = len(levels)
    if int(model.action_space.n) != n_pos:  # type: ignore[attr-defined]
        raise ConfigError(
            f"the model has {model.action_space.n} actions but allow_short={allow_short} means {n_pos}: "  # type: ignore[attr-defined]
            "use the allow_short the model was trained with"
        )

    def predict(obs: np.ndarray) -> np.ndarray:
        with one_torch_thread():
            return model.predict(obs, deterministic=True)[0]

    actions = _core.walk(matrix, predict, allow_short)
    positions = levels[actions]
    simple = closes[1:] / closes[:-1] - 1.0
    prev = np.concatenate(([0.0], positions[:-2])) if n_days > 1 else np.zeros(0)
    gross = positions[:-1] * simple
    costs = cost_bps / 1e4 * np.abs(positions[:-1] - prev)
    return {
        "actions": actions,
        "positions": positions,
        "gross_returns": gross,
        "costs": costs,
        "net_returns": gross - costs,
    }


