"""The ``trainkit`` command line: thin click commands over :class:`~trainkit.manager.TrainingManager`
and :func:`~trainkit.backtest.run_backtest`.

What this module owns, and nothing else: parsing and validating the command line, formatting
results for people (one line per symbol, rich tables) and for scripts (``--json``: exactly one
JSON document on stdout), logging to stderr, and exit codes (docs/ARCHITECTURE.md, "Errors and exit codes"):

* ``0`` success;
* ``2`` the command line or a value is invalid (click usage errors, :class:`~trainkit.errors.UserError`),
  reported before anything is fetched, trained or written — or ``clear`` refused to delete
  without confirmation (no terminal to ask on and no ``--yes``);
* ``1`` a runtime failure (data, store, network, integrity: every other
  :class:`~trainkit.errors.TrainkitError`), or the user declined ``clear``'s prompt;
* ``130`` interrupted (Ctrl-C).

Errors are one line on stderr (``error: …``); ``--verbose`` adds the traceback.

Import discipline: ``trainkit --help`` must answer fast, so only click and trainkit's stdlib-only
modules (config, errors, hyperparams) are imported at module level; torch, stable-baselines3,
mlflow, pandas and rich are imported inside the commands that need them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click

from trainkit import __version__
from trainkit import settings as env_settings
from trainkit.config import (
    FEATURE_CATALOG_SIZE,
    TrainConfig,
    parse_data_source,
    parse_date,
    parse_older_than,
    validate_symbol,
)
from trainkit.errors import ConfigError, ModelURIError, TrainkitError, caused_by_interrupt
from trainkit.hyperparams import ALGORITHM_DEFAULTS
from trainkit.store.contract import check_alias, check_config_hash, check_registered_name, validate_model_uri

log = logging.getLogger("trainkit")

#: exit codes (see the module docstring)
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: what the text output says for each training status
STATUS_TEXT = {"cached": "cached", "trained": "trained", "fallback": "fell back to synthetic"}

_DEFAULT_TRAIN_START = "2020-01-01"
_DEFAULT_TRAIN_END = "2022-12-31"
_TRAIN_DEFAULTS = TrainConfig.__dataclass_fields__  # the config's own defaults, shown in --help


@dataclass
class Settings:
    """Global options, shared by every command through ``ctx.obj``."""

    tracking_uri: str | None = None
    experiment: str = "trainkit"
    verbose: int = 0

    def manager(self) -> Any:
        from trainkit.manager import TrainingManager

        return TrainingManager(self.tracking_uri, self.experiment)


_state = Settings()  # what main() needs to know (e.g. --verbose) after click has returned


class _Interrupted(Exception):
    """Ctrl-C, carried past click (which would print a blank line and raise Abort)."""


# ----------------------------------------------------------------------------- logging / output
class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and _state.verbose:
            msg += "\n" + self.formatException(record.exc_info)
        return msg


def setup_logging(verbose: int) -> None:
    """The ``trainkit`` logger writes to stderr: warnings always (e.g. the synthetic
    fallback), info with ``-v``, debug with ``-vv``. MLflow's own INFO chatter is silenced
    unless ``-v`` (and unless the user set ``MLFLOW_LOGGING_LEVEL``). Idempotent."""
    logger = logging.getLogger("trainkit")
    for h in [h for h in logger.handlers if getattr(h, "_trainkit_cli", False)]:
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._trainkit_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    logger.propagate = False
    env_settings.MLFLOW_LOGGING_LEVEL.set_default("INFO" if verbose else "WARNING")
    # MLflow logs a database error with its traceback before raising it; when the error came out
    # of the user's Ctrl-C (a sqlite transaction cut short), the one line "interrupted" says it all
    db_logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _AfterInterrupt) for f in db_logger.filters):
        db_logger.addFilter(_AfterInterrupt())


class _AfterInterrupt(logging.Filter):
    """Drops log records about an exception that a Ctrl-C caused (unless -v)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return bool(_state.verbose) or not caused_by_interrupt(exc)


