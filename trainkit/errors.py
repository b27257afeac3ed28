"""trainkit's exception types.

Two families, because callers act on them differently:

* :class:`UserError` — the request itself is wrong (a bad symbol, a reversed window, an
  unknown algorithm, a malformed model URI). Nothing was fetched, trained or written. The CLI
  exits with code 2. The message says what is wrong *and* how to fix it.
* :class:`RuntimeFailure` — the request was fine but the world was not (data could not be
  fetched, the tracking server is down, a model's bytes do not match their digest). The CLI
  exits with code 1.

Every message is a single line meant for a human; no traceback is shown for either family
unless the user asks for it (``--verbose``).
"""

from __future__ import annotations


class TrainkitError(Exception):
    """Base class of every error trainkit raises on purpose."""

    exit_code: int = 1


class UserError(TrainkitError):
    """The request is invalid; fixing the input fixes the problem (exit code 2)."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A configuration value is out of range, malformed or unknown."""


class ModelURIError(UserError, ValueError):
    """A model URI is malformed (not ``runs:/<id>/<path>`` or ``models:/…``)."""


class RuntimeFailure(TrainkitError):
    """A runtime failure: data, store, network or integrity (exit code 1)."""

    exit_code = 1


class DataError(RuntimeFailure):
    """Market data could not be obtained or is unusable (names the source and the problem)."""


class StoreError(RuntimeFailure):
    """The MLflow tracking store or artifact store failed or is unreachable."""


class TrackingServerUnreachable(StoreError):
    """The tracking server did not answer; the message names the URI."""


class PermissionDenied(StoreError):
    """The tracking server refused the signed-in user a permission the request needs; the
    message names the user, the permission and the experiment (or model)."""


class ModelNotFoundError(StoreError):
    """A model URI is well formed but names nothing that exists (or it was deleted)."""


class NoStore(ModelNotFoundError):
    """A read found no store at the tracking URI (a sqlite file that does not exist): nothing
    has been trained into it. Reads never create one (docs/ARCHITECTURE.md, *Read paths*)."""


class IntegrityError(StoreError):
    """A model's bytes do not match the digest recorded when it was trained."""


class TrainingInterrupted(RuntimeFailure):
    """Training was interrupted (Ctrl-C) or its claim was taken over by another trainer."""


def caused_by_interrupt(exc: BaseException | None) -> bool:
    """Did ``exc`` come out of a Ctrl-C? True for a ``KeyboardInterrupt`` itself, and for an
    error raised while one was being handled (a library's cleanup that failed after the
    interrupt landed in it, e.g. a database left locked): that is still the user's Ctrl-C, and
    ends as one (run KILLED, exit 130)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
