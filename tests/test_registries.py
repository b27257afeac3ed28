"""The two extension tables: data sources (:mod:`trainkit.sources`) and algorithms
(:mod:`trainkit.algorithms`). Every place that must know a source or an algorithm reads its
row, so registering a row is all it takes for a request to be accepted, fetched or built; the
standalone pyfunc file's copy of the algorithm classes is pinned to the table; and the config
hashes the tables feed into are pinned, so moving rules into tables changed no cache key."""

from __future__ import annotations

import ast
import datetime as _dt
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trainkit import algorithms, sources
from trainkit.algorithms import ALGORITHM_DEFAULTS, AlgorithmSpec, algorithm_names, algorithm_spec, register_algorithm
from trainkit.config import TrainConfig
from trainkit.data import CsvFetcher, DataFetcherFactory, SyntheticFetcher, YahooFetcher, cached_digest
from trainkit.errors import ConfigError, DataError
from trainkit.sources import SourceSpec, canonical_source, parse_data_source, register_source, source_spec, spelling

REPO = Path(__file__).resolve().parent.parent
D = _dt.date

#: the hash of a default request: no table may change it (it keys every cached model)
SYNTHETIC_HASH = "86531f95aa1572d6035fab205bd95481c80d7034b750868b476232f3ee6b26af"
CSV_TEXT = "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,100\n"
CSV_HASH = "73131a8afd62a06d7740b7c9d1fbfda95a6d1fb7ecf7bee1801279e7c9b64711"


@pytest.fixture
def tables():
    """Rows registered by a test are gone after it."""
    saved_sources, saved_algos = dict(sources._SOURCES), dict(algorithms._ALGORITHMS)
    yield
    sources._SOURCES.clear()
    sources._SOURCES.update(saved_sources)
    algorithms._ALGORITHMS.clear()
    algorithms._ALGORITHMS.update(saved_algos)


# ----------------------------------------------------------------------------- hashes
def test_config_hashes_are_pinned(tmp_path: Path) -> None:
    """The tables feed every config hash (defaults, source spelling, file content): these
    values were computed before the tables existed and must never move by refactoring."""
    assert TrainConfig.create("AAPL", "2020-01-01", "2022-12-31", data_source="synthetic").config_hash == SYNTHETIC_HASH
    for where in ("a", "b"):  # a file-backed source counts by content, not by where it lies
        (tmp_path / where).mkdir()
        path = tmp_path / where / "p.csv"
        path.write_text(CSV_TEXT)
        cfg = TrainConfig.create("GOOG", "2020-01-01", "2022-12-31", data_source=f"csv:{path}")
        assert cfg.data_source == f"csv:{path}" and cfg.config_hash == CSV_HASH


