"""The learning problems of ``tests/test_learning.py``, with their pass criteria, in one place.

``tests/test_learning.py`` asserts these criteria at the default hyperparameters;
``bench/calibrate.py`` trains a grid of settings on the same problems, seeds and timesteps and
reports the same criteria with their margins, so a default is only changed to a setting that
passes the tests. One definition of each market, split and criterion serves both.

Every problem generates its own OHLCV frame with numpy (an edge we plant), builds the default
21 features with :func:`trainkit.features.build_features`, is trained (only ``timesteps``,
``seed`` and whatever hyperparameters the caller overrides are chosen here) on the first years,
and is judged by the deterministic policy (:func:`trainkit.agents.run_policy`, 5 bps costs) on
the later years, scaled with the training window's scaler. Sharpe ratios are annualised, net of
costs.

Import: ``tests`` and ``bench`` put this directory on ``sys.path`` and ``import learning_problems``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trainkit.features import FeatureSet, build_features

SEEDS = (0, 1, 2)
WARMUP = 300  # rows before the training window (the features need 199)
YEAR = 252
COST_BPS = 5.0


# ---------------------------------------------------------------------------- planted markets
def frame_from_returns(log_returns: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Daily bars whose closes follow ``log_returns``; opens at the previous close, highs and
    lows a little outside, random volume (the edge lives in the closes only)."""
    n = len(log_returns)
    close = 100.0 * np.exp(np.cumsum(log_returns))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(0.0, 0.004, (2, n)))
    return pd.DataFrame(
        {
            "Open": open_,
            "High": np.maximum(open_, close) * np.exp(wick[0]),
            "Low": np.minimum(open_, close) * np.exp(-wick[1]),
            "Close": close,
            "Volume": rng.lognormal(13.0, 0.3, n),
        },
        index=pd.bdate_range("1990-01-01", periods=n),
    )


def autocorrelated_returns(n: int, rng: np.random.Generator, phi: float = 0.3, sigma: float = 0.01) -> np.ndarray:
    """AR(1) daily log returns: tomorrow tends to continue today's move."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi**2), n)
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    return r


def vol_regime_returns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Alternating volatility regimes of 40-120 days: calm days (0.8 %/day) continue the last
    move (autocorrelation +0.6), turbulent days (1.2 %/day) reverse it (-0.4). The expected gain
    of plain momentum and of plain reversal is zero (0.6 x 0.8 % = 0.4 x 1.2 %): only a policy
    that reads the last return *and* the volatility together earns the edge. (Alternating rather
    than Markov regimes keep both kinds in every window, so neither one-feature rule wins a
    window by the luck of its regime mix.) Returns the log returns and each day's regime
    (0 calm, 1 turbulent)."""
    sig = (0.008, 0.012)
    phi = (0.6, -0.4)
    r = np.zeros(n)
    regime = np.zeros(n, dtype=np.int64)
    state, left, prev_sig = 0, int(rng.integers(40, 121)), sig[0]
    for t in range(1, n):
        left -= 1
        if left == 0:
            state, left = 1 - state, int(rng.integers(40, 121))
        s, p = sig[state], phi[state]
        r[t] = p * r[t - 1] * s / prev_sig + rng.normal(0.0, s) * np.sqrt(1 - p * p)
        regime[t] = state
        prev_sig = s
    return r, regime


def random_walk_returns(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0002, 0.01, n)


def split(frame: pd.DataFrame, train_years: int) -> tuple[FeatureSet, FeatureSet]:
    """Features of the first ``train_years`` after the warm-up (training) and of the rest
    (judging, scaled with the training window's scaler)."""
    d = frame.index
    train_end = WARMUP + YEAR * train_years - 1
    tr = build_features(frame, 21, start=d[WARMUP], end=d[train_end])
    te = build_features(frame, 21, scaler=tr.scaler, start=d[train_end + 1], end=d[-1])
    return tr, te


# ---------------------------------------------------------------------------- evaluation
def sharpe(x: np.ndarray) -> float:
    sd = float(np.std(x))
    return 0.0 if sd == 0.0 else float(np.mean(x) / sd * np.sqrt(YEAR))


def simple_returns(fs: FeatureSet) -> np.ndarray:
    return fs.closes[1:] / fs.closes[:-1] - 1.0


def momentum_sign(fs: FeatureSet) -> np.ndarray:
    """sign of each day's own log return (0 on the first day): the position momentum would take."""
    return np.sign(np.r_[0.0, np.diff(np.log(fs.closes))])


