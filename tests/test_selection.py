"""trainkit.selection: the deflated Sharpe ratio and the probability of backtest overfitting.

Pure numpy/scipy, no MLflow and no training: about a second. Every random number comes from a
seeded ``numpy.random.default_rng``. Where a number comes from a paper the test says which.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from trainkit.errors import ConfigError
from trainkit.selection import (
    EULER_GAMMA,
    MIN_CANDIDATES_PBO,
    daily_returns_from_equity,
    deflated_sharpe,
    expected_max_sharpe,
    null_sharpe_variance,
    pbo_cscv,
    probabilistic_sharpe,
    psr_of_returns,
    sharpe_columns,
    sharpe_per_period,
)


# ============================================================================ the papers' numbers
def test_dsr_paper_numerical_example() -> None:
    """Bailey & López de Prado, "The Deflated Sharpe Ratio" (JPM 2014), numerical example: a
    strategist runs N = 100 independent trials; the variance of their annualised Sharpe ratios
    is V = 1/2; the best has an annualised SR of 2.5 over T = 1250 daily returns (five years of
    250 days) with skewness -3 and kurtosis 10. In daily units the paper finds the expected
    maximum SR0 ≈ 0.1132 and DSR ≈ 0.9004: not significant at 95% despite SR 2.5.

    (The search tool did not return the paper's text; the inputs are the example as we know it,
    and our formulas reproduce both of its printed results to four decimals, which an error in
    the inputs would not.)"""
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert sr0 * math.sqrt(250) == pytest.approx(1.7894, abs=5e-4)  # the same, annualised
    dsr = probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_psr_formula_and_a_reference_implementation() -> None:
    """PSR (Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier", 2012) for
    normal returns reduces to Phi((sr - sr0) sqrt(T - 1) / sqrt(1 + sr²/2)); cross-checked with
    mlfinlab's test value PSR(sr=1.14, sr0=1, T=250, skew 0, kurtosis 3) = 0.95727 (a reference
    implementation's number, not a paper's)."""
    assert probabilistic_sharpe(1.14, 1.0, 250, 0.0, 3.0) == pytest.approx(0.95727, abs=1e-4)
    z = 0.05 * math.sqrt(499) / math.sqrt(1 + 0.1**2 / 2)
    assert probabilistic_sharpe(0.1, 0.05, 500, 0.0, 3.0) == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    # negative skew and fat tails make the same Sharpe less convincing
    assert probabilistic_sharpe(0.1, 0.0, 500, -2.0, 12.0) < probabilistic_sharpe(0.1, 0.0, 500, 0.0, 3.0)
    assert probabilistic_sharpe(0.1, 0.1, 500, 0.0, 3.0) == 0.5


def test_null_sharpe_variance_is_the_psr_denominator() -> None:
    v = null_sharpe_variance(0.1, 1001, -1.0, 6.0)
    assert v == pytest.approx((1 + 0.1 + 5 / 4 * 0.01) / 1000)
    # PSR is Phi((sr - sr0) / sqrt(v)) with exactly this v
    assert probabilistic_sharpe(0.1, 0.02, 1001, -1.0, 6.0) == pytest.approx(stats.norm.cdf(0.08 / math.sqrt(v)))


# ============================================================================ expected maximum
@pytest.mark.parametrize("n_trials", [10, 100])
def test_expected_max_sharpe_matches_monte_carlo(n_trials: int) -> None:
    """The extreme-value approximation against E[max of N standard normals] * sqrt(V) by
    simulation (the check López de Prado's own script makes): within 3% (it is 2.3% high at
    N = 10, 0.9% at N = 100; the Monte-Carlo error is about 0.3%)."""
    rng = np.random.default_rng(2014)
    variance = 0.5 / 252
    mc = rng.standard_normal((20_000, n_trials)).max(axis=1).mean() * math.sqrt(variance)
    assert expected_max_sharpe(n_trials, variance) == pytest.approx(mc, rel=0.03)


def test_expected_max_sharpe_edges() -> None:
    assert expected_max_sharpe(1, 0.3) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0
    assert EULER_GAMMA == pytest.approx(0.5772156649015329)
    assert expected_max_sharpe(1000, 1.0) > expected_max_sharpe(100, 1.0) > expected_max_sharpe(2, 1.0) > 0


# ============================================================================ Sharpe and PSR of series
def test_sharpe_per_period_is_daily_and_flat_is_zero() -> None:
    r = np.array([0.01, -0.005, 0.02, 0.0, 0.003])
    assert sharpe_per_period(r) == pytest.approx(r.mean() / r.std(ddof=1))
    assert sharpe_per_period(np.full(1000, 0.1)) == 0.0  # np.std would say 1e-17, not 0
    assert sharpe_per_period(np.zeros(10)) == 0.0
    cols = sharpe_columns(np.column_stack([r, 2 * r, np.full(5, 0.3)]))
    assert cols == pytest.approx([sharpe_per_period(r), sharpe_per_period(r), 0.0])


def test_daily_returns_from_equity() -> None:
    out = daily_returns_from_equity([100.0, 110.0, 99.0, 99.0])
    assert out == pytest.approx([0.1, -0.1, 0.0])
    with pytest.raises(ConfigError, match="equity reaches 0"):
        daily_returns_from_equity([1.0, 0.0, 1.0])


def test_psr_of_returns_uses_the_series_moments() -> None:
    rng = np.random.default_rng(3)
    r = rng.standard_t(5, size=800) * 0.01 + 0.0005
    expected = probabilistic_sharpe(
        r.mean() / r.std(ddof=1), 0.01, r.size, stats.skew(r), stats.kurtosis(r, fisher=False)
    )
    assert psr_of_returns(r, sr0=0.01) == pytest.approx(expected, rel=1e-12)


def test_psr_of_a_long_series_with_a_true_edge_is_near_one() -> None:
    """Ten years of daily returns with a true daily Sharpe of 0.1 (1.6 annualised): the
    estimate is about 5 standard errors above 0."""
    rng = np.random.default_rng(11)
    r = rng.normal(0.001, 0.01, size=2520)
    assert psr_of_returns(r) > 0.999
    assert psr_of_returns(-r) < 0.001


# ============================================================================ deflated Sharpe
def _lucky_noise(n_obs: int = 750, psr_above: float = 0.97) -> np.ndarray:
    """The first of many seeded pure-noise series (true Sharpe 0) whose plain PSR against 0
    exceeds ``psr_above``: what selection among noise hands you."""
    for seed in range(10_000):
        r = np.random.default_rng(seed).normal(0.0, 0.01, size=n_obs)
        if psr_of_returns(r) > psr_above:
            return r
    raise AssertionError("no lucky series")  # pragma: no cover


def test_variance_floor_keeps_converged_noise_trials_insignificant() -> None:
    """20 trials that converged to one behaviour: the same lucky noise series plus tiny
    perturbations. Their Sharpes barely differ, so the sample variance alone would put SR0 near
    0 and the best would look significant (DSR > 0.95); the floor (the best Sharpe's own null
    variance) keeps it below 0.95. The floor, and nothing else, makes the difference."""
    base = _lucky_noise()
    rng = np.random.default_rng(20)
    trials = [base + rng.normal(0.0, 1e-4, size=base.size) for _ in range(20)]
    sharpes = [sharpe_per_period(t) for t in trials]
    best = trials[int(np.argmax(sharpes))]

    result = deflated_sharpe(best, sharpes, n_trials=20)
    assert result.variance_floor_used
    assert result.variance == pytest.approx(null_sharpe_variance(result.sr, result.n_obs, result.skew, result.kurtosis))
    assert result.trial_variance < result.variance / 100
    assert result.value < 0.95

    sr0_without_floor = expected_max_sharpe(20, float(np.var(sharpes, ddof=1)))
    without_floor = probabilistic_sharpe(result.sr, sr0_without_floor, result.n_obs, result.skew, result.kurtosis)
    assert without_floor > 0.95


def test_dispersed_trials_use_their_own_variance() -> None:
    rng = np.random.default_rng(5)
    best = rng.normal(0.001, 0.01, size=1000)
    sharpes = [-0.12, -0.05, 0.0, 0.04, 0.09, sharpe_per_period(best)]
    result = deflated_sharpe(best, sharpes, n_trials=40)  # N from the store; sharpes a subset
    assert not result.variance_floor_used
    assert result.variance == pytest.approx(np.var(sharpes, ddof=1))
    assert result.sr0 == pytest.approx(expected_max_sharpe(40, result.variance))
    assert result.annualized_sharpe == pytest.approx(result.sr * math.sqrt(252))
    assert set(result.to_dict()) >= {"value", "sr", "sr0", "n_trials", "n_obs", "variance", "variance_floor_used"}


def test_one_trial_is_psr_against_zero() -> None:
    rng = np.random.default_rng(8)
    r = rng.normal(0.0004, 0.01, size=500)
    result = deflated_sharpe(r, [sharpe_per_period(r)], n_trials=1)
    assert result.sr0 == 0.0
    assert result.value == pytest.approx(psr_of_returns(r, 0.0), rel=1e-12)


def test_more_trials_deflate_more() -> None:
    rng = np.random.default_rng(9)
    r = rng.normal(0.0008, 0.01, size=1000)
    sharpes = list(rng.normal(0.0, 0.04, size=30))
    values = [deflated_sharpe(r, sharpes, n).value for n in (1, 10, 100, 1000)]
    assert values == sorted(values, reverse=True)


# ============================================================================ PBO by CSCV
def test_pbo_of_pure_noise_is_about_one_half() -> None:
    """M = 10 noise candidates on 1260 days, S = 16 (12870 splits): selection is a coin flip.
    A single data set's PBO scatters widely (0.23..0.79 over these seeds), so the mean of ten
    seeded data sets is what is held to 0.35..0.65."""
    values = []
    for seed in range(10):
        x = np.random.default_rng(seed).normal(0.0, 0.01, size=(1260, 10))
        result = pbo_cscv(x)
        assert result.n_splits == result.total_splits == math.comb(16, 8)
        values.append(result.value)
    assert 0.35 < np.mean(values) < 0.65


def test_pbo_with_a_planted_winner_is_near_zero() -> None:
    """One of ten candidates has a real drift (daily Sharpe 0.15, about 2.4 annualised): the
    in-sample winner is nearly always it, and it stays on top out of sample."""
    for seed in (100, 101, 102):
        x = np.random.default_rng(seed).normal(0.0, 0.01, size=(1260, 10))
        x[:, 7] += 0.0015
        assert pbo_cscv(x).value < 0.1


def test_pbo_fast_sharpe_path_equals_the_generic_metric_path() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 0.01, size=(400, 6))
    x[:, 2] = 0.0  # a flat agent
    x[:, 3] = 0.001  # a constant non-zero one
    fast = pbo_cscv(x, n_blocks=8)
    slow = pbo_cscv(x, n_blocks=8, metric=lambda rows: sharpe_columns(rows))
    assert fast.logits == pytest.approx(slow.logits, abs=1e-12)
    assert fast.value == slow.value


def test_pbo_ties_share_the_median_rank() -> None:
    """Identical candidates tie in and out of sample: the winner's average rank is (M + 1) / 2,
    so λ = 0 exactly, which counts as overfit (no evidence the selection helps)."""
    col = np.random.default_rng(6).normal(0.0, 0.01, size=200)
    result = pbo_cscv(np.column_stack([col] * 5), n_blocks=4)
    assert set(result.logits) == {0.0}
    assert result.value == 1.0


def test_pbo_sampled_splits_are_seeded_and_trailing_rows_dropped() -> None:
    x = np.random.default_rng(12).normal(0.0, 0.01, size=(1001, 5))
    a = pbo_cscv(x, n_blocks=10, max_splits=50, seed=1)
    b = pbo_cscv(x, n_blocks=10, max_splits=50, seed=1)
    c = pbo_cscv(x, n_blocks=10, max_splits=50, seed=2)
    assert a == b and a.logits != c.logits
    assert (a.n_splits, a.total_splits, a.rows_per_block) == (50, math.comb(10, 5), 100)
    sparse = pbo_cscv(np.random.default_rng(13).normal(size=(120, 4)), n_blocks=40, max_splits=30)
    assert sparse.n_splits == 30 and sparse.total_splits == math.comb(40, 20)
    summary = a.to_dict()
    assert "logits" not in summary and {"value", "logit_q50", "n_splits"} <= set(summary)
    assert len(a.to_dict(include_logits=True)["logits"]) == 50


# ============================================================================ bad input
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sharpe_per_period([0.01]), "at least 2"),
        (lambda: psr_of_returns([0.01]), "at least 2"),
        (lambda: psr_of_returns([0.01, float("nan"), 0.02]), "NaN"),
        (lambda: probabilistic_sharpe(0.1, 0.0, 1, 0.0, 3.0), "at least 2"),
        (lambda: probabilistic_sharpe(0.1, 0.0, 100, 2.0, 3.0), "skew\\*\\*2 \\+ 1"),
        (lambda: expected_max_sharpe(0, 1.0), "n_trials"),
        (lambda: expected_max_sharpe(10, -1.0), "variance"),
        (lambda: deflated_sharpe([0.01, 0.02, 0.0], [0.1], n_trials=0), "n_trials"),
        (lambda: deflated_sharpe([0.01], [0.1], n_trials=3), "at least 2"),
        (lambda: pbo_cscv(np.zeros((100, MIN_CANDIDATES_PBO - 1))), "at least 4 candidates"),
        (lambda: pbo_cscv(np.zeros((100, 5)), n_blocks=7), "even"),
        (lambda: pbo_cscv(np.zeros((100, 5)), n_blocks=0), "even"),
        (lambda: pbo_cscv(np.zeros((31, 5)), n_blocks=16), "at least 32 rows"),
        (lambda: pbo_cscv(np.zeros(100)), "2-D"),
        (lambda: pbo_cscv(np.zeros((200, 5)), n_blocks=40), "max_splits"),
    ],
)
def test_bad_input_is_a_one_line_config_error(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


# ----------------------------------------------------------------------------- what is counted
def _wf_params(**over: str) -> dict[str, str]:
    """The params of a walk-forward parent run (WalkForwardPlan.params), as MLflow stores them."""
    base = {"symbol": "AAPL", "start": "2015-01-01", "end": "2019-12-31", "anchor": "2015-01-01",
            "train_window": "2y", "test_window": "1y", "step": "1y", "mode": "sliding", "embargo": "0d",
            "seeds": "0", "n_folds": "3", "feature_count": "21", "data_source": "synthetic", "data_seed": "0",
            "algo": "ppo", "timesteps": "20000", "cost_bps": "5.0", "allow_short": "True", "episode_length": "252",
            "hp.learning_rate": "0.0003", "schema_version": "1"}
    return {**base, **over}


def test_a_config_is_every_train_option_and_the_seeds_but_not_the_window() -> None:
    from trainkit.walkforward.evidence import config_key

    same = config_key(_wf_params())
    assert config_key(_wf_params(end="2021-12-31", n_folds="5", anchor="2015-01-05")) == same
    for other in ({"hp.learning_rate": "0.001"}, {"seeds": "1"}, {"seeds": "0,1"}, {"timesteps": "8000"},
                  {"cost_bps": "10.0"}):
        assert config_key(_wf_params(**other)) != same, other


def test_a_window_is_the_symbol_the_data_and_the_days_not_the_config() -> None:
    from trainkit.walkforward.evidence import window_key

    same = window_key(_wf_params(), "synthetic")
    assert window_key(_wf_params(**{"hp.learning_rate": "0.001", "seeds": "1", "timesteps": "8000"}),
                      "synthetic") == same
    for other in ({"symbol": "MSFT"}, {"end": "2020-12-31"}, {"start": "2015-02-01"}, {"train_window": "3y"},
                  {"test_window": "6m"}, {"step": "6m"}, {"mode": "expanding"}, {"embargo": "5d"},
                  {"data_seed": "1"}, {"data_source": "yfinance"}, {"csv_sha256": "ab" * 32}):
        assert window_key(_wf_params(**other), "synthetic") != same, other
    assert window_key(_wf_params(), "yfinance") != same  # prices that fell back are other data
