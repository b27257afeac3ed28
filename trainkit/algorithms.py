"""The algorithm table: what an algorithm *is* to trainkit, in one row.

Every place that must know an algorithm reads its row here: config validation and hashing
(its name, its defaults, its validators), training (its SB3 class, on- or off-policy, the kind
of action space it acts in), the model flavor (the class that loads its zip) and the CLI's
help. Adding a discrete algorithm is one :func:`register_algorithm` row and the matching entry
of ``trainkit/pyfunc_model.py``'s ``_CLASSES`` (the served model imports no trainkit, so it
keeps its own copy; ``tests/test_registries.py`` pins it to this table) — docs/ARCHITECTURE.md,
*Adding a discrete algorithm*. Stdlib only: the CLI's ``--help`` and config hashing read it
without torch or stable-baselines3; the SB3 class is named ``"module:Class"`` and imported only
when a model is built or loaded.

The defaults are part of the config hash: they are resolved into every
:class:`~trainkit.config.TrainConfig`, so changing a default here changes the hash of configs
that relied on it — which is right, since it changes the model.

Why these values (config schema 2; the measurements are in ``docs/CALIBRATION.md``, made by
``bench/calibrate.py``): on this problem (daily bars, a reward every step) training time goes
to per-step policy forwards and SB3 bookkeeping and to gradient steps, not to the env. So each
default steps as many episodes per forward (``n_envs``) and takes as few, large gradient steps
as learning allows. For ppo and a2c, each is the fastest point of a calibration grid that
passes every learning test of ``tests/test_learning.py`` (same problems, seeds and timesteps)
with at least the schema-1 defaults' margin (a test's margin: its assertion closest to
failing), then confirmed on three held-out seeds:

* ``ppo``: 128 envs x 32 steps, batch 2048 (schema 1: 16 x 256, batch 1024): the same
  4096-step rollout with 8x fewer policy forwards and half the gradient steps; ~2.5x the
  steps/s. The faster points of the grid (256 x 16, batch 4096; 2 epochs) lost margin on the
  two-feature regime edge, on the tests' seeds or on the held-out ones.
* ``a2c``: 128 envs x 16 steps, learning rate 4e-3 (schema 1: 16 x 16, 1e-3): ~4.7x. An 8x
  larger batch per update wants a larger step: at 1e-3 the regime edge was not learned.
* ``dqn``: 256 envs, one gradient step of batch 2048 per 256 transitions, learning rate 1e-3
  (schema 1: 4 envs, batch 256 per 16 transitions, 1e-4): ~10x, and it learns more than
  schema 1 did (no dqn setting of the grid passes ppo's bars). Half as many gradient steps
  (``train_freq`` 2) was 1.6x faster again but learned the regime edge less. SB3 divides
  ``target_update_interval`` (500 transitions) by ``n_envs``, so at 256 envs the target
  network is refreshed every step.

A low ``gamma`` (0.9) suits the problem: an action's reward arrives the next day, and only the
cost of changing position links it to later days. What these defaults learn, out of sample and
over several seeds, is checked by ``tests/test_learning.py``: a planted autocorrelation, an edge
that flips sign with the volatility regime (two features at once), and nothing on a random walk.
Those tests train ``ppo`` (the default algorithm); ``a2c`` passes the same criteria in the
calibration. ``dqn`` is the weak one here: it memorises the training days (in-sample Sharpe
4-6) and generalises less (out of sample about 1 on the planted edges, where ppo and a2c reach
2-3), so its test holds it to a lower bar; fewer, larger gradient steps memorise less, which is
why its faster defaults also learn more than schema 1's did (in-sample 7-8, out 0.2-1.1).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from trainkit.errors import ConfigError

#: The kinds of action space an algorithm can act in. trainkit's environment trades discrete
#: positions (short / flat / long: :mod:`trainkit.env`), so only ``discrete`` rows train today.
ACTION_KINDS: tuple[str, ...] = ("discrete", "continuous")

#: The action space trainkit's environment offers.
ENV_ACTIONS = "discrete"

#: A validator: the resolved hyperparameters in, :class:`ConfigError` out when they cannot train.
Validator = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm.

    ``name``: what users type (``--algo``, ``algo=``; part of the hash); ``sb3_class``:
    ``"module:Class"`` of its stable-baselines3 class; ``defaults``: hyperparameter → default
    (the type of each default is the type a user-supplied value is coerced to; ``net_arch`` is
    the hidden layer sizes of the policy and value networks and ``n_envs`` the number of
    episodes stepped together, both consumed by trainkit; every other key is a keyword of the
    SB3 class); ``on_policy``: PPO-like (logs per rollout) rather than DQN-like (logs per
    episodes); ``actions``: the action space it acts in (one of :data:`ACTION_KINDS`);
    ``validators``: checks across hyperparameters that SB3 would otherwise fail on obscurely
    (single values are range-checked by name in :mod:`trainkit.config`)."""

    name: str
    sb3_class: str
    defaults: Mapping[str, Any]
    on_policy: bool
    actions: str = "discrete"
    validators: tuple[Validator, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower():
            raise ValueError(f"algorithm name {self.name!r} must be lower-case without spaces")
        if ":" not in self.sb3_class:
            raise ValueError(f"sb3_class {self.sb3_class!r} must be 'module:Class'")
        if self.actions not in ACTION_KINDS:
            raise ValueError(f"actions {self.actions!r} must be one of {', '.join(ACTION_KINDS)}")
        # a private, read-only copy: the defaults are hashed into every config
        object.__setattr__(self, "defaults", MappingProxyType(copy.deepcopy(dict(self.defaults))))

    def model_class(self) -> Any:
        """The SB3 class, imported now (torch and stable-baselines3 come with it)."""
        module, _, name = self.sb3_class.partition(":")
        return getattr(importlib.import_module(module), name)

    def validate(self, hyperparams: Mapping[str, Any]) -> None:
        """:class:`ConfigError` unless trainkit can train this algorithm with ``hyperparams``."""
        if self.actions != ENV_ACTIONS:
            raise ConfigError(
                f"algorithm {self.name} acts in a {self.actions} action space, but trainkit's environment "
                f"trades {ENV_ACTIONS} positions (short/flat/long): choose one of {', '.join(trainable())}"
            )
        for check in self.validators:
            check(hyperparams)


_ALGORITHMS: dict[str, AlgorithmSpec] = {}


def register_algorithm(spec: AlgorithmSpec) -> None:
    """Add (or replace) an algorithm."""
    _ALGORITHMS[spec.name] = spec


def algorithm_names() -> tuple[str, ...]:
    """Every registered name, in registration order (the CLI's choices)."""
    return tuple(_ALGORITHMS)


def trainable() -> tuple[str, ...]:
    """The names trainkit's environment can train (those acting in :data:`ENV_ACTIONS`)."""
    return tuple(n for n, s in _ALGORITHMS.items() if s.actions == ENV_ACTIONS)


def algorithm_spec(name: Any) -> AlgorithmSpec:
    """The row of ``name`` (case and spaces ignored); :class:`ConfigError` if unknown."""
    try:
        return _ALGORITHMS[str(name).strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}: choose one of {', '.join(_ALGORITHMS)}") from None


class _DefaultsView(Mapping[str, Mapping[str, Any]]):
    """name → defaults of every registered algorithm, read live from the table (so a row
    registered later is seen too)."""

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return _ALGORITHMS[name].defaults

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_ALGORITHMS))

    def __len__(self) -> int:
        return len(_ALGORITHMS)

    def __repr__(self) -> str:
        return f"ALGORITHM_DEFAULTS({dict(self.items())!r})"


