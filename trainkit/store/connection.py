"""One tracking store, made safe to use: URI resolution, per-scheme preparation, error
translation, experiments and paged search — and the few private MLflow calls trainkit needs,
each behind one named function that says which MLflow version it was checked on.

Why each preparation exists (docs/ARCHITECTURE.md, "MLflow pitfalls"):

* ``sqlite``: several processes opening a brand-new database at once corrupt its schema
  migration for good ("table tags already exists"), so a new database is created and migrated
  under a file lock beside it, once per process, before anything else touches it.
* ``http(s)``: MLflow retries a dead server for minutes by default. Unless the user set them,
  trainkit bounds retries and timeouts (:mod:`trainkit.settings`) and asks ``GET /health``
  once per process, so an unreachable server is reported within seconds, naming its URI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from trainkit import settings
from trainkit.errors import (
    ConfigError,
    ModelNotFoundError,
    ModelURIError,
    NoStore,
    StoreError,
    TrackingServerUnreachable,
    TrainingInterrupted,
)
from trainkit.store.access import (
    Permissions,
    adopt_uri_credentials,
    authorization_header,
    refusal,
)

log = logging.getLogger("trainkit")

_PAGE = 1000
T = TypeVar("T")
_checked_servers: set[str] = set()
_prepared_sqlite: set[str] = set()
_prep_lock = threading.Lock()
_fluent_lock = threading.RLock()


def is_remote(tracking_uri: str) -> bool:
    """A tracking server reached over HTTP (as opposed to a local sqlite/file store)."""
    return tracking_uri.startswith(("http://", "https://"))


def is_local_file_store(tracking_uri: str) -> bool:
    """A store on this machine's disk (sqlite or a path): other machines cannot reach it."""
    return not is_remote(tracking_uri) and not tracking_uri.startswith(("databricks", "postgresql", "mysql", "mssql"))


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI in force: the argument, else ``MLFLOW_TRACKING_URI``, else MLflow's default
    (``sqlite:///mlflow.db`` in the working directory, artifacts in ``./mlruns``) — without
    credentials: ``user:password@`` moves to this process's MLflow credential variables
    (:func:`~trainkit.store.access.adopt_uri_credentials`)."""
    if not tracking_uri:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    return adopt_uri_credentials(tracking_uri)


def store_exists(tracking_uri: str) -> bool:
    """Is there a store at ``tracking_uri`` already? Only a sqlite file can be told apart
    without asking anyone (a server or a database is there, or says it is not). A sqlite file
    that another process is creating right now is waited for (its ``<db>.lock`` is held while
    it is created and migrated): opening a half-made schema would make MLflow create its tables
    a second time, at the same time — the corruption *MLflow pitfalls* describes. Waiting on a
    lock file that exists creates nothing."""
    if not tracking_uri.startswith("sqlite:"):
        return True
    path = sqlite_path(tracking_uri)
    if path is None:
        return True
    if os.path.exists(path + ".lock"):
        from filelock import FileLock

        with FileLock(path + ".lock", timeout=300):
            pass
    return os.path.exists(path) and os.path.getsize(path) > 0


def prepare_tracking(tracking_uri: str, *, create: bool = True) -> None:
    """Make a tracking URI safe to use from many processes, once per process (see the module
    docstring). Also keeps MLflow's "View run … at" lines off stdout, which belongs to the
    user (``--json`` documents), and its artifact progress bars off stderr. ``create=False`` (a read): a sqlite store that does not exist
    is :class:`NoStore` — never created, migrated or locked — and one that exists is used as
    it is (no lock file)."""
    if not create and not store_exists(tracking_uri):
        raise NoStore(f"no store at {tracking_uri}: nothing has been trained into it yet (train a model first, or "
                      "point --tracking-uri / MLFLOW_TRACKING_URI at your store)")
    with _prep_lock:
        settings.MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.set_default("true")
        settings.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set_default("false")
        if is_remote(tracking_uri):
            settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES.set_default(settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES.default)
            settings.MLFLOW_HTTP_REQUEST_TIMEOUT.set_default(settings.MLFLOW_HTTP_REQUEST_TIMEOUT.default)
            if tracking_uri not in _checked_servers:
                check_health(tracking_uri)
                _checked_servers.add(tracking_uri)
        elif create and tracking_uri.startswith("sqlite:") and tracking_uri not in _prepared_sqlite:
            migrate_sqlite_locked(tracking_uri)
            _prepared_sqlite.add(tracking_uri)


def check_health(uri: str) -> None:
    """``GET <uri>/health`` within ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (at most 10 s):
    :class:`TrackingServerUnreachable` naming the URI when nothing answers or it answers 5xx."""
    url = uri.rstrip("/") + "/health"
    timeout = min(float(settings.MLFLOW_HTTP_REQUEST_TIMEOUT.get()), 10.0)
    request = urllib.request.Request(url, headers=authorization_header(uri))  # a proxy in front may ask for it
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (the user's URI)
            if resp.status >= 500:
                raise TrackingServerUnreachable(f"MLflow tracking server at {uri} answered HTTP {resp.status} on /health")
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise TrackingServerUnreachable(
                f"MLflow tracking server at {uri} answered HTTP {exc.code} on /health: check the server's logs"
            ) from None
        # a proxy or auth layer may refuse /health; the real calls will tell
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingServerUnreachable(
            f"cannot reach the MLflow tracking server at {uri} ({reason}): start it (mlflow server …) "
            "or point MLFLOW_TRACKING_URI / --tracking-uri elsewhere"
        ) from None


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:`` URI (``None`` for an in-memory one)."""
    if uri.startswith("sqlite:////"):
        path = "/" + uri[len("sqlite:////"):]
    else:
        path = uri.split(":", 1)[1]
        path = path[3:] if path.startswith("///") else path.lstrip("/")
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)


