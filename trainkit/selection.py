"""Honest selection: is the best of many trained agents better than luck?

Training many agents (seeds, hyperparameters, a search) and keeping the best one inflates its
backtest Sharpe ratio: the maximum of many noisy estimates is not zero-mean even when every
agent is worthless. Two corrections from the literature, both pure numpy/scipy:

* **Deflated Sharpe ratio** (Bailey & López de Prado, "The Deflated Sharpe Ratio: Correcting for
  Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5), 2014):
  the probabilistic Sharpe ratio (PSR; Bailey & López de Prado, "The Sharpe Ratio Efficient
  Frontier", Journal of Risk, 2012) of the chosen agent, measured against the Sharpe ratio that
  the best of ``N`` skill-less trials is *expected* to reach (:func:`expected_max_sharpe`).
* **Probability of backtest overfitting** (Bailey, Borwein, López de Prado & Zhu, "The
  Probability of Backtest Overfitting", Journal of Computational Finance; SSRN 2015):
  combinatorially symmetric cross-validation (CSCV) over the candidates' daily returns; how
  often does the in-sample winner land in the bottom half out of sample (:func:`pbo_cscv`)?

Conventions: Sharpe ratios here are **per period** (daily, not annualised; the papers' formulas
are in per-period units) with risk-free rate 0; kurtosis is **non-excess** (a normal is 3).
Bad input a user can cause (too few observations, odd block counts, too few candidates) raises
:class:`~trainkit.errors.ConfigError` with a one-line message. This module knows nothing about
MLflow: arrays in, floats and frozen dataclasses out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from trainkit.errors import ConfigError
from trainkit.metrics import TRADING_DAYS

__all__ = [
    "EULER_GAMMA", "MIN_CANDIDATES_PBO", "MIN_OBSERVATIONS", "PBO", "DeflatedSharpe",
    "daily_returns_from_equity", "deflated_sharpe", "expected_max_sharpe", "null_sharpe_variance",
    "pbo_cscv", "probabilistic_sharpe", "psr_of_returns", "sharpe_columns", "sharpe_per_period",
]

#: the Euler–Mascheroni constant γ of the expected-maximum formula (:func:`expected_max_sharpe`)
EULER_GAMMA = 0.5772156649015329
#: fewest returns a Sharpe ratio (std with ddof=1) and the PSR's sqrt(T - 1) are defined for
MIN_OBSERVATIONS = 2
#: fewest candidates CSCV can rank meaningfully (with 2 or 3 the "bottom half" is one agent)
MIN_CANDIDATES_PBO = 4
#: without max_splits, refuse block counts whose C(S, S/2) splits would take minutes or more
_MAX_FULL_SPLITS = 1_000_000
#: splits evaluated at once by :func:`pbo_cscv` (memory: about 8 * _CHUNK * S/2 * M bytes)
_CHUNK = 4096


def _series(returns: ArrayLike, what: str = "returns") -> np.ndarray:
    """``returns`` as a finite 1-D float array of at least :data:`MIN_OBSERVATIONS` values."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ConfigError(f"{what} must be one series (1-D), got shape {r.shape}")
    if r.size < MIN_OBSERVATIONS:
        raise ConfigError(f"{what} has {r.size} observations; at least {MIN_OBSERVATIONS} are needed")
    if not np.all(np.isfinite(r)):
        raise ConfigError(f"{what} contains NaN or infinite values")
    return r


def _check_n_obs(n_obs: int) -> None:
    if n_obs < MIN_OBSERVATIONS:  # the std's ddof=1 and the PSR's sqrt(n_obs - 1)
        raise ConfigError(f"n_obs is {n_obs}; at least {MIN_OBSERVATIONS} observations are needed")


def _check_n_trials(n_trials: int) -> None:
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ConfigError(f"n_trials must be a whole number >= 1, got {n_trials!r}")


def daily_returns_from_equity(equity: ArrayLike) -> np.ndarray:
    """Simple returns ``equity[t] / equity[t-1] - 1`` of an equity curve (the first day, which
    has no return, is dropped): the per-period series every function here takes."""
    e = _series(equity, "equity")
    if np.any(e[:-1] == 0):
        raise ConfigError("equity reaches 0 before its last value; its later returns are undefined")
    return e[1:] / e[:-1] - 1.0