def test_importing_the_tables_and_config_stays_light() -> None:
    code = ("import sys, trainkit.config, trainkit.sources, trainkit.algorithms, trainkit.hyperparams; "
            "heavy = [m for m in ('pandas', 'numpy', 'torch', 'mlflow', 'stable_baselines3') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- sources
def test_the_built_in_sources() -> None:
    assert sources.source_kinds() == ("yfinance", "synthetic", "csv")
    assert spelling() == "yfinance, synthetic or csv:PATH"
    assert [k for k in sources.source_kinds() if source_spec(k).may_fall_back] == ["yfinance"]
    assert [k for k in sources.source_kinds() if source_spec(k).takes_path] == ["csv"]
    assert source_spec(sources.FALLBACK_KIND).fetcher_class() is SyntheticFetcher
    assert {k: source_spec(k).fetcher_class() for k in ("yfinance", "csv")} == {"yfinance": YahooFetcher,
                                                                              "csv": CsvFetcher}
    assert parse_data_source(" YFinance ") == ("yfinance", None)
    assert canonical_source("csv:~/p.csv") == f"csv:{Path('~/p.csv').expanduser()}"
    assert canonical_source("csv:rel/p.csv") == f"csv:{Path.cwd() / 'rel/p.csv'}"
    for bad in ("", "yahoo", "csv:", "synthetic:x", "csv"):
        with pytest.raises(ConfigError):
            parse_data_source(bad)
    # one spelling everywhere: the fetcher's own source string is the registry's
    assert CsvFetcher("rel/p.csv").source == canonical_source("csv:rel/p.csv")


class ToyFetcher:
    """A source that needs nothing: a flat price path, as a new source would add it."""

    name = "toy"
    fetched: list[dict[str, Any]] = []

    def __init__(self, *, data_seed: int | None = None) -> None:  # declares only the option it uses
        self.data_seed = data_seed

    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        index = pd.bdate_range(start, end, name="Date")
        self.fetched.append({"symbol": symbol, "seed": self.data_seed})
        price = np.full(len(index), 10.0)
        return pd.DataFrame({"Open": price, "High": price, "Low": price, "Close": price, "Volume": price}, index=index)


class DownFetcher:
    """A network-like source that never answers."""

    name = "down"

    def __init__(self, *, timeout: float | None = None) -> None:
        self.timeout = timeout

    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        raise DataError(f"down: no answer for {symbol} within {self.timeout} s")

    def cached(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame | None:
        return None  # nothing stored: the offline answer


class ToyFileFetcher:
    """A source read from a file, as ``csv`` is."""

    name = "toyfile"

    def __init__(self, path: str, *, sha256: str | None = None) -> None:
        self.path, self.sha256 = path, sha256

    def fetch(self, symbol: str, start: _dt.date, end: _dt.date) -> pd.DataFrame:
        return ToyFetcher().fetch(symbol, start, end)


def test_registering_a_source_is_all_it_takes(tables: None) -> None:
    """One row: the config accepts it, the factory builds its fetcher with the options it
    declares, and fetches from it."""
    register_source(SourceSpec("toy", f"{__name__}:ToyFetcher"))
    assert "toy" in spelling()
    cfg = TrainConfig.create("aapl", "2020-01-01", "2022-12-31", data_source="Toy", data_seed=3)
    assert (cfg.data_source, cfg.data_source_kind, cfg.csv_sha256) == ("toy", "toy", None)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    fetcher = DataFetcherFactory.create("toy", data_seed=3, timeout=1.0, csv_sha256="ab" * 32)
    assert isinstance(fetcher, ToyFetcher) and fetcher.data_seed == 3  # timeout and sha256 do not apply
    result = DataFetcherFactory.fetch("toy", "AAPL", D(2020, 1, 1), D(2020, 3, 31), data_seed=3)
    assert (result.requested_source, result.effective_source, result.data_seed) == ("toy", "toy", None)
    assert not result.fell_back and len(result.frame) == 65
    assert cached_digest("toy", "AAPL", D(2020, 1, 1), D(2020, 3, 31)) == result.digest  # a local source


def test_a_registered_source_falls_back_by_its_row(tables: None) -> None:
    register_source(SourceSpec("down", f"{__name__}:DownFetcher", may_fall_back=True))
    result = DataFetcherFactory.fetch("down", "AAPL", D(2020, 1, 1), D(2020, 12, 31), timeout=2.0, data_seed=4)
    assert (result.requested_source, result.effective_source, result.data_seed) == ("down", "synthetic", 4)
    assert "within 2.0 s" in result.fallback_reason
    assert result.digest == cached_digest("synthetic", "AAPL", D(2020, 1, 1), D(2020, 12, 31), data_seed=4)
    with pytest.raises(DataError, match="--no-fallback"):
        DataFetcherFactory.fetch("down", "AAPL", D(2020, 1, 1), D(2020, 12, 31), no_fallback=True)
    assert cached_digest("down", "AAPL", D(2020, 1, 1), D(2020, 12, 31)) is None  # offline: never fetches
    register_source(SourceSpec("down", f"{__name__}:DownFetcher", may_fall_back=False))
    with pytest.raises(DataError, match="no answer"):
        DataFetcherFactory.fetch("down", "AAPL", D(2020, 1, 1), D(2020, 12, 31))


def test_a_registered_file_source_counts_by_content(tables: None, tmp_path: Path) -> None:
    register_source(SourceSpec("toyfile", f"{__name__}:ToyFileFetcher", takes_path=True))
    path = tmp_path / "prices.txt"
    path.write_text(CSV_TEXT)
    cfg = TrainConfig.create("AAPL", "2020-01-01", "2022-12-31", data_source=f"toyfile:{path}")
    assert cfg.data_source == f"toyfile:{path}" and cfg.csv_path == str(path) and len(cfg.csv_sha256) == 64
    assert cfg.hash_dict()["data_source"] == "toyfile"
    fetcher = DataFetcherFactory.create(cfg.data_source, csv_sha256=cfg.csv_sha256, data_seed=1)
    assert isinstance(fetcher, ToyFileFetcher) and (fetcher.path, fetcher.sha256) == (str(path), cfg.csv_sha256)
    with pytest.raises(DataError, match="TOYFILE file not found"):
        TrainConfig.create("AAPL", "2020-01-01", "2022-12-31", data_source=f"toyfile:{tmp_path}/none.txt")
    with pytest.raises(ConfigError, match="needs csv_sha256"):
        TrainConfig.from_dict({**cfg.to_dict(), "csv_sha256": None})


def test_dataset_sources_follow_the_row(tables: None) -> None:
    from trainkit.store.runs import dataset_source

    cfg = TrainConfig.create("AAPL", "2020-01-01", "2022-12-31", data_source="synthetic", data_seed=7)
    as_json = {eff: dataset_source(cfg, SimpleNamespace(effective_source=eff)).to_json()
               for eff in ("yfinance", "synthetic")}
    assert as_json == {
        "yfinance": '{"url": "https://finance.yahoo.com/quote/AAPL/history"}',
        "synthetic": '{"tags": {"generator": "trainkit.data.synthetic", "symbol": "AAPL", "data_seed": "7"}}',
    }
    register_source(SourceSpec("toy", f"{__name__}:ToyFetcher",
                               dataset=lambda sym, path, seed: ("http", {"url": f"https://toy.example/{sym}"})))
    assert dataset_source(cfg, SimpleNamespace(effective_source="toy")).to_json() == '{"url": "https://toy.example/AAPL"}'


# ----------------------------------------------------------------------------- algorithms
def test_the_built_in_algorithms() -> None:
    from trainkit import hyperparams

    assert algorithm_names() == ("ppo", "a2c", "dqn") and hyperparams.ALGORITHM_DEFAULTS is ALGORITHM_DEFAULTS
    assert {n: algorithm_spec(n).on_policy for n in algorithm_names()} == {"ppo": True, "a2c": True, "dqn": False}
    assert {algorithm_spec(n).actions for n in algorithm_names()} == {"discrete"}
    assert dict(ALGORITHM_DEFAULTS) == {n: algorithm_spec(n).defaults for n in algorithm_names()}
    with pytest.raises(TypeError):
        algorithm_spec("ppo").defaults["n_envs"] = 1  # type: ignore[index]
    with pytest.raises(ConfigError, match="unknown algorithm 'sac': choose one of ppo, a2c, dqn"):
        algorithm_spec("sac")
    with pytest.raises(ConfigError, match="ppo batch_size 9999 exceeds n_steps\\*n_envs = 4096"):
        TrainConfig.create("AAPL", "2020-01-01", "2022-12-31", data_source="synthetic", batch_size=9999)


def test_the_pyfunc_files_copy_of_the_classes_is_the_table() -> None:
    """``pyfunc_model.py`` runs without trainkit, so it keeps its own algorithm → class map:
    it must be exactly the table's."""
    tree = ast.parse((REPO / "trainkit" / "pyfunc_model.py").read_text())
    [copy] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "_CLASSES" for t in node.targets)]
    assert copy == {n: algorithm_spec(n).sb3_class for n in algorithm_names()}


