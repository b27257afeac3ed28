"""Default hyperparameters of every algorithm trainkit trains, as plain data.

Kept free of heavy imports so :mod:`trainkit.config` can validate and hash a request (and the
CLI can answer ``--help``) without importing torch or stable-baselines3. The defaults are part
of the config hash: they are resolved into every :class:`~trainkit.config.TrainConfig`, so
changing a default here changes the hash of configs that relied on it — which is right, since
it changes the model.

Why these values: on this problem (daily bars, a reward available every step) the cost of
training is dominated by per-step policy forwards and many small gradient steps. Batching
``n_envs`` episodes per forward and taking fewer, larger gradient steps trains an order of
magnitude faster than stable-baselines3's defaults and still learns (see ``make bench`` and
``tests/test_learning.py``).

A low ``gamma`` (0.9) suits the problem: an action's reward arrives the next day, and only the
cost of changing position links it to later days. What these defaults learn, out of sample and
over several seeds, is checked by ``tests/test_learning.py``: a planted autocorrelation, an edge
that flips sign with the volatility regime (two features at once), and nothing on a random walk.
Those tests train ``ppo`` (the default algorithm); ``a2c`` learned the autocorrelation edge as
well (out-of-sample Sharpe 2.9, one seed). ``dqn`` is the weak one here: it memorises the
training days (in-sample Sharpe 7-18) and generalises little; ``learning_rate`` 1e-4 and
``target_update_interval`` 500 were the best of a few tries (out-of-sample 0.5-1.3 over three
seeds, against -0.5 with 1e-3 / 1000).
"""

from __future__ import annotations

from typing import Any

#: algorithm name -> {hyperparameter: default}. The type of each default is the type a
#: user-supplied value is coerced to. ``net_arch`` is the hidden layer sizes of policy
#: (and value) networks, ``n_envs`` the number of episodes stepped together; every other key
#: is a keyword of the SB3 class.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_envs": 16,
        "n_steps": 256,
        "batch_size": 1024,
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
    "a2c": {
        "n_envs": 16,
        "n_steps": 16,
        "learning_rate": 1e-3,
        "gamma": 0.9,
        "gae_lambda": 0.95,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "net_arch": [64, 64],
    },
    "dqn": {
        "n_envs": 4,
        "learning_rate": 1e-4,
        "buffer_size": 50_000,
        "learning_starts": 1_000,
        "batch_size": 256,
        "gamma": 0.9,
        "train_freq": 4,
        "gradient_steps": 1,
        "target_update_interval": 500,
        "exploration_fraction": 0.3,
        "exploration_final_eps": 0.02,
        "net_arch": [64, 64],
    },
}