def sharpe_columns(returns: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ratio of every column of a ``(rows, M)`` array: ``mean / std(ddof=1)``,
    0 for a constant column (an agent that stayed flat shows no risk-adjusted evidence either
    way; the same rule as :mod:`trainkit.metrics`). The default CSCV metric."""
    mean = returns.mean(axis=0)
    # std of the series shifted by its first value: the same number, but exactly 0 for a
    # constant column (np.std of 1000 copies of 0.1 is 1e-17, which would make Sharpe 1e16)
    std = (returns - returns[:1]).std(axis=0, ddof=1)
    out = np.zeros_like(mean)
    np.divide(mean, std, out=out, where=std > 0)
    return out


def sharpe_per_period(returns: ArrayLike) -> float:
    """``mean(r) / std(r, ddof=1)`` of per-period (daily) returns, **not** annualised (multiply
    by ``sqrt(252)`` for that); 0 for a constant series. This is the unit of the PSR and DSR
    formulas, whose ``sqrt(T - 1)`` counts periods."""
    r = _series(returns)
    return float(sharpe_columns(r[:, None])[0])


def null_sharpe_variance(sr: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """The variance of a Sharpe estimate ``sr`` from ``n_obs`` non-normal returns:
    ``(1 - skew*sr + (kurtosis - 1)/4 * sr**2) / (n_obs - 1)`` (Mertens 2002, as used
    by the PSR and DSR papers, with non-excess ``kurtosis``)

    Why it matters for selection: it is how far one Sharpe estimate scatters by chance alone,
    so trials cannot be *less* dispersed than this under the null (see :func:`deflated_sharpe`).
    """
    _check_n_obs(n_obs)
    return _moment_term(sr, skew, kurtosis) / (n_obs - 1)


def _moment_term(sr: float, skew: float, kurtosis: float) -> float:
    """``1 - skew*sr + (kurtosis - 1)/4 * sr**2``, never negative for a real distribution:
    Pearson's inequality ``kurtosis >= skew**2 + 1`` makes it ``>= (1 - skew*sr/2)**2``."""
    if not all(math.isfinite(x) for x in (sr, skew, kurtosis)):
        raise ConfigError("sr, skew and kurtosis must be finite numbers")
    if kurtosis < skew**2 + 1 - 1e-9:
        raise ConfigError(f"kurtosis {kurtosis:g} < skew**2 + 1: impossible moments (kurtosis is non-excess)")
    return max(1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2, 0.0)


def probabilistic_sharpe(sr: float, sr0: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """PSR: the probability that the true Sharpe ratio exceeds the benchmark ``sr0``, given an
    estimate ``sr`` from ``n_obs`` returns with that ``skew`` and non-excess ``kurtosis``:

    ``Phi((sr - sr0) * sqrt(n_obs - 1) / sqrt(1 - skew*sr + (kurtosis - 1)/4 * sr**2))``

    (Bailey & López de Prado 2012; the same in the DSR paper). ``sr`` and ``sr0`` per period.
    Why not the t-test: negative skew and fat tails widen a Sharpe estimate's error, so the same
    ``sr`` is less convincing from a strategy that sells tail risk."""
    _check_n_obs(n_obs)
    if not math.isfinite(sr0):
        raise ConfigError("sr0 must be a finite number")
    num = (sr - sr0) * math.sqrt(n_obs - 1)
    den = _moment_term(sr, skew, kurtosis)
    if den <= 0.0:  # only on Pearson's boundary (a two-point distribution): the limit of Phi
        return 0.5 if num == 0 else float(num > 0)
    return float(stats.norm.cdf(num / math.sqrt(den)))


def _moments(r: np.ndarray) -> tuple[float, float, float]:
    """``(sharpe_per_period, skew, non-excess kurtosis)`` of a validated series; a constant one
    has Sharpe 0 and, having no shape, a normal's moments (0, 3)."""
    sr = float(sharpe_columns(r[:, None])[0])
    if np.ptp(r) == 0:
        return sr, 0.0, 3.0
    return sr, float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))