@dataclass(frozen=True)
class Criterion:
    """One assertion of a learning test: ``value`` must be above (or below) ``threshold``."""

    name: str
    value: float
    threshold: float
    above: bool = True

    @property
    def ok(self) -> bool:
        return self.value > self.threshold if self.above else self.value < self.threshold

    @property
    def margin(self) -> float:
        """How far inside the bound the value is (negative: the test fails)."""
        return self.value - self.threshold if self.above else self.threshold - self.value

    def __str__(self) -> str:
        op = ">" if self.above else "<"
        return f"{self.name} {self.value:.2f} {op} {self.threshold:.2f}: {'ok' if self.ok else 'FAILS'}"


@dataclass
class Problem:
    """A planted market split into a training and a judging window, the timesteps and seeds
    its test trains with, its baselines and its criteria."""

    key: str
    title: str
    train: FeatureSet
    test: FeatureSet
    timesteps: int
    seeds: tuple[int, ...]
    baselines: dict[str, float]
    judge: Callable[[Problem, list[dict]], list[Criterion]]
    extra: dict[str, Any] = field(default_factory=dict)

    def criteria(self, rows: list[dict]) -> list[Criterion]:
        return self.judge(self, rows)

    def report(self, rows: list[dict]) -> str:
        parts = [f"seed {r['seed']}: in {r['in']:.2f} out {r['out']:.2f}" for r in rows]
        base = ", ".join(f"{k} {v:.2f}" for k, v in self.baselines.items())
        return f"{self.title}: {'; '.join(parts)}; mean out {np.mean([r['out'] for r in rows]):.2f} ({base})"