#: algorithm name -> {hyperparameter: default}: the ``defaults`` of the table's rows.
ALGORITHM_DEFAULTS: Mapping[str, Mapping[str, Any]] = _DefaultsView()


# ----------------------------------------------------------------------------- the rows
def _ppo_batch_fits_rollout(hp: Mapping[str, Any]) -> None:
    """PPO splits each rollout (``n_steps * n_envs`` transitions) into minibatches."""
    if hp["batch_size"] > hp["n_steps"] * hp["n_envs"]:
        raise ConfigError(
            f"ppo batch_size {hp['batch_size']} exceeds n_steps*n_envs = {hp['n_steps'] * hp['n_envs']}: "
            "lower batch_size or raise n_steps/n_envs"
        )


register_algorithm(AlgorithmSpec(
    "ppo", "stable_baselines3:PPO", on_policy=True, validators=(_ppo_batch_fits_rollout,), defaults={
        "n_envs": 128,
        "n_steps": 32,
        "batch_size": 2048,
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "gamma": 0.9,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "net_arch": [64, 64],
    },
))
register_algorithm(AlgorithmSpec(
    "a2c", "stable_baselines3:A2C", on_policy=True, defaults={
        "n_envs": 128,
        "n_steps": 16,
        "learning_rate": 4e-3,
        "gamma": 0.9,
        "gae_lambda": 0.95,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "net_arch": [64, 64],
    },
))
register_algorithm(AlgorithmSpec(
    "dqn", "stable_baselines3:DQN", on_policy=False, defaults={
        "n_envs": 256,
        "learning_rate": 1e-3,
        "buffer_size": 50_000,
        "learning_starts": 1_000,
        "batch_size": 2048,
        "gamma": 0.9,
        "train_freq": 1,
        "gradient_steps": 1,
        "target_update_interval": 500,
        "exploration_fraction": 0.3,
        "exploration_final_eps": 0.02,
        "net_arch": [64, 64],
    },
))
