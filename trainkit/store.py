"""Everything trainkit does with MLflow, and the only module that imports it (besides the
pyfunc file MLflow executes on load).

MLflow is the cache, the catalogue and the audit trail: there are no side files. The design
points that matter to callers:

* **Lookup** is ``search_runs`` on ``tags.config_hash`` in the ``trainkit`` experiment. Only a
  run whose model was logged and verified ever carries ``config_hash`` (a claim carries
  ``trainkit.claim_hash`` instead), and only FINISHED runs are served.
* **Claims** make identical requests from several processes or machines train once, through
  the tracking store itself (so sqlite, PostgreSQL and a remote server behave alike): a trainer
  creates a RUNNING run tagged ``trainkit.claim_hash`` and a heartbeat; among live claims the
  oldest (``start_time``, then ``run_id``) wins; a claim whose heartbeat is older than
  ``TRAINKIT_STALE_AFTER`` seconds is marked FAILED and taken over.
* **Integrity**: a model's ``policy.zip`` is hashed and compared with ``trainkit.model_sha256``
  before anything is deserialised, for cache hits and for loads by URI alike.
* Only MLflow's APIs are used (no database access, no assumption that artifacts are local).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from trainkit.config import TrainConfig
from trainkit.config import file_sha256 as sha256_file
from trainkit.errors import (
    ConfigError,
    IntegrityError,
    ModelNotFoundError,
    ModelURIError,
    StoreError,
    TrackingServerUnreachable,
    TrainingInterrupted,
)

log = logging.getLogger("trainkit")

DEFAULT_EXPERIMENT = "trainkit"
BACKTEST_EXPERIMENT = "trainkit-backtests"
MODEL_NAME = "model"  # runs:/<run_id>/model

# tags of the contract (shared/DESIGN.md)
TAG_HASH = "config_hash"
TAG_SYMBOL = "trainkit.symbol"
TAG_SOURCE = "trainkit.data_source"
TAG_SOURCE_EFFECTIVE = "trainkit.data_source_effective"
TAG_FALLBACK_REASON = "trainkit.fallback_reason"
TAG_DATA_DIGEST = "trainkit.data_digest"
TAG_MODEL_SHA = "trainkit.model_sha256"
TAG_VERSION = "trainkit.version"
# trainkit's own bookkeeping
TAG_MODEL_ID = "trainkit.model_id"
TAG_MODEL_URI = "trainkit.model_uri"
TAG_CLAIM = "trainkit.claim_hash"
TAG_HEARTBEAT = "trainkit.heartbeat"
TAG_CLAIM_STATE = "trainkit.claim_state"  # "training" once a claim has won its tie
TAG_BROKEN = "trainkit.broken"
TAG_FAILURE = "trainkit.failure"
TAG_NOTE = "mlflow.note.content"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
_REG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-^=]{0,99}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,254}$")

_PAGE = 1000


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def heartbeat_interval() -> float:
    return _env_float("TRAINKIT_HEARTBEAT", 10.0)


def stale_after() -> float:
    return _env_float("TRAINKIT_STALE_AFTER", 120.0)


def _now_ms() -> int:
    return int(time.time() * 1000)


def trainkit_version() -> str:
    from trainkit import __version__

    return __version__


# ----------------------------------------------------------------------------- connection
_checked_servers: set[str] = set()
_prepared_sqlite: set[str] = set()
_prep_lock = threading.Lock()
_fluent_lock = threading.RLock()


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI in force: the argument, else ``MLFLOW_TRACKING_URI``, else MLflow's default
    (``sqlite:///mlflow.db`` in the working directory, artifacts in ``./mlruns``)."""
    if tracking_uri:
        return tracking_uri
    import mlflow

    return mlflow.get_tracking_uri()


def prepare_tracking(tracking_uri: str) -> None:
    """Make a tracking URI safe to use from many processes, once per process.

    * http(s): bound MLflow's retries (by default it retries for minutes) unless the user set
      them, and check ``GET /health`` so an unreachable server is reported within seconds
      with its URI (Decision 7).
    * sqlite: create and migrate a brand-new database under a file lock beside it, because
      concurrent first opens corrupt the schema migration for good (Decision 1).
    """
    with _prep_lock:
        # MLflow prints "View run … at" on stdout whenever a run ends against a server:
        # trainkit's stdout belongs to its user (--json documents), not to MLflow
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if tracking_uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            if tracking_uri not in _checked_servers:
                _check_health(tracking_uri)
                _checked_servers.add(tracking_uri)
        elif tracking_uri.startswith("sqlite:") and tracking_uri not in _prepared_sqlite:
            _migrate_sqlite_locked(tracking_uri)
            _prepared_sqlite.add(tracking_uri)


def _check_health(uri: str) -> None:
    url = uri.rstrip("/") + "/health"
    timeout = min(_env_float("MLFLOW_HTTP_REQUEST_TIMEOUT", 10.0), 10.0)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (user's URI)
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


def _migrate_sqlite_locked(uri: str) -> None:
    from filelock import FileLock

    path = uri.split(":", 1)[1]
    path = path[3:] if path.startswith("///") else path.lstrip("/")
    if uri.startswith("sqlite:////"):
        path = "/" + uri[len("sqlite:////") :]
    if not path or path == ":memory:":
        return
    path = path.split("?", 1)[0]
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    with FileLock(os.path.abspath(path) + ".lock", timeout=300):
        from mlflow.tracking import MlflowClient

        # the first client call creates the engine, which creates and migrates the schema
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def _wrap_errors(what: str, uri: str) -> contextlib.AbstractContextManager[None]:
    return _StoreErrors(what, uri)


class _StoreErrors(contextlib.AbstractContextManager):
    """Translate MLflow/network exceptions into one-line StoreErrors naming the URI."""

    def __init__(self, what: str, uri: str) -> None:
        self.what, self.uri = what, uri

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, (StoreError, ConfigError, ModelURIError, KeyboardInterrupt, SystemExit)):
            return False
        from mlflow.exceptions import MlflowException

        if isinstance(exc, TrainingInterrupted):
            return False
        if isinstance(exc, MlflowException) or isinstance(exc, (OSError, ConnectionError)):
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if len(msg) > 300:
                msg = msg[:300] + "…"
            if "Max retries" in msg or "Connection" in msg or "timed out" in msg:
                raise TrackingServerUnreachable(f"{self.what}: the tracking server at {self.uri} did not answer ({msg})") from exc
            raise StoreError(f"{self.what} failed on {self.uri}: {msg}") from exc
        return False


