"""TradingEnv: the gymnasium contract, the reward arithmetic, causality and determinism."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from trainkit.env import TradingEnv, action_to_position, position_levels

T, F = 60, 4


def _arrays(seed: int = 0, n: int = T, f: int = F) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, f)).astype(np.float32)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    return feats, closes


def _episode(env: TradingEnv, actions: list[int], seed: int | None = None) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    out = [(obs.copy(), None, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs.copy(), r, info, term, trunc))
        if trunc:
            break
    return out


# the observation bounds are deliberately infinite: the env takes whatever features it is given
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is:UserWarning")
@pytest.mark.parametrize("allow_short", [True, False])
def test_passes_gymnasium_and_sb3_env_checkers(allow_short: bool) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    feats, closes = _arrays()
    env = TradingEnv(feats, closes, allow_short=allow_short, episode_length=20)
    gym_check_env(env, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker reports problems as warnings
        sb3_check_env(TradingEnv(feats, closes, allow_short=allow_short, episode_length=20))


def test_spaces_and_action_mapping() -> None:
    feats, closes = _arrays()
    env = TradingEnv(feats, closes)
    assert env.action_space.n == 3
    assert env.observation_space.shape == (F + 1,) and env.observation_space.dtype == np.float32
    assert TradingEnv(feats, closes, allow_short=False).action_space.n == 2
    np.testing.assert_array_equal(action_to_position(np.array([0, 1, 2]), True), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(action_to_position(np.array([0, 1]), False), [0.0, 1.0])
    np.testing.assert_array_equal(position_levels(True), [-1.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        action_to_position(np.array([2]), False)
    with pytest.raises(ValueError):
        action_to_position(np.array([-1]), True)


def test_observation_is_todays_features_and_held_position() -> None:
    feats, closes = _arrays()
    env = TradingEnv(feats, closes, episode_length=None, random_start=False)
    obs, info = env.reset()
    assert info == {"position": 0.0, "day": 0}
    np.testing.assert_array_equal(obs, np.append(feats[0], 0.0).astype(np.float32))
    for t, (a, pos) in enumerate([(2, 1.0), (0, -1.0), (1, 0.0), (2, 1.0)]):
        obs, _, _, _, info = env.step(a)
        assert info == {"position": pos, "day": t}
        np.testing.assert_array_equal(obs, np.append(feats[t + 1], pos).astype(np.float32))
        assert obs.dtype == np.float32 and obs.shape == (F + 1,)


@pytest.mark.parametrize("cost_bps", [0.0, 5.0, 25.0])
def test_reward_is_position_times_log_return_minus_costs(cost_bps: float) -> None:
    feats, closes = _arrays(1)
    env = TradingEnv(feats, closes, cost_bps=cost_bps, episode_length=None, random_start=False)
    env.reset()
    actions = [2, 2, 0, 1, 1, 0, 2, 1]
    prev = 0.0
    for t, a in enumerate(actions):
        _, r, term, trunc, _ = env.step(a)
        pos = [-1.0, 0.0, 1.0][a]
        expected = pos * math.log(closes[t + 1] / closes[t]) - cost_bps / 1e4 * abs(pos - prev)
        assert r == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert isinstance(r, float) and not term and not trunc
        prev = pos


def test_long_only_env_maps_actions_to_flat_and_long() -> None:
    feats, closes = _arrays(2)
    env = TradingEnv(feats, closes, cost_bps=10.0, allow_short=False, episode_length=None, random_start=False)
    env.reset()
    _, r0, *_ = env.step(1)  # go long: pay 10 bps
    _, r1, *_ = env.step(0)  # back to flat: pay 10 bps, earn nothing
    assert r0 == pytest.approx(math.log(closes[1] / closes[0]) - 0.001)
    assert r1 == pytest.approx(-0.001)
    with pytest.raises(ValueError):
        env.step(2)


def test_nothing_from_the_future_is_visible() -> None:
    """Two markets that agree up to day k and then diverge: every observation and every reward
    of a decision made before day k is identical; the divergence shows only in the reward of the
    step decided on day k (earned from k to k+1), never in anything seen at or before k."""
    feats, closes = _arrays(3)
    k = 30
    feats2, closes2 = feats.copy(), closes.copy()
    feats2[k + 1:] += 5.0
    closes2[k + 1:] *= 1.5
    actions = [2, 0, 1] * 20
    a = TradingEnv(feats, closes, episode_length=None, random_start=False)
    b = TradingEnv(feats2, closes2, episode_length=None, random_start=False)
    ea, eb = _episode(a, actions), _episode(b, actions)
    # entries 0..k hold what was seen up to and including day k (obs of day k at index k)
    for i in range(k + 1):
        np.testing.assert_array_equal(ea[i][0], eb[i][0])
    for i in range(1, k + 1):  # rewards of decisions made on days 0..k-1
        assert ea[i][1] == eb[i][1]
    assert ea[k + 1][1] != eb[k + 1][1]  # the decision of day k earns the diverging return


def test_truncation_not_termination_at_episode_length() -> None:
    feats, closes = _arrays()
    env = TradingEnv(feats, closes, episode_length=10, random_start=True)
    env.reset(seed=0)
    start = env.day
    for i in range(10):
        _, _, term, trunc, info = env.step(1)
        assert not term
        assert trunc == (i == 9)
        assert info["day"] == start + i
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    # the whole series: T-1 steps from day 0
    full = TradingEnv(feats, closes, episode_length=None)
    full.reset(seed=1)
    assert full.day == 0
    steps = 0
    while True:
        *_, trunc, _ = full.step(2)
        steps += 1
        if trunc:
            break
    assert steps == T - 1
    # an episode longer than the data is clipped to it
    assert TradingEnv(feats, closes, episode_length=10_000).episode_length == T - 1


def test_random_starts_are_deterministic_under_seed_and_cover_the_range() -> None:
    feats, closes = _arrays()

    def starts(seed: int, n: int = 40) -> list[int]:
        env = TradingEnv(feats, closes, episode_length=20)
        out = [env.reset(seed=seed)[1]["day"]]
        out += [env.reset()[1]["day"] for _ in range(n - 1)]
        return out

    assert starts(7) == starts(7)
    assert starts(7) != starts(8)
    s = starts(7, 400)
    assert min(s) == 0 and max(s) == T - 1 - 20  # every start leaves room for a whole episode
    fixed = TradingEnv(feats, closes, episode_length=20, random_start=False)
    assert {fixed.reset(seed=i)[1]["day"] for i in range(5)} == {0}
    obs, info = fixed.reset(options={"start": 12})
    assert info["day"] == 12
    np.testing.assert_array_equal(obs[:F], feats[12])


def test_same_seed_same_trajectory() -> None:
    feats, closes = _arrays(4)
    actions = list(np.random.default_rng(0).integers(0, 3, 100))
    runs = [_episode(TradingEnv(feats, closes, episode_length=25), actions, seed=3) for _ in range(2)]
    assert len(runs[0]) == len(runs[1]) == 26
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]


def test_earlier_observations_are_never_overwritten() -> None:
    """Vectorised wrappers keep the terminal observation while the env resets."""
    feats, closes = _arrays()
    env = TradingEnv(feats, closes, episode_length=3, random_start=True)
    first, _ = env.reset(seed=0)
    seen = [first]
    for a in (2, 0, 1):
        seen.append(env.step(a)[0])
    snapshot = [o.copy() for o in seen]
    env.reset()
    env.step(2)
    for o, s in zip(seen, snapshot):
        np.testing.assert_array_equal(o, s)
    # a caller writing into an observation it was given does not corrupt the env's table
    seen[0][:] = 99.0
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, snapshot[0])


@pytest.mark.parametrize("bad", [3, -1, 1.5, "long", None, np.array([0, 1])])
def test_invalid_actions_are_rejected(bad: object) -> None:
    env = TradingEnv(*_arrays())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action"):
        env.step(bad)


def test_numpy_action_types_are_accepted() -> None:
    env = TradingEnv(*_arrays(), random_start=False)
    env.reset()
    for a in (np.int64(2), np.int32(0), np.array(1), np.array([2])):
        env.step(a)
    assert env.position == 1.0


@pytest.mark.parametrize(
    "feats, closes, match",
    [
        (np.zeros((10, 2)), np.ones(9), "same T"),
        (np.zeros(10), np.ones(10), "same T"),
        (np.zeros((1, 2)), np.ones(1), "at least 2"),
        (np.full((10, 2), np.nan), np.ones(10), "NaN"),
        (np.zeros((10, 2)), np.r_[np.ones(9), 0.0], "positive"),
    ],
)
def test_bad_inputs_are_rejected(feats: np.ndarray, closes: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TradingEnv(feats, closes)


def test_from_features_uses_matrix_and_closes() -> None:
    from types import SimpleNamespace

    feats, closes = _arrays()
    env = TradingEnv.from_features(SimpleNamespace(matrix=feats, closes=closes), cost_bps=1.0, allow_short=False)
    assert env.n_days == T and env.n_features == F and env.cost_bps == 1.0 and not env.allow_short
