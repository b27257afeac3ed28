"""The search space of ``trainkit tune``: which hyperparameters a study varies, and over what.

A space is a set of :class:`Dimension` objects, each one hyperparameter of one algorithm (a key
of its ``defaults`` in :mod:`trainkit.algorithms`). It speaks two languages: the values a
:class:`~trainkit.config.TrainConfig` takes (``net_arch=[64, 64]``) and those Optuna stores
(None/bool/int/float/str only: ``"64-64"``); :meth:`SearchSpace.to_hyperparams` and
:meth:`~SearchSpace.from_hyperparams` translate. :meth:`SearchSpace.canonical` names a space, so
a study resumed with a different one can be refused.

A user space is a YAML or JSON file (:func:`load_space`), checked up front with the config's own
rules (choices coerced by ``config._coerce``, values range-checked by ``_check_hyperparams``):
a bad file fails in one line before any training. Checks *across* hyperparameters (ppo's batch
within its rollout) need the whole request; ``TrainConfig.create`` refuses a trial breaking one.

The default spaces (:func:`default_space`) stay near the calibrated defaults (schema 2,
``docs/CALIBRATION.md``) and contain every default, so the defaults can be the first trial.
``n_envs`` is never searched: it is a speed calibration, not a learning choice.

* ``learning_rate``, log (a step size matters by its order of magnitude): ppo and dqn
  1e-4..3e-3 around 1e-3 (dqn's schema-1 1e-4 at the low end); a2c 3e-4..1e-2 around 4e-3,
  since its 8x larger batch per update wanted a larger step.
* ``gamma`` in {0.8, 0.9, 0.95, 0.99}, horizons of 5 to 100 days: a reward arrives the next day
  and only the cost of changing position links it to later days, so short horizons (0.9
  calibrated) are the interesting ones; 0.99, the usual RL default, checks that belief.
* ``ent_coef``, log 1e-4..0.05 around 0.01 (ppo, a2c): how long the policy keeps exploring;
  rl-zoo goes down to 1e-8, pointless with three actions.
* ``net_arch`` in {32-32, 64-64, 128-128}: few features (≤ 32), and 64-64 learns the tests'
  edges; half and double check capacity both ways.
* ppo ``n_steps`` in {16, 32, 64} (calibrated 32), ``n_epochs`` 2..8 (4; 2 lost margin in the
  calibration), ``batch_size`` among {512, 1024, 2048, 4096} dividing the smallest rollout
  ``n_envs * 16`` of the user's ``n_envs`` (as rl-zoo: minibatches always full): 512..2048 at
  128 envs, the rollout itself when none divides it.
* a2c ``n_steps`` in {8, 16, 32} (calibrated 16): its rollout is its batch.
* dqn ``batch_size`` among {512, 1024, 2048, 4096} up to ``buffer_size`` (calibrated 2048: fewer,
  larger gradient steps memorised less), ``exploration_fraction`` 0.05..0.5 (calibrated 0.3).

Optuna and PyYAML are imported inside the functions that use them: the CLI reads a space before
importing anything heavy.
"""

from __future__ import annotations

import dataclasses

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from trainkit.algorithms import algorithm_spec
from trainkit.config import _check_hyperparams, _coerce
from trainkit.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["KINDS", "Dimension", "SearchSpace", "default_space", "load_space", "parse_space"]

#: The kinds of dimension, as written in a space file's ``type``.
KINDS = ("float", "int", "categorical")

#: The keys a dimension of each kind may have in a space file.
_KEYS = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
         "categorical": ("type", "choices")}

_NET_ARCHS = ((32, 32), (64, 64), (128, 128))
_GAMMAS = (0.8, 0.9, 0.95, 0.99)
_BATCHES = (512, 1024, 2048, 4096)


