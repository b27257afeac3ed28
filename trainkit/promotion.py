"""Gated promotion (``trainkit promote``): the best walk-forward of a study (or the one given)
becomes ``models:/<name>@<alias>`` only when its evidence passes the gates — the deflated Sharpe
ratio over every config tried on its window, counted from the store now, and optionally PBO
(docs/ARCHITECTURE.md, *Honest selection*).

Why a gate and not ``trainkit register --alias``: the best of fifty backtests on a random walk
has a Sharpe ratio well above zero by luck alone. ``register --alias`` stays a person's explicit
choice; ``promote`` is the one that asks the store how many tries the choice was the best of.

What is promoted is the chosen config trained on the latest training window of its walk-forward's
fold grid (:func:`trainkit.walkforward.windows.latest_train_window`): an ordinary cache entry.
A refusal writes nothing; a promotion writes in the order of :mod:`trainkit.store.promotions`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.cache import ModelCache
    from trainkit.config import TrainConfig
    from trainkit.store.evaluations import LoggedWalkForward
    from trainkit.store.promotions import AliasMove
    from trainkit.walkforward.evidence import Evidence

__all__ = ["DEFAULT_ALIAS", "DEFAULT_MIN_DSR", "Gates", "Promotion", "check_probability", "check_source", "history",
           "promote", "rollback"]

DEFAULT_ALIAS = "champion"
DEFAULT_MIN_DSR = 0.95


def check_probability(value: Any, flag: str) -> float:
    """A gate's threshold: a number from 0 to 1 (the one rule, for the CLI and the API)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ConfigError(f"{flag} {value!r} is not a probability: use a number from 0 to 1, e.g. 0.95")
    return v