def migrate_sqlite_locked(uri: str) -> None:
    """Create and migrate a sqlite store under ``<db>.lock`` (filelock)."""
    from filelock import FileLock

    path = sqlite_path(uri)
    if path is None:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with FileLock(path + ".lock", timeout=300):
        from mlflow.tracking import MlflowClient

        # the first client call creates the engine, which creates and migrates the schema
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


# ---------------------------------------------------------------------------- error translation
def error_code(exc: BaseException) -> str:
    """MLflow's error code of an exception (``RESOURCE_DOES_NOT_EXIST``…), or ``""``."""
    return str(getattr(exc, "error_code", "") or "")


def is_not_found(exc: BaseException) -> bool:
    """MLflow's "does not exist" — by error code first, by the message text last (some
    stores raise without a code)."""
    if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
        return True
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text


def is_already_exists(exc: BaseException) -> bool:
    return error_code(exc) == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(exc).lower()


_SERVER_AWAY = re.compile(r"error code (502|503|504)\b|Bad Gateway|Service Unavailable|Gateway Time-?out")


def is_unreachable(exc: BaseException) -> bool:
    """Did the tracking server not answer (refused, reset, timed out, or a gateway saying it is
    away)? Those are worth retrying; anything else is an answer."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and isinstance(cause, (requests.ConnectionError, requests.Timeout)):
        return True
    text = str(exc)
    return "Max retries" in text or "Connection" in text or "timed out" in text or bool(_SERVER_AWAY.search(text))




def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    msg = text.splitlines()[0] if text else type(exc).__name__
    return msg if len(msg) <= limit else msg[:limit] + "…"


class StoreErrors(contextlib.AbstractContextManager):
    """Translate MLflow and network exceptions into one-line :class:`StoreError` s naming the
    URI (:class:`TrackingServerUnreachable` when the server did not answer). trainkit's own
    errors, Ctrl-C and exits pass through untouched."""

    def __init__(self, what: str, uri: str, server: str = "tracking server") -> None:
        self.what, self.uri, self.server = what, uri, server

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(
            exc, (StoreError, ConfigError, ModelURIError, TrainingInterrupted, KeyboardInterrupt, SystemExit)
        ):
            return False
        from mlflow.exceptions import MlflowException

        if isinstance(exc, (MlflowException, OSError)):  # requests' errors are OSErrors
            refused = refusal(exc, self.what, self.uri)
            if refused is not None:  # 401, or one of the two 403s: each says its own fix
                raise refused from exc
            msg = _first_line(exc)
            if is_unreachable(exc):
                raise TrackingServerUnreachable(f"{self.what}: the {self.server} at {self.uri} did not answer ({msg})") from exc
            where = self.uri if self.server == "tracking server" else f"the {self.server} at {self.uri}"
            raise StoreError(f"{self.what} failed on {where}: {msg}") from exc
        return False


def retry_while_unreachable(what: str, uri: str, fn: Callable[[], T], budget: float | None = None) -> T:
    """See :meth:`Connection.retrying`. Backoff: 1 s, doubling, at most 15 s between tries."""
    budget = settings.TRAINKIT_SERVER_RETRY_S.get() if budget is None else budget
    deadline = time.monotonic() + budget
    delay, warned = 1.0, False
    while True:
        try:
            with StoreErrors(what, uri):
                return fn()
        except TrackingServerUnreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TrackingServerUnreachable(
                    f"{what}: the tracking server at {uri} did not answer for {budget:g} s "
                    f"(TRAINKIT_SERVER_RETRY_S); gave up ({_first_line(exc.__cause__ or exc, 160)})"
                ) from exc
            if not warned:
                warned = True
                log.warning("%s: the tracking server at %s does not answer; retrying for up to %g s "
                            "(TRAINKIT_SERVER_RETRY_S)", what, uri, budget)
            time.sleep(min(delay, max(left, 0.05)))
            delay = min(delay * 2, 15.0)


@contextlib.contextmanager
def not_found_as(uri: str) -> Iterator[None]:
    """MLflow's "does not exist" (a run, a logged model, a registered name or alias) →
    :class:`ModelNotFoundError` naming the URI; other errors pass through."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if is_not_found(exc):
            raise ModelNotFoundError(f"no model at {uri}: {_first_line(exc, 200)}") from None
        raise


