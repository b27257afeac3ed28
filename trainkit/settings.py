"""Every environment variable trainkit reads or sets, declared once (stdlib only).

Why one module: a setting read in several places drifts — today's defaults, validation and
error wording were written five times with two different rules. Here each variable has a
name, a type, a default, bounds and a sentence of documentation, and there is one rule for a
bad value: :class:`~trainkit.errors.ConfigError` (exit 2) with one line naming the variable,
the value and what would be accepted. Nothing here reads the environment at import time; a
setting is read when it is used, so tests and long-lived processes see changes.

The pattern is MLflow's own ``mlflow/environment_variables.py``. The MLflow variables below
are the ones trainkit *sets* (as defaults, never over the user's value) or reads (the project
run of ``mlflow run``); their meaning is MLflow's.

Where it sits: below everything but :mod:`trainkit.errors` (the data layer reads the download
cache directory and the Yahoo timeout from it, the store reads the lease timings), which is
why it is ``trainkit.settings`` and not part of ``trainkit.store`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from trainkit.errors import ConfigError

T = TypeVar("T")


def _parse_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _parse_int(raw: str) -> int:
    return int(raw)


def _parse_str(raw: str) -> str:
    return raw


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


_PARSERS: dict[type, Callable[[str], Any]] = {float: _parse_float, int: _parse_int, str: _parse_str, bool: _parse_bool}
_KINDS = {float: "a number", int: "a whole number", str: "text", bool: "true or false"}


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: ``get()`` returns the typed value or the default, and raises
    :class:`ConfigError` (exit 2, one line) for a value that does not parse or is out of
    bounds — never silently falls back to the default."""

    name: str
    type: type
    default: T
    doc: str
    minimum: float | None = None  # inclusive, for numbers
    maximum: float | None = None  # inclusive, for numbers
    above: float | None = None  # exclusive lower bound, for numbers
    check: Callable[[Any], str | None] | None = None  # returns what is wrong with a parsed value, or None

    def is_set(self) -> bool:
        return bool(os.environ.get(self.name, "").strip())

    def raw(self) -> str | None:
        value = os.environ.get(self.name, "").strip()
        return value or None

    def get(self) -> T:
        raw = self.raw()
        if raw is None:
            return self.default
        try:
            value = _PARSERS[self.type](raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.name}={raw!r} is not {_KINDS[self.type]}: {self._accepts()}") from None
        if self.type in (int, float):
            if (self.above is not None and not value > self.above) or (
                self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise ConfigError(f"{self.name}={raw!r} is out of range: {self._accepts()}")
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise ConfigError(f"{self.name}={redact_url(raw)!r} {problem}; {self.doc}, or unset it")
        return value  # type: ignore[return-value]

    def put(self, raw: str | None) -> None:
        """Set the variable to ``raw``, or remove it when ``None`` (restoring a saved ``raw()``)."""
        if raw is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = raw

    def set_default(self, value: Any) -> None:
        """Set the variable for this process (and its children) unless the user set it."""
        if not self.is_set():
            os.environ[self.name] = str(value)

    def _accepts(self) -> str:
        bounds = []
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        what = f"{_KINDS[self.type]} {' and '.join(bounds)}".strip()
        default = "" if self.default is None else f" (default {self.default})"
        return f"{self.doc}; expected {what}{default}, or unset it"


def redact_url(url: str) -> str:
    """``url`` without its password (``http://user:***@host:port``): URLs get printed."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def redact_text(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` password masked, and the value of every
    credential variable set in this process (:func:`is_credential`) replaced by ``***``: what
    trainkit prints or logs goes through here (docs/ARCHITECTURE.md, *Secrets*)."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    for name, value in os.environ.items():
        if len(value) >= 4 and is_credential(name, value) and name != MLFLOW_TRACKING_USERNAME.name and value in text:
            text = text.replace(value, "***")
    return text


_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|(^|_)KEY$", re.IGNORECASE)


def is_credential(name: str, value: str = "") -> bool:
    """Does the environment variable ``name`` (set to ``value``) carry a credential? Its name
    says so (a password, token, secret or key: ``MLFLOW_TRACKING_PASSWORD``,
    ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_FLASK_SERVER_SECRET_KEY``…), it is the user name that
    goes with the password (forwarding one without the other would mix two identities), or its
    value is a URL with a password in it. The one rule of what trainkit never forwards to Ray
    by default nor prints."""
    if name == MLFLOW_TRACKING_USERNAME.name or _SECRET_NAME.search(name):
        return True
    try:
        return urllib.parse.urlsplit(value.strip()).password is not None
    except ValueError:
        return False


_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def _proxy_problem(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError:
        return "is not a proxy URL"
    if (parts.scheme.lower() not in _PROXY_SCHEMES or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or port == 0):
        return (f"is not a proxy URL: expected scheme://host[:port] with scheme {', '.join(_PROXY_SCHEMES)} "
                "(e.g. http://proxy.example:3128)")
    return None


# ------------------------------------------------------------------------------ trainkit's own
TRAINKIT_CACHE_DIR: Setting[str | None] = Setting(
    "TRAINKIT_CACHE_DIR", str, None, "directory of the local download cache (default: the platform's user cache dir)")
TRAINKIT_YF_TIMEOUT: Setting[float] = Setting(
    "TRAINKIT_YF_TIMEOUT", float, 10.0, "seconds a live Yahoo Finance call may take", above=0, maximum=600)
TRAINKIT_YF_PROXY: Setting[str | None] = Setting(
    "TRAINKIT_YF_PROXY", str, None, "proxy URL every Yahoo Finance request goes through (only yfinance uses it)",
    check=_proxy_problem)
TRAINKIT_HEARTBEAT: Setting[float] = Setting(
    "TRAINKIT_HEARTBEAT", float, 10.0, "seconds between heartbeats of a training lease", above=0, maximum=3600)
TRAINKIT_STALE_AFTER: Setting[float] = Setting(
    "TRAINKIT_STALE_AFTER", float, 120.0,
    "seconds without a heartbeat after which a training lease is stale and taken over", above=0)
TRAINKIT_CLAIM_SETTLE: Setting[float] = Setting(
    "TRAINKIT_CLAIM_SETTLE", float, 1.0,
    "seconds a new lease waits for concurrent claimants to become visible", minimum=0, maximum=60)
TRAINKIT_SERVER_RETRY_S: Setting[float] = Setting(
    "TRAINKIT_SERVER_RETRY_S", float, 180.0,
    "seconds a trainer keeps retrying a tracking server that went away (heartbeats, metrics, publish)",
    minimum=0, maximum=86_400)
TRAINKIT_REGISTERED_NAME: Setting[str] = Setting(
    "TRAINKIT_REGISTERED_NAME", str, "trainkit-{symbol}",
    "template of the registered model name ({symbol} is replaced)")
TRAINKIT_RAY_FORWARD_SECRETS: Setting[bool] = Setting(
    "TRAINKIT_RAY_FORWARD_SECRETS", bool, False,
    "forward MLflow credentials to Ray tasks through runtime_env (visible on Ray's dashboard and logs; "
    "default: the nodes bring their own)")

# ------------------------------------------------------------------------ MLflow's, set or read
MLFLOW_TRACKING_URI: Setting[str | None] = Setting(
    "MLFLOW_TRACKING_URI", str, None, "MLflow tracking URI (default: sqlite:///mlflow.db in the working directory)")
MLFLOW_REGISTRY_URI: Setting[str | None] = Setting(
    "MLFLOW_REGISTRY_URI", str, None, "MLflow model registry URI (default: the tracking URI)")
MLFLOW_TRACKING_USERNAME: Setting[str | None] = Setting(
    "MLFLOW_TRACKING_USERNAME", str, None, "the tracking server's user (recorded as who promoted a model)")
MLFLOW_TRACKING_PASSWORD: Setting[str | None] = Setting(
    "MLFLOW_TRACKING_PASSWORD", str, None, "the tracking server user's password (never printed, logged or forwarded)")
MLFLOW_TRACKING_TOKEN: Setting[str | None] = Setting(
    "MLFLOW_TRACKING_TOKEN", str, None, "a bearer token for the tracking server (never printed, logged or forwarded)")
MLFLOW_RUN_ID: Setting[str | None] = Setting(
    "MLFLOW_RUN_ID", str, None, "the project run `mlflow run` started (trainkit records what served it)")
MLFLOW_HTTP_REQUEST_MAX_RETRIES: Setting[int] = Setting(
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", int, 2, "retries of one MLflow HTTP request (trainkit's default: 2)", minimum=0)
MLFLOW_HTTP_REQUEST_TIMEOUT: Setting[int] = Setting(
    "MLFLOW_HTTP_REQUEST_TIMEOUT", int, 10, "seconds one MLflow HTTP request may take (trainkit's default: 10)", minimum=1)
MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT: Setting[bool] = Setting(
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", bool, True,
    "keep MLflow's 'View run … at' lines off stdout (trainkit's stdout carries --json documents)")
MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR: Setting[bool] = Setting(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", bool, False,
    "MLflow's artifact progress bars (trainkit: off; a walk-forward or a search loads a model per fold)")
MLFLOW_LOGGING_LEVEL: Setting[str] = Setting(
    "MLFLOW_LOGGING_LEVEL", str, "WARNING", "MLflow's own log level (trainkit: WARNING, INFO with -v)")

#: every setting, in the order ``trainkit --help`` and the docs list them
ALL: tuple[Setting[Any], ...] = (
    TRAINKIT_CACHE_DIR, TRAINKIT_YF_TIMEOUT, TRAINKIT_YF_PROXY, TRAINKIT_HEARTBEAT, TRAINKIT_STALE_AFTER, TRAINKIT_CLAIM_SETTLE,
    TRAINKIT_SERVER_RETRY_S, TRAINKIT_REGISTERED_NAME, TRAINKIT_RAY_FORWARD_SECRETS,
    MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN,
    MLFLOW_RUN_ID, MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT,
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR, MLFLOW_LOGGING_LEVEL,
)


def check() -> None:
    """Validate every setting and the rules between them, before any I/O: an invalid or
    inconsistent setting is a :class:`ConfigError` (exit 2) with one line.

    The one rule between settings: a lease must beat more often than it goes stale, or live
    trainers are judged dead and their work is taken over (a heartbeat at least twice per
    staleness period leaves room for one lost beat)."""
    for setting in ALL:
        setting.get()
    beat, stale = TRAINKIT_HEARTBEAT.get(), TRAINKIT_STALE_AFTER.get()
    if beat * 2 > stale:
        raise ConfigError(
            f"TRAINKIT_HEARTBEAT={beat:g} must be at most half of TRAINKIT_STALE_AFTER={stale:g}: "
            "live trainers would be judged stale and their work taken over"
        )