def psr_of_returns(returns: ArrayLike, sr0: float = 0.0) -> float:
    """:func:`probabilistic_sharpe` of a daily return series against ``sr0`` (per period): its
    Sharpe, its length ``T``, ``scipy.stats.skew`` and ``scipy.stats.kurtosis(fisher=False)``
    (the biased sample moments; they obey Pearson's inequality, so the PSR is always defined)."""
    r = _series(returns)
    sr, skew, kurt = _moments(r)
    return probabilistic_sharpe(sr, sr0, r.size, skew, kurt)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """The Sharpe ratio the best of ``n_trials`` independent skill-less trials is expected to
    reach when their Sharpe estimates have variance ``variance`` (same units as the Sharpes):

    ``sqrt(V) * ((1 - γ) * Phi^-1(1 - 1/N) + γ * Phi^-1(1 - 1/(N e)))``

    (Bailey, Borwein, López de Prado & Zhu 2014, "Pseudo-mathematics and financial
    charlatanism", and the DSR paper; γ is Euler–Mascheroni). An extreme-value approximation of ``E[max of N standard
    normals] * sqrt(V)``; 0 for one trial (nothing was selected)."""
    _check_n_trials(n_trials)
    if not (math.isfinite(variance) and variance >= 0):
        raise ConfigError(f"variance must be a finite number >= 0, got {variance!r}")
    n = int(n_trials)
    if n == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e))
    return float(math.sqrt(variance) * z)


@dataclass(frozen=True)
class DeflatedSharpe:
    """A deflated Sharpe ratio with everything it was computed from.

    ``value`` is the DSR, a probability: above 0.95, the selected agent's Sharpe is significant
    at 5% after the selection. ``sr`` and ``sr0`` are per period; ``variance`` is the ``V`` used
    for ``sr0``, ``trial_variance`` the trials' own sample variance and ``variance_floor_used``
    whether the null variance of ``sr`` replaced it (:func:`deflated_sharpe`);
    ``annualized_sharpe`` is ``sr * sqrt(252)`` for display."""

    value: float
    sr: float
    sr0: float
    n_trials: int
    n_obs: int
    skew: float
    kurtosis: float
    variance: float
    variance_floor_used: bool
    annualized_sharpe: float
    trial_variance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deflated_sharpe(best_returns: ArrayLike, trial_sharpes: Sequence[float], n_trials: int) -> DeflatedSharpe:
    """DSR of the selected agent's daily returns ``best_returns``, chosen as the best of
    ``n_trials`` trials whose per-period Sharpe ratios ``trial_sharpes`` were observed (the best
    included; it may be a subset when ``N`` is counted elsewhere, e.g. in the store):
    ``PSR(best)`` against ``SR0 = expected_max_sharpe(N, V)`` (the DSR paper's definition).

    ``V = max(var(trial_sharpes, ddof=1), null_sharpe_variance(sr, T, skew, kurtosis))`` (the
    sample variance counts as 0 with fewer than 2 trials). The paper uses the sample variance
    alone; the floor is ours. Why: trials that converged to one behaviour (the same agent from
    different seeds) have nearly equal Sharpes, so their sample variance — and with it ``SR0`` —
    collapses towards 0, and a lucky best would look significant. But a Sharpe estimate scatters
    by at least its own null variance however alike the trials are, so ``V`` never goes below
    it. With ``N = 1`` there is no selection: the DSR is the PSR against 0.
    """
    r = _series(best_returns, "best_returns")
    _check_n_trials(n_trials)
    trials = np.asarray(trial_sharpes, dtype=float).ravel()
    if not np.all(np.isfinite(trials)):
        raise ConfigError("trial_sharpes contains NaN or infinite values")
    sr, skew, kurt = _moments(r)
    trial_var = float(np.var(trials, ddof=1)) if trials.size >= 2 else 0.0
    floor = null_sharpe_variance(sr, r.size, skew, kurt)
    variance = max(trial_var, floor)
    sr0 = expected_max_sharpe(int(n_trials), variance)
    return DeflatedSharpe(
        value=probabilistic_sharpe(sr, sr0, r.size, skew, kurt),
        sr=sr,
        sr0=sr0,
        n_trials=int(n_trials),
        n_obs=int(r.size),
        skew=skew,
        kurtosis=kurt,
        variance=variance,
        variance_floor_used=floor > trial_var,
        annualized_sharpe=sr * math.sqrt(TRADING_DAYS),
        trial_variance=trial_var,
    )