def _is_seq(value: Any) -> bool:
    return isinstance(value, (list, tuple))


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter. ``low``/``high``/``log``/``step`` for ``float`` and ``int``
    (``step`` None: continuous, or 1 for int); ``choices`` for ``categorical``, as the
    hyperparameter takes them, except that list values (``net_arch``) are kept as tuples so the
    dimension stays hashable. Build user dimensions with :func:`parse_space`, which validates;
    the constructor only normalises (bounds to the kind's type, choices sorted), so that equal
    dimensions have equal file forms however they were built."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dimension kind {self.kind!r} must be one of {', '.join(KINDS)}")
        cast = {"float": float, "int": int}.get(self.kind)
        for key in ("low", "high", "step"):
            if cast is not None and getattr(self, key) is not None:
                object.__setattr__(self, key, cast(getattr(self, key)))
        choices = tuple(tuple(c) if _is_seq(c) else c for c in self.choices)
        try:
            choices = tuple(sorted(choices))
        except TypeError:  # values that do not compare (None and numbers): kept as given
            pass
        object.__setattr__(self, "choices", choices)

    @property
    def _sequences(self) -> bool:
        return any(isinstance(c, tuple) for c in self.choices)

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution; list choices are encoded as strings (see :meth:`encode`)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":  # bounds already cast by __post_init__
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]
        if self.kind == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)  # type: ignore[arg-type]
        return CategoricalDistribution(tuple(self.encode(c) for c in self.choices))

    def encode(self, value: Any) -> Any:
        """Hyperparameter value -> Optuna parameter value: ``[64, 64]`` -> ``"64-64"``."""
        if _is_seq(value):
            return "-".join(str(int(v)) for v in value)
        return value

    def decode(self, value: Any) -> Any:
        """Optuna parameter value -> hyperparameter value: ``"64-64"`` -> ``[64, 64]``."""
        if self._sequences and isinstance(value, str):
            return [int(v) for v in value.split("-")]
        if _is_seq(value):
            return [int(v) for v in value]
        return value

    def contains(self, value: Any) -> bool:
        """Can this dimension produce the hyperparameter value ``value``? (The defaults are
        enqueued as a study's first trial only when every dimension contains them.)"""
        if isinstance(value, bool):
            return False
        if self.kind == "categorical":
            if self._sequences:
                return _is_seq(value) and tuple(value) in self.choices
            return not _is_seq(value) and value in self.choices
        numeric = isinstance(value, (int, float)) and math.isfinite(value)
        if not numeric or not self.low <= value <= self.high or (self.kind == "int" and value != int(value)):  # type: ignore[operator]
            return False
        if self.step is None:
            return True
        k = round((value - self.low) / self.step)  # type: ignore[operator]
        return abs(self.low + k * self.step - value) <= 1e-9 * max(1.0, abs(value))  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        """The file form (what :func:`parse_space` reads back): only the keys of its kind."""
        if self.kind == "categorical":
            return {"type": self.kind, "choices": [list(c) if isinstance(c, tuple) else c for c in self.choices]}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out

    def describe(self) -> str:
        """``float 1e-4..3e-3 log``, ``int 2..8 step 2``, ``categorical 64-64 | 128-128``."""
        if self.kind == "categorical":
            return "categorical " + " | ".join(_fmt(self.encode(c)) for c in self.choices)
        text = f"{self.kind} {_fmt(self.low)}..{_fmt(self.high)}"
        if self.step is not None:
            text += f" step {_fmt(self.step)}"
        return text + (" log" if self.log else "")


