"""The options several ``trainkit`` commands share, and how any option value is checked.

One rule for every checked value: :class:`Parsed`, a click type around one of trainkit's own
parsers (``validate_symbol``, ``parse_date``, ``validate_model_uri``, …). The CLI thereby
accepts exactly what the API accepts, with the API's message; a parser's
:class:`~trainkit.errors.UserError` becomes click's "Invalid value for '--x': …" (exit 2),
raised while the command line is parsed — before anything is fetched, trained or written.

List options (``--symbols AAPL MSFT``, ``--seeds 0 1 2``) are :class:`ListOption` on a
:class:`ListCommand`: one flag may take several values, separated by spaces or commas.

Import discipline: only click and trainkit's stdlib-only modules at import time (``trainkit
--help`` stays fast); the manager is imported by :func:`configs_from` when a command runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from trainkit.config import (
    FEATURE_CATALOG_SIZE,
    TrainConfig,
    parse_data_source,
    parse_date,
    validate_symbol,
)
from trainkit.errors import ConfigError, UserError
from trainkit.executors import executor_names
from trainkit.hyperparams import ALGORITHM_DEFAULTS
from trainkit.store.contract import validate_model_uri
from trainkit.walkforward import MODES, parse_window

__all__ = [
    "DATA_SOURCE", "DATE", "EXECUTOR_OPTION", "FORCE_OPTION", "MODEL_URI", "RAY_ADDRESS_OPTION", "SYMBOL",
    "WORKERS_OPTION", "ListCommand", "ListOption", "Parsed", "configs_from", "expand_multi_value", "model_options",
    "train_options",
]


class Parsed(click.ParamType):
    """An option value parsed by ``parse``, a parser of trainkit's that raises
    :class:`~trainkit.errors.UserError` (``ConfigError``, ``ModelURIError``) on a bad value: its
    message is the option's usage error. ``flag``: ``parse`` also takes the option's flag, to
    name it (``parse_date(value, "--start")``)."""

    def __init__(self, parse: Callable[..., Any], name: str, *, flag: bool = False) -> None:
        self.parse = parse
        self.name = name
        self.flag = flag

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            if self.flag:
                return self.parse(value, _flag(param, self.name))
            return self.parse(value)
        except UserError as exc:
            self.fail(str(exc), param, ctx)


def _flag(param: click.Parameter | None, default: str) -> str:
    """How the user wrote the option: its long flag (``--train-start``)."""
    opts = param.opts if param is not None else []
    return next((o for o in opts if o.startswith("--")), "--" + default)


class ListOption(click.Option):
    """A repeatable option whose occurrences make one list: ``--symbols AAPL MSFT`` (on a
    :class:`ListCommand`), ``--symbols AAPL,MSFT`` and ``--symbols AAPL --symbols MSFT`` are all
    ``("AAPL", "MSFT")``. Its type parses one occurrence into a tuple; duplicates are dropped (the
    first kept). ``empty``: the message when the option is given but holds no value (``--symbols ,``)."""

    def __init__(self, *args: Any, empty: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, multiple=True, **kwargs)
        self.empty = empty

    def type_cast_value(self, ctx: click.Context, value: Any) -> Any:
        parts = super().type_cast_value(ctx, value)
        merged = tuple(dict.fromkeys(v for part in parts for v in part))
        if parts and not merged and self.empty:
            raise click.BadParameter(self.empty, ctx=ctx, param=self)
        return merged


class ListCommand(click.Command):
    """A command whose :class:`ListOption` flags take several values: click options take one
    value each, so the tokens after ``--symbols`` up to the next ``-…`` token are rewritten into
    repeated ``--symbols`` options before click parses them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = [o for p in self.params if isinstance(p, ListOption) for o in p.opts if o.startswith("--")]
        return super().parse_args(ctx, expand_multi_value(args, names))


def expand_multi_value(args: Sequence[str], options: Sequence[str]) -> list[str]:
    """``["--symbols", "A", "B", "--x", "1"]`` → ``["--symbols", "A", "--symbols", "B", "--x", "1"]``.
    A lone ``--symbols`` is left alone so click reports the missing value; ``--`` stops it."""
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out.extend(args[i:])
            break
        name = tok.split("=", 1)[0]
        if name in options:
            values = [tok.split("=", 1)[1]] if "=" in tok else []
            j = i + 1
            while j < len(args) and not args[j].startswith("-"):
                values.append(args[j])
                j += 1
            if values:
                for v in values:
                    out += [name, v]
            else:
                out.append(tok)
            i = j
            continue
        out.append(tok)
        i += 1
    return out


# ----------------------------------------------------------------------------- parsers of the CLI's own syntax
def _symbols(raw: str) -> tuple[str, ...]:
    """One ``--symbols`` value: a symbol, or several separated by commas (``AAPL,MSFT``, ``AAPL,``)."""
    out: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part and "," in raw:
            continue  # "AAPL," or "AAPL,,MSFT"
        try:
            out.append(validate_symbol(part))
        except ConfigError as exc:
            hint = " (separate symbols with spaces outside quotes: --symbols AAPL MSFT)" if " " in part.strip() else ""
            raise ConfigError(str(exc) + hint) from None
    return tuple(out)


