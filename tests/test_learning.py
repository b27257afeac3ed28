"""Learning, not just running: planted edges are learned out of sample at the default settings,
and a random walk yields nothing (the look-ahead guard, with a positive control showing that a
leak would be caught).

Every scenario generates its own OHLCV frame with numpy (an edge we plant), builds the default
21 features with :func:`trainkit.features.build_features`, trains at the *default*
hyperparameters (only ``timesteps`` and ``seed`` are chosen here) on the first years, and judges
the deterministic policy (:func:`trainkit.agents.run_policy`, 5 bps costs) on the later years,
scaled with the training window's scaler. Sharpe ratios are annualised, net of costs.

Budget: about a minute on 2 idle cores (≤ 4 minutes loaded). The figures are printed
(``pytest -s``) and appear in assertion messages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainkit.agents import run_policy, train
from trainkit.config import TrainConfig
from trainkit.features import build_features

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
WARMUP = 300  # rows before the training window (the features need 199)
YEAR = 252
COST_BPS = 5.0


# ---------------------------------------------------------------------------- planted markets
def _frame(log_returns: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
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


def _autocorrelated(n: int, rng: np.random.Generator, phi: float = 0.3, sigma: float = 0.01) -> np.ndarray:
    """AR(1) daily log returns: tomorrow tends to continue today's move."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi**2), n)
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    return r


def _vol_regimes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def _random_walk(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0002, 0.01, n)


def _split(frame: pd.DataFrame, train_years: int):
    d = frame.index
    train_end = WARMUP + YEAR * train_years - 1
    tr = build_features(frame, 21, start=d[WARMUP], end=d[train_end])
    te = build_features(frame, 21, scaler=tr.scaler, start=d[train_end + 1], end=d[-1])
    return tr, te


# ---------------------------------------------------------------------------- evaluation
def _sharpe(x: np.ndarray) -> float:
    sd = float(np.std(x))
    return 0.0 if sd == 0.0 else float(np.mean(x) / sd * np.sqrt(YEAR))


def _simple_returns(fs) -> np.ndarray:
    return fs.closes[1:] / fs.closes[:-1] - 1.0


def _momentum_sign(fs) -> np.ndarray:
    """sign of each day's own log return (0 on the first day): the position momentum would take."""
    return np.sign(np.r_[0.0, np.diff(np.log(fs.closes))])


def _train_eval(tr, te, seed: int, timesteps: int) -> dict:
    cfg = TrainConfig.create("EDGE", "2015-01-01", "2019-12-31", data_source="synthetic", timesteps=timesteps,
                             seed=seed, cost_bps=COST_BPS)
    model = train(cfg, tr, progress=False)
    ins = run_policy(model, tr, cost_bps=COST_BPS, allow_short=True)
    out = run_policy(model, te, cost_bps=COST_BPS, allow_short=True)
    return {
        "seed": seed,
        "in": _sharpe(ins["net_returns"]),
        "out": _sharpe(out["net_returns"]),
        "out_gross": _sharpe(out["gross_returns"]),
        "positions": out["positions"],
    }


def _report(name: str, rows: list[dict], **baselines: float) -> str:
    parts = [f"seed {r['seed']}: in {r['in']:.2f} out {r['out']:.2f}" for r in rows]
    base = ", ".join(f"{k} {v:.2f}" for k, v in baselines.items())
    text = f"{name}: {'; '.join(parts)}; mean out {np.mean([r['out'] for r in rows]):.2f} ({base})"
    print(text)
    return text


# ---------------------------------------------------------------------------- the tests
def test_autocorrelated_returns_are_learned_out_of_sample() -> None:
    rng = np.random.default_rng(101)
    frame = _frame(_autocorrelated(WARMUP + YEAR * 11, rng), rng)
    tr, te = _split(frame, train_years=6)  # 6 years to learn, 5 to judge
    rows = [_train_eval(tr, te, s, 100_000) for s in SEEDS]
    bh = _sharpe(_simple_returns(te))
    msg = _report("autocorrelated", rows, buy_and_hold=bh, flat=0.0)
    outs = [r["out"] for r in rows]
    assert all(o > max(1.0, bh + 0.5) for o in outs), msg
    assert np.mean(outs) > max(1.5, bh + 1.0), msg