def validate_model_uri(uri: Any) -> str:
    """The URI, stripped, if it has one of the shapes trainkit loads — ``runs:/<run_id>/model``,
    ``models:/m-<id>``, ``models:/<name>/<version>``, ``models:/<name>@<alias>`` — else
    :class:`ModelURIError` saying which shapes work. No I/O (validate before touching a store)."""
    text = (uri if isinstance(uri, str) else "").strip()
    m_runs = re.fullmatch(r"runs:/([^/]+)/(.+)", text)
    if m_runs:
        run_id, path = m_runs.group(1), m_runs.group(2).strip("/")
        if not _RUN_ID.match(run_id):
            raise ModelURIError(f"invalid run id {run_id!r} in {text!r}: a run id is 32 hex characters")
        if path != MODEL_NAME:
            raise ModelURIError(f"trainkit models live at runs:/<run_id>/{MODEL_NAME}, not {path!r}")
        return text
    m_models = re.fullmatch(r"models:/(.+)", text)
    if m_models:
        rest = m_models.group(1)
        if _MODEL_ID.match(rest):
            return text
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            if _REG_NAME.match(name) and _ALIAS.match(alias):
                return text
            raise ModelURIError(f"invalid model URI {text!r}: expected models:/<name>@<alias>")
        if "/" in rest:
            name, version = rest.rsplit("/", 1)
            if _REG_NAME.match(name) and version.isdigit():
                return text
            raise ModelURIError(f"invalid model URI {text!r}: expected models:/<name>/<version number>")
        raise ModelURIError(
            f"invalid model URI {text!r}: name a version (models:/{rest}/1) or an alias (models:/{rest}@champion)"
        )
    raise ModelURIError(
        f"invalid model URI {text!r}: use runs:/<run_id>/model, models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>"
    )