def _hyperparameter(item: str) -> tuple[str, str]:
    """One ``--hp KEY=VALUE`` (the value is checked by the config, with the algorithm known)."""
    key, sep, val = item.partition("=")
    if not sep or not key.strip() or not val.strip():
        raise ConfigError(f"{item!r} is not KEY=VALUE, e.g. --hp learning_rate=3e-4 --hp net_arch=64,64")
    return key.strip(), val.strip()


def _data_source(value: str) -> str:
    """A source as the registry spells it (``yfinance``, ``csv:PATH`` …); a path must name an
    existing file (the source is kept as given)."""
    kind, path = parse_data_source(value)
    if path is not None and not os.path.isfile(os.path.expanduser(path)):
        raise ConfigError(f"{kind.upper()} file not found: {os.path.abspath(os.path.expanduser(path))}")
    return value


def _date(value: str, flag: str) -> str:
    return parse_date(value, flag).isoformat()


#: a symbol (``--symbol`` of list and clear: it reaches a filter string)
SYMBOL = Parsed(validate_symbol, "symbol")
#: a day, YYYY-MM-DD
DATE = Parsed(_date, "date", flag=True)
DATA_SOURCE = Parsed(_data_source, "data_source")
#: the whole model-URI grammar, before any store is opened (a malformed URI writes nothing)
MODEL_URI = Parsed(validate_model_uri, "model_uri")

FORCE_OPTION = click.option(
    "--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, metavar="[true|false]",
    help="Retrain even if a cached model exists (--force, or --force=true|false for scripts).")
WORKERS_OPTION = click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Train in parallel processes (never more than there are models to train).")
EXECUTOR_OPTION = click.option(
    "--executor", type=click.Choice(executor_names()), default="local", show_default=True,
    help="Where models train: local processes (--workers), or one Ray task per model on a Ray cluster "
         "(pip install trainkit[ray]).")
RAY_ADDRESS_OPTION = click.option(
    "--ray-address", default=None, metavar="ADDR",
    help="Ray cluster for --executor ray: host:port of the head node, ray://host:10001 or auto "
         "[default: RAY_ADDRESS, else a local Ray instance sized to this machine]. A remote cluster needs an "
         "http(s):// tracking server.")

_DEFAULT_TRAIN_START = "2020-01-01"
_DEFAULT_TRAIN_END = "2022-12-31"
_TRAIN_DEFAULTS = TrainConfig.__dataclass_fields__  # the config's own defaults, shown in --help
_HP_HELP = "; ".join(f"{algo}: {', '.join(hp)}" for algo, hp in ALGORITHM_DEFAULTS.items())