@dataclass(frozen=True)
class PBO:
    """A CSCV estimate of the probability of backtest overfitting.

    ``value`` is the share of splits in which the in-sample best candidate ranked in the bottom
    half out of sample (logit <= 0): near 0, selection picks agents that stay good; near 0.5 or
    above, it picks noise. ``logits`` holds every split's ``λ`` (for a histogram, the paper's
    figure); ``n_splits`` of the ``total_splits = C(S, S/2)`` were evaluated; each of the
    ``n_blocks`` blocks had ``rows_per_block`` days (trailing rows dropped)."""

    value: float
    n_candidates: int
    n_blocks: int
    n_splits: int
    total_splits: int
    rows_per_block: int
    logits: tuple[float, ...]

    def to_dict(self, include_logits: bool = False) -> dict[str, Any]:
        """The scalars, a summary of the logits (mean and 5/50/95% quantiles) and, on request,
        the logits themselves (thousands of numbers for 16 blocks)."""
        out = {k: v for k, v in asdict(self).items() if k != "logits"}
        lam = np.asarray(self.logits)
        out["logit_mean"] = float(lam.mean())
        for q in (5, 50, 95):
            out[f"logit_q{q:02d}"] = float(np.percentile(lam, q))
        if include_logits:
            out["logits"] = list(self.logits)
        return out


def _splits(n_blocks: int, max_splits: int | None, seed: int) -> tuple[list[tuple[int, ...]], int]:
    """The in-sample block sets to evaluate and how many exist: all ``C(S, S/2)``, or a sample
    of ``max_splits`` distinct ones drawn with ``numpy.random.default_rng(seed)``."""
    half = n_blocks // 2
    total = math.comb(n_blocks, half)
    if max_splits is not None and (isinstance(max_splits, bool) or max_splits < 1):
        raise ConfigError(f"max_splits must be >= 1, got {max_splits!r}")
    if max_splits is None or max_splits >= total:
        if total > _MAX_FULL_SPLITS:
            raise ConfigError(f"n_blocks={n_blocks} makes {total} splits; pass max_splits to sample them")
        return list(combinations(range(n_blocks), half)), total
    rng = np.random.default_rng(seed)
    if total <= 20 * max_splits:  # dense: enumerate, then sample indices without replacement
        every = list(combinations(range(n_blocks), half))
        return [every[i] for i in sorted(rng.choice(total, size=max_splits, replace=False))], total
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_splits:  # sparse: rejection-sample distinct subsets
        chosen.add(tuple(sorted(int(b) for b in rng.choice(n_blocks, size=half, replace=False))))
    return sorted(chosen), total