def test_the_flavor_and_training_take_classes_from_the_table() -> None:
    from stable_baselines3 import A2C, DQN, PPO

    from trainkit.store import flavor
    from trainkit.threads import one_torch_thread

    assert [flavor.sb3_class(n) for n in ("ppo", "A2C", " dqn")] == [PPO, A2C, DQN]
    assert flavor.one_torch_thread is one_torch_thread  # one rule for threads


def test_registering_a_discrete_algorithm_is_all_it_takes(tables: None) -> None:
    """One row: the config accepts the name with its defaults and validators, the flavor
    loads its class and training builds it."""
    from stable_baselines3 import PPO

    from trainkit import agents
    from trainkit.store import flavor

    def steps_even(hp: Any) -> None:
        if hp["n_steps"] % 2:
            raise ConfigError("toyppo n_steps must be even")

    defaults = {**algorithm_spec("ppo").defaults, "n_envs": 2, "n_steps": 16, "batch_size": 16}
    register_algorithm(AlgorithmSpec("toyppo", "stable_baselines3:PPO", defaults, on_policy=True,
                                     validators=(steps_even,)))
    assert "toyppo" in ALGORITHM_DEFAULTS and ALGORITHM_DEFAULTS["toyppo"]["n_envs"] == 2
    cfg = TrainConfig.create("AAPL", "2015-01-01", "2019-12-31", data_source="synthetic", algo="ToyPPO",
                             n_steps="8", episode_length=20)
    assert cfg.algo == "toyppo" and cfg.hyperparams["n_steps"] == 8 and cfg.hyperparams["batch_size"] == 16
    with pytest.raises(ConfigError, match="must be even"):
        TrainConfig.create("AAPL", "2015-01-01", "2019-12-31", data_source="synthetic", algo="toyppo", n_steps=7)
    assert flavor.sb3_class("toyppo") is PPO
    rng = np.random.default_rng(0)
    fs = SimpleNamespace(matrix=rng.standard_normal((60, 3)).astype(np.float32),
                         closes=100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 60))))
    model = agents.build_model(cfg, fs)
    assert type(model) is PPO and model.n_envs == 2 and model.n_steps == 8


def test_a_continuous_algorithm_is_refused_by_the_config(tables: None) -> None:
    register_algorithm(AlgorithmSpec("toysac", "stable_baselines3:SAC", {"learning_rate": 3e-4, "net_arch": [64]},
                                     on_policy=False, actions="continuous"))
    with pytest.raises(ConfigError, match="continuous action space.*choose one of ppo, a2c, dqn"):
        TrainConfig.create("AAPL", "2015-01-01", "2019-12-31", data_source="synthetic", algo="toysac")
    with pytest.raises(ValueError, match="actions"):
        AlgorithmSpec("bad", "stable_baselines3:PPO", {}, on_policy=True, actions="boxes")
