"""Backtests by model URI: run a cached model over a test window, compare it with buy-and-hold,
and log the result as its own MLflow run that points back at the model.

A backtest needs nothing but a model URI (``runs:/<id>/model``, ``models:/m-<id>``,
``models:/<name>/<version>``, ``models:/<name>@<alias>``) and a window, because the model
brings everything else from its artifacts (``config.json`` and ``feature_spec.json``, via
:func:`trainkit.store.load_bundle`): the symbol, the data source (and synthetic ``data_seed``),
the feature count, the *training* scaler, ``cost_bps`` and ``allow_short``. Features of the test
window are built exactly as in training — fetched from :func:`~trainkit.features.warmup_start`
so every indicator is warm on the first test day, and scaled with the training statistics —
and the deterministic policy is walked through the window by
:func:`trainkit.agents.run_policy`, starting flat, paying the training costs.

The same URI and window give the same numbers on every run and in every process: the data are
fixed (a CSV, the synthetic path, or Yahoo's history), the policy is deterministic and
evaluated with one torch thread, and the metrics are plain numpy.

The metrics are :mod:`trainkit.metrics`'s (``METRIC_NAMES``; a walk-forward computes the same
ones on its stitched series), from the strategy's daily returns net of costs.

The logged run (experiment ``trainkit-backtests``) is tagged ``trainkit.model_uri`` (as given),
``trainkit.source_run_id``, ``trainkit.model_id``, ``trainkit.symbol`` and the data actually
used; its params are the window and the overrides; its artifacts are ``equity_curve.png``
(strategy vs buy-and-hold, with a drawdown panel) and ``equity.csv`` (one row per day).

Backtests are cached like models. A backtest is a pure function of (model, data digest,
window, costs), so its run is also tagged ``trainkit.backtest_key`` (:func:`backtest_key`), and
a second identical backtest reads the logged result back (metrics and ``equity.csv``, see
:mod:`trainkit.store.evaluations`) instead of creating another run. :func:`cached_backtest`
asks the same question without loading the model (a walk-forward's rerun).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trainkit.config import MIN_WINDOW_ROWS, file_sha256, parse_data_source, parse_date
from trainkit.sources import canonical_source
from trainkit.errors import ConfigError, DataError, TrainkitError
# the shared metrics (also re-exported here: ``from trainkit.backtest import compute_metrics`` keeps working)
from trainkit.metrics import COUNT_METRICS, METRIC_NAMES, TRADING_DAYS, compute_metrics, drawdowns, plot_drawdowns
from trainkit.store import contract as C  # stdlib only: no mlflow, no I/O
from trainkit.store.contract import BACKTEST_EXPERIMENT, validate_model_uri

_logger = logging.getLogger("trainkit")

__all__ = [
    "BACKTEST_EXPERIMENT", "BACKTEST_VERSION", "METRIC_NAMES", "TRADING_DAYS", "BacktestResult", "backtest_key",
    "cached_backtest", "compute_metrics", "run_backtest",
]

#: Fewest trading days a test window may have (the feature builder's minimum).
MIN_TEST_DAYS = MIN_WINDOW_ROWS

#: Part of every backtest key: bumped when the way a backtest is computed changes, so results
#: logged before stop answering (they are recomputed and logged again).
BACKTEST_VERSION = 1


@dataclass(frozen=True)
class BacktestResult:
    """One backtest: which model, which window, on which data, the metrics, the daily equity
    and the run it was logged as (``run_id`` is ``None`` when not logged).

    ``equity``: one row per trading day of the window — ``date``, ``close``, ``position`` (held
    from this close to the next; the last row's earns nothing here), ``net_return`` (the
    strategy's return earned *into* this day, net of costs; 0 on the first day),
    ``strategy_equity``, ``buy_and_hold_equity`` (both 1.0 on the first day) and ``drawdown``
    (of the strategy, ``<= 0``). ``cached``: the result was read back from the run of an
    identical earlier backtest (``run_id`` is that run) instead of being computed."""

    model_uri: str
    source_run_id: str
    symbol: str
    start: str
    end: str
    data_source: str
    data_source_effective: str
    metrics: dict[str, float]
    equity: pd.DataFrame = field(compare=False, repr=False)
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    model_id: str | None = None
    config_hash: str | None = None
    data_digest: str | None = None
    cached: bool = field(default=False, compare=False)  # read back from an identical earlier backtest's run

    @property
    def first_day(self) -> str:
        return str(pd.Timestamp(self.equity["date"].iloc[0]).date())

    @property
    def last_day(self) -> str:
        return str(pd.Timestamp(self.equity["date"].iloc[-1]).date())

    @property
    def n_days(self) -> int:
        """Trading days (closes) in the window."""
        return int(len(self.equity))

    def to_dict(self, include_equity: bool = False) -> dict[str, Any]:
        """JSON-ready summary (``json.dumps`` works on it as is); ``include_equity`` adds the
        daily rows as a list of objects."""
        d: dict[str, Any] = {
            "model_uri": self.model_uri,
            "source_run_id": self.source_run_id,
            "model_id": self.model_id,
            "config_hash": self.config_hash,
            "symbol": self.symbol,
            "start": self.start,
            "end": self.end,
            "first_day": self.first_day,
            "last_day": self.last_day,
            "n_days": self.n_days,
            "data_source": self.data_source,
            "data_source_effective": self.data_source_effective,
            "data_digest": self.data_digest,
            "metrics": {k: (v if isinstance(v, int) else float(v)) for k, v in self.metrics.items()},
            "run_id": self.run_id,
            "experiment": BACKTEST_EXPERIMENT if self.run_id else None,
            "cached": self.cached,
            "warnings": list(self.warnings),
        }
        if include_equity:
            rows = self.equity.copy()
            rows["date"] = [str(pd.Timestamp(x).date()) for x in rows["date"]]
            d["equity"] = rows.to_dict(orient="records")
        return d


# ----------------------------------------------------------------------------- validation
def _validate(model_uri: Any, start: Any, end: Any, data_source: Any) -> tuple[str, _dt.date, _dt.date, str | None]:
    """Everything that can be checked without I/O (exit code 2 on failure)."""
    uri = validate_model_uri(model_uri)
    s = parse_date(start, "start")
    e = parse_date(end, "end")
    if s >= e:
        raise ConfigError(f"the backtest start {s} must be before its end {e}")
    today = _dt.date.today()
    if e > today:
        raise ConfigError(f"the backtest end {e} is in the future: use a date up to today ({today})")
    weekdays = int(np.busday_count(s, e + _dt.timedelta(days=1)))
    if weekdays < MIN_TEST_DAYS:
        raise ConfigError(
            f"the window {s}..{e} has at most {weekdays} trading days: a backtest needs at least {MIN_TEST_DAYS} "
            "(about six weeks)"
        )
    source = None
    if data_source is not None and str(data_source).strip():
        source = canonical_source(data_source)
    return uri, s, e, source


# ----------------------------------------------------------------------------- the backtest
def run_backtest(
    model_uri: str,
    start: Any,
    end: Any,
    data_source: str | None = None,
    *,
    tracking_uri: str | None = None,
    store: Any = None,
    log: bool = True,
    cache: bool = True,
) -> BacktestResult:
    """Backtest the model at ``model_uri`` over ``start..end`` (inclusive) and, with ``log``,
    record it as a FINISHED run in experiment ``trainkit-backtests``.

    Backtests are cached: with ``log`` (and ``cache``), an identical backtest logged before —
    the same model by the same URI, the same prices (data digest), window and costs; see
    :func:`backtest_key` — is read back from its run (metrics and ``equity.csv``) instead of
    being run and logged again; its ``run_id`` is that run's. ``log=False`` always computes and
    writes nothing.

    ``data_source`` overrides the model's own (``yfinance``, ``synthetic`` or ``csv:PATH`` of
    the same symbol); the scaler and every other setting still come from the model. A window
    that overlaps the training window is backtested but warned about (the overlap is
    in-sample). ``store``: a :class:`trainkit.store.ModelStore` to use (default: the one of
    ``tracking_uri`` / ``MLFLOW_TRACKING_URI``).

    Raises ``ConfigError``/``ModelURIError`` (exit 2) for a malformed URI or window before any
    I/O; ``ModelNotFoundError``/``IntegrityError``/``StoreError``/``DataError`` (exit 1) when the
    model or the prices cannot be had."""
    uri, s, e, override = _validate(model_uri, start, end, data_source)

    from trainkit.agents import run_policy
    from trainkit.features import build_features, parse_spec
    from trainkit.store import default_store, load_bundle

    store = store or default_store(tracking_uri)
    model, bundle = load_bundle(uri, store=store)
    config, spec = bundle.config, bundle.feature_spec
    count, scaler = parse_spec(spec)
    if count != config.feature_count:
        raise ConfigError(f"the model at {uri} is inconsistent: feature_count {config.feature_count} but a {count}-feature spec")
    trained_on = (spec.get("data") or {}) if isinstance(spec.get("data"), dict) else {}
    warnings, in_sample, fetch = _inputs(uri, config, s, e, override, trained_on.get("fallback_reason"))
    model_id = getattr(bundle, "model_id", None) or store.get_run(bundle.run_id).data.tags.get(C.TAG_MODEL_ID)

    key = backtest_key(model_uri=uri, model_id=model_id or bundle.run_id, config_hash=config.config_hash,
                       data_digest=fetch.digest, start=s, end=e, cost_bps=config.cost_bps,
                       allow_short=config.allow_short)
    if log and cache:
        hit = _cached(store, key, warnings)
        if hit is not None:
            return hit
    if log:  # this one would be recorded: may this user write there? (before the policy runs)
        store.conn.require("EDIT", [BACKTEST_EXPERIMENT], f"backtest of {uri} (pass --no-log to compute it without "
                                                          "recording a run)")

    fs = build_features(fetch.frame, count, scaler=scaler, start=s, end=e)
    traded = run_policy(model, fs, cost_bps=config.cost_bps, allow_short=config.allow_short)
    metrics, curve = compute_metrics(traded["net_returns"], traded["positions"], fs.closes)

    result = BacktestResult(
        model_uri=uri,
        source_run_id=bundle.run_id,
        symbol=config.symbol,
        start=s.isoformat(),
        end=e.isoformat(),
        data_source=fetch.requested_source,
        data_source_effective=fetch.effective_source,
        metrics=metrics,
        equity=_equity_frame(fs.dates, fs.closes, traded, curve),
        warnings=warnings,
        model_id=model_id,
        config_hash=config.config_hash,
        data_digest=fetch.digest,
    )
    if not log:
        return result
    run_id = _log(store, result, config, override=override, in_sample=in_sample, fallback_reason=fetch.fallback_reason,
                  key=key)
    return dataclasses.replace(result, run_id=run_id)


def _inputs(uri: str, config: Any, s: _dt.date, e: _dt.date, override: str | None,
            trained_fallback_reason: str | None) -> tuple[list[str], bool, Any]:
    """The prices of the window (fetched from the warm-up start) and the warnings about them:
    ``(warnings, in_sample, FetchResult)``. The same for a fresh and a cached backtest."""
    from trainkit.data import DataFetcherFactory
    from trainkit.features import warmup_start

    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        _logger.warning("%s", msg)

    source = price_source(config, override, warn)

    trained = (config.start_date, config.end_date)
    in_sample = s <= trained[1] and e >= trained[0]
    if in_sample:
        lo, hi = max(s, trained[0]), min(e, trained[1])
        warn(
            f"the backtest window {s}..{e} overlaps the training window {config.train_start}..{config.train_end} "
            f"of {uri} ({lo}..{hi}): those days are in-sample and flatter the metrics"
        )
    if trained_fallback_reason:
        warn(f"the model was trained on SYNTHETIC fallback data ({trained_fallback_reason}), not on {config.data_source}")

    fetch = DataFetcherFactory.fetch(source, config.symbol, warmup_start(s), e, data_seed=config.data_seed)
    if fetch.fallback_reason:
        warn(f"{fetch.requested_source} failed ({fetch.fallback_reason}): backtested on SYNTHETIC data instead")
    return warnings, in_sample, fetch


def price_source(config: Any, override: str | None, warn: Any) -> str:
    """The source a model's prices are read from — ``override`` or the one it was trained on —
    checked: a missing CSV is a :class:`DataError` saying what to pass; a CSV whose content
    changed since training is a warning (appended rows are harmless, edited ones are not)."""
    source = override or config.data_source
    kind, path = parse_data_source(source)
    if path is None:  # a source without a file of the user's
        return source
    if not os.path.isfile(path):
        hint = "" if override else f" (the file the model was trained on): pass data_source={kind}:PATH (--data-source) with its prices"
        raise DataError(f"{kind.upper()} file not found: {path}{hint}")
    if not override and config.csv_sha256 and file_sha256(path) != config.csv_sha256:
        warn(
            f"{path} changed since the model was trained on it (sha256 differs): harmless if rows were only "
            "appended, otherwise the prices differ from the training data"
        )
    return source


# ----------------------------------------------------------------------------- the cache
def backtest_key(*, model_uri: str, model_id: str, config_hash: str, data_digest: str, start: Any, end: Any,
                 cost_bps: float, allow_short: bool) -> str:
    """The key of a cached backtest (tag ``trainkit.backtest_key``): sha256 of the canonical
    JSON of what the result is a pure function of — the model (its LoggedModel id and config
    hash, and the URI as given, which the run records), the prices (the digest of the fetched
    frame, warm-up included), the window and the costs — plus :data:`BACKTEST_VERSION`."""
    doc = {
        "backtest_version": BACKTEST_VERSION,
        "model_uri": str(model_uri),
        "model_id": str(model_id),
        "config_hash": str(config_hash),
        "data_digest": str(data_digest),
        "start": parse_date(start, "start").isoformat(),
        "end": parse_date(end, "end").isoformat(),
        "cost_bps": float(cost_bps),
        "allow_short": bool(allow_short),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cached_backtest(store: Any, *, model_uri: str, model_id: str, config: Any, start: Any, end: Any) -> BacktestResult | None:
    """The logged result of backtesting a model *without loading it*, or ``None`` when that
    backtest was never logged: what a walk-forward asks first for each fold. ``config`` is the
    model's :class:`~trainkit.config.TrainConfig` (the caller knows it: it asked for that hash),
    ``model_uri`` its ``runs:/…`` URI. Only the prices are fetched (for their digest)."""
    uri, s, e, override = _validate(model_uri, start, end, None)
    warnings, _in_sample, fetch = _inputs(uri, config, s, e, override, None)
    key = backtest_key(model_uri=uri, model_id=model_id, config_hash=config.config_hash, data_digest=fetch.digest,
                       start=s, end=e, cost_bps=config.cost_bps, allow_short=config.allow_short)
    return _cached(store, key, warnings)


def _cached(store: Any, key: str, warnings: list[str]) -> BacktestResult | None:
    from trainkit.store.evaluations import find_backtest

    logged = find_backtest(store, key)
    return None if logged is None else _rebuild(logged, warnings)


def _rebuild(logged: Any, warnings: list[str]) -> BacktestResult:
    """A :class:`BacktestResult` from its logged run: metrics, tags, params and ``equity.csv``
    (floats written by pandas and parsed exactly: the same numbers, bit for bit)."""
    import io

    tags, params = logged.tags, logged.params
    # pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs it
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    equity = pd.read_csv(io.StringIO(logged.equity_csv), **exact)
    equity["date"] = pd.to_datetime(equity["date"]).astype("datetime64[ns]")
    metrics: dict[str, float] = {}
    for name in METRIC_NAMES:
        if name in logged.metrics:
            v = float(logged.metrics[name])
            metrics[name] = int(v) if name in COUNT_METRICS else v
    return BacktestResult(
        model_uri=tags.get(C.TAG_MODEL_URI, params.get("model_uri", "")),
        source_run_id=tags.get(C.TAG_SOURCE_RUN_ID, ""),
        symbol=tags.get(C.TAG_SYMBOL, ""),
        start=params.get("start", ""),
        end=params.get("end", ""),
        data_source=params.get("data_source", tags.get(C.TAG_SOURCE, "")),
        data_source_effective=tags.get(C.TAG_SOURCE_EFFECTIVE, ""),
        metrics=metrics,
        equity=equity,
        run_id=logged.run_id,
        warnings=list(warnings),
        model_id=tags.get(C.TAG_MODEL_ID) or None,
        config_hash=tags.get(C.TAG_SOURCE_CONFIG_HASH) or None,
        data_digest=tags.get(C.TAG_DATA_DIGEST) or None,
        cached=True,
    )


def _equity_frame(dates: np.ndarray, closes: np.ndarray, traded: dict[str, np.ndarray], curve: np.ndarray) -> pd.DataFrame:
    """The daily rows of :attr:`BacktestResult.equity`."""
    return pd.DataFrame(
        {
            "date": pd.to_datetime(dates),
            "close": closes,
            "position": np.asarray(traded["positions"], dtype=np.float64),
            "net_return": np.concatenate(([0.0], traded["net_returns"])),
            "strategy_equity": curve,
            "buy_and_hold_equity": closes / closes[0],
            "drawdown": drawdowns(curve),
        }
    )


# ----------------------------------------------------------------------------- logging
def _log(store: Any, result: BacktestResult, config: Any, *, override: str | None, in_sample: bool,
         fallback_reason: str | None, key: str | None = None) -> str:
    from trainkit.version import __version__

    params = dict(zip(C.BACKTEST_PARAMS, (
        result.model_uri, result.start, result.end, result.first_day, result.last_day, str(result.n_days),
        result.data_source, "true" if override else "false", str(config.cost_bps), str(config.allow_short),
        str(config.feature_count),
    ), strict=True))
    tags = {
        C.TAG_MODEL_URI: result.model_uri,
        C.TAG_SOURCE_RUN_ID: result.source_run_id,
        C.TAG_SYMBOL: result.symbol,
        C.TAG_SOURCE_CONFIG_HASH: result.config_hash or "",
        C.TAG_SOURCE: result.data_source,
        C.TAG_SOURCE_EFFECTIVE: result.data_source_effective,
        C.TAG_DATA_DIGEST: result.data_digest or "",
        C.TAG_IN_SAMPLE: "true" if in_sample else "false",
        C.TAG_VERSION: __version__,
        C.TAG_NOTE: _description(result, config, _experiment_of(store, result.source_run_id)),
    }
    if result.model_id:
        tags[C.TAG_MODEL_ID] = result.model_id
    if key:
        tags[C.TAG_BACKTEST_KEY] = key
    if fallback_reason:
        tags[C.TAG_FALLBACK_REASON] = fallback_reason
    if override:
        tags[C.TAG_SOURCE_OVERRIDE] = override
    with tempfile.TemporaryDirectory(prefix="trainkit-backtest-") as tmp:
        csv_path = os.path.join(tmp, "equity.csv")
        out = result.equity.copy()
        out["date"] = [str(pd.Timestamp(x).date()) for x in out["date"]]
        out.to_csv(csv_path, index=False)
        png_path = os.path.join(tmp, "equity_curve.png")
        _plot(result, png_path)
        summary_path = os.path.join(tmp, "backtest.json")
        with open(summary_path, "w") as fh:
            json.dump(result.to_dict(), fh, indent=2, sort_keys=True)
        return store.log_run(
            BACKTEST_EXPERIMENT,
            run_name=f"{result.symbol}-backtest-{result.start}..{result.end}",
            params=params,
            metrics=result.metrics,
            tags=tags,
            artifacts={"equity.csv": csv_path, "equity_curve.png": png_path, "backtest.json": summary_path},
            # MLflow 3 lineage: the model as the run's input (the UI links run and model both ways)
            input_model_ids=[result.model_id] if result.model_id else None,
        )


def _experiment_of(store: Any, run_id: str) -> str | None:
    """The experiment of a model's training run, for the link to its page (none if unknown)."""
    try:
        return str(store.get_run(run_id).info.experiment_id)
    except TrainkitError:
        return None