@contextlib.contextmanager
def _not_found_as(uri: str) -> Iterator[None]:
    """MLflow's "does not exist" (a run, a logged model, a registered name or alias) →
    :class:`ModelNotFoundError` naming the URI; other errors pass through."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        text = str(exc)
        if (
            "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", ""))
            or "not found" in text.lower()
            or "does not exist" in text.lower()
        ):
            raise ModelNotFoundError(f"no model at {uri}: {text.splitlines()[0][:200] if text else 'not found'}") from None
        raise


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class CachedModel:
    """One cached model (or live training claim) as ``list``/``clear`` show it."""

    run_id: str
    model_uri: str
    model_id: str | None
    config_hash: str
    symbol: str
    algo: str
    train_start: str
    train_end: str
    timesteps: int | None
    feature_count: int | None
    data_source: str
    data_source_effective: str
    fallback_reason: str | None
    status: str  # ready | fallback | training | broken
    created: str  # ISO 8601, UTC
    run_name: str
    registered: tuple[str, ...] = ()

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback_reason) or (
            self.data_source_effective not in ("", self.data_source) and not self.data_source.startswith("csv")
        )

    @property
    def created_at(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.created)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["registered"] = list(self.registered)
        d["fell_back"] = self.fell_back
        return d


def _iso(ms: int | None) -> str:
    ms = ms or 0
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _record(run: Any, status: str | None = None, registered: tuple[str, ...] = ()) -> CachedModel:
    tags, params = run.data.tags, run.data.params
    h = tags.get(TAG_HASH) or tags.get(TAG_CLAIM, "")
    fallback = tags.get(TAG_FALLBACK_REASON) or None
    if status is None:
        if tags.get(TAG_BROKEN):
            status = "broken"
        elif fallback:
            status = "fallback"
        else:
            status = "ready"
    return CachedModel(
        run_id=run.info.run_id,
        model_uri=f"runs:/{run.info.run_id}/{MODEL_NAME}",
        model_id=tags.get(TAG_MODEL_ID),
        config_hash=h,
        symbol=tags.get(TAG_SYMBOL, params.get("symbol", "")),
        algo=params.get("algo", ""),
        train_start=params.get("train_start", ""),
        train_end=params.get("train_end", ""),
        timesteps=_int_or_none(params.get("timesteps")),
        feature_count=_int_or_none(params.get("feature_count")),
        data_source=tags.get(TAG_SOURCE, params.get("data_source", "")),
        data_source_effective=tags.get(TAG_SOURCE_EFFECTIVE, ""),
        fallback_reason=fallback,
        status=status,
        created=_iso(run.info.start_time),
        run_name=run.info.run_name or "",
        registered=registered,
    )


def _served_order(run: Any) -> tuple:
    """Which FINISHED run answers a hash when several do: one trained on the requested source
    beats a fallback one (Decision 8), then the newest, then the run id — deterministic."""
    fallback = 1 if run.data.tags.get(TAG_FALLBACK_REASON) else 0
    return (fallback, -(run.info.start_time or 0), run.info.run_id)


def _is_model_run(run: Any) -> bool:
    """A run trainkit published a model in — not another tool's run that happens to use a
    ``config_hash`` tag too (``clear`` must never touch those)."""
    tags = run.data.tags
    return bool(_HEX64.match(tags.get(TAG_HASH, ""))) and bool(tags.get(TAG_MODEL_SHA)) and bool(tags.get(TAG_VERSION))


def _claim_order(run: Any) -> tuple:
    return (run.info.start_time or 0, run.info.run_id)


def quote(value: str) -> str:
    """Quote a value for an MLflow filter string. Values are validated before they get here;
    quoting is the second wall so no input can widen a query."""
    if "'" in value or "\\" in value or "\n" in value:
        raise ConfigError(f"value {value!r} cannot be used in a query")
    return f"'{value}'"


# ----------------------------------------------------------------------------- metrics sink
class MlflowMetricsSink:
    """Buffers training metrics and writes them with ``log_batch`` every few seconds, so the
    UI shows learning curves without a round-trip per step (a few per minute instead)."""

    def __init__(self, client: Any, run_id: str, flush_seconds: float = 5.0, max_buffer: int = 900) -> None:
        self._client, self._run_id = client, run_id
        self._flush_seconds, self._max = flush_seconds, max_buffer
        self._buf: list[Any] = []
        self._last = time.monotonic()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ts = _now_ms()
        for k, v in metrics.items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            if fv != fv or fv in (float("inf"), float("-inf")):
                continue
            key = re.sub(r"[^A-Za-z0-9_\-. /]", "_", k)
            self._buf.append(Metric(key=key, value=fv, timestamp=ts, step=int(step)))
        if len(self._buf) >= self._max or time.monotonic() - self._last >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        buf, self._buf = self._buf, []
        self._last = time.monotonic()
        for i in range(0, len(buf), 900):
            try:
                self._client.log_batch(self._run_id, metrics=buf[i : i + 900])
            except Exception as exc:  # metrics are a convenience: never fail training on them
                log.warning("could not log training metrics to MLflow: %s", str(exc).splitlines()[0])
                return


# ----------------------------------------------------------------------------- claims
class Claim:
    """A RUNNING run that reserves a config hash for one trainer, kept alive by a heartbeat
    thread (``MlflowClient.set_tag`` — never the fluent API, which is per-thread)."""

    def __init__(self, store: ModelStore, run_id: str, config_hash: str, *, external: bool, start_time: int = 0) -> None:
        self.store, self.run_id, self.config_hash = store, run_id, config_hash
        self.start_time = int(start_time or 0)  # ms, orders claims (oldest wins)
        self.external = external  # a run we did not create (mlflow run's project run)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"trainkit-heartbeat-{run_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.store.tracking_uri)
        while not self._stop.wait(heartbeat_interval()):
            try:
                run = client.get_run(self.run_id)
                if run.info.status != "RUNNING" or run.data.tags.get(TAG_CLAIM) != self.config_hash:
                    self.lost.set()  # someone judged us stale and took over
                    return
                client.set_tag(self.run_id, TAG_HEARTBEAT, f"{time.time():.3f}")
            except Exception as exc:  # a passing network fault: try again next beat
                log.debug("heartbeat failed: %s", exc)

    def should_stop(self) -> bool:
        return self.lost.is_set()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def mark_won(self) -> None:
        """Say that this claim won its tie and is training: a claim created later can then never
        win against it, whatever the clocks of the machines say."""
        with contextlib.suppress(Exception):
            self.store.client.set_tag(self.run_id, TAG_CLAIM_STATE, "training")

    def abandon(self) -> None:
        """Give the hash up without a model (lost the tie, or a model appeared meanwhile). A
        claim that was taken over is left as the taker marked it (FAILED, for the record)."""
        self.stop_heartbeat()
        if self.lost.is_set():
            return
        client = self.store.client
        with contextlib.suppress(Exception):
            client.delete_tag(self.run_id, TAG_CLAIM)
        if not self.external:  # ended and deleted: it never held a model, nobody needs to see it
            with contextlib.suppress(Exception):
                client.set_terminated(self.run_id, status="KILLED")
            with contextlib.suppress(Exception):
                client.delete_run(self.run_id)

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """End the claim without a model: FAILED (error) or KILLED (Ctrl-C), released at once
        so that a waiting process takes over without waiting for the claim to go stale."""
        self.stop_heartbeat()
        if self.lost.is_set():
            return
        client = self.store.client
        with contextlib.suppress(Exception):
            client.set_tag(self.run_id, TAG_FAILURE, reason[:5000])
        with contextlib.suppress(Exception):
            client.delete_tag(self.run_id, TAG_CLAIM)
        if not self.external:  # `mlflow run` ends its own run when our process exits non-zero
            with contextlib.suppress(Exception):
                client.set_terminated(self.run_id, status=status)


# ----------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class DataProvenance:
    """What the model was actually trained on (from :class:`trainkit.data.FetchResult`)."""

    requested_source: str
    effective_source: str
    fallback_reason: str | None
    digest: str


class ModelStore:
    """trainkit's view of one MLflow tracking server/experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        prepare_tracking(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._experiment_id: str | None = None

    # ---- helpers
    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _wrap_errors(what, self.tracking_uri)

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[None]:
        """MLflow's model logging goes through the fluent layer, which reads the process-wide
        tracking URI: point it at ours for the duration, then put back exactly what was there.
        (``mlflow.set_tracking_uri`` also writes — and on ``None`` deletes — the
        ``MLFLOW_TRACKING_URI`` environment variable, so that is restored too.)"""
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        with _fluent_lock:
            previous = tracking_utils._tracking_uri
            previous_env = os.environ.get("MLFLOW_TRACKING_URI")
            mlflow.set_tracking_uri(self.tracking_uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(previous)
                if previous_env is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = previous_env

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._get_or_create_experiment(self.experiment_name)
        return self._experiment_id

    def experiment_id_if_exists(self) -> str | None:
        if self._experiment_id is None:
            with self.errors("looking up the experiment"):
                exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None or exp.lifecycle_stage != "active":
                return None
            self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _get_or_create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        with self.errors(f"opening experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage != "active":  # MLflow keeps the name reserved: bring it back
                    log.warning("experiment %r was deleted in MLflow; restoring it to keep trainkit's cache there", name)
                    self.client.restore_experiment(exp.experiment_id)
                return exp.experiment_id
            try:
                return self.client.create_experiment(name)
            except MlflowException:  # another process created it first
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                return exp.experiment_id

    def _search(self, filter_string: str, experiment_ids: Sequence[str] | None = None, max_results: int | None = None) -> list[Any]:
        ids = list(experiment_ids) if experiment_ids is not None else [self.experiment_id]
        out: list[Any] = []
        token = None
        with self.errors("searching runs"):
            while True:
                page = self.client.search_runs(
                    ids, filter_string=filter_string, max_results=min(_PAGE, max_results or _PAGE), page_token=token,
                    order_by=["attributes.start_time DESC"],
                )
                out.extend(page)
                token = page.token
                if not token or (max_results and len(out) >= max_results):
                    return out

    # ---- lookup
    def finished_runs(self, config_hash: str) -> list[Any]:
        if not _HEX64.match(config_hash):
            raise ConfigError(f"config hash {config_hash!r} must be 64 hex characters")
        runs = self._search(f"tags.{TAG_HASH} = {quote(config_hash)} and attributes.status = 'FINISHED'")
        runs = [r for r in runs if _is_model_run(r) and not r.data.tags.get(TAG_BROKEN)]
        return sorted(runs, key=_served_order)

    def find(self, config_hash: str, accept: Any = None) -> CachedModel | None:
        """The run that answers this hash, or None (deterministic when several do).
        ``accept(CachedModel) -> bool`` narrows what counts (e.g. newer than a forced request)."""
        for run in self.finished_runs(config_hash):
            rec = _record(run)
            if accept is None or accept(rec):
                return rec
        return None

    def mark_broken(self, run_id: str, reason: str) -> None:
        """Tag a run whose model failed verification; it is kept for inspection, never served."""
        log.warning("cached model of run %s is unusable and will be retrained: %s", run_id, reason)
        with contextlib.suppress(Exception):
            self.client.set_tag(run_id, TAG_BROKEN, reason[:5000])

    # ---- claims
    def _live_claims(self, config_hash: str) -> tuple[list[Any], list[Any]]:
        runs = self._search(f"tags.`{TAG_CLAIM}` = {quote(config_hash)} and attributes.status = 'RUNNING'")
        now, limit = time.time(), stale_after()
        live, stale = [], []
        for r in runs:
            try:
                beat = float(r.data.tags.get(TAG_HEARTBEAT, "0"))
            except ValueError:
                beat = 0.0
            beat = max(beat, (r.info.start_time or 0) / 1000)
            (live if now - beat <= limit else stale).append(r)
        return live, stale

    def acquire(
        self,
        config: TrainConfig,
        provenance: DataProvenance,
        *,
        project_run_id: str | None = None,
        poll_seconds: float = 1.0,
        on_wait: Any = None,
        accept: Any = None,
    ) -> Claim | CachedModel:
        """Either a :class:`Claim` (this process trains) or the :class:`CachedModel` another
        trainer finished while we waited. Waits as long as the claim holder is alive.

        The protocol, in the tracking store only: no FINISHED hit and no live claim → create a
        claim (a RUNNING run tagged ``trainkit.claim_hash``), let ``TRAINKIT_CLAIM_SETTLE``
        seconds pass so concurrent claimants become visible, then the winner is a claim already
        marked ``training`` if there is one, else the oldest (``start_time``, then ``run_id``).
        Losers delete their claim and wait; a claim whose heartbeat is older than
        ``TRAINKIT_STALE_AFTER`` is marked FAILED and no longer counts."""
        h = config.config_hash
        mine: Claim | None = None
        settle = _env_float("TRAINKIT_CLAIM_SETTLE", 1.0)
        waited = False
        try:
            while True:
                hit = self.find(h, accept)
                if hit is not None:
                    if mine is not None:
                        mine.abandon()
                    return hit
                live, stale = self._live_claims(h)
                self._take_over(stale, config, keep=mine.run_id if mine else None)
                if mine is None and not live:
                    mine = self._create_claim(config, provenance, project_run_id)
                    time.sleep(settle)
                    continue
                if mine is not None:
                    others = [r for r in live if r.info.run_id != mine.run_id]
                    if mine.lost.is_set():
                        mine.abandon()
                        mine = None
                    elif self._wins(mine, others):
                        mine.mark_won()
                        return mine
                    else:
                        mine.abandon()
                        mine = None
                    live = others
                if not live:
                    continue
                if not waited:
                    waited = True
                    holder = min(live, key=_claim_order).info.run_id
                    log.info("%s: another trainer (run %s) is training this config; waiting for it", config.symbol, holder)
                    if on_wait:
                        on_wait(holder)
                time.sleep(poll_seconds * (0.75 + 0.5 * (os.getpid() % 100) / 100))
        except BaseException:
            if mine is not None:  # Ctrl-C or an error while claiming: release at once
                mine.fail("interrupted while claiming", status="KILLED")
            raise

    @staticmethod
    def _wins(mine: Claim, others: list[Any]) -> bool:
        if any(r.data.tags.get(TAG_CLAIM_STATE) == "training" for r in others):
            return False  # someone already won (and may have a clock behind ours)
        my_order = (mine.start_time, mine.run_id)
        return all(my_order < _claim_order(r) for r in others)

    def _take_over(self, stale: list[Any], config: TrainConfig, keep: str | None) -> None:
        """Mark claims whose trainer stopped sending heartbeats FAILED, so they stop counting."""
        for r in stale:
            if r.info.run_id == keep:
                continue
            log.warning(
                "claim %s for %s is stale (no heartbeat for %ss): taking over",
                r.info.run_id, config.symbol, int(stale_after()),
            )
            with contextlib.suppress(Exception):
                self.client.set_tag(r.info.run_id, TAG_FAILURE, "stale claim: its trainer stopped sending heartbeats")
                self.client.delete_tag(r.info.run_id, TAG_CLAIM)
                self.client.set_terminated(r.info.run_id, status="FAILED")

    def _create_claim(self, config: TrainConfig, provenance: DataProvenance, project_run_id: str | None) -> Claim:
        tags = {
            TAG_CLAIM: config.config_hash,
            TAG_HEARTBEAT: f"{time.time():.3f}",
            TAG_SYMBOL: config.symbol,
            TAG_SOURCE: config.data_source,
            TAG_SOURCE_EFFECTIVE: provenance.effective_source,
            TAG_DATA_DIGEST: provenance.digest,
            TAG_VERSION: trainkit_version(),
        }
        if provenance.fallback_reason:
            tags[TAG_FALLBACK_REASON] = provenance.fallback_reason
        params = config.to_params()
        with self.errors("creating the training run"):
            if project_run_id:
                run = self.client.get_run(project_run_id)
                already = run.data.params
                params = {k: v for k, v in params.items() if k not in already}
                run_id = project_run_id
                self.client.log_batch(run_id, tags=_tags(tags))
            else:
                run = self.client.create_run(self.experiment_id, run_name=config.run_name(), tags=tags)
                run_id = run.info.run_id
            if params:
                self.client.log_batch(run_id, params=_params(params))
        return Claim(self, run_id, config.config_hash, external=bool(project_run_id), start_time=run.info.start_time)

    # ---- publish
    def publish(
        self,
        claim: Claim,
        config: TrainConfig,
        *,
        policy_zip: str,
        feature_spec: dict[str, Any],
        provenance: DataProvenance,
        frame: Any = None,
        metrics: dict[str, float] | None = None,
        obs_dim: int,
    ) -> CachedModel:
        """Log the model under ``model``, then tag the run with ``config_hash`` and mark it
        FINISHED — in that order, so nothing unfinished is ever served. If the claim was taken
        over meanwhile, nothing is published and the other trainer's model is returned."""
        import mlflow
        from mlflow.models import Model
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec
        import numpy as np

        run_id, h = claim.run_id, config.config_hash
        claim_ok = self._claim_still_mine(claim)
        if not claim_ok:
            claim.abandon()
            hit = self.find(h)
            if hit is not None:
                return hit
            raise TrainingInterrupted(f"the claim on {config.symbol} ({h[:8]}) was taken over by another trainer")

        sha = sha256_file(policy_zip)
        with tempfile.TemporaryDirectory(prefix="trainkit-publish-") as tmp:
            cfg_path = os.path.join(tmp, "config.json")
            spec_path = os.path.join(tmp, "feature_spec.json")
            with open(cfg_path, "w") as fh:
                json.dump({**config.to_dict(), "config_hash": h, "trainkit_version": trainkit_version()}, fh, indent=2, sort_keys=True)
            with open(spec_path, "w") as fh:
                json.dump({**feature_spec, "obs_dim": obs_dim, "data": dataclasses.asdict(provenance)}, fh, indent=2, sort_keys=True)
            signature = ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, obs_dim))]),
                outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
            )
            with self.errors("logging the model"), self._fluent(), warnings.catch_warnings():
                # MLflow nags about input examples and type hints; the signature says it all
                warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
                warnings.filterwarnings("ignore", message=r".*type hints.*", category=UserWarning)
                if frame is not None:
                    self._log_dataset(run_id, config, provenance, frame)
                if metrics:
                    self.client.log_batch(run_id, metrics=_metrics(metrics))
                # create the LoggedModel ourselves, in *our* experiment: Model.log would put it
                # in the fluent layer's active experiment (Default), where runs:/ can't find it
                lm = self.client.create_logged_model(
                    experiment_id=self.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                    params=config.to_params(), tags={TAG_HASH: h, TAG_SYMBOL: config.symbol, TAG_MODEL_SHA: sha},
                    model_type="trainkit-sb3",
                )
                info = Model.log(
                    artifact_path=None,
                    name=MODEL_NAME,
                    flavor=mlflow.pyfunc,
                    run_id=run_id,
                    python_model=_pyfunc_file(),
                    artifacts={"policy": policy_zip, "config": cfg_path, "feature_spec": spec_path},
                    model_config={"model_sha256": sha},
                    pip_requirements=_pip_requirements(),
                    signature=signature,
                    metadata={"trainkit_version": trainkit_version(), "config_hash": h},
                    await_registration_for=0,
                    model_id=lm.model_id,
                )
                from mlflow.entities import LoggedModelStatus

                self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        model_id = info.model_id
        if not self._claim_still_mine(claim):
            claim.abandon()
            with contextlib.suppress(Exception):
                self.client.delete_logged_model(model_id)
            hit = self.find(h)
            if hit is not None:
                return hit
            raise TrainingInterrupted(f"the claim on {config.symbol} ({h[:8]}) was taken over by another trainer")
        claim.stop_heartbeat()
        with self.errors("finishing the training run"):
            self.client.log_batch(
                run_id,
                tags=_tags(
                    {
                        TAG_MODEL_SHA: sha,
                        TAG_MODEL_ID: model_id,
                        TAG_MODEL_URI: f"runs:/{run_id}/{MODEL_NAME}",
                        TAG_NOTE: _description(config, provenance, model_id),
                        TAG_HASH: h,
                    }
                ),
            )
            # FINISHED before the claim tag goes, so a waiting process sees either the live claim
            # or the model, never neither; FINISHED even for `mlflow run`'s project run (mlflow
            # ends it again when the process exits)
            self.client.set_terminated(run_id, status="FINISHED")
            for tag in (TAG_CLAIM, TAG_CLAIM_STATE, TAG_HEARTBEAT):
                with contextlib.suppress(Exception):
                    self.client.delete_tag(run_id, tag)
            run = self.client.get_run(run_id)
        return _record(run, status="fallback" if provenance.fallback_reason else "ready")

    def _claim_still_mine(self, claim: Claim) -> bool:
        if claim.lost.is_set():
            return False
        with self.errors("checking the training claim"):
            run = self.client.get_run(claim.run_id)
        if run.info.status == "RUNNING" and run.data.tags.get(TAG_CLAIM) == claim.config_hash:
            return True
        claim.lost.set()  # judged stale and taken over by another trainer
        return False

    def _log_dataset(self, run_id: str, config: TrainConfig, provenance: DataProvenance, frame: Any) -> None:
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import DatasetInput, InputTag

        kind = provenance.effective_source.split(":", 1)[0]
        name = f"{config.symbol} {config.train_start}..{config.train_end} ({kind})"
        ds = from_pandas(frame.reset_index(), source=_dataset_source(config, provenance), name=name[:500], digest=provenance.digest[:32])
        self.client.log_inputs(
            run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])]
        )

    # ---- load
    def resolve(self, uri: str, run: Any = None) -> tuple[Any, Any]:
        """``(logged_model, source_run)`` behind any supported model URI. ``run``: the run a
        ``runs:/`` URI names, when the caller already holds it (skips one lookup)."""
        lm, run, _version = self._resolve(uri, run)
        return lm, run

    def _resolve(self, uri: str, run: Any = None) -> tuple[Any, Any, str | None]:
        """``(logged_model, source_run, "name/version" or None)``."""
        uri = validate_model_uri(uri)
        m_runs = re.fullmatch(r"runs:/([^/]+)/(.+)", uri)
        m_models = re.fullmatch(r"models:/(.+)", uri)
        version_label: str | None = None
        with self.errors(f"resolving {uri}"), _not_found_as(uri):
            if m_runs:
                run_id = m_runs.group(1)
                if run is None or run.info.run_id != run_id:
                    run = self.client.get_run(run_id)
                model_id = run.data.tags.get(TAG_MODEL_ID)
                if not model_id:
                    outs = run.outputs.model_outputs if run.outputs else []
                    model_id = outs[0].model_id if outs else None
                if not model_id:
                    raise ModelNotFoundError(f"run {run_id} has no trainkit model (still training, failed, or not a trainkit run)")
                lm = self.client.get_logged_model(model_id)
            else:
                rest = m_models.group(1)  # type: ignore[union-attr]
                if _MODEL_ID.match(rest):
                    lm = self.client.get_logged_model(rest)
                else:
                    mv = self._model_version(rest, uri)
                    version_label = f"{mv.name}/{mv.version}"
                    src = mv.source or ""
                    mid = getattr(mv, "model_id", None) or (src.split("/", 1)[1] if src.startswith("models:/") else None)
                    if not mid:
                        raise ModelNotFoundError(f"{uri} does not point at a trainkit model (source {src!r})")
                    lm = self.client.get_logged_model(mid)
                if not lm.source_run_id:
                    raise ModelNotFoundError(f"{uri} has no source run: not a trainkit model")
                run = self.client.get_run(lm.source_run_id)
        if run.info.lifecycle_stage == "deleted" or str(getattr(lm.status, "name", lm.status)) == "DELETED":
            raise ModelNotFoundError(f"the model at {uri} was deleted (trainkit clear); restore the run or train again")
        return lm, run, version_label

    def _model_version(self, rest: str, uri: str) -> Any:
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            if not _REG_NAME.match(name) or not _ALIAS.match(alias):
                raise ModelURIError(f"invalid model URI {uri!r}: expected models:/<name>@<alias>")
            return self.client.get_model_version_by_alias(name, alias)
        if "/" in rest:
            name, version = rest.rsplit("/", 1)
            if not _REG_NAME.match(name) or not version.isdigit():
                raise ModelURIError(f"invalid model URI {uri!r}: expected models:/<name>/<version number>")
            return self.client.get_model_version(name, version)
        raise ModelURIError(f"invalid model URI {uri!r}: name a version (models:/{rest}/1) or an alias (models:/{rest}@champion)")

    def fetch_model_files(self, uri: str, dst: str, run: Any = None) -> tuple[dict[str, str], Any]:
        """Download ``policy.zip``, ``config.json`` and ``feature_spec.json`` of the model at
        ``uri`` into ``dst`` and verify the zip's sha256 against the run's tag *before*
        anyone deserialises it. Returns ``({name: local path}, source run)``. ``run``: the
        source run when the caller already has it (a cache hit found it), saving a round trip."""
        paths, run, _lm, _version = self._fetch(uri, dst, run)
        return paths, run

    def _fetch(self, uri: str, dst: str, run: Any = None) -> tuple[dict[str, str], Any, Any, str | None]:
        lm, run, version_label = self._resolve(uri, run=run)
        expected = run.data.tags.get(TAG_MODEL_SHA)
        if not expected:
            raise IntegrityError(f"run {run.info.run_id} records no {TAG_MODEL_SHA}: refusing to load an unverifiable model")
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        paths: dict[str, str] = {}
        with self.errors(f"downloading the model files of {uri}"):
            repo = get_artifact_repository(lm.artifact_location, tracking_uri=self.tracking_uri)
            for name in ("policy.zip", "config.json", "feature_spec.json"):
                local = os.path.join(dst, name)
                try:
                    # one request per file: the public download_artifacts first lists the
                    # path to learn whether it is a directory (a second round trip each)
                    download = getattr(repo, "_download_file", None)
                    if download is not None:
                        download(f"artifacts/{name}", local)
                    else:  # pragma: no cover - every MLflow repository has it today
                        local = repo.download_artifacts(f"artifacts/{name}", dst)
                    paths[name] = local
                except Exception as exc:
                    text = str(exc).lower()
                    if isinstance(exc, FileNotFoundError) or any(
                        k in text for k in ("no such", "not exist", "404", "not found", "resource_does_not_exist")
                    ):
                        raise IntegrityError(f"model {uri} is missing its artifact {name} (deleted or moved)") from None
                    raise
        actual = sha256_file(paths["policy.zip"])
        if actual != expected:
            raise IntegrityError(
                f"model {uri} failed verification: policy.zip sha256 {actual[:12]}… != recorded {expected[:12]}… (corrupt or altered)"
            )
        return paths, run, lm, version_label

    # ---- list / clear
    def registered_index(self) -> dict[str, list[str]]:
        """run_id and model_id -> ["name/version", …] for every registered model version
        pointing at them."""
        out: dict[str, list[str]] = {}
        token = None
        with self.errors("reading the model registry"):
            while True:
                page = self.client.search_model_versions(max_results=1000, page_token=token)
                for mv in page:
                    label = f"{mv.name}/{mv.version}"
                    mid = getattr(mv, "model_id", None)
                    for key in {mv.run_id, mid} - {None, ""}:
                        out.setdefault(key, []).append(label)
                token = page.token
                if not token:
                    return out

    def list_models(self, symbol: str | None = None, include_training: bool = True) -> list[CachedModel]:
        """trainkit's FINISHED models (and, optionally, live claims) in the experiment, newest
        first. Runs of other tools in the same experiment are never listed."""
        exp = self.experiment_id_if_exists()
        if exp is None:
            return []
        sym = ""
        if symbol:
            from trainkit.config import validate_symbol

            sym = f" and tags.`{TAG_SYMBOL}` = {quote(validate_symbol(symbol))}"
        runs = self._search(f"tags.{TAG_HASH} LIKE '%' and attributes.status = 'FINISHED'{sym}", [exp])
        try:
            registered = self.registered_index()
        except StoreError:
            registered = {}
        out = [
            _record(r, registered=tuple(registered.get(r.info.run_id, ()) or registered.get(r.data.tags.get(TAG_MODEL_ID, ""), ())))
            for r in runs
            if _is_model_run(r)
        ]
        if include_training:
            claims = self._search(f"tags.`{TAG_CLAIM}` LIKE '%' and attributes.status = 'RUNNING'{sym}", [exp])
            claims = [r for r in claims if r.data.tags.get(TAG_VERSION)]
            now, limit = time.time(), stale_after()
            for r in claims:
                try:
                    beat = float(r.data.tags.get(TAG_HEARTBEAT, "0"))
                except ValueError:
                    beat = 0.0
                if now - max(beat, (r.info.start_time or 0) / 1000) <= limit:
                    out.append(_record(r, status="training"))
        out.sort(key=lambda m: (m.created, m.run_id), reverse=True)
        return out

    def delete(self, models: Iterable[CachedModel], *, purge: bool = False) -> None:
        """Soft-delete the runs *and* their logged models (in MLflow 3 a soft-deleted run's
        model still loads by URI). ``purge`` then removes them for good where the backend
        allows it (local sqlite/file stores); a remote server's admin runs ``mlflow gc``."""
        models = list(models)
        if purge and self.tracking_uri.startswith(("http://", "https://")):
            raise StoreError(
                f"--purge cannot hard-delete on the remote server {self.tracking_uri}: nothing was deleted. "
                "Run `trainkit clear` without --purge, then ask the server's admin to run `mlflow gc`"
            )
        if purge:
            from mlflow.tracking._tracking_service.utils import _get_store

            backend = _get_store(self.tracking_uri)
            if not hasattr(backend, "_hard_delete_run") or not hasattr(backend, "_hard_delete_logged_model"):
                raise StoreError(
                    f"--purge is not supported by the tracking store {self.tracking_uri}: nothing was deleted; "
                    "run `trainkit clear` without --purge"
                )
        with self.errors("deleting runs"):
            for m in models:
                self.client.delete_run(m.run_id)
                if m.model_id:
                    with contextlib.suppress(Exception):
                        self.client.delete_logged_model(m.model_id)
        if purge and models:
            self._purge([m.run_id for m in models], [m.model_id for m in models if m.model_id])

    def _purge(self, run_ids: list[str], model_ids: list[str]) -> None:
        """Hard-delete exactly these (already soft-deleted) runs and logged models with their
        artifacts — what ``mlflow gc --run-ids … --logged-model-ids …`` does, without gc's
        other effect of purging *every* deleted experiment in the store (other people's)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.tracking._tracking_service.utils import _get_store

        backend = _get_store(self.tracking_uri)
        with self.errors("purging deleted runs"):
            for model_id in model_ids:
                lm = backend.get_logged_model(model_id, allow_deleted=True)
                with contextlib.suppress(FileNotFoundError):
                    get_artifact_repository(lm.artifact_location).delete_artifacts()
                backend._hard_delete_logged_model(model_id)
            for run_id in run_ids:
                run = backend.get_run(run_id)
                if run.info.lifecycle_stage != "deleted":
                    raise StoreError(f"run {run_id} is not deleted: refusing to purge it")
                with contextlib.suppress(FileNotFoundError):
                    get_artifact_repository(run.info.artifact_uri).delete_artifacts()
                backend._hard_delete_run(run_id)

    # ---- registry
    def register(self, model_uri: str, name: str, alias: str | None = None) -> tuple[str, str]:
        """Register the LoggedModel behind ``model_uri`` as a version of ``name`` (created if
        needed) and optionally point ``alias`` at it. Returns (name, version)."""
        if not _REG_NAME.match(name):
            raise ConfigError(f"invalid registered model name {name!r}: use letters, digits, . _ - (e.g. trainkit-AAPL)")
        if alias is not None and (not _ALIAS.match(alias) or re.fullmatch(r"v\d+|latest", alias, re.I)):
            raise ConfigError(f"invalid alias {alias!r}: use a word such as champion (not latest or v<number>)")
        lm, run = self.resolve(model_uri)
        from mlflow.exceptions import MlflowException

        with self.errors(f"registering {model_uri}"):
            try:
                self.client.create_registered_model(name, tags={"trainkit.symbol": run.data.tags.get(TAG_SYMBOL, "")})
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")) and "already exists" not in str(exc):
                    raise
            mv = self.client.create_model_version(
                name, source=f"models:/{lm.model_id}", run_id=run.info.run_id, model_id=lm.model_id,
                tags={TAG_HASH: run.data.tags.get(TAG_HASH, "")},
            )
            if alias:
                self.client.set_registered_model_alias(name, alias, mv.version)
        return name, str(mv.version)

    # ---- generic runs (backtests, project runs)
    def log_run(
        self,
        experiment_name: str,
        *,
        run_name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, str] | None = None,
        input_model_ids: Sequence[str] | None = None,
    ) -> str:
        """Log a complete, FINISHED run (used for backtests). Returns its run id.
        ``input_model_ids``: LoggedModels the run used, logged as its inputs (MLflow 3 lineage:
        the UI shows the model on the run and the run on the model)."""
        exp_id = self._get_or_create_experiment(experiment_name)
        with self.errors("logging a run"):
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
            rid = run.info.run_id
            try:
                self.client.log_batch(rid, params=_params(params), metrics=_metrics(metrics))
                if input_model_ids:
                    from mlflow.entities import LoggedModelInput

                    self.client.log_inputs(rid, models=[LoggedModelInput(m) for m in input_model_ids])
                for path in (artifacts or {}).values():
                    self.client.log_artifact(rid, path)
            except BaseException:
                self.client.set_terminated(rid, status="FAILED")
                raise
            self.client.set_terminated(rid, status="FINISHED")
        return rid

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        with self.errors("tagging a run"):
            self.client.log_batch(run_id, tags=_tags(tags))

    def get_run(self, run_id: str) -> Any:
        with self.errors("reading a run"):
            return self.client.get_run(run_id)


# ----------------------------------------------------------------------------- module API
_stores: dict[str, ModelStore] = {}


def default_store(tracking_uri: str | None = None) -> ModelStore:
    uri = resolve_tracking_uri(tracking_uri)
    if uri not in _stores:
        _stores[uri] = ModelStore(uri)
    return _stores[uri]


def load_model(uri: str, tracking_uri: str | None = None) -> Any:
    """The stable-baselines3 model behind ``runs:/…`` or ``models:/…``, verified first."""
    model, _bundle = load_bundle(uri, tracking_uri)
    return model


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model and everything needed to use it on new data."""

    model: Any
    config: TrainConfig
    feature_spec: dict[str, Any]
    run_id: str
    model_uri: str
    model_id: str | None = None  # the LoggedModel (models:/m-…) the URI resolved to
    registered_version: str | None = None  # "name/version" when the URI named a registered model