def test_an_edge_needing_two_features_is_learned_out_of_sample() -> None:
    rng = np.random.default_rng(202)
    returns, regime = _vol_regimes(WARMUP + YEAR * 18, rng)
    frame = _frame(returns, rng)
    tr, te = _split(frame, train_years=10)  # 10 years to learn, 8 to judge
    rows = [_train_eval(tr, te, s, 200_000) for s in SEEDS]

    rets = _simple_returns(te)
    follow = _momentum_sign(te)  # the position plain momentum takes (reversal: its negative)
    flips = np.abs(np.diff(np.r_[0.0, follow[:-1]]))
    cost = COST_BPS / 1e4 * flips
    baselines = {
        "buy_and_hold": _sharpe(rets),
        "momentum": _sharpe(follow[:-1] * rets - cost),  # one-feature rules, after the same costs
        "reversal": _sharpe(-follow[:-1] * rets - cost),
        "flat": 0.0,
    }
    best = max(baselines.values())
    msg = _report("vol-regime flip", rows, **baselines)
    outs = [r["out"] for r in rows]
    assert all(o > max(1.0, best + 0.3) for o in outs), msg
    assert np.mean(outs) > max(1.5, best + 0.8), msg

    # and it is learned for the right reason: the policy follows the last move in calm regimes
    # and fades it in turbulent ones
    calm = regime[len(regime) - len(te):] == 0
    for r in rows:
        agree = r["positions"] * follow
        calm_follow, wild_follow = float(agree[calm].mean()), float(agree[~calm].mean())
        assert calm_follow - wild_follow > 0.25, f"{msg}; seed {r['seed']}: calm {calm_follow:.2f} wild {wild_follow:.2f}"
        print(f"  seed {r['seed']}: follows the last move {calm_follow:+.2f} on calm days, {wild_follow:+.2f} on turbulent ones")


def test_a_random_walk_shows_no_out_of_sample_edge() -> None:
    rng = np.random.default_rng(303)
    frame = _frame(_random_walk(WARMUP + YEAR * 16, rng), rng)
    tr, te = _split(frame, train_years=6)  # 6 years to learn, 10 to judge (std error of a Sharpe ~0.32)
    rows = [_train_eval(tr, te, s, 100_000) for s in SEEDS]
    msg = _report("random walk", rows, buy_and_hold=_sharpe(_simple_returns(te)))
    assert all(r["out"] < 1.0 for r in rows), msg  # ~3 standard errors
    assert np.mean([r["out_gross"] for r in rows]) < 0.5, msg
    # in-sample fits noise (expected and fine); out of sample it does not carry over
    assert np.mean([r["in"] for r in rows]) > np.mean([r["out"] for r in rows]), msg


def test_positive_control_a_leak_of_tomorrow_would_be_caught() -> None:
    """The same random walk, but today's row carries tomorrow's return: the harness above must
    see an enormous out-of-sample Sharpe, or the random-walk test could not detect look-ahead."""
    rng = np.random.default_rng(303)
    frame = _frame(_random_walk(WARMUP + YEAR * 16, rng), rng)
    tr, te = _split(frame, train_years=6)

    def leak(fs):
        m = fs.matrix.copy()
        nxt = np.r_[np.diff(np.log(fs.closes)), 0.0]
        m[:, 0] = (nxt / 0.01).astype(np.float32)  # column 0 (logret_1) := tomorrow's return
        return type(fs)(matrix=m, closes=fs.closes, dates=fs.dates, names=fs.names, scaler=fs.scaler)

    row = _train_eval(leak(tr), leak(te), 0, 100_000)
    _report("leaky control", [row])
    assert row["out"] > 5.0, row
