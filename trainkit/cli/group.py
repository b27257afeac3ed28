"""The ``trainkit`` click group: its global options, the :class:`Settings` every command gets
through ``ctx.obj``, and logging on stderr.

The group has no commands of its own making: each command is a module of this package
(``trainkit/cli/train.py``, …) that knows nothing of the group, and the package
(``trainkit/cli/__init__.py``) adds them all to it. So this module imports no command, and no
command imports the package: there is no import cycle.

Import discipline: ``trainkit --help`` must answer fast, so only click and trainkit's
stdlib-only modules are imported here; the manager (MLflow, …) is imported when a command asks
:meth:`Settings.manager` for it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from trainkit import settings as env_settings
from trainkit.errors import caused_by_interrupt
from trainkit.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.manager import TrainingManager

__all__ = ["Interrupted", "Settings", "cli", "setup_logging", "state"]


@dataclass
class Settings:
    """Global options, shared by every command through ``ctx.obj``."""

    tracking_uri: str | None = None
    experiment: str = "trainkit"
    verbose: int = 0

    def manager(self, *, create: bool = True) -> TrainingManager:
        """The API every command is a thin layer over, on the store the global options name
        (imported here, when a command runs: never for ``--help``). ``create=False`` for the
        read paths: a store that does not exist is :class:`~trainkit.errors.NoStore`, never
        created (docs/ARCHITECTURE.md, *Read paths write nothing*)."""
        from trainkit.manager import TrainingManager

        return TrainingManager(self.tracking_uri, self.experiment, create=create)

    def reader(self) -> TrainingManager | None:
        """The manager for a read that may find no store at all: ``None`` then (nothing is
        cached there, and a read creates no store to find that out)."""
        from trainkit.errors import NoStore

        try:
            return self.manager(create=False)
        except NoStore:
            return None


#: the global options of the current run: the shell reads ``verbose`` after click has returned
state = Settings()


class Interrupted(Exception):
    """Ctrl-C, carried past click (which would print a blank line and raise Abort)."""


# ----------------------------------------------------------------------------- logging
class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and state.verbose:
            msg += "\n" + self.formatException(record.exc_info)
        return env_settings.redact_text(msg)  # a message may quote a URI or a setting


class _AfterInterrupt(logging.Filter):
    """Drops log records about an exception that a Ctrl-C caused (unless -v)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return bool(state.verbose) or not caused_by_interrupt(exc)


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


# ----------------------------------------------------------------------------- the group
class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc


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

    Exit codes: 0 ok, 1 runtime failure, 2 invalid command line or values, 3 `promote` refused
    by a gate (nothing changed), 130 interrupted.
    """
    state.tracking_uri = tracking_uri or None
    state.experiment = experiment
    state.verbose = verbose
    ctx.obj = state
    setup_logging(verbose)
    if not ctx.resilient_parsing:
        env_settings.check()  # an invalid TRAINKIT_* variable is exit 2 before any I/O