def model_options(windows: bool = True) -> Callable[[Any], Any]:
    """The options that shape a model (shared by ``train``, ``explain`` and ``walkforward``):
    symbols, the training window (``windows``), features, data, algorithm and its
    hyperparameters, costs, ``--no-fallback`` and ``--json``."""
    options = [
        click.option("--symbols", "-s", cls=ListOption, type=Parsed(_symbols, "symbols"), required=True,
                     empty="give at least one symbol, e.g. --symbols AAPL MSFT", metavar="SYM [SYM…]",
                     help="One or more tickers after one --symbols, separated by spaces or commas (--symbols AAPL MSFT)."),
    ]
    if windows:
        options += [
            click.option("--train-start", type=DATE, default=_DEFAULT_TRAIN_START, show_default=True,
                         metavar="DATE", help="First day of the training window (YYYY-MM-DD)."),
            click.option("--train-end", type=DATE, default=_DEFAULT_TRAIN_END, show_default=True,
                         metavar="DATE", help="Last day of the training window (YYYY-MM-DD)."),
        ]
    options += [
        click.option("--feature-count", type=click.IntRange(1, FEATURE_CATALOG_SIZE), default=21, show_default=True,
                     help=f"How many features of the catalog of {FEATURE_CATALOG_SIZE} to use."),
        click.option("--data-source", type=DATA_SOURCE, default="yfinance", show_default=True,
                     metavar="yfinance|synthetic|csv:PATH",
                     help="Where prices come from; yfinance falls back to synthetic data (loudly) unless --no-fallback."),
        click.option("--timesteps", type=click.IntRange(1, 100_000_000), default=100_000, show_default=True,
                     help="Environment steps to train for."),
        click.option("--algo", type=click.Choice(list(ALGORITHM_DEFAULTS), case_sensitive=False), default="ppo",
                     show_default=True, help="stable-baselines3 algorithm."),
        click.option("--seed", type=int, default=0, show_default=True, help="Training seed."),
        click.option("--data-seed", type=int, default=None,
                     help="Seed of the synthetic price path [default: derived from the symbol]."),
        click.option("--cost-bps", type=float, default=_TRAIN_DEFAULTS["cost_bps"].default, show_default=True,
                     help="Transaction cost in basis points per position change."),
        click.option("--allow-short/--no-short", default=_TRAIN_DEFAULTS["allow_short"].default, show_default=True,
                     help="Whether the agent may hold short positions."),
        click.option("--episode-length", type=int, default=_TRAIN_DEFAULTS["episode_length"].default,
                     show_default=True, help="Trading days per training episode."),
        click.option("--hp", "hyperparameters", type=Parsed(_hyperparameter, "hyperparameter"), multiple=True,
                     metavar="KEY=VALUE", help=f"Override a hyperparameter (repeatable). Known — {_HP_HELP}."),
        click.option("--no-fallback", is_flag=True,
                     help="Fail instead of training on synthetic data when yfinance does not answer."),
        click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout."),
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def train_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of ``TrainingManager.config_for`` from :func:`model_options`'
    values (everything but the symbols and the window)."""
    options: dict[str, Any] = {
        "feature_count": opts["feature_count"], "data_source": opts["data_source"], "timesteps": opts["timesteps"],
        "algo": opts["algo"].lower(), "seed": opts["seed"], "cost_bps": opts["cost_bps"],
        "allow_short": opts["allow_short"], "episode_length": opts["episode_length"],
        "hyperparams": dict(opts["hyperparameters"]),  # --hp pairs; a later KEY wins
    }
    if opts["data_seed"] is not None:
        options["data_seed"] = opts["data_seed"]
    return options


def configs_from(opts: dict[str, Any]) -> list[TrainConfig]:
    """One resolved config per symbol — validated before any I/O (exit 2), exactly as
    ``TrainingManager.get`` resolves it."""
    from trainkit.manager import TrainingManager

    return [TrainingManager.config_for(sym, opts["train_start"], opts["train_end"], **train_options(opts))
            for sym in opts["symbols"]]


# ------------------------------------------------------------------ walk-forward options
def _window(value: str, flag: str) -> str:
    """A window (checked now, kept as given: the plan resolves it against the calendar)."""
    parse_window(value, flag)
    return value


def _gap(value: str, flag: str) -> str:
    """A window that may be empty (``--embargo 0d``)."""
    parse_window(value, flag, allow_zero=True)
    return value


def _seeds(raw: str) -> tuple[int, ...]:
    """One ``--seeds`` value: a seed, or several separated by commas."""
    out: list[int] = []
    for part in (p.strip() for p in str(raw).split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) >= 2**31:
            raise ConfigError(f"{part!r} is not a seed: use integers 0..2147483647, e.g. --seeds 0 1 2")
        out.append(int(part))
    return tuple(out)


WINDOW = Parsed(_window, "window", flag=True)
_WINDOW_HELP = "a duration (30d, 2w, 6m, 3y) or a number of trading days (126)"


def walkforward_options(*, end_required: bool = False) -> Callable[[Any], Any]:
    """The options of a walk-forward (shared by ``walkforward`` and ``tune``): the span, the
    windows, the seeds and how the folds run (``--workers``, ``--executor``, ``--ray-address``).
    ``end_required``: a study's window is part of what it is, so "today" cannot be its end."""
    options = [
        click.option("--start", type=DATE, required=True, metavar="DATE",
                     help="First day of the first training window: folds are anchored here (YYYY-MM-DD)."),
        click.option("--end", type=DATE, default=None, required=end_required, metavar="DATE",
                     help="Last day tested (YYYY-MM-DD)" + (": part of the study's window." if end_required
                                                            else " [default: today].")),
        click.option("--train-window", type=WINDOW, default="3y", show_default=True, metavar="WINDOW",
                     help=f"Training window: {_WINDOW_HELP}."),
        click.option("--test-window", type=WINDOW, default="6m", show_default=True, metavar="WINDOW",
                     help=f"Out-of-sample window of each fold: {_WINDOW_HELP}."),
        click.option("--step", type=WINDOW, default=None, metavar="WINDOW",
                     help="How far each fold moves on [default: the test window, so test windows tile the range]."),
        click.option("--mode", type=click.Choice(MODES, case_sensitive=False), default="sliding", show_default=True,
                     help="sliding: train on the train window before each test window; expanding: train from the anchor."),
        click.option("--embargo", type=Parsed(_gap, "window", flag=True), default="0d", show_default=True,
                     metavar="WINDOW", help="Gap between a fold's last training day and its first test day."),
        click.option("--seeds", cls=ListOption, type=Parsed(_seeds, "seeds"), metavar="SEED [SEED…]",
                     help="Train each fold once per seed and report the spread (--seeds 0 1 2) [default: --seed]."),
        WORKERS_OPTION, EXECUTOR_OPTION, RAY_ADDRESS_OPTION,
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def walkforward_span(ctx: click.Context, options: dict[str, Any], start: str, end: str | None,
                     seeds: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
    """``(seeds, end)`` of a walk-forward command: ``--seed`` popped from ``options`` (it is
    ``--seeds``' default; both at once is an error) and ``--end`` defaulted to today."""
    import datetime as _dt

    seed = options.pop("seed")
    if seeds and ctx.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE:
        raise click.BadParameter("give either --seed or --seeds, not both", param_hint="'--seed'")
    end = end or _dt.date.today().isoformat()
    if start >= end:
        raise click.BadParameter(f"--start {start} must be before --end {end}", param_hint="'--start'")
    return seeds or (seed,), end