@dataclass(frozen=True)
class Gates:
    """What a promotion must pass: a deflated Sharpe of at least ``min_dsr`` and, when
    ``max_pbo`` is given, a PBO of at most it (PBO is evidence to read, not a default gate: it
    is about 0.5 by construction when every candidate learned the same edge)."""

    min_dsr: float = DEFAULT_MIN_DSR
    max_pbo: float | None = None

    def __post_init__(self) -> None:
        check_probability(self.min_dsr, "--min-dsr")
        if self.max_pbo is not None:
            check_probability(self.max_pbo, "--max-pbo")

    def describe(self) -> str:
        out = f"deflated_sharpe>={self.min_dsr:g}"
        return out if self.max_pbo is None else f"{out}; pbo<={self.max_pbo:g}"

    def refusal(self, ev: Evidence) -> str | None:
        """Why ``ev`` does not pass (one line with the figures), or ``None``."""
        if ev.deflated_sharpe < self.min_dsr:
            return (f"deflated Sharpe {ev.deflated_sharpe:.2f} < {self.min_dsr:g} over {ev.n_configs} "
                    f"config{'s' if ev.n_configs != 1 else ''} tried on {ev.window} (raw Sharpe {ev.sharpe:.2f})")
        if self.max_pbo is not None:
            if ev.pbo is None:
                return (f"PBO cannot be computed: {ev.n_configs} config(s) on {ev.window}, it needs 4 on the same "
                        "days; drop --max-pbo or try more configs")
            if ev.pbo.value > self.max_pbo:
                return f"PBO {ev.pbo.value:.2f} > {self.max_pbo:g} over {ev.pbo_candidates} configs on {ev.window}"
        return None


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` decided and did. ``promoted``: the alias moved (never with
    ``dry_run``); ``would_promote``: the gates passed; ``reason``: one line either way."""

    promoted: bool
    would_promote: bool
    reason: str
    symbol: str
    name: str
    alias: str
    walkforward_run_id: str
    evidence: Evidence
    gates: Gates
    study: str | None = None
    model_uri: str | None = None
    version: str | None = None
    previous_version: str | None = None
    trained: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        ev = self.evidence
        return {"promoted": self.promoted, "would_promote": self.would_promote, "reason": self.reason,
                "symbol": self.symbol, "model_uri": self.model_uri, "name": self.name, "version": self.version,
                "alias": self.alias, "previous_version": self.previous_version,
                "deflated_sharpe": ev.deflated_sharpe, "pbo": ev.pbo_value, "sharpe": ev.sharpe,
                "n_configs": ev.n_configs, "walkforward_run_id": self.walkforward_run_id, "study": self.study,
                "gate": self.gates.describe(), "trained": self.trained, "dry_run": self.dry_run,
                "evidence": ev.to_dict()}


def _best_of_study(cache: ModelCache, symbol: str, study: str) -> str:
    """The walk-forward run of the study's best complete trial."""
    from trainkit.store.studies import StudyStore, best_trial

    studies = StudyStore(cache.store)
    found = studies.find(study)
    if found is None:
        raise ConfigError(f"there is no study {study!r} in {cache.store.tracking_uri}: run `trainkit tune --study {study}` first")
    if found.identity.get("symbol") != symbol:
        raise ConfigError(f"study {study!r} is of {found.identity.get('symbol')}, not {symbol}: give --symbol "
                          f"{found.identity.get('symbol')}")
    best = best_trial([t for t in studies.trials(found) if t.walkforward_run_id], found.direction)
    if best is None:
        raise ConfigError(f"study {study!r} has no complete trial yet: run `trainkit tune --study {study}`")
    return str(best.walkforward_run_id)


def _chosen(cache: ModelCache, wf_run_id: str, symbol: str) -> LoggedWalkForward:
    """The walk-forward to promote, if it can be: of ``symbol``, of one seed (its evidence is
    the model that would serve), on the prices it asked for (not a synthetic fallback)."""
    from trainkit.errors import DataError
    from trainkit.store.contract import TAG_SOURCE, TAG_SOURCE_EFFECTIVE
    from trainkit.walkforward.evidence import finished_walkforward

    wf = finished_walkforward(cache.store, wf_run_id)
    if wf.params.get("symbol") != symbol:
        raise ConfigError(f"walk-forward {wf_run_id} is of {wf.params.get('symbol')}, not {symbol}: "
                          f"give --symbol {wf.params.get('symbol')}")
    seeds = wf.params.get("seeds", "")
    if "," in seeds:
        raise ConfigError(f"walk-forward {wf_run_id} has seeds {seeds}: its evidence is for their equal-weight "
                          "average, which no single model serves; promote a walk-forward of one seed "
                          "(`trainkit walkforward … --seeds S`)")
    requested, effective = wf.tags.get(TAG_SOURCE), wf.tags.get(TAG_SOURCE_EFFECTIVE)
    if effective == "synthetic" and requested and requested != "synthetic":
        raise DataError(f"walk-forward {wf_run_id} ran on synthetic prices because {requested} failed: it is no "
                        f"evidence about {symbol}; walk it forward again when {requested} answers (--no-fallback)")
    return wf


def _final_config(cache: ModelCache, wf: LoggedWalkForward) -> TrainConfig:
    """The walk-forward's config on the latest training window of its fold grid, that window
    read on the prices the walk-forward asked for (never a fallback)."""
    from trainkit.data import DataFetcherFactory
    from trainkit.features import warmup_start
    from trainkit.store.evaluations import fold_models
    from trainkit.walkforward.windows import Calendar, latest_train_window, parse_window

    uris = [uri for _fold, _seed, uri in fold_models(cache.store, wf.run_id)]
    if not uris:
        raise ConfigError(f"walk-forward {wf.run_id} has no fold runs: run the walk-forward again")
    config = cache.store.config_of(uris[-1])  # the last fold's model: the config, on another window
    p = wf.params
    start = _dt.date.fromisoformat(p["anchor"])
    fetch = DataFetcherFactory.fetch(config.data_source, config.symbol, warmup_start(start),
                                     _dt.date.fromisoformat(p["end"]), data_seed=config.data_seed,
                                     no_fallback=True, csv_sha256=config.csv_sha256)
    cal = Calendar(ts.date() for ts in fetch.frame.index)
    train_start, train_end = latest_train_window(cal, start, p["end"], parse_window(p["train_window"]),
                                                 parse_window(p["step"]), p["mode"])
    return dataclasses.replace(config, train_start=train_start, train_end=train_end)


def _evidence_tags(ev: Evidence, gates: Gates, study: str | None) -> dict[str, str]:
    from trainkit.store import contract as C

    return {C.TAG_DEFLATED_SHARPE: f"{ev.deflated_sharpe:.6f}", C.TAG_PBO: "" if ev.pbo is None else f"{ev.pbo.value:.6f}",
            C.TAG_N_CONFIGS: str(ev.n_configs), C.TAG_SHARPE: f"{ev.sharpe:.6f}", C.TAG_STUDY: study or "",
            C.TAG_WALKFORWARD_RUN_ID: ev.walkforward_run_id, C.TAG_GATE: gates.describe()}


def check_source(study: str | None, walkforward_run_id: str | None) -> None:
    """Exactly one of a study and a walk-forward run is what a promotion promotes from."""
    if (study is None) == (walkforward_run_id is None):
        raise ConfigError("give either --study NAME or --walkforward-run RUN_ID")


def promote(cache: ModelCache, symbol: str, *, study: str | None = None, walkforward_run_id: str | None = None,
            alias: str = DEFAULT_ALIAS, gates: Gates | None = None, name: str | None = None,
            dry_run: bool = False) -> Promotion:
    """Promote the best of ``study`` (or ``walkforward_run_id``) to ``models:/<name>@<alias>``
    when it passes ``gates``. A refusal is returned (``promoted=False``), not raised; bad input
    is :class:`ConfigError` before anything is read; a failing registry raises StoreError with
    the alias where it was."""
    from trainkit import settings
    from trainkit.config import validate_symbol
    from trainkit.store.contract import check_alias, check_registered_name
    from trainkit.store.promotions import Promotions
    from trainkit.walkforward.evidence import evidence_of

    symbol = validate_symbol(symbol)
    check_source(study, walkforward_run_id)
    gates = gates or Gates()
    alias = check_alias(alias)
    name = check_registered_name(name or settings.TRAINKIT_REGISTERED_NAME.get().format(symbol=symbol))
    wf = _chosen(cache, walkforward_run_id or _best_of_study(cache, symbol, str(study)), symbol)
    ev = evidence_of(cache.store, wf)
    promotions = Promotions(cache.store)
    base = dict(symbol=symbol, name=name, alias=alias, walkforward_run_id=wf.run_id, evidence=ev, gates=gates,
                study=study, dry_run=dry_run)
    refusal = gates.refusal(ev)
    if refusal is not None:  # decided before the registry is read: a refusal needs no registry
        return Promotion(promoted=False, would_promote=False, reason=f"not promoted: {refusal}", **base)
    config = _final_config(cache, wf)
    if dry_run:
        cached = cache.lookup(config)
        return Promotion(promoted=False, would_promote=True, model_uri=cached.model_uri if cached else None,
                         previous_version=promotions.alias_version(name, alias),
                         reason=f"would promote ({ev.describe()}); the model on {config.train_start}..{config.train_end} "
                                f"is {'cached' if cached else 'not trained yet'}", **base)
    promotions.alias_version(name, alias)  # the registry answers before minutes of training, not after
    result = cache.get_or_train(_request(config), load=False)
    tags = _evidence_tags(ev, gates, study)
    version = promotions.create_version(result.model_uri, name, tags)
    previous = promotions.alias_version(name, alias)  # read now: training may have taken minutes
    promotions.move(name, alias, version, previous, action="promote", evidence=tags)
    return Promotion(promoted=True, would_promote=True, model_uri=result.model_uri, version=version,
                     trained=result.status != "cached", previous_version=previous,
                     reason=f"promoted: models:/{name}@{alias} -> version {version} ({ev.describe()})", **base)


def _request(config: TrainConfig) -> Any:
    from trainkit.cache import ModelRequest

    return ModelRequest(config, no_fallback=True)  # a champion is never trained on fallback prices


def rollback(cache: ModelCache, name: str, alias: str = DEFAULT_ALIAS) -> AliasMove:
    """Point ``alias`` back at the version the last promotion to its current version moved it
    from, and record that. :class:`ConfigError` when there is nothing to roll back to."""
    from trainkit.store.contract import check_alias, check_registered_name
    from trainkit.store.promotions import Promotions

    name, alias = check_registered_name(name), check_alias(alias)
    promotions = Promotions(cache.store)
    current = promotions.alias_version(name, alias)
    if current is None:
        raise ConfigError(f"models:/{name}@{alias} points nowhere: there is nothing to roll back")
    moves = [m for m in promotions.history(name, alias) if m.action == "promote" and m.to_version == current]
    if not moves or moves[-1].from_version is None:
        raise ConfigError(f"models:/{name}@{alias} (version {current}) has no earlier version recorded by "
                          "`trainkit promote`: there is nothing to roll back to")
    target = str(moves[-1].from_version)
    return promotions.move(name, alias, target, current, action="rollback", evidence=promotions.evidence_of(name, target))


def history(cache: ModelCache, name: str, alias: str | None = None) -> list[AliasMove]:
    """Every recorded alias move of ``name`` (``trainkit promote --history``), oldest first."""
    from trainkit.store.contract import check_alias, check_registered_name
    from trainkit.store.promotions import Promotions

    return Promotions(cache.store).history(check_registered_name(name), check_alias(alias) if alias else None)