# -------------------------------------------------------------------------------- the connection
class Connection:
    """A prepared tracking store: its URI, one ``MlflowClient``, error translation, experiments
    by name (created on first use, restored if deleted) and paged run search."""

    def __init__(self, tracking_uri: str | None = None, *, create: bool = True) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        _ = self.registry_uri  # its credentials, too, leave the URI before MlflowClient reads it
        prepare_tracking(self.tracking_uri, create=create)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._experiments: dict[str, str] = {}
        self.permissions = Permissions(self)

    def require(self, need: str, experiments: Sequence[str], doing: str) -> None:
        """Fail before the work, not half-way: :class:`~trainkit.errors.PermissionDenied`
        unless the signed-in user holds ``need`` on every experiment named (see
        :meth:`Permissions.require <trainkit.store.access.Permissions.require>`)."""
        self.permissions.require(need, experiments, doing)

    def errors(self, what: str) -> StoreErrors:
        return StoreErrors(what, self.tracking_uri)

    @property
    def registry_uri(self) -> str:
        """Where the model registry is: ``MLFLOW_REGISTRY_URI`` (which ``MlflowClient`` reads),
        else the tracking store."""
        registry = settings.MLFLOW_REGISTRY_URI.get()
        return adopt_uri_credentials(registry) if registry else self.tracking_uri

    def registry_errors(self, what: str) -> StoreErrors:
        """:meth:`errors` for registry calls: the message names the registry, not the tracking store."""
        return StoreErrors(what, self.registry_uri, "model registry")

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried with backoff while the tracking server does not answer, for up to
        ``TRAINKIT_SERVER_RETRY_S`` seconds (default 180): a trainer must not lose minutes of
        training because the server restarted. Past that, :class:`TrackingServerUnreachable`
        naming the server; any other error at once (translated like :meth:`errors`)."""
        return retry_while_unreachable(what, self.tracking_uri, fn)


    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created if missing and restored if deleted (MLflow
        keeps a deleted experiment's name reserved). Only an experiment trainkit creates is
        tagged for the UI (``mlflow.experimentKind``: model training, not GenAI); one that
        exists is used as it is."""
        if name in self._experiments:
            return self._experiments[name]
        from mlflow.exceptions import MlflowException

        from trainkit.store.contract import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND

        with self.errors(f"opening experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage != "active":
                    log.warning("experiment %r was deleted in MLflow; restoring it to keep trainkit's runs there", name)
                    self.client.restore_experiment(exp.experiment_id)
                exp_id = exp.experiment_id
            else:
                try:
                    exp_id = self.client.create_experiment(name, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
                except MlflowException:  # another process created it first
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
        self._experiments[name] = exp_id
        return exp_id

    def experiment_id_if_exists(self, name: str) -> str | None:
        """The id of an active experiment ``name``, or ``None``; never creates one (read-only
        commands such as ``list`` and ``explain`` write nothing)."""
        if name in self._experiments:
            return self._experiments[name]
        with self.errors("looking up the experiment"):
            exp = self.client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            return None
        self._experiments[name] = exp.experiment_id
        return exp.experiment_id

    def search(self, experiment_ids: Sequence[str], filter_string: str, max_results: int | None = None) -> list[Any]:
        """Every run matching ``filter_string``, newest first, all pages."""
        out: list[Any] = []
        token = None
        with self.errors("searching runs"):
            while True:
                page = self.client.search_runs(
                    list(experiment_ids), filter_string=filter_string, max_results=min(_PAGE, max_results or _PAGE),
                    page_token=token, order_by=["attributes.start_time DESC"],
                )
                out.extend(page)
                token = page.token
                if not token or (max_results and len(out) >= max_results):
                    return out

    @contextlib.contextmanager
    def fluent(self) -> Iterator[None]:
        """MLflow's model logging goes through the fluent layer, which reads the process-wide
        tracking URI: point it at ours for the duration, then put back exactly what was there."""
        with _fluent_lock, fluent_tracking_uri(self.tracking_uri):
            yield


# ------------------------------------------------------------------ private MLflow calls
# Each is used because MLflow's public API has no equivalent; each was checked on MLflow 3.17.
@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Set the fluent tracking URI and restore the previous one *exactly*: the private
    ``tracking_utils._tracking_uri`` (``mlflow.get_tracking_uri`` would resolve the default),
    and ``MLFLOW_TRACKING_URI``, which ``mlflow.set_tracking_uri`` writes (and on ``None``
    deletes). Checked on MLflow 3.17."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    previous_env = settings.MLFLOW_TRACKING_URI.raw()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        settings.MLFLOW_TRACKING_URI.put(previous_env)


def tracking_backend(uri: str) -> Any:
    """The tracking store object behind a URI (``_get_store``), for hard deletes — what
    ``mlflow gc`` uses. Checked on MLflow 3.17."""
    from mlflow.tracking._tracking_service.utils import _get_store

    return _get_store(uri)


def supports_hard_delete(backend: Any) -> bool:
    """Local sqlite/file stores can hard-delete runs and logged models (checked on MLflow 3.17)."""
    return hasattr(backend, "_hard_delete_run") and hasattr(backend, "_hard_delete_logged_model")


def hard_delete_run(backend: Any, run_id: str) -> None:
    """``_hard_delete_run`` of a local store, as ``mlflow gc --run-ids`` does (MLflow 3.17)."""
    backend._hard_delete_run(run_id)


def hard_delete_logged_model(backend: Any, model_id: str) -> None:
    """``_hard_delete_logged_model``, as ``mlflow gc --logged-model-ids`` does (MLflow 3.17)."""
    backend._hard_delete_logged_model(model_id)


def download_artifact_file(repo: Any, remote_path: str, local_path: str) -> str:
    """Download one file with one request. The public ``download_artifacts`` first lists the
    path to learn whether it is a directory — a second round trip per file. ``_download_file``
    exists on every artifact repository of MLflow 3.17."""
    download = getattr(repo, "_download_file", None)
    if download is None:  # pragma: no cover - every MLflow 3.17 repository has it
        return repo.download_artifacts(remote_path, os.path.dirname(local_path))
    download(remote_path, local_path)
    return local_path


def local_dataset_source(path: str) -> Any | None:
    """MLflow's local-file dataset source for ``path``; MLflow builds that class at runtime,
    so it is found through the source registry by ``_get_source_type()`` (MLflow 3.17)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    local = next((c for c in get_registered_sources() if c._get_source_type() == "local"), None)
    return local(path) if local is not None else None


def dataset_entity(dataset: Any) -> Any:
    """The entity ``log_inputs`` takes for a dataset (``_to_mlflow_entity``, MLflow 3.17)."""
    return dataset._to_mlflow_entity()