def _fmt(value: Any) -> str:
    """A number as a person writes it: ``1e-4``, ``0.95``, ``2048``."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value)
    if isinstance(value, float) and 0 < abs(value) < 1e-2:
        mantissa, exp = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions one study searches, for one algorithm; ``dimensions`` sorted by name
    (so equal spaces compare, print and :meth:`canonical` alike)."""

    algo: str
    dimensions: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        dims = tuple(sorted(self.dimensions, key=lambda d: d.name))
        if len({d.name for d in dims}) != len(dims):
            raise ValueError(f"a search space names a hyperparameter twice: {[d.name for d in dims]}")
        object.__setattr__(self, "dimensions", dims)

    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def distributions(self) -> dict[str, BaseDistribution]:
        """name -> Optuna distribution: what ``study.ask`` takes."""
        return {d.name: d.distribution() for d in self.dimensions}

    def to_hyperparams(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna parameters (a trial's ``params``) -> hyperparameter overrides, decoded. A
        parameter that is no dimension of the space (a study of another space) is a
        :class:`ConfigError`; dimensions absent from ``params`` are left out."""
        dims = {d.name: d for d in self.dimensions}
        unknown = sorted(str(k) for k in params if k not in dims)
        if unknown:
            raise ConfigError(f"parameter(s) {', '.join(unknown)} are no dimension of this {self.algo} "
                              f"search space ({', '.join(dims)}): was the study made with another space?")
        return {name: dims[name].decode(value) for name, value in params.items()}

    def from_hyperparams(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """Hyperparameters -> Optuna parameters, for the dimensions present in ``hp`` (other
        keys of ``hp``, such as ``n_envs``, are ignored): what ``study.enqueue_trial`` takes."""
        return {d.name: d.encode(hp[d.name]) for d in self.dimensions if d.name in hp}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """name -> the dimension's file form (:meth:`Dimension.to_dict`)."""
        return {d.name: d.to_dict() for d in self.dimensions}

    def canonical(self) -> str:
        """The space's name: compact, key-sorted JSON of the algorithm and the file form."""
        doc = {"algo": self.algo, "dimensions": self.to_dict()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def describe(self) -> list[str]:
        """One short line per dimension, names aligned, for ``trainkit tune``'s header."""
        width = max((len(n) for n in self.names()), default=0)
        return [f"{d.name:<{width}}  {d.describe()}" for d in self.dimensions]


# ----------------------------------------------------------------------------- default spaces
def default_space(algo: str, base: Mapping[str, Any] | None = None) -> SearchSpace:
    """The default space of ``algo`` (module docstring: why these ranges). ``base``: the
    resolved hyperparameters the user trains with: what bounds a batch is read from it (ppo
    ``n_envs``, dqn ``buffer_size``), so the usual choices never make an impossible combination,
    and each dimension is widened to hold the request's own value (trial 0 is that config)."""
    spec = algorithm_spec(algo)
    defaults, base = spec.defaults, dict(base or {})

    def value(key: str) -> Any:
        v = _coerce(key, base[key], defaults[key]) if key in base else defaults[key]
        _check_hyperparams({key: v})
        return v

    net_arch = Dimension("net_arch", "categorical", choices=_NET_ARCHS)
    gamma = Dimension("gamma", "categorical", choices=_GAMMAS)
    ent_coef = Dimension("ent_coef", "float", 1e-4, 0.05, log=True)
    if spec.name == "ppo":
        n_steps = (16, 32, 64)
        rollout = value("n_envs") * min(n_steps)
        batches = tuple(b for b in _BATCHES if rollout % b == 0) or (rollout,)
        dims = [Dimension("learning_rate", "float", 1e-4, 3e-3, log=True),
                Dimension("n_steps", "categorical", choices=n_steps),
                Dimension("batch_size", "categorical", choices=batches),
                Dimension("n_epochs", "int", 2, 8), gamma, ent_coef, net_arch]
    elif spec.name == "a2c":
        dims = [Dimension("learning_rate", "float", 3e-4, 1e-2, log=True),
                Dimension("n_steps", "categorical", choices=(8, 16, 32)), gamma, ent_coef, net_arch]
    elif spec.name == "dqn":
        buffer = value("buffer_size")
        batches = tuple(b for b in _BATCHES if b <= buffer) or (buffer,)
        dims = [Dimension("learning_rate", "float", 1e-4, 3e-3, log=True),
                Dimension("batch_size", "categorical", choices=batches),
                Dimension("exploration_fraction", "float", 0.05, 0.5), gamma, net_arch]
    else:
        raise ConfigError(f"no default search space for {spec.name}: pass a space file with --space")
    # the request's own values (--hp) are points of its default space: trial 0 is the config the
    # options describe, and a config already walked forward with them is found, not retrained
    dims = [_widen(d, value(d.name)) if base and d.name in base else d for d in dims]
    return SearchSpace(spec.name, tuple(dims))


def _widen(dim: Dimension, value: Any) -> Dimension:
    """``dim`` grown to hold ``value`` (a choice added, a bound moved), unless it already does or
    cannot (zero on a log scale)."""
    if dim.contains(value):
        return dim
    if dim.kind == "categorical":
        return dataclasses.replace(dim, choices=(*dim.choices, tuple(value) if _is_seq(value) else value))
    if dim.log and value <= 0:
        return dim
    return dataclasses.replace(dim, low=min(dim.low, value), high=max(dim.high, value))


# ----------------------------------------------------------------------------- space files
def load_space(path: str, algo: str) -> SearchSpace:
    """Read a space file: YAML (``.yaml``/``.yml``), JSON (``.json``), or any other name
    tried as JSON then YAML; then :func:`parse_space`. Every failure is one-line ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"space file {path} not found: pass the path of a YAML or JSON file")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"space file {path} cannot be read: {_first_line(exc)}") from None
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        return parse_space(_parse_yaml(text, path), algo, source=path)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        if ext == ".json":
            raise ConfigError(f"space file {path} is not valid JSON: {_first_line(exc)}") from None
        doc = _parse_yaml(text, path)
    return parse_space(doc, algo, source=path)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _parse_yaml(text: str, path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"space file {path}: reading YAML needs PyYAML (pip install pyyaml), or write JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"space file {path} is not valid YAML: {problem or _first_line(exc)}{where}") from None


def parse_space(doc: Any, algo: str, source: str = "the space") -> SearchSpace:
    """A space from its file form: ``{hyperparameter: {type, low, high, log, step, choices}}``.
    Every problem is a one-line :class:`ConfigError` naming ``source`` and the key."""
    spec = algorithm_spec(algo)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: a search space must be a mapping of {spec.name} hyperparameters to "
                          f"dimensions, got {type(doc).__name__}")
    if not doc:
        raise ConfigError(f"{source}: the search space is empty: name at least one of {', '.join(spec.defaults)}")
    dims = []
    for key, entry in doc.items():
        if key not in spec.defaults:
            raise ConfigError(f"{source}: {key!s} is not a hyperparameter of {spec.name}: use one of "
                              f"{', '.join(spec.defaults)}")
        dims.append(_parse_dimension(key, entry, spec.defaults[key], f"{source}: {key}"))
    return SearchSpace(spec.name, tuple(dims))


def _parse_dimension(name: str, entry: Any, default: Any, where: str) -> Dimension:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a mapping such as {{type: categorical, choices: [...]}} "
                          f"or {{type: float, low: ..., high: ...}}, got {entry!r}")
    if (kind := entry.get("type")) not in KINDS:
        problem = "needs a type" if kind is None else f"type {kind!r} is unknown"
        raise ConfigError(f"{where}: the dimension {problem}: use one of {', '.join(KINDS)}")
    if extra := sorted(str(k) for k in entry if k not in _KEYS[kind]):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} for a {kind} dimension: "
                          f"use {', '.join(_KEYS[kind])}")
    if kind == "categorical":
        return _parse_categorical(name, entry, default, where)
    want = "categorical" if isinstance(default, (list, bool)) else "int" if isinstance(default, int) else "float"
    if kind != want:
        takes = "lists of positive integers" if isinstance(default, list) else f"{type(default).__name__} values"
        also = "" if want == "categorical" else f"{want} or "
        raise ConfigError(f"{where}: {name} takes {takes} (default {default!r}), which a {kind} range "
                          f"cannot produce: use type {also}categorical")
    return _parse_range(name, kind, entry, where)


def _number(value: Any, key: str, kind: str, where: str) -> float | int:
    """A bound or step: a number (a string such as PyYAML's ``1e-4`` too), never a boolean."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key} {value!r} is a boolean: write a number")
    try:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError
    except (ValueError, OverflowError):
        raise ConfigError(f"{where}: {key} {value!r} is not a finite number") from None
    if kind == "float":
        return float(number)
    if float(number) != int(number):
        raise ConfigError(f"{where}: {key} {value!r} is not a whole number, as an int dimension needs")
    return int(number)


def _parse_range(name: str, kind: str, entry: Mapping[str, Any], where: str) -> Dimension:
    if missing := [k for k in ("low", "high") if entry.get(k) is None]:
        raise ConfigError(f"{where}: a {kind} dimension needs low and high (missing {', '.join(missing)})")
    low, high = (_number(entry[k], k, kind, where) for k in ("low", "high"))
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log {log!r} must be true or false")
    step = None if entry.get("step") is None else _number(entry["step"], "step", kind, where)
    if low > high:
        raise ConfigError(f"{where}: empty range: low {_fmt(low)} is above high {_fmt(high)}")
    if low == high:
        raise ConfigError(f"{where}: low and high are both {_fmt(low)}, a range of one value: "
                          f"fix it with --hp {name}={_fmt(low)} instead")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {_fmt(low)}")
    if log and step is not None:
        raise ConfigError(f"{where}: log and step cannot be combined (Optuna forbids it): drop one")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{where}: step {_fmt(step)} must be > 0")
        if (Decimal(str(high)) - Decimal(str(low))) % Decimal(str(step)) != 0:
            raise ConfigError(f"{where}: high - low ({_fmt(low)}..{_fmt(high)}) is not a multiple of step {_fmt(step)}")
    for key, bound in (("low", low), ("high", high)):
        _check_value(name, bound, f"{where}: {key}")
    return Dimension(name, kind, low, high, log=log, step=step)


def _check_value(name: str, value: Any, where: str) -> None:
    try:
        _check_hyperparams({name: value})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {_first_line(exc)}") from None


def _parse_categorical(name: str, entry: Mapping[str, Any], default: Any, where: str) -> Dimension:
    raw = entry.get("choices")
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError(f"{where}: a categorical dimension needs a non-empty list of choices")
    values = []
    for choice in raw:
        if isinstance(default, list) and (not _is_seq(choice) or any(
                isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in choice) or not choice):
            raise ConfigError(f"{where}: choice {choice!r} is not a list of positive integers such as [64, 64]")
        try:
            value = _coerce(name, choice, default)
        except ConfigError as exc:
            raise ConfigError(f"{where}: choice {choice!r}: {_first_line(exc)}") from None
        _check_value(name, value, f"{where}: choice {choice!r}")
        values.append(tuple(value) if isinstance(value, list) else value)
    if len(set(values)) != len(values):
        dupes = sorted({_fmt(v) for v in values if values.count(v) > 1})
        raise ConfigError(f"{where}: duplicate choice(s) {', '.join(dupes)}: list each value once")
    return Dimension(name, "categorical", choices=tuple(values))
