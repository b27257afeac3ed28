"""`TrainConfig`: everything that changes a trained model, validated and hashed.

The config hash is the cache key: two requests with the same hash must produce the same model
(training is a pure function of the config), and any change that could change the model must
change the hash. So the config is *resolved* before it is hashed: algorithm defaults are merged
into ``hyperparams``, the synthetic ``data_seed`` is derived from the symbol when not given, and
a CSV source carries the sha256 of the file's content (editing the file retrains; moving it
does not).

Stdlib only: the CLI validates a whole request before importing anything heavy.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainkit.algorithms import algorithm_spec
from trainkit.errors import ConfigError, DataError
from trainkit.sources import canonical_source, parse_data_source, source_spec

__all__ = [
    "hyperparam_params",
    "EARLIEST_DATE",
    "FEATURE_CATALOG_SIZE",
    "MIN_WINDOW_DAYS",
    "MIN_WINDOW_ROWS",
    "SCHEMA_VERSION",
    "TrainConfig",
    "default_data_seed",
    "file_sha256",
    "parse_bool",
    "parse_data_source",  # the registry's (trainkit.sources), re-exported: callers import it from here
    "parse_date",
    "parse_older_than",
    "validate_symbol",
]

#: Bumped when the meaning of a field (or of training itself) changes, so old cache entries
#: stop matching instead of being served for a request they no longer answer.
SCHEMA_VERSION = 2

#: Length of the feature catalog in :mod:`trainkit.features` (checked there at import).
FEATURE_CATALOG_SIZE = 32

#: Shortest training window accepted, in calendar days. Shorter windows leave too few daily
#: observations for an episode, let alone a policy worth caching.
MIN_WINDOW_DAYS = 90

#: Fewest trading days (rows) a window may hold — a training window, a backtest's test window,
#: a walk-forward fold: the feature builder's minimum, the one place it is written.
MIN_WINDOW_ROWS = 30

EARLIEST_DATE = _dt.date(1970, 1, 1)

_SYMBOL_RE = re.compile(r"^\^?[A-Z0-9][A-Z0-9.=-]{0,19}$")

#: Options of :meth:`TrainConfig.create` that are not hyperparameters.
_SCALAR_OPTIONS = ("algo", "seed", "data_seed", "cost_bps", "allow_short", "episode_length")


def validate_symbol(symbol: Any) -> str:
    """Upper-case and validate a ticker; it ends up in filter strings, run names and paths."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ConfigError("symbol is empty: pass a ticker such as AAPL or ^GSPC")
    sym = symbol.strip().upper()
    if ".." in sym or not _SYMBOL_RE.match(sym):
        raise ConfigError(
            f"invalid symbol {symbol!r}: use 1-20 characters A-Z 0-9 . = - "
            "(an optional leading ^ for indices), e.g. AAPL, BRK-B, ^GSPC"
        )
    return sym