def train_eval(problem: Problem, seed: int, *, algo: str = "ppo", hyperparams: dict[str, Any] | None = None,
               timesteps: int | None = None) -> dict:
    """Train on the problem's training window, judge in and out of sample. Only ``seed`` (and
    what the caller overrides) departs from trainkit's defaults. ``cpu_s`` / ``wall_s`` time
    the whole :func:`trainkit.agents.train` call (model construction + ``learn()``)."""
    from trainkit.agents import run_policy, train
    from trainkit.config import TrainConfig

    cfg = TrainConfig.create("EDGE", "2015-01-01", "2019-12-31", data_source="synthetic",
                             timesteps=timesteps or problem.timesteps, seed=seed, cost_bps=COST_BPS, algo=algo,
                             hyperparams=hyperparams or {})
    cpu, wall = time.process_time(), time.perf_counter()
    model = train(cfg, problem.train, progress=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ins = run_policy(model, problem.train, cost_bps=COST_BPS, allow_short=True)
    out = run_policy(model, problem.test, cost_bps=COST_BPS, allow_short=True)
    return {
        "seed": seed,
        "in": sharpe(ins["net_returns"]),
        "out": sharpe(out["net_returns"]),
        "out_gross": sharpe(out["gross_returns"]),
        "positions": out["positions"],
        "timesteps": cfg.timesteps,
        "cpu_s": cpu,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------- the problems
def _judge_autocorrelated(p: Problem, rows: list[dict]) -> list[Criterion]:
    outs = [r["out"] for r in rows]
    bh = p.baselines["buy_and_hold"]
    return [
        Criterion("worst seed out", min(outs), max(1.0, bh + 0.5)),
        Criterion("mean out", float(np.mean(outs)), max(1.5, bh + 1.0)),
    ]


@functools.cache
def autocorrelated() -> Problem:
    """A planted AR(1) autocorrelation (phi 0.3): 6 years to learn, 5 to judge."""
    rng = np.random.default_rng(101)
    frame = frame_from_returns(autocorrelated_returns(WARMUP + YEAR * 11, rng), rng)
    tr, te = split(frame, train_years=6)
    return Problem("autocorr", "autocorrelated", tr, te, 100_000, SEEDS,
                   {"buy_and_hold": sharpe(simple_returns(te)), "flat": 0.0}, _judge_autocorrelated)


def regime_follow(p: Problem, row: dict) -> tuple[float, float]:
    """How much the policy follows the last move on calm and on turbulent days of the judging
    window (+1: always takes the last move's side, -1: always fades it)."""
    follow = momentum_sign(p.test)
    calm = p.extra["calm"]
    agree = row["positions"] * follow
    return float(agree[calm].mean()), float(agree[~calm].mean())


def _judge_vol_regime(p: Problem, rows: list[dict]) -> list[Criterion]:
    outs = [r["out"] for r in rows]
    best = max(p.baselines.values())
    spread = min(c - w for c, w in (regime_follow(p, r) for r in rows))
    return [
        Criterion("worst seed out", min(outs), max(1.0, best + 0.3)),
        Criterion("mean out", float(np.mean(outs)), max(1.5, best + 0.8)),
        # learned for the right reason: follows the last move in calm regimes, fades it in turbulent ones
        Criterion("worst seed calm-minus-turbulent following", spread, 0.25),
    ]


@functools.cache
def vol_regime() -> Problem:
    """An edge that flips sign with the volatility regime (two features at once): 10 years to
    learn, 8 to judge. Baselines are the one-feature rules after the same costs."""
    rng = np.random.default_rng(202)
    returns, regime = vol_regime_returns(WARMUP + YEAR * 18, rng)
    frame = frame_from_returns(returns, rng)
    tr, te = split(frame, train_years=10)
    rets = simple_returns(te)
    follow = momentum_sign(te)  # the position plain momentum takes (reversal: its negative)
    flips = np.abs(np.diff(np.r_[0.0, follow[:-1]]))
    cost = COST_BPS / 1e4 * flips
    baselines = {
        "buy_and_hold": sharpe(rets),
        "momentum": sharpe(follow[:-1] * rets - cost),
        "reversal": sharpe(-follow[:-1] * rets - cost),
        "flat": 0.0,
    }
    calm = regime[len(regime) - len(te):] == 0
    return Problem("regime", "vol-regime flip", tr, te, 200_000, SEEDS, baselines, _judge_vol_regime,
                   {"calm": calm})


def _judge_random_walk(p: Problem, rows: list[dict]) -> list[Criterion]:
    return [
        Criterion("best seed out", max(r["out"] for r in rows), 1.0, above=False),  # ~3 standard errors
        Criterion("mean gross out", float(np.mean([r["out_gross"] for r in rows])), 0.5, above=False),
        # in-sample fits noise (expected and fine); out of sample it does not carry over
        Criterion("mean in minus mean out", float(np.mean([r["in"] for r in rows]) - np.mean([r["out"] for r in rows])), 0.0),
    ]


def _random_walk_frame() -> pd.DataFrame:
    rng = np.random.default_rng(303)
    return frame_from_returns(random_walk_returns(WARMUP + YEAR * 16, rng), rng)


@functools.cache
def random_walk() -> Problem:
    """A random walk: 6 years to learn, 10 to judge (std error of a Sharpe ~0.32). Nothing to
    learn, so nothing may show out of sample."""
    tr, te = split(_random_walk_frame(), train_years=6)
    return Problem("walk", "random walk", tr, te, 100_000, SEEDS,
                   {"buy_and_hold": sharpe(simple_returns(te))}, _judge_random_walk)


def _leak(fs: FeatureSet) -> FeatureSet:
    m = fs.matrix.copy()
    nxt = np.r_[np.diff(np.log(fs.closes)), 0.0]
    m[:, 0] = (nxt / 0.01).astype(np.float32)  # column 0 (logret_1) := tomorrow's return
    return type(fs)(matrix=m, closes=fs.closes, dates=fs.dates, names=fs.names, scaler=fs.scaler)


@functools.cache
def leaky_random_walk() -> Problem:
    """The positive control: the same random walk, but today's row carries tomorrow's return.
    The harness must see an enormous out-of-sample Sharpe, or the random-walk problem could not
    detect look-ahead."""
    tr, te = split(_random_walk_frame(), train_years=6)
    return Problem("leak", "leaky control", _leak(tr), _leak(te), 100_000, (0,), {},
                   lambda p, rows: [Criterion("out", rows[0]["out"], 5.0)])


def _judge_weak_autocorrelated(p: Problem, rows: list[dict]) -> list[Criterion]:
    outs = [r["out"] for r in rows]
    bh = p.baselines["buy_and_hold"]
    return [
        Criterion("worst seed out", min(outs), max(0.0, bh)),  # every seed beats flat and buy-and-hold
        Criterion("mean out", float(np.mean(outs)), max(0.5, bh + 0.3)),
    ]


@functools.cache
def autocorrelated_weak() -> Problem:
    """The planted autocorrelation judged by a lower bar, for ``dqn``: it learns the edge out of
    sample, but about a third as well as ppo and a2c and unevenly across seeds (it memorises
    the training days: in-sample Sharpe 4-6). Over seeds 0-5 its out-of-sample Sharpe was
    0.28-1.85, mean 1.0; on the random walk it stays below -0.3."""
    return dataclasses.replace(autocorrelated(), key="autocorr-weak", title="autocorrelated (lower bar)",
                               judge=_judge_weak_autocorrelated)


#: every problem of tests/test_learning.py, in its order
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "autocorr": autocorrelated,
    "regime": vol_regime,
    "walk": random_walk,
    "leak": leaky_random_walk,
}
