"""The data-source registry: what a data source *is*, in one table.

Every place that must know a source reads its row here: config parsing (its spelling and
canonical form, whether it takes a path), the data factory (its fetcher), the serving rule
(may it fall back to synthetic prices when it fails?) and the store's dataset logging (how
MLflow describes it). Adding a source is its fetcher, one :func:`register_source` row and its
test (docs/ARCHITECTURE.md, *Adding a data source*). Stdlib only: the CLI's ``--help`` and
config hashing read it without pandas.

The fetcher is named by ``"module:Class"`` and imported only when a fetch needs it, as joblib
names its store backends (``register_store_backend``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainkit.errors import ConfigError


@dataclass(frozen=True)
class SourceSpec:
    """One data source.

    ``kind``: its name (``yfinance``; with a path, the prefix of ``csv:PATH``);
    ``fetcher``: ``"module:Class"`` of its :class:`~trainkit.data.base.DataFetcher`, whose
    constructor declares the request options that apply to it, by keyword, among ``path``,
    ``sha256``, ``data_seed`` and ``timeout`` (``trainkit.data.factory.FETCHER_OPTIONS``); a
    fetcher of generated data says its seed (``seed_for(symbol)``), and one that reads the
    network answers offline from what it has stored (``cached(symbol, start, end)``, ``None``
    when that does not cover the window), so a cache hit never goes online;
    ``takes_path``: spelled ``kind:PATH`` (the path is made absolute, and the file's sha256
    joins the config as ``csv_sha256``); ``may_fall_back``: when it fails, training falls back
    to :data:`FALLBACK_KIND` prices (and a model trained on them is replaced once the source
    answers again); ``dataset``: ``(symbol, path, data_seed) -> (source kind, fields)``, what
    MLflow's dataset input says of it (``http``: a URL; ``local``: a file; ``code``: tags)."""

    kind: str
    fetcher: str
    takes_path: bool = False
    may_fall_back: bool = False
    dataset: Callable[[str, str | None, int | None], tuple[str, dict[str, str]]] | None = None

    def fetcher_class(self) -> Any:
        """The fetcher's class, imported now (pandas and numpy come with it)."""
        module, _, name = self.fetcher.partition(":")
        return getattr(importlib.import_module(module), name)


_SOURCES: dict[str, SourceSpec] = {}

#: The source a failing ``may_fall_back`` source is replaced by: generated prices, which need
#: nothing outside the process (its row is registered below).
FALLBACK_KIND = "synthetic"


def register_source(spec: SourceSpec) -> None:
    """Add (or replace) a data source."""
    _SOURCES[spec.kind] = spec


def source_kinds() -> tuple[str, ...]:
    return tuple(_SOURCES)


def source_spec(kind: str) -> SourceSpec:
    """The row of a source kind (``yfinance``, ``csv``, …); :class:`ConfigError` if unknown."""
    try:
        return _SOURCES[kind]
    except KeyError:
        raise ConfigError(f"unknown data source {kind!r}: use {spelling()}") from None


def spelling() -> str:
    """How a user writes the sources, for messages: ``yfinance, synthetic or csv:PATH``."""
    names = [f"{s.kind}:PATH" if s.takes_path else s.kind for s in _SOURCES.values()]
    return ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]


def parse_data_source(source: Any) -> tuple[str, str | None]:
    """Split a source as written (``yfinance``, ``csv:<path>``) into ``(kind, path)``."""
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"data_source is empty: use {spelling()}")
    s = source.strip()
    kind, sep, path = s.partition(":")
    spec = _SOURCES.get(kind.lower())
    if spec is None or bool(sep) != spec.takes_path:
        raise ConfigError(f"unknown data source {source!r}: use {spelling()}")
    if not spec.takes_path:
        return spec.kind, None
    if not path.strip():
        raise ConfigError(f"data_source {spec.kind}: needs a path, e.g. {spec.kind}:prices/AAPL.csv")
    return spec.kind, path.strip()


def can_fall_back(source: str) -> bool:
    """May a model of ``source`` (as written on a run) have been trained on fallback prices?
    ``False`` for a source this trainkit does not know (another version's run)."""
    try:
        kind, _path = parse_data_source(source)
    except ConfigError:
        return False
    return _SOURCES[kind].may_fall_back


def canonical_source(source: str) -> str:
    """The one spelling of a source: the kind, or ``kind:/absolute/path``."""
    kind, path = parse_data_source(source)
    return f"{kind}:{os.path.abspath(os.path.expanduser(path))}" if path is not None else kind


def _yahoo_dataset(symbol: str, path: str | None, data_seed: int | None) -> tuple[str, dict[str, str]]:
    return "http", {"url": f"https://finance.yahoo.com/quote/{symbol}/history"}


def _synthetic_dataset(symbol: str, path: str | None, data_seed: int | None) -> tuple[str, dict[str, str]]:
    return "code", {"generator": "trainkit.data.synthetic", "symbol": symbol, "data_seed": str(data_seed)}


def _csv_dataset(symbol: str, path: str | None, data_seed: int | None) -> tuple[str, dict[str, str]]:
    return "local", {"path": path or "", "symbol": symbol}


register_source(SourceSpec("yfinance", "trainkit.data.yahoo:YahooFetcher", may_fall_back=True, dataset=_yahoo_dataset))
register_source(SourceSpec("synthetic", "trainkit.data.synthetic:SyntheticFetcher", dataset=_synthetic_dataset))
register_source(SourceSpec("csv", "trainkit.data.csv:CsvFetcher", takes_path=True, dataset=_csv_dataset))