def parse_date(value: Any, name: str) -> _dt.date:
    """Parse an ISO date (``YYYY-MM-DD``) or date/datetime object, with an actionable error."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp without importing pandas
        return value.to_pydatetime().date()
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a date YYYY-MM-DD, got {value!r}")
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            raise ValueError
        return _dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not a valid date: use YYYY-MM-DD, e.g. 2020-01-31") from None


def parse_bool(value: Any, name: str) -> bool:
    """Booleans from Python, the CLI or MLproject parameters (which are always strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "y", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "n", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_data_seed(symbol: str) -> int:
    """The synthetic path's seed when none is given: stable per symbol, on every machine."""
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Coerce a user value to the type of the default (CLI and MLproject give strings)."""
    try:
        if isinstance(default, bool):
            return parse_bool(value, name)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                value = [v for v in re.split(r"[,\s\[\]]+", value) if v]
            out = [int(v) for v in value]
            if not out or any(v <= 0 for v in out):
                raise ValueError
            return out
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        pass
    if isinstance(default, list):
        hint = "a list of positive integers such as 64,64"
    elif isinstance(default, bool):
        hint = "true or false"
    elif isinstance(default, int):
        hint = f"a whole number such as {default}"
    else:
        hint = f"a number such as {default}"
    raise ConfigError(f"hyperparameter {name}={value!r} is not valid: use {hint} (default {default})")


@dataclass(frozen=True)
class TrainConfig:
    """A fully resolved training request. Build it with :meth:`create`, which normalises and
    resolves defaults; the constructor only validates an already-resolved config (e.g. one
    read back from a model's artifacts)."""

    symbol: str
    train_start: str
    train_end: str
    feature_count: int = 21
    data_source: str = "yfinance"
    csv_sha256: str | None = None
    data_seed: int = 0
    algo: str = "ppo"
    seed: int = 0
    timesteps: int = 100_000
    cost_bps: float = 5.0
    allow_short: bool = True
    episode_length: int = 252
    hyperparams: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        symbol: str,
        train_start: Any,
        train_end: Any,
        feature_count: int = 21,
        data_source: str = "yfinance",
        timesteps: int = 100_000,
        **options: Any,
    ) -> TrainConfig:
        """Normalise and resolve a request. ``options``: ``algo``, ``seed``, ``data_seed``,
        ``cost_bps``, ``allow_short``, ``episode_length``, ``hyperparams`` (a mapping) and any
        hyperparameter of the chosen algorithm by name (``learning_rate=3e-4``)."""
        sym = validate_symbol(symbol)
        algo = algorithm_spec(options.pop("algo", "ppo")).name
        hp = _resolve_hyperparams(algo, options)
        source, file_sha = _resolve_source(data_source)
        data_seed = options.get("data_seed")
        cfg = cls(
            symbol=sym,
            train_start=parse_date(train_start, "train_start").isoformat(),
            train_end=parse_date(train_end, "train_end").isoformat(),
            feature_count=_int_option("feature_count", feature_count),
            data_source=source,
            csv_sha256=file_sha,
            data_seed=default_data_seed(sym) if data_seed is None else _int_option("data_seed", data_seed),
            algo=algo,
            seed=_int_option("seed", options.get("seed", 0)),
            timesteps=_int_option("timesteps", timesteps),
            cost_bps=_float_option("cost_bps", options.get("cost_bps", 5.0)),
            allow_short=parse_bool(options.get("allow_short", True), "allow_short"),
            episode_length=_int_option("episode_length", options.get("episode_length", 252)),
            hyperparams=hp,
        )
        return cfg

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.symbol != self.symbol.upper():
            raise ConfigError(f"symbol {self.symbol!r} must be upper-case (use TrainConfig.create)")
        start = parse_date(self.train_start, "train_start")
        end = parse_date(self.train_end, "train_end")
        if start < EARLIEST_DATE:
            raise ConfigError(f"train_start {start} is before {EARLIEST_DATE}: no daily data that old")
        if end > _dt.date.today():
            raise ConfigError(f"train_end {end} is in the future: use a date up to today ({_dt.date.today()})")
        if start >= end:
            raise ConfigError(f"train_start {start} must be before train_end {end}")
        if (end - start).days < MIN_WINDOW_DAYS:
            raise ConfigError(
                f"training window {start}..{end} is {(end - start).days} days: use at least "
                f"{MIN_WINDOW_DAYS} days (a year or more trains better)"
            )
        if not 1 <= self.feature_count <= FEATURE_CATALOG_SIZE:
            raise ConfigError(f"feature_count {self.feature_count} is out of range: use 1..{FEATURE_CATALOG_SIZE}")
        kind, _ = parse_data_source(self.data_source)
        if source_spec(kind).takes_path and not (isinstance(self.csv_sha256, str) and len(self.csv_sha256) == 64):
            raise ConfigError(f"a {kind} data source needs csv_sha256, its file's sha256 (use TrainConfig.create)")
        spec = algorithm_spec(self.algo)
        if spec.name != self.algo:
            raise ConfigError(f"algorithm {self.algo!r} must be written {spec.name!r} (use TrainConfig.create)")
        if set(self.hyperparams) != set(spec.defaults):
            raise ConfigError(f"hyperparams must be resolved for {self.algo} (use TrainConfig.create)")
        if self.timesteps <= 0 or self.timesteps > 100_000_000:
            raise ConfigError(f"timesteps {self.timesteps} is out of range: use 1..100000000")
        if not 0 <= self.seed < 2**31 or not 0 <= self.data_seed < 2**31:
            raise ConfigError("seed and data_seed must be integers in 0..2147483647")
        if not 0.0 <= self.cost_bps <= 1000.0:
            raise ConfigError(f"cost_bps {self.cost_bps} is out of range: use 0..1000 basis points")
        if not 2 <= self.episode_length <= 100_000:
            raise ConfigError(f"episode_length {self.episode_length} is out of range: use 2..100000 days")
        _check_hyperparams(self.hyperparams)
        spec.validate(self.hyperparams)
        # freeze the mapping: a config is a value, nobody may mutate it after hashing
        object.__setattr__(self, "hyperparams", _FrozenDict(self.hyperparams))

    # ------------------------------------------------------------------ views
    @property
    def data_source_kind(self) -> str:
        return parse_data_source(self.data_source)[0]

    @property
    def csv_path(self) -> str | None:
        return parse_data_source(self.data_source)[1]

    @property
    def start_date(self) -> _dt.date:
        return _dt.date.fromisoformat(self.train_start)

    @property
    def end_date(self) -> _dt.date:
        return _dt.date.fromisoformat(self.train_end)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (round-trips through :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["hyperparams"] = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in self.hyperparams.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(extra))}")
        return cls(**dict(d))

    def hash_dict(self) -> dict[str, Any]:
        """What the hash covers: every field, except that a source read from a file (a CSV)
        counts by content (``csv_sha256``), not by where the file lies."""
        d = self.to_dict()
        if source_spec(self.data_source_kind).takes_path:
            d["data_source"] = self.data_source_kind
        return d

    def canonical_json(self) -> str:
        return json.dumps(self.hash_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def config_hash(self) -> str:
        """sha256 (64 hex chars) of the canonical JSON: the cache key."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_params(self) -> dict[str, str]:
        """Every field flattened to strings for MLflow params (hyperparameters as ``hp.<name>``)."""
        out: dict[str, str] = {}
        for k, v in self.to_dict().items():
            if k == "hyperparams":
                out.update(hyperparam_params(v))
            elif v is not None:
                out[k] = str(v)
        return out

    def run_name(self) -> str:
        return f"{self.symbol}-{self.algo}-{self.config_hash[:8]}"


def hyperparam_params(hyperparams: Mapping[str, Any]) -> dict[str, str]:
    """Hyperparameters as MLflow params, ``hp.<name>`` (a list as JSON): how a training run, a
    search's trial and a study's best trial show them alike."""
    return {f"hp.{k}": json.dumps(list(v)) if isinstance(v, (list, tuple)) else str(v) for k, v in hyperparams.items()}


def _resolve_hyperparams(algo: str, options: dict[str, Any]) -> dict[str, Any]:
    """The algorithm's defaults with the user's overrides coerced in: the ``hyperparams``
    mapping of ``options`` and any hyperparameter given by name (both popped from
    ``options``); anything left in ``options`` must be a scalar option."""
    defaults = algorithm_spec(algo).defaults
    overrides: dict[str, Any] = dict(options.pop("hyperparams", None) or {})
    for key in list(options):
        if key in defaults:
            overrides[key] = options.pop(key)
    unknown = [k for k in options if k not in _SCALAR_OPTIONS]
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))}: known options are "
            f"{', '.join(_SCALAR_OPTIONS)} and the {algo} hyperparameters {', '.join(defaults)}"
        )
    bad = sorted(k for k in overrides if k not in defaults)
    if bad:
        raise ConfigError(f"unknown hyperparameter(s) for {algo}: {', '.join(bad)}; known: {', '.join(defaults)}")
    return {k: _coerce(k, overrides[k], v) if k in overrides else copy.deepcopy(v) for k, v in defaults.items()}


def _resolve_source(data_source: Any) -> tuple[str, str | None]:
    """The source's canonical spelling and, for a source read from a file, the sha256 of the
    file's content (what the hash counts: editing the file retrains, moving it does not)."""
    source = canonical_source(data_source)
    kind, path = parse_data_source(source)
    if not source_spec(kind).takes_path:
        return source, None
    if not os.path.isfile(path):  # type: ignore[arg-type]
        raise DataError(f"{kind.upper()} file not found: {path} (data_source {data_source})")
    return source, file_sha256(path)  # type: ignore[arg-type]


class _FrozenDict(dict):
    """A dict that refuses mutation (keeps ``TrainConfig`` a value) but still JSON-serialises."""

    def _readonly(self, *a: Any, **k: Any) -> None:
        raise TypeError("TrainConfig.hyperparams is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle rebuilds dicts item by item through __setitem__; configs cross process
        # boundaries (executors), so rebuild from a plain dict instead
        return (_FrozenDict, (dict(self),))


def _int_option(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
        if not f.is_integer():
            raise ValueError
        return int(f)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _float_option(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            raise ValueError
        return f
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def _check_hyperparams(hp: Mapping[str, Any]) -> None:
    """Range checks of single values, by hyperparameter name whichever algorithm has it, that
    would otherwise surface as an obscure error deep inside SB3. Checks across values of one
    algorithm are its row's validators (:mod:`trainkit.algorithms`)."""
    for k, v in hp.items():
        if k == "net_arch":
            if not isinstance(v, (list, tuple)) or not v or any(not isinstance(x, int) or x <= 0 for x in v):
                raise ConfigError(f"hyperparameter net_arch={v!r} must be a list of positive integers")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"hyperparameter {k}={v!r} must be a number")
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"hyperparameter {k}={v!r} must be finite")
    positive = ("n_envs", "n_steps", "batch_size", "n_epochs", "learning_rate", "buffer_size",
                "train_freq", "target_update_interval")
    for k in positive:
        if k in hp and hp[k] <= 0:
            raise ConfigError(f"hyperparameter {k}={hp[k]!r} must be > 0")
    for k in ("gamma", "gae_lambda", "exploration_fraction", "exploration_final_eps"):
        if k in hp and not 0.0 <= hp[k] <= 1.0:
            raise ConfigError(f"hyperparameter {k}={hp[k]!r} must be within 0..1")
    for k in ("ent_coef", "vf_coef", "clip_range", "max_grad_norm", "learning_starts", "gradient_steps"):
        if k in hp and hp[k] < 0:
            raise ConfigError(f"hyperparameter {k}={hp[k]!r} must be >= 0")
    if "n_envs" in hp and hp["n_envs"] > 256:
        raise ConfigError(f"hyperparameter n_envs={hp['n_envs']} is too large: use 1..256")


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([dhmw])$")


def parse_older_than(value: Any, now: _dt.datetime | None = None) -> _dt.datetime:
    """``--older-than``: a date (``2022-01-01``), an ISO datetime, or a duration back from now
    (``30d``, ``12h``, ``45m``, ``2w``). Returns an aware UTC datetime (compared with a run's creation time)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
    text = str(value).strip().lower()
    m = _DURATION_RE.match(text)
    if m:
        n, unit = float(m.group(1)), m.group(2)
        delta = {"d": _dt.timedelta(days=n), "h": _dt.timedelta(hours=n), "m": _dt.timedelta(minutes=n), "w": _dt.timedelta(weeks=n)}[unit]
        return now - delta
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = _dt.date.fromisoformat(text)
            return _dt.datetime(d.year, d.month, d.day, tzinfo=_dt.timezone.utc)
        dt = _dt.datetime.fromisoformat(str(value).strip())
        return dt if dt.tzinfo else dt.replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise ConfigError(
            f"--older-than {value!r} is neither a date nor a duration: use e.g. 2022-01-01, 30d, 12h or 2w"
        ) from None