def _description(result: BacktestResult, config: Any, model_experiment: str | None = None) -> str:
    """The backtest run's note: the days, the model (linked to its page when ``model_experiment``,
    the experiment of its training run, is known), the data and the result."""
    m = result.metrics
    model, run = C.linked_model(result.model_uri, result.model_id, result.source_run_id, model_experiment)
    lines = [
        f"### Backtest of {result.symbol} ({config.algo.upper()}) over {result.start} → {result.end}",
        "",
        f"* model: {model} (training run {run}, trained on {config.train_start} → {config.train_end})",
        f"* data: {result.data_source_effective}",
        f"* total return **{m['total_return']:+.2%}** vs buy-and-hold {m['buy_and_hold_return']:+.2%}; "
        f"Sharpe {m['sharpe']:.2f}, max drawdown {m['max_drawdown']:.2%}",
    ]
    for w in result.warnings:
        lines.append(f"* ⚠ {w}")
    return "\n".join(lines)


def _plot(result: BacktestResult, path: str) -> None:
    """Strategy vs buy-and-hold equity, with the strategy's drawdown below (Agg, no pyplot:
    no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    eq = result.equity
    dates = pd.to_datetime(eq["date"]).to_numpy()
    fig = Figure(figsize=(10, 6), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    m = result.metrics
    top.plot(dates, eq["strategy_equity"], label=f"strategy ({m['total_return']:+.1%})", color="tab:blue", lw=1.4)
    top.plot(dates, eq["buy_and_hold_equity"], label=f"buy and hold ({m['buy_and_hold_return']:+.1%})",
             color="tab:gray", lw=1.0)
    top.axhline(1.0, color="black", lw=0.5, alpha=0.5)
    top.set_ylabel("equity (start = 1)")
    top.set_title(f"{result.symbol} backtest {result.first_day} → {result.last_day}   {result.model_uri}", fontsize=10)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    plot_drawdowns(bottom, dates, eq["strategy_equity"].to_numpy(), eq["buy_and_hold_equity"].to_numpy())
    fig.tight_layout()
    fig.savefig(path, format="png")
