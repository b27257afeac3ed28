"""Signals: the position a model holds after a day's close, computed as a backtest walks the
policy (:func:`trainkit.signals_core.signals`, the same code a served model runs).

* by default the walk starts flat on the first trading day after the model's training window
  (or on its first day, when the day falls inside it), so the answer for day D is the last
  position of a backtest from that day to D;
* ``since`` starts the flat walk elsewhere;
* ``position`` is the position held coming into D: one step of the policy from it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from trainkit.config import TrainConfig
    from trainkit.data import FetchResult

_logger = logging.getLogger("trainkit")

__all__ = ["signal_for_day"]


def signal_for_day(
    model_uri: str,
    day: Any = None,
    *,
    data_source: str | None = None,
    position: int | None = None,
    since: Any = None,
    no_fallback: bool = False,
    tracking_uri: str | None = None,
    store: Any = None,
) -> dict[str, Any]:
    """The target position of the model at ``model_uri`` after the close of ``day`` (default:
    the last trading day available up to today), as a JSON-ready dict: ``date`` (the trading
    day used), ``action``, ``position``, ``previous_position``, ``walk_start``,
    ``start_position``, ``days`` (walked), the symbol, the data used and ``warnings``.

    ``position``: the position held coming into ``day`` (one step from it); otherwise the
    policy is walked from flat from ``since`` (default: the first day after the training
    window, or its first day when ``day`` falls inside it). When Yahoo does not answer, the
    prices fall back to synthetic ones as in a backtest, loudly (a warning, and
    ``data_source_effective``), unless ``no_fallback``.

    Raises ``ConfigError``/``ModelURIError`` (exit 2) for a bad URI, date or position before
    any I/O; ``ModelNotFoundError``/``IntegrityError``/``StoreError``/``DataError`` (exit 1)
    when the model or the prices cannot be had."""
    from trainkit.backtest import price_source
    from trainkit.errors import ConfigError

    uri, d, s, override = _checked_request(model_uri, day, since, position, data_source)

    from trainkit.features import parse_spec
    from trainkit.store import default_store, load_bundle

    model, bundle = load_bundle(uri, store=store or default_store(tracking_uri))
    config, spec = bundle.config, bundle.feature_spec
    parse_spec(spec)  # a spec of another feature version: ConfigError saying to retrain
    if position == -1 and not config.allow_short:
        raise ConfigError(f"--position -1: the model at {uri} was trained without shorting (positions 0 and 1)")
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        _logger.warning("%s", msg)

    source = price_source(config, override, warn)
    s = _walk_start(config, uri, d, s, position, warn)
    fetch, last = _prices(config, source, s, d, no_fallback, warn)
    start = last if position is not None else s
    rows = _walk(model, spec, config, fetch, start, position)
    return {**_answer(uri, config, fetch, rows, warnings),
            "promotion": _standing(store or default_store(tracking_uri), uri, bundle.registered_version)}


def _standing(store: Any, uri: str, label: str | None) -> dict[str, Any] | None:
    """For ``models:/<name>@<alias>``: since when the alias points at its version and on what
    evidence (:meth:`trainkit.store.promotions.Promotions.standing`); ``None`` for other URIs."""
    from trainkit.store.contract import parse_model_uri
    from trainkit.store.promotions import Promotions

    parsed = parse_model_uri(uri)
    if parsed.kind != "alias" or not label:
        return None
    return Promotions(store).standing(parsed.name, parsed.alias, label.rsplit("/", 1)[1])


def _checked_request(
    model_uri: str, day: Any, since: Any, position: int | None, data_source: str | None
) -> tuple[str, _dt.date, _dt.date | None, str | None]:
    """``(uri, day, since, data source override)`` of a request, checked before any I/O so a
    typo costs no store or network round trip (``ConfigError``/``ModelURIError``, exit 2)."""
    from trainkit.config import parse_date
    from trainkit.sources import canonical_source
    from trainkit.errors import ConfigError
    from trainkit.store.contract import validate_model_uri

    uri = validate_model_uri(model_uri)
    today = _dt.date.today()
    d = today if day is None else parse_date(day, "date")
    if d > today:
        raise ConfigError(f"--date {d} is in the future: use a date up to today ({today})")
    s = None if since is None else parse_date(since, "since")
    if s is not None and position is not None:
        raise ConfigError("give either --position (one step from the position you hold) or --since (a walk from flat)")
    if s is not None and s > d:
        raise ConfigError(f"--since {s} is after --date {d}")
    if position is not None and position not in (-1, 0, 1):
        raise ConfigError(f"--position must be -1, 0 or 1, got {position}")
    override = None
    if data_source is not None and str(data_source).strip():
        override = canonical_source(data_source)
    return uri, d, s, override


def _walk_start(
    config: TrainConfig, uri: str, d: _dt.date, s: _dt.date | None, position: int | None,
    warn: Callable[[str], None],
) -> _dt.date:
    """The first day of the walk: ``since``, else ``day`` itself for one step from a held
    position, else the day after the training window (its first day when ``day`` is inside it).
    A walk over training days is warned about: its signal is in-sample."""
    if s is None:
        after = config.end_date + _dt.timedelta(days=1)
        s = d if position is not None else (after if after <= d else min(config.start_date, d))
    if s <= config.end_date and d >= config.start_date:
        warn(f"{max(s, config.start_date)}..{min(d, config.end_date)} is inside the training window "
             f"{config.train_start}..{config.train_end} of {uri}: in-sample")
    return s


def _prices(
    config: TrainConfig, source: str, s: _dt.date, d: _dt.date, no_fallback: bool, warn: Callable[[str], None],
) -> tuple[FetchResult, _dt.date]:
    """The prices of the walk (from the features' warm-up before ``s`` to ``d``) and their last
    day; a fallback to synthetic prices and a stale last bar are warned about, since either
    changes what the signal means."""
    from trainkit.data import DataFetcherFactory
    from trainkit.features import warmup_start

    fetch = DataFetcherFactory.fetch(source, config.symbol, warmup_start(s), d, data_seed=config.data_seed,
                                     no_fallback=no_fallback)
    if fetch.fallback_reason:
        warn(f"{fetch.requested_source} failed ({fetch.fallback_reason}): this signal is computed on SYNTHETIC "
             "prices (--no-fallback fails instead)")
    frame = fetch.frame
    last = frame.index[-1].date()
    if (d - last).days > 4:
        warn(f"the latest bar of {config.symbol} up to {d} is from {last}: the signal is for {last}")
    return fetch, last


def _walk(
    model: Any, spec: dict[str, Any], config: TrainConfig, fetch: FetchResult, start: _dt.date,
    position: int | None,
) -> pd.DataFrame:
    """The policy walked over the fetched prices from ``start`` with the very code a served
    model runs (:func:`trainkit.signals_core.signals`), so both give the same positions."""
    from trainkit import signals_core
    from trainkit.errors import DataError
    from trainkit.store.flavor import one_torch_thread

    def predict(obs: Any) -> Any:
        with one_torch_thread():
            return model.predict(obs, deterministic=True)[0]

    try:
        return signals_core.signals(fetch.frame, spec=spec, predict=predict, allow_short=config.allow_short,
                                    start=start.isoformat(), position=position)
    except signals_core.BarsError as exc:
        raise DataError(f"{fetch.effective_source} prices of {config.symbol}: {exc}") from None


def _answer(
    uri: str, config: TrainConfig, fetch: FetchResult, rows: pd.DataFrame, warnings: list[str]
) -> dict[str, Any]:
    """The JSON-ready answer: the walk's last day, where it started, and the data it used."""
    row = rows.iloc[-1]
    return {
        "model_uri": uri,
        "symbol": config.symbol,
        "date": str(row["date"]),
        "action": int(row["action"]),
        "position": int(row["position"]),
        "previous_position": int(row["previous_position"]),
        "walk_start": str(rows["date"].iloc[0]),
        "start_position": int(rows["previous_position"].iloc[0]),
        "days": len(rows),
        "data_source": fetch.requested_source,
        "data_source_effective": fetch.effective_source,
        "data_digest": fetch.digest,
        "warnings": warnings,
    }