def _block_sharpes(blocks: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Per-period Sharpe of every candidate over each row of ``chosen`` (a set of block
    indices), from per-block sums: the same numbers as :func:`sharpe_columns` on the
    concatenated rows, without building them. Sums of squares are taken after shifting each
    column by its first value, so a constant candidate has variance exactly 0 (Sharpe 0)."""
    n = chosen.shape[1] * blocks.shape[1]
    y = blocks - blocks[:1, :1]
    s1 = blocks.sum(axis=1)[chosen].sum(axis=1)  # (splits, M): the same reduction per column,
    t1 = y.sum(axis=1)[chosen].sum(axis=1)  # so identical candidates get identical scores
    t2 = (y * y).sum(axis=1)[chosen].sum(axis=1)
    var = np.maximum(t2 - t1 * t1 / n, 0.0) / (n - 1)
    out = np.zeros_like(s1)
    np.divide(s1 / n, np.sqrt(var), out=out, where=var > 0)
    return out


def _scores(blocks: np.ndarray, chosen: np.ndarray, metric: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``metric`` of every candidate over the rows of each block set in ``chosen``."""
    if metric is sharpe_columns:
        return _block_sharpes(blocks, chosen)
    n_cand = blocks.shape[2]
    out = np.empty((chosen.shape[0], n_cand))
    for i, blocks_in in enumerate(chosen):
        score = np.asarray(metric(blocks[blocks_in].reshape(-1, n_cand)), dtype=float)
        if score.shape != (n_cand,):
            raise ConfigError(f"metric must return one score per candidate ({n_cand}), got shape {score.shape}")
        out[i] = score
    if not np.all(np.isfinite(out)):
        raise ConfigError("metric returned NaN or infinite scores")
    return out


def _logits(is_scores: np.ndarray, oos_scores: np.ndarray) -> np.ndarray:
    """Each split's ``λ = ln(ω / (1 - ω))``, ``ω`` = the out-of-sample average rank (1 = worst)
    of the in-sample best (first on a tie) over ``M + 1``."""
    rows = np.arange(is_scores.shape[0])
    winner = oos_scores[rows, np.argmax(is_scores, axis=1)][:, None]
    rank = (oos_scores < winner).sum(axis=1) + ((oos_scores == winner).sum(axis=1) + 1) / 2
    omega = rank / (is_scores.shape[1] + 1)
    return np.log(omega / (1 - omega))


def pbo_cscv(
    returns_matrix: ArrayLike,
    n_blocks: int = 16,
    max_splits: int | None = None,
    seed: int = 0,
    metric: Callable[[np.ndarray], np.ndarray] = sharpe_columns,
) -> PBO:
    """Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2015,
    section 2): ``returns_matrix`` is ``T x M``, the daily returns of ``M`` candidates on the
    same dates.

    The ``T`` rows are cut into ``S = n_blocks`` equal consecutive blocks (trailing rows that do
    not fill a block are dropped). For every choice of ``S/2`` blocks as in-sample (the rest,
    its complement, out-of-sample) — all ``C(S, S/2)`` splits, or when ``max_splits`` is smaller
    a sample of that many distinct splits drawn with ``numpy.random.default_rng(seed)`` — the
    candidate with the best in-sample ``metric`` is found (the first on a tie), its
    out-of-sample relative rank ``ω = rank / (M + 1)`` (1 = worst; ties share their average
    rank, so equal candidates sit at the middle together) and ``λ = ln(ω / (1 - ω))``. PBO is
    the share of splits with ``λ <= 0``: the in-sample winner was no better than the
    out-of-sample median (the paper's ``∫_{-∞}^0 f(λ) dλ``).

    ``metric`` maps a ``(rows, M)`` array to ``M`` scores, higher better (default: per-period
    Sharpe, :func:`sharpe_columns`, computed from per-block sums). Needs ``M >= 4``, an even
    ``S >= 2`` and ``T >= 2 S``. Blocks keep their time order, so serial correlation within a
    block survives; the paper suggests ``S = 16``.
    """
    x = np.asarray(returns_matrix, dtype=float)
    if x.ndim != 2:
        raise ConfigError(f"returns_matrix must be T x M (2-D), got shape {x.shape}")
    n_rows, n_cand = x.shape
    if n_cand < MIN_CANDIDATES_PBO:
        raise ConfigError(f"PBO needs at least {MIN_CANDIDATES_PBO} candidates, got {n_cand}")
    if isinstance(n_blocks, bool) or int(n_blocks) != n_blocks or n_blocks < 2 or n_blocks % 2:
        raise ConfigError(f"n_blocks must be an even number >= 2, got {n_blocks!r}")
    n_blocks = int(n_blocks)
    if n_rows < 2 * n_blocks:
        raise ConfigError(f"PBO with {n_blocks} blocks needs at least {2 * n_blocks} rows, got {n_rows}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("returns_matrix contains NaN or infinite values")
    rows = n_rows // n_blocks
    blocks = x[: rows * n_blocks].reshape(n_blocks, rows, n_cand)
    in_sample, total = _splits(n_blocks, max_splits, seed)
    logits = []
    for start in range(0, len(in_sample), _CHUNK):  # bounded memory for large max_splits
        chosen = np.array(in_sample[start : start + _CHUNK], dtype=np.intp)
        is_in = np.zeros((len(chosen), n_blocks), dtype=bool)
        np.put_along_axis(is_in, chosen, True, axis=1)
        others = np.nonzero(~is_in)[1].reshape(len(chosen), -1)  # each split's complement
        logits.append(_logits(_scores(blocks, chosen, metric), _scores(blocks, others, metric)))
    lam = np.concatenate(logits)
    return PBO(
        value=float(np.mean(lam <= 0)),
        n_candidates=n_cand,
        n_blocks=n_blocks,
        n_splits=int(lam.size),
        total_splits=total,
        rows_per_block=rows,
        logits=tuple(lam.tolist()),
    )