@contextlib.contextmanager
def stdout_for(json_mode: bool) -> Iterator[Any]:
    """Yield the stream results go to. In ``--json`` mode anything else that prints to
    stdout while we work (a library's chatter) is sent to stderr, so stdout carries exactly
    one JSON document."""
    real = sys.stdout
    if not json_mode:
        yield real
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real


def emit_json(stream: Any, doc: Any) -> None:
    stream.write(json.dumps(doc, indent=2, default=str) + "\n")
    stream.flush()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- the group
class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted() from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--tracking-uri", metavar="URI",
              help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current directory.")
@click.option("--experiment", default="trainkit", show_default=True, metavar="NAME",
              help="MLflow experiment that holds the cache.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv: debug); tracebacks on errors.")
@click.version_option(__version__, "--version", prog_name="trainkit")
@click.pass_context
def cli(ctx: click.Context, tracking_uri: str | None, experiment: str, verbose: int) -> None:
    """Train reinforcement-learning trading agents per stock symbol, once per configuration:
    every model is cached in MLflow under the hash of its config.

    \b
    Examples:
      trainkit train --symbols AAPL MSFT --train-start 2020-01-01 --train-end 2022-12-31
      trainkit list --symbol AAPL
      trainkit backtest --model-uri runs:/<run_id>/model --start 2023-01-01 --end 2023-12-31
      trainkit clear --symbol AAPL --older-than 30d

    Exit codes: 0 ok, 1 runtime failure, 2 invalid command line or values, 130 interrupted.
    """
    _state.tracking_uri = tracking_uri or None
    _state.experiment = experiment
    _state.verbose = verbose
    ctx.obj = _state
    setup_logging(verbose)
    if not ctx.resilient_parsing:
        env_settings.check()  # an invalid TRAINKIT_* variable is exit 2 before any I/O


# ----------------------------------------------------------------------------- train
class SymbolsCommand(click.Command):
    """Accepts ``--symbols A B C``: click options take one value each, so the
    tokens after ``--symbols`` up to the next ``-…`` token are rewritten into repeated
    ``--symbols`` options before click parses them."""

    multi_value_options: tuple[str, ...] = ("--symbols",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_value(args, self.multi_value_options))


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


