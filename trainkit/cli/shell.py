"""The process shell of the ``trainkit`` command line: run the group, turn whatever ended it
into one line on stderr and an exit code (:mod:`trainkit.cli.exit`), and exit.

* ``0`` success;
* ``2`` the command line or a value is invalid (click usage errors, :class:`~trainkit.errors.UserError`),
  reported before anything is fetched, trained or written — or ``clear`` refused to delete
  without confirmation (:class:`Refused`);
* ``1`` a runtime failure (data, store, network, integrity: every other
  :class:`~trainkit.errors.TrainkitError`), or the user declined ``clear``'s prompt;
* ``3`` ``promote`` refused: a gate did not pass, nothing changed (the command returns it);
* ``130`` interrupted (Ctrl-C).

Errors are one line on stderr (``error: …``); ``--verbose`` adds the traceback. The commands
raise; only this module decides how an error is shown and what it exits with.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click

from trainkit.cli.exit import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, exit_now
from trainkit.cli.group import Interrupted, cli, state
from trainkit.cli.output import one_line
from trainkit.errors import TrainkitError, caused_by_interrupt
from trainkit.settings import redact_text

__all__ = ["Refused", "main", "run"]


class Refused(click.UsageError):
    """A command refused to act without confirmation (``clear`` without ``--yes`` and without a
    terminal): a usage problem (exit 2), shown without the ``--help`` hint."""


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (what :func:`main` exits with); in-process callers
    (tests, scripts) use this: it never exits."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="trainkit", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except (Interrupted, KeyboardInterrupt, click.exceptions.Abort) as exc:
        return _interrupted(exc.__cause__ or exc)
    except Exception as exc:  # noqa: BLE001 - every error ends as one line and an exit code
        if not caused_by_interrupt(exc):
            return _report(exc)
        return _interrupted(exc)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``trainkit``) and ``python -m trainkit``: run, then exit
    without tearing down the interpreter (:func:`trainkit.cli.exit.exit_now`). Call
    :func:`run` to stay in-process."""
    exit_now(run(argv))


def _interrupted(cause: BaseException) -> int:
    """Ctrl-C, however it surfaced: one line ``interrupted`` (the traceback with -v), exit 130."""
    if state.verbose:
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
    sys.stderr.write("interrupted\n")
    return EXIT_INTERRUPTED


def _report(exc: Exception) -> int:
    """One line on stderr for an error that is not an interrupt (the traceback with -v), and
    its exit code. Whatever it writes has its secrets masked (:func:`redact_text`): a message
    may quote a URI or a setting."""
    if isinstance(exc, click.ClickException):
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None and not isinstance(exc, Refused):
            hint = f" (see '{ctx.command_path} --help')"
        _err(f"error: {exc.format_message()}{hint}\n")
        return exc.exit_code
    if state.verbose:
        _err("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if isinstance(exc, TrainkitError):
        _err(f"error: {one_line(exc)}\n")
        return exc.exit_code
    # a bug or an error nobody translated: still one line
    hint = "" if state.verbose else " (run with --verbose for the traceback)"
    _err(f"error: {type(exc).__name__}: {one_line(exc)}{hint}\n")
    return EXIT_RUNTIME


def _err(text: str) -> None:
    sys.stderr.write(redact_text(text))
