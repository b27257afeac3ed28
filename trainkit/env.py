"""`TradingEnv`: one instrument, daily bars, a target position per day.

The environment is the inner loop of every cache miss, so its hot path only indexes arrays that
were prepared once in ``__init__``:

* **Observation** (float32, shape ``[F + 1]``): the scaled feature row of day ``t`` followed by
  the position currently held (the one chosen at ``t - 1``; flat at the episode's start). Features
  of day ``t`` are computed from bars up to and including day ``t`` (see :mod:`trainkit.features`);
  nothing from ``t + 1`` or later is visible at ``t``.
* **Action** (a *target* position for the next day):

  =====================  ===========  ==========  ==========
  ``allow_short``        action 0     action 1    action 2
  =====================  ===========  ==========  ==========
  ``True``  Discrete(3)  short (-1)   flat (0)    long (+1)
  ``False`` Discrete(2)  flat (0)     long (+1)   —
  =====================  ===========  ==========  ==========

  :func:`action_to_position` is the one place that mapping lives.
* **Reward** of the step taken at day ``t``: ``position * log(close[t+1] / close[t])
  - cost_bps / 1e4 * |position - previous position|``.
* **Episodes**: ``episode_length`` steps from a start drawn uniformly (``random_start``) or from
  day 0; the episode ends by *truncation* (never termination: the market does not end, the
  sample does). ``episode_length=None`` (or one longer than the data) runs the whole series
  from day 0. Starts are drawn from ``self.np_random``, so ``reset(seed=…)`` makes the whole
  episode sequence deterministic.
* **info** of every step: ``{"position": float, "day": int}``; ``day`` is the row of the
  feature matrix the step was decided on.

Observations come from a table ``[n_positions, T, F + 1]`` built once (the feature rows with
every possible position appended); a step is a few list lookups and one small copy (gymnasium's
checker requires fresh observation data on every call, and vectorised wrappers keep the terminal
observation of a truncated episode while the env resets). Rewards come from a precomputed
``[T - 1, previous action, new action]`` table. :attr:`TradingEnv.obs_table` and
:attr:`TradingEnv.reward_table` are exposed (read-only) for vectorised forms of this env
(:class:`trainkit.agents.TradingVecEnv`).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from trainkit import signals_core as _core

__all__ = ["TradingEnv", "action_to_position", "position_levels"]


#: The position each action index stands for (see the module docstring): the table of
#: :mod:`trainkit.signals_core`, which served models carry, so training, backtests and serving
#: read one table.
position_levels = _core.position_levels


def action_to_position(actions: np.ndarray, allow_short: bool) -> np.ndarray:
    """Map action indices to positions (float64): ``{0,1,2} -> {-1,0,+1}`` with shorting,
    ``{0,1} -> {0,+1}`` without. Out-of-range actions raise ``ValueError``."""
    acts = np.asarray(actions)
    levels = position_levels(allow_short)
    if acts.size and (acts.min() < 0 or acts.max() >= len(levels)):
        raise ValueError(f"actions must be in 0..{len(levels) - 1} (allow_short={allow_short}), got {acts}")
    return levels[acts.astype(np.int64)]


class TradingEnv(gymnasium.Env):
    """Trade one instrument over precomputed daily features (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        closes: np.ndarray,
        *,
        cost_bps: float = 5.0,
        allow_short: bool = True,
        episode_length: int | None = 252,
        random_start: bool = True,
    ) -> None:
        feats = np.asarray(features, dtype=np.float32)
        px = np.asarray(closes, dtype=np.float64)
        if feats.ndim != 2 or px.ndim != 1 or feats.shape[0] != px.shape[0]:
            raise ValueError(
                f"features must be [T, F] and closes [T] with the same T, got {feats.shape} and {px.shape}"
            )
        if feats.shape[0] < 2:
            raise ValueError(f"need at least 2 days to trade, got {feats.shape[0]}")
        if not np.all(np.isfinite(feats)):
            raise ValueError("features contain NaN or inf: build them with trainkit.features.build_features")
        if not np.all(np.isfinite(px)) or np.any(px <= 0):
            raise ValueError("closes must be finite and positive")
        if not np.isfinite(cost_bps) or cost_bps < 0:
            raise ValueError(f"cost_bps must be >= 0, got {cost_bps}")
        if episode_length is not None and episode_length < 1:
            raise ValueError(f"episode_length must be >= 1 or None, got {episode_length}")

        n_days, n_feat = feats.shape
        self.n_days = n_days
        self.n_features = n_feat
        self.cost_bps = float(cost_bps)
        self.allow_short = bool(allow_short)
        self.random_start = bool(random_start)
        max_steps = n_days - 1  # the last day has no next close to earn a return on
        self.episode_length = max_steps if episode_length is None else min(int(episode_length), max_steps)
        self._max_start = max_steps - self.episode_length

        levels = position_levels(self.allow_short)
        n_pos = len(levels)
        self._levels = levels.tolist()
        self._action_index = {i: i for i in range(n_pos)}
        self._flat = int(np.flatnonzero(levels == 0.0)[0])
        self.flat_action = self._flat  # the action index meaning "flat"; every episode starts there

        # obs table [n_pos, T, F+1]: feature row of day t + the position held coming into t
        table = np.empty((n_pos, n_days, n_feat + 1), dtype=np.float32)
        table[:, :, :n_feat] = feats[None]
        table[:, :, n_feat] = levels[:, None]
        table.flags.writeable = False
        self.obs_table = self._obs_table = table
        # one read-only view per (position, day): a list lookup plus a copy is the cheapest way
        # to hand out a fresh observation (gymnasium requires new data on every call)
        self._rows = [[table[p, t] for t in range(n_days)] for p in range(n_pos)]

        # reward table [T-1, n_pos(previous), n_pos(new)], as nested lists of Python floats:
        # list indexing is the cheapest lookup there is from Python.
        log_ret = np.diff(np.log(px))
        cost = self.cost_bps / 1e4
        rew = levels[None, None, :] * log_ret[:, None, None] - cost * np.abs(levels[None, :, None] - levels[None, None, :])
        self._rewards = rew.tolist()
        self.reward_table = rew  # [T-1, previous action, new action], for vectorised stepping
        self.reward_table.flags.writeable = False
        self.log_returns = log_ret
        self.closes = px

        self.action_space = spaces.Discrete(n_pos)
        self.observation_space = spaces.Box(low=-np.inf, high=np.inf, shape=(n_feat + 1,), dtype=np.float32)

        self._t = 0
        self._end = self.episode_length
        self._pos = self._flat

    @classmethod
    def from_features(cls, fs: Any, **settings: Any) -> TradingEnv:
        """Build from a :class:`trainkit.features.FeatureSet` (``matrix`` and ``closes``);
        ``settings`` are the keyword arguments of the constructor."""
        return cls(fs.matrix, fs.closes, **settings)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode flat. ``options={"start": day}`` pins the first day (for evaluation)."""
        super().reset(seed=seed)
        start = self.draw_start(self.np_random, options)
        self._t = start
        self._end = start + self.episode_length
        self._pos = self._flat
        return self._obs_table[self._flat, start].copy(), {"position": 0.0, "day": start}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        t = self._t
        if t >= self._end:
            raise RuntimeError("the episode is over (truncated): call reset() before step()")
        try:  # one dict lookup validates the action and turns numpy integers into int
            a = self._action_index[action]
        except (KeyError, TypeError):
            a = self._slow_action(action)
        reward = self._rewards[t][self._pos][a]
        self._pos = a
        self._t = t + 1
        return (
            self._rows[a][t + 1].copy(),
            reward,
            False,
            t + 1 >= self._end,
            {"position": self._levels[a], "day": t},
        )

    def draw_start(self, rng: np.random.Generator, options: dict[str, Any] | None = None) -> int:
        """The first day of a new episode: ``options["start"]`` if given, else uniform over the
        days that leave room for a whole episode (``random_start``), else day 0. Shared with
        vectorised forms of this env so they draw exactly the same episodes."""
        if options and "start" in options:
            start = int(options["start"])
            if not 0 <= start <= self._max_start:
                raise ValueError(f"start must be in 0..{self._max_start}, got {start}")
            return start
        if self.random_start and self._max_start > 0:
            return int(rng.integers(0, self._max_start + 1))
        return 0

    def _slow_action(self, action: Any) -> int:
        """Accept what the fast path cannot hash (a 0-d or one-element integer array)."""
        arr = np.asarray(action)
        if arr.size == 1 and np.issubdtype(arr.dtype, np.integer):
            a = int(arr.reshape(()))
            if a in self._action_index:
                return a
        raise ValueError(f"invalid action {action!r}: the action space is {self.action_space}")

    # ------------------------------------------------------------------ introspection
    @property
    def day(self) -> int:
        """The day (row of the feature matrix) the next action is decided on."""
        return self._t

    @property
    def position(self) -> float:
        """The position currently held."""
        return self._levels[self._pos]