def _symbol_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--symbol S`` of list/clear: validated before any I/O (it reaches a filter string)."""
    if value is None:
        return None
    try:
        return validate_symbol(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _symbols_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in value:
        for part in (p.strip() for p in raw.split(",")):
            if not part and "," in raw:
                continue  # "AAPL," or "AAPL,,MSFT"
            try:
                sym = validate_symbol(part)
            except ConfigError as exc:
                hint = " (separate symbols with spaces outside quotes: --symbols AAPL MSFT)" if " " in part.strip() else ""
                raise click.BadParameter(str(exc) + hint) from None
            if sym not in out:
                out.append(sym)
    if not out:
        raise click.BadParameter("give at least one symbol, e.g. --symbols AAPL MSFT")
    return out


def _hp_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE, e.g. --hp learning_rate=3e-4 --hp net_arch=64,64")
        out[key.strip()] = val.strip()
    return out


def data_source_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        kind, path = parse_data_source(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if kind == "csv" and not os.path.isfile(os.path.expanduser(path or "")):
        raise click.BadParameter(f"CSV file not found: {os.path.abspath(os.path.expanduser(path or ''))}")
    return value


def date_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_date(value, "--" + (param.name or "date").replace("_", "-")).isoformat()
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


_HP_HELP = "; ".join(f"{algo}: {', '.join(hp)}" for algo, hp in ALGORITHM_DEFAULTS.items())


def model_options(windows: bool = True) -> Any:
    """The options that shape a model (shared by ``train``, ``explain`` and ``walkforward``):
    symbols, the training window (``windows``), features, data, algorithm and its
    hyperparameters, costs, ``--no-fallback`` and ``--json``."""
    options = [
        click.option("--symbols", "-s", multiple=True, required=True, callback=_symbols_callback, metavar="SYM [SYM…]",
                     help="One or more tickers after one --symbols, separated by spaces or commas (--symbols AAPL MSFT)."),
    ]
    if windows:
        options += [
            click.option("--train-start", default=_DEFAULT_TRAIN_START, show_default=True, callback=date_callback,
                         metavar="DATE", help="First day of the training window (YYYY-MM-DD)."),
            click.option("--train-end", default=_DEFAULT_TRAIN_END, show_default=True, callback=date_callback,
                         metavar="DATE", help="Last day of the training window (YYYY-MM-DD)."),
        ]
    options += [
        click.option("--feature-count", type=click.IntRange(1, FEATURE_CATALOG_SIZE), default=21, show_default=True,
                     help=f"How many features of the catalog of {FEATURE_CATALOG_SIZE} to use."),
        click.option("--data-source", default="yfinance", show_default=True, callback=data_source_callback,
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
        click.option("--hp", "hyperparameters", multiple=True, callback=_hp_callback, metavar="KEY=VALUE",
                     help=f"Override a hyperparameter (repeatable). Known — {_HP_HELP}."),
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
    options: dict[str, Any] = dict(
        feature_count=opts["feature_count"], data_source=opts["data_source"], timesteps=opts["timesteps"],
        algo=opts["algo"].lower(), seed=opts["seed"], cost_bps=opts["cost_bps"], allow_short=opts["allow_short"],
        episode_length=opts["episode_length"], hyperparams=opts["hyperparameters"],
    )
    if opts["data_seed"] is not None:
        options["data_seed"] = opts["data_seed"]
    return options


def configs_from(opts: dict[str, Any]) -> list[TrainConfig]:
    """One resolved config per symbol — validated before any I/O (exit 2), exactly as
    ``TrainingManager.get`` resolves it."""
    from trainkit.manager import TrainingManager

    return [TrainingManager.config_for(sym, opts["train_start"], opts["train_end"], **train_options(opts))
            for sym in opts["symbols"]]


FORCE_OPTION = click.option(
    "--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, metavar="[true|false]",
    help="Retrain even if a cached model exists (--force, or --force=true|false for scripts).")
WORKERS_OPTION = click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Train in parallel processes (never more than there are models to train).")
EXECUTOR_OPTION = click.option(
    "--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
    help="Where models train: local processes (--workers), or one Ray task per model on a Ray cluster "
         "(pip install trainkit[ray]).")
RAY_ADDRESS_OPTION = click.option(
    "--ray-address", default=None, metavar="ADDR",
    help="Ray cluster for --executor ray: host:port of the head node, ray://host:10001 or auto "
         "[default: RAY_ADDRESS, else a local Ray instance sized to this machine]. A remote cluster needs an "
         "http(s):// tracking server.")


@cli.command(cls=SymbolsCommand, short_help="Train, or fetch from the cache, one model per symbol.")
@model_options()
@FORCE_OPTION
@click.option("--register", is_flag=True, help="Register each model in the Model Registry as trainkit-<SYMBOL>.")
@WORKERS_OPTION
@EXECUTOR_OPTION
@RAY_ADDRESS_OPTION
@click.option("--dry-run", is_flag=True, help="Print each config's hash and whether it is cached; train nothing.")
@click.pass_obj
def train(settings: Settings, force: bool, register: bool, workers: int, executor: str, ray_address: str | None,
          dry_run: bool, **opts: Any) -> None:
    """Train (or fetch from the cache) one model per symbol.

    Prints one line per symbol: symbol, cached / trained / fell back to synthetic, model URI,
    seconds. A model is served from the cache when a finished run with the same config hash
    exists (see --dry-run and `trainkit explain`); --force retrains.
    """
    from trainkit.executors import make_executor
    from trainkit.manager import ModelRequest

    configs = configs_from(opts)
    # exit 2 on --ray-address without --executor ray, before any I/O; a dry run trains nothing, so it
    # starts no local worker server
    runner = make_executor(executor, workers=1 if dry_run else min(workers, len(configs)), verbose=settings.verbose,
                           address=ray_address)
    symbols, json_mode, no_fallback = opts["symbols"], opts["json_mode"], opts["no_fallback"]

    with stdout_for(json_mode) as out:
        manager = settings.manager()
        if dry_run:
            _train_dry_run(manager, configs, out, json_mode)
            return

        project_run_id = env_settings.MLFLOW_RUN_ID.get()
        if project_run_id and len(symbols) > 1:
            log.warning("running under `mlflow run` with %d symbols: the project run %s records none of them "
                        "(pass one symbol per project run)", len(symbols), project_run_id)
            project_run_id = None
        rows: list[dict[str, Any]] = []
        codes: list[int] = []
        width = max(len(s) for s in symbols)

        def report(row: dict[str, Any], code: int) -> None:
            if code == EXIT_OK and register:
                code = register_row(manager, row)
            rows.append(row)
            codes.append(code)
            if not json_mode or row["status"] == "error":  # an error is one line on stderr in both modes
                print_train_row(out, row, width)

        if project_run_id:  # `mlflow run`: one symbol, in this process, recorded in the project run
            try:
                res = manager.get_config(configs[0], force=force, no_fallback=no_fallback, project_run_id=project_run_id)
                report(result_row(res), EXIT_OK)
            except TrainkitError as exc:
                report(error_row(configs[0].symbol, exc), exc.exit_code)
        else:
            requests = [ModelRequest(c, force=force, no_fallback=no_fallback) for c in configs]
            with contextlib.closing(manager.iter_models(requests, runner)) as outcomes:  # Ctrl-C: cancelled at once
                for outcome in outcomes:
                    if outcome.result is not None:
                        report(result_row(outcome.result), EXIT_OK)
                    else:
                        report(error_row(outcome.request.config.symbol, outcome.error), outcome.exit_code)

        if json_mode:
            order = {s: i for i, s in enumerate(symbols)}
            emit_json(out, sorted(rows, key=lambda r: order[r["symbol"]]))
    if any(codes):
        raise click.exceptions.Exit(max(codes))


def _train_dry_run(manager: Any, configs: list[TrainConfig], out: Any, json_mode: bool) -> None:
    rows = []
    for c in configs:
        rec = manager.lookup(c)  # reads only: a dry run creates no experiment
        rows.append({
            "symbol": c.symbol, "config_hash": c.config_hash, "cached": rec is not None,
            "model_uri": rec.model_uri if rec else None, "run_id": rec.run_id if rec else None,
            "status": rec.status if rec else None, "config": c.to_dict(),
        })
    if json_mode:
        emit_json(out, rows)
        return
    width = max(len(c.symbol) for c in configs)
    for r in rows:
        if r["cached"]:
            what = f"cached  {r['model_uri']}" + ("  (trained on synthetic fallback data)" if r["status"] == "fallback" else "")
        else:
            what = "not cached (would train)"
        out.write(f"{r['symbol']:<{width}}  {r['config_hash']}  {what}\n")


def error_row(symbol: str, exc: BaseException | None) -> dict[str, Any]:
    if exc is not None and _state.verbose and not isinstance(exc, click.ClickException):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return {"symbol": symbol, "status": "error", "error": one_line(exc) if exc is not None else "unknown error",
            "exit_code": int(getattr(exc, "exit_code", EXIT_RUNTIME))}


def result_row(res: Any) -> dict[str, Any]:
    """A ``train --json`` row: symbol, status (cached|trained|fallback), model_uri, run_id,
    config_hash, seconds, data_source, fallback_reason."""
    return {
        "symbol": res.config.symbol,
        "status": res.status,
        "model_uri": res.model_uri,
        "run_id": res.run_id,
        "config_hash": res.config_hash,
        "seconds": round(res.seconds, 3),
        "data_source": res.config.data_source,
        "fallback_reason": res.fallback_reason,
    }


def register_row(manager: Any, row: dict[str, Any]) -> int:
    """``--register``: adds ``registered`` ("name/version") to the row and returns 0, or adds
    the error and returns its exit code (the model itself is fine and stays cached)."""
    try:
        name, version = manager.register(row["model_uri"])
    except TrainkitError as exc:
        log.error("%s: could not register %s: %s", row["symbol"], row["model_uri"], one_line(exc))
        row.update(registered=None, error=f"registration failed: {one_line(exc)}")
        return exc.exit_code
    row["registered"] = f"{name}/{version}"
    return EXIT_OK


def print_train_row(out: Any, row: dict[str, Any], width: int) -> None:
    if row["status"] == "error":
        sys.stderr.write(f"error: {row['symbol']}: {row['error']}\n")
        return
    status = STATUS_TEXT.get(row["status"], row["status"])
    line = f"{row['symbol']:<{width}}  {status:<22}  {row['model_uri']}  {row['seconds']:.1f}s"
    if row.get("registered"):
        line += f"  registered {row['registered']}"
    out.write(line + "\n")
    out.flush()


# ----------------------------------------------------------------------------- explain
@cli.command(cls=SymbolsCommand, short_help="Why is a request (not) served from the cache?")
@model_options()
@click.option("--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, hidden=True)
@click.option("--register", is_flag=True, hidden=True)
@click.option("--workers", type=int, default=1, hidden=True)
@click.option("--executor", default="local", hidden=True)
@click.option("--ray-address", default=None, hidden=True)
@click.option("--dry-run", is_flag=True, hidden=True)
@click.pass_obj
def explain(settings: Settings, force: bool, register: bool, workers: int, executor: str, ray_address: str | None,
            dry_run: bool, **opts: Any) -> None:
    """Explain a `train` request without training: its resolved config and hash, whether it
    is cached (which run answers, and why other runs with that hash do not), and when it is
    not, the nearest cached configs of the symbol with exactly the fields that differ.

    Takes the same options as `train` (a train command line can be explained as it is; the
    options that only change how train runs are ignored). Reads the tracking store and the
    local download cache only: never the network, never writes.
    """
    configs = configs_from(opts)
    with stdout_for(opts["json_mode"]) as out:
        manager = settings.manager()
        explanations = [manager.explain(c, no_fallback=opts["no_fallback"]) for c in configs]
        if opts["json_mode"]:
            emit_json(out, [e.to_dict() for e in explanations])
            return
        for e in explanations:
            _print_explanation(out, e)


def _print_explanation(out: Any, e: Any) -> None:
    c = e.config
    out.write(f"{c.symbol}  config hash {c.config_hash}\n")
    if e.answer is not None:
        a = e.answer
        out.write(f"  cached: {a.model_uri}  ({a.status}, created {created_text(a.created)} UTC)\n")
    else:
        out.write("  not cached: a train request with these options trains a new model\n")
    if e.note:
        out.write(f"  note: {e.note}\n")
    for n in e.not_served:
        out.write(f"  not served: run {n.run_id} ({n.status}): {n.reason}\n")
    if e.answer is None:
        if e.nearest:
            out.write(f"  nearest cached configs of {c.symbol}:\n")
            for near in e.nearest:
                out.write(f"    {near.model.model_uri}  ({len(near.differences)} field(s) differ)\n")
                for d in near.differences:
                    out.write(f"      {d}\n")
        else:
            out.write(f"  no cached model of {c.symbol} in this experiment to compare with\n")
    out.write("  resolved config:\n")
    for key, value in c.to_params().items():
        out.write(f"    {key} = {value}\n")
    out.flush()


# ----------------------------------------------------------------------------- list
@cli.command("list", short_help="List cached models and trainings in progress.")
@click.option("--symbol", "-s", default=None, metavar="SYM", callback=_symbol_callback, help="Only this symbol.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document (a list of rows) on stdout.")
@click.pass_obj
def list_(settings: Settings, symbol: str | None, json_mode: bool) -> None:
    """List cached models (and trainings in progress), newest first."""
    with stdout_for(json_mode) as out:
        models = settings.manager().list_cached_models(symbol=symbol)
        if json_mode:
            emit_json(out, [m.to_dict() for m in models])
            return
        if not models:
            where = f" for {symbol}" if symbol else ""
            out.write(f"no cached models{where} in experiment {settings.experiment!r}\n")
            return
        print_models(out, models, title=None)


def source_text(m: Any) -> str:
    eff = m.data_source_effective or m.data_source
    if eff.startswith("csv:"):
        eff = "csv:" + os.path.basename(eff[4:])
    if m.fell_back:
        return f"{eff} (FALLBACK from {m.data_source})"
    return eff


def created_text(iso: str) -> str:
    return iso.replace("T", " ")[:16] if iso else ""


def print_rich(out: Any, renderable: Any) -> None:
    """Print a rich renderable: in colour on a terminal; piped, as plain text that is not cut
    to 80 columns (run ids must survive ``| grep``) and has no trailing blanks."""
    import io

    from rich.console import Console

    if hasattr(out, "isatty") and out.isatty():
        # never squeeze a table into a narrow terminal (rich would cut ids and drop columns):
        # print it at its natural width and let the terminal wrap long rows
        console = Console(file=out, soft_wrap=False, highlight=False)
        natural = console.measure(renderable, options=console.options.update_width(1000)).maximum
        console.width = max(console.width, natural)
        console.print(renderable)
        return
    buf = io.StringIO()
    Console(file=buf, width=250, soft_wrap=False, highlight=False, color_system=None).print(renderable)
    out.write("\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n")
    out.flush()


def print_models(out: Any, models: Sequence[Any], title: str | None, extra: dict[str, str] | None = None) -> None:
    from rich.table import Table

    if title:
        out.write(title + "\n")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("symbol", "algo", "window", "timesteps", "features", "source", "status", "hash", "created (UTC)", "run id"):
        table.add_column(name, no_wrap=True)
    if extra is not None:
        table.add_column("kept because")
    for m in models:
        status = m.status + (f" ({', '.join(m.registered)})" if m.registered else "")
        cells = [
            m.symbol, m.algo, f"{m.train_start}..{m.train_end}",
            f"{m.timesteps:,}" if m.timesteps is not None else "?",
            str(m.feature_count) if m.feature_count is not None else "?",
            ("[yellow]" + source_text(m) + "[/yellow]") if m.fell_back else source_text(m),
            status, m.config_hash[:8], created_text(m.created), m.run_id,
        ]
        if extra is not None:
            cells.append(extra.get(m.run_id, ""))
        table.add_row(*cells)
    print_rich(out, table)


# ----------------------------------------------------------------------------- clear
def _older_than_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_older_than(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).replace("--older-than ", "")) from None
    return value


def _hash_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_config_hash(value, "the hash")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command(short_help="Remove cached models (shows them and asks first).")
@click.option("--symbol", "-s", default=None, metavar="SYM", callback=_symbol_callback, help="Only models of this symbol.")
@click.option("--older-than", default=None, callback=_older_than_callback, metavar="DATE|DURATION",
              help="Only models created before a date (2022-01-01) or longer ago than a duration (30d, 12h, 2w).")
@click.option("--config-hash", default=None, callback=_hash_callback, metavar="HASH", help="Only models with this config hash.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required when stdin is not a terminal).")
@click.option("--purge", is_flag=True, help="Delete for good (local stores only) instead of MLflow's restorable soft delete.")
@click.option("--include-registered", is_flag=True, help="Also remove models registered in the Model Registry.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document ({removed, kept, …}) on stdout.")
@click.pass_obj
def clear(settings: Settings, symbol: str | None, older_than: str | None, config_hash: str | None, dry_run: bool,
          yes: bool, purge: bool, include_registered: bool, json_mode: bool) -> None:
    """Remove cached models matching every filter given (all of trainkit's when none is).

    Shows what it will remove, and what it keeps because it is registered, then asks. Without
    a terminal to ask on, it refuses (exit 2) unless --yes. Runs of other tools are never
    touched. Removed runs are soft-deleted (restorable in MLflow) unless --purge.
    """
    with stdout_for(json_mode) as out:
        manager = settings.manager()
        remove, kept = manager.plan_clear(symbol=symbol, older_than=older_than, config_hash=config_hash,
                                          include_registered=include_registered)
        reasons = {m.run_id: f"registered as {', '.join(m.registered)}; pass --include-registered" for m in kept}
        doc = {"dry_run": dry_run, "purge": purge, "deleted": False,
               "removed": [m.to_dict() for m in remove],
               "kept": [{**m.to_dict(), "reason": reasons[m.run_id]} for m in kept]}
        human = sys.stderr if json_mode else out
        if not json_mode:
            verb = "would remove" if dry_run else "will remove"
            if remove:
                print_models(out, remove, title=f"{verb} {len(remove)} model(s)" + (" for good (purge)" if purge else ""))
            else:
                out.write("nothing to remove\n")
            if kept:
                print_models(out, kept, title=f"keeping {len(kept)} registered model(s)", extra=reasons)
        if dry_run or not remove:
            if not json_mode and dry_run and remove:
                out.write("dry run: nothing deleted\n")
            if json_mode:
                emit_json(out, doc)
            return
        if not yes:
            if not _interactive():
                raise _Refused(
                    f"refusing to delete {len(remove)} model(s) without confirmation: stdin is not a terminal; "
                    "re-run with --yes (or --dry-run to preview)"
                )
            what = f"{'Purge' if purge else 'Delete'} {len(remove)} model(s)?"
            if not click.confirm(what, default=False, err=True):
                human.write("nothing deleted\n")
                raise click.exceptions.Exit(EXIT_RUNTIME)
        manager.delete(remove, purge=purge)  # exactly what was shown, not a re-query
        doc["deleted"] = True
        if json_mode:
            emit_json(out, doc)
        else:
            out.write(f"{'purged' if purge else 'deleted'} {len(remove)} model(s)"
                      + ("" if purge else " (soft-deleted: restorable in MLflow until `mlflow gc` removes them)") + "\n")


class _Refused(click.UsageError):
    """``clear`` without ``--yes`` and without a terminal: a usage problem (exit 2)."""


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


# ----------------------------------------------------------------------------- backtest
def model_uri_callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The whole URI grammar, before any store is opened (a malformed URI writes nothing)."""
    try:
        return validate_model_uri(value)
    except ModelURIError as exc:
        raise click.BadParameter(str(exc)) from None


def _checked(check: Any) -> Any:
    """A click callback from a contract check (``None`` passes)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


@cli.command(short_help="Backtest a model over a window, against buy-and-hold.")
@click.option("--model-uri", required=True, callback=model_uri_callback, metavar="URI",
              help="runs:/<run_id>/model, models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>.")
@click.option("--start", required=True, callback=date_callback, metavar="DATE", help="First day of the test window.")
@click.option("--end", required=True, callback=date_callback, metavar="DATE", help="Last day of the test window.")
@click.option("--data-source", default=None, callback=data_source_callback, metavar="yfinance|synthetic|csv:PATH",
              help="Prices to test on [default: the source the model was trained on].")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def backtest(settings: Settings, model_uri: str, start: str, end: str, data_source: str | None, json_mode: bool) -> None:
    """Run a model over a test window: metrics vs buy-and-hold, logged as a run in the
    trainkit-backtests experiment that points back at the training run."""
    if start >= end:
        raise click.BadParameter(f"--start {start} must be before --end {end}", param_hint="'--start'")
    with stdout_for(json_mode) as out:
        from trainkit.backtest import run_backtest

        result = run_backtest(model_uri, start, end, data_source=data_source, tracking_uri=settings.tracking_uri)
        project_run_id = env_settings.MLFLOW_RUN_ID.get()
        if project_run_id and result.run_id:  # under `mlflow run -e backtest`: say where the result is
            settings.manager().note_backtest(project_run_id, result)
        if json_mode:
            emit_json(out, result.to_dict())
            return
        _print_backtest(out, model_uri, start, end, result)


def _print_backtest(out: Any, model_uri: str, start: str, end: str, result: Any) -> None:
    from rich.table import Table

    days = f"{result.first_day}..{result.last_day}, {result.n_days} trading days"
    source = result.data_source_effective
    if source != result.data_source:
        source += f" (FALLBACK from {result.data_source})"
    out.write(f"backtest of {model_uri} ({result.symbol}) over {start}..{end} ({days}) on {source}\n")
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        table.add_row(k, f"{v:,.4f}" if isinstance(v, float) else str(v))
    print_rich(out, table)  # run_backtest already logged its warnings (in-sample window, fallback data) to stderr
    run_id = getattr(result, "run_id", None)
    if run_id and getattr(result, "cached", False):
        out.write(f"read back from run {run_id} in experiment trainkit-backtests (this backtest was cached)\n")
    elif run_id:
        out.write(f"logged as run {run_id} in experiment trainkit-backtests\n")


# ----------------------------------------------------------------------------- register
@cli.command(short_help="Register a model in the MLflow Model Registry.")
@click.option("--model-uri", required=True, callback=model_uri_callback, metavar="URI", help="The model to register.")
@click.option("--name", default=None, metavar="NAME", callback=_checked(check_registered_name),
              help="Registered model name [default: trainkit-<SYMBOL>].")
@click.option("--alias", default=None, metavar="ALIAS", callback=_checked(check_alias),
              help="Also point this alias (e.g. champion) at the new version.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def register(settings: Settings, model_uri: str, name: str | None, alias: str | None, json_mode: bool) -> None:
    """Register a cached model in the MLflow Model Registry (registered models are kept by
    `trainkit clear` unless --include-registered)."""
    with stdout_for(json_mode) as out:
        reg_name, version = settings.manager().register(model_uri, name=name, alias=alias)
        doc = {"model_uri": model_uri, "name": reg_name, "version": version, "alias": alias,
               "registered_uri": f"models:/{reg_name}/{version}",
               "alias_uri": f"models:/{reg_name}@{alias}" if alias else None}
        if json_mode:
            emit_json(out, doc)
            return
        line = f"registered {model_uri} as {reg_name} version {version}: models:/{reg_name}/{version}"
        if alias:
            line += f" (alias {alias}: models:/{reg_name}@{alias})"
        out.write(line + "\n")


# ----------------------------------------------------------------------------- entry point
def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (what :func:`main` exits with)."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="trainkit", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except (_Interrupted, KeyboardInterrupt, click.exceptions.Abort) as exc:
        if _state.verbose:
            cause = exc.__cause__ or exc
            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not caused_by_interrupt(exc):
            return _report(exc)
        if _state.verbose:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED


def _report(exc: Exception) -> int:
    """One line on stderr for an error that is not an interrupt (the traceback with -v), and
    its exit code."""
    if isinstance(exc, click.ClickException):
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None and not isinstance(exc, _Refused):
            hint = f" (see '{ctx.command_path} --help')"
        sys.stderr.write(f"error: {exc.format_message()}{hint}\n")
        return exc.exit_code
    if _state.verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, TrainkitError):
        sys.stderr.write(f"error: {one_line(exc)}\n")
        return exc.exit_code
    # a bug or an error nobody translated: still one line
    hint = "" if _state.verbose else " (run with --verbose for the traceback)"
    sys.stderr.write(f"error: {type(exc).__name__}: {one_line(exc)}{hint}\n")
    return EXIT_RUNTIME


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``trainkit``) and ``python -m trainkit``: run, then exit
    without tearing down the interpreter (see :func:`_exit_now`). Call :func:`run` to stay
    in-process."""
    _exit_now(run(argv))


def _exit_now(code: int) -> None:
    """Exit as soon as the work is done. A normal exit spends 1-3 s unloading the thousands
    of modules torch, stable-baselines3 and MLflow bring in, after the result was printed.
    Everything a normal exit does that matters still happens here, in the same order:
    non-daemon threads are joined, atexit handlers run (MLflow's flushes, logging.shutdown),
    stdout and stderr are flushed; only the module teardown is skipped."""
    import atexit
    import threading

    # what the interpreter does first at exit: run threading's exit hooks (they tell
    # concurrent.futures workers — e.g. MLflow's artifact-copy pools — to stop), then join
    # the non-daemon threads. Joining without the hooks first can wait forever.
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - private API; fall back to plain joins
        for t in threading.enumerate():
            if t is not threading.current_thread() and not t.daemon:
                t.join(timeout=10)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


# commands of larger features, one module each (they register themselves on the group)
from trainkit.cli import signal as _signal_command  # noqa: E402,F401  (trainkit signal)
from trainkit.cli import walkforward as _walkforward_command  # noqa: E402,F401  (trainkit walkforward)

if __name__ == "__main__":  # pragma: no cover
    main()