def load_bundle(
    uri: str, tracking_uri: str | None = None, store: ModelStore | None = None, run: Any = None
) -> tuple[Any, ModelBundle]:
    """``(SB3 model, ModelBundle)`` for ``uri``, verified before deserialising. ``run``: the
    source run if the caller already has it (see :meth:`ModelStore.fetch_model_files`)."""
    from trainkit.agents import load_sb3

    store = store or default_store(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="trainkit-load-") as tmp:
        paths, run, lm, version_label = store._fetch(uri, tmp, run=run)
        with open(paths["config.json"]) as fh:
            raw = json.load(fh)
        with open(paths["feature_spec.json"]) as fh:
            spec = json.load(fh)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig.from_dict({k: v for k, v in raw.items() if k in fields})
        with _one_torch_thread():
            model = load_sb3(paths["policy.zip"], config.algo)
    bundle = ModelBundle(
        model=model, config=config, feature_spec=spec, run_id=run.info.run_id, model_uri=uri,
        model_id=lm.model_id, registered_version=version_label,
    )
    return model, bundle


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """SB3 rebuilds (and orthogonally initialises) the policy before loading its weights;
    with several torch threads on a busy machine those tiny QR decompositions wait on each
    other (measured: ~550 ms median vs ~18 ms with one thread on 2 loaded cores). A cache
    hit must not pay that."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- small helpers
def _tags(d: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in d.items()]


def _params(d: dict[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in d.items()]


def _metrics(d: dict[str, float]) -> list[Any]:
    from mlflow.entities import Metric

    ts = _now_ms()
    return [Metric(k, float(v), ts, 0) for k, v in d.items() if v is not None and float(v) == float(v)]


def _dataset_source(config: TrainConfig, provenance: DataProvenance) -> Any:
    """An explicit MLflow dataset source (a bare string is ambiguous to MLflow)."""
    kind, _, path = provenance.effective_source.partition(":")
    if kind == "csv":
        # MLflow builds its local-file source class at runtime; find it in the registry
        from mlflow.data.dataset_source_registry import get_registered_sources

        local = next((c for c in get_registered_sources() if c._get_source_type() == "local"), None)
        if local is not None:
            return local(path)
        from mlflow.data.code_dataset_source import CodeDatasetSource

        return CodeDatasetSource(tags={"csv": path, "symbol": config.symbol})
    if kind == "yfinance":
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        return HTTPDatasetSource(f"https://finance.yahoo.com/quote/{config.symbol}/history")
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource(tags={"generator": "trainkit.data.synthetic", "symbol": config.symbol, "data_seed": config.data_seed})


def _pyfunc_file() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyfunc_model.py")


def _pip_requirements() -> list[str]:
    """Explicit requirements: MLflow would otherwise spend about a second inferring them."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "stable-baselines3", "torch", "numpy", "gymnasium", "cloudpickle"):
        try:
            v = version(pkg).split("+", 1)[0]
            reqs.append(f"{pkg}=={v}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _description(config: TrainConfig, provenance: DataProvenance, model_id: str) -> str:
    lines = [
        f"### {config.symbol} — {config.algo.upper()} trained by trainkit {trainkit_version()}",
        "",
        f"* window: **{config.train_start} → {config.train_end}**, {config.timesteps:,} timesteps, "
        f"{config.feature_count} features, seed {config.seed}",
        f"* data: requested **{provenance.requested_source}**, used **{provenance.effective_source}** "
        f"(sha256 `{provenance.digest[:16]}…`)",
        f"* config hash: `{config.config_hash}`",
        f"* model: `runs:/<this run>/model` = `models:/{model_id}`",
    ]
    if provenance.fallback_reason:
        lines[1:1] = [
            "",
            f"> **⚠ WARNING: trained on SYNTHETIC fallback data**, not on {provenance.requested_source}: "
            f"{provenance.fallback_reason}. Do not use it for real decisions; trainkit retrains it when the source answers again.",
        ]
    return "\n".join(lines)
