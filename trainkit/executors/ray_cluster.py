"""The Ray executor: one Ray task per request on a Ray cluster (``pip install trainkit[ray]``).

``ray`` is imported only inside :class:`RayExecutor`'s methods, when it connects or submits:
importing this module (and registering the ``ray`` executor) imports no ray. See
:class:`RayExecutor` for what crosses to the workers, what counts as a remote cluster,
retries and Ctrl-C. Named ``ray_cluster`` so that it never shadows the ``ray`` package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from trainkit.errors import RuntimeFailure, TrainkitError
from trainkit.executors.base import THREAD_VARS, Executor, R, T, WorkerDied
from trainkit.executors.local import worker_init

log = logging.getLogger("trainkit")

#: addresses that mean "a Ray cluster on this machine" (a local-file tracking store works there)
LOCAL_RAY_ADDRESSES = frozenset({"local", "auto", "localhost", "127.0.0.1", "::1", "[::1]"})

#: run-scoped MLflow variables of the driver that must not leak into the workers' runs
_DRIVER_ONLY = frozenset({"MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"})



def is_local_ray_address(address: str | None) -> bool:
    """Does ``address`` name a Ray cluster started on this machine? ``None`` (a new local
    instance), ``local``, ``auto`` (the cluster ``ray start`` last started here) and loopback
    hosts (``127.0.0.1:6379``, ``localhost:…``, ``ray://127.0.0.1:10001``) do. Anything else —
    this machine's LAN address included — counts as remote: nodes on other machines may run
    the tasks, and they cannot open a sqlite file or a path on this disk."""
    if address is None or not address.strip():
        return True
    addr = address.strip()
    if "://" in addr:
        addr = addr.split("://", 1)[1]
    addr = addr.split("/", 1)[0]
    if addr.lower() in LOCAL_RAY_ADDRESSES:
        return True
    if addr.startswith("["):  # [ipv6]:port
        host = addr[1:].split("]", 1)[0]
    elif addr.count(":") == 1:
        host = addr.rsplit(":", 1)[0]
    else:
        host = addr
    host = host.lower()
    return host in LOCAL_RAY_ADDRESSES or host.startswith("127.")


def absolute_tracking_uri(uri: str) -> str:
    """``uri`` with a relative local path made absolute: a Ray worker's working directory is
    the raylet's, not the driver's, so ``sqlite:///mlflow.db`` would open another file there."""
    from trainkit.store.connection import is_local_file_store, sqlite_path

    if not is_local_file_store(uri):
        return uri
    if uri.startswith("sqlite:"):
        path = sqlite_path(uri)
        if path is None:  # in-memory: nothing to share
            return uri
        query = uri.split("?", 1)[1] if "?" in uri else ""
        return f"sqlite:///{path}" + (f"?{query}" if query else "")
    if uri.startswith("file:"):
        import urllib.parse

        parts = urllib.parse.urlsplit(uri)
        if parts.netloc in ("", "localhost"):
            return "file://" + os.path.abspath(urllib.parse.unquote(parts.path))
        return uri
    return os.path.abspath(uri) if "://" not in uri else uri


def ray_worker_env(tracking_uri: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a Ray task needs, passed through ``runtime_env={"env_vars": …}``: every
    trainkit and MLflow setting set in the driver (``trainkit.settings.ALL``, and any other
    ``TRAINKIT_*`` / ``MLFLOW_*`` variable), the tracking URI (made absolute), one thread per
    numeric library, then ``extra``. Not passed: the driver's run-scoped MLflow variables
    (``MLFLOW_RUN_ID``, ``MLFLOW_EXPERIMENT_ID/NAME``), and no credential
    (:func:`trainkit.settings.is_credential`: passwords, tokens, the user name, a URL with a
    password): Ray shows a job's runtime environment on its dashboard and in its logs, so the
    nodes bring their own (docs/ARCHITECTURE.md, *Users, permissions and secrets*).
    ``TRAINKIT_RAY_FORWARD_SECRETS=true`` forwards them anyway, with a warning."""
    from trainkit import settings

    env: dict[str, str] = {}
    for name, value in os.environ.items():
        if name.startswith(("TRAINKIT_", "MLFLOW_")) and value.strip():
            env[name] = value
    for setting in settings.ALL:
        raw = setting.raw()
        if raw is not None:
            env[setting.name] = raw
    for name in _DRIVER_ONLY:
        env.pop(name, None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(THREAD_VARS)
    env.update(extra or {})
    secrets = sorted(name for name, value in env.items() if settings.is_credential(name, value))
    if secrets and settings.TRAINKIT_RAY_FORWARD_SECRETS.get():
        log.warning("forwarding %s to Ray tasks (TRAINKIT_RAY_FORWARD_SECRETS): anyone who can see the cluster's "
                    "dashboard or logs can read them", ", ".join(secrets))
    else:
        for name in secrets:
            del env[name]
        given = sorted(set(secrets) & set(extra or {}))
        if given:  # asked for by name, and still not sent: say so (the value never)
            log.warning("not forwarding %s to Ray tasks: credentials stay on this machine (the nodes bring their "
                        "own; TRAINKIT_RAY_FORWARD_SECRETS=true forwards them)", ", ".join(given))
    return env


def _label(item: Any) -> str:
    """A short name for an item in messages and Ray task names: a request's symbol, a
    walk-forward task's symbol, fold and seed."""
    config = getattr(item, "config", None)
    symbol = getattr(config, "symbol", None) or getattr(item, "symbol", None)
    label = str(symbol) if symbol else type(item).__name__
    index = getattr(getattr(item, "window", None), "index", None)
    if index is not None:
        label += f"-fold{index}"
        if getattr(item, "seed", None) is not None:
            label += f"-seed{item.seed}"
    return label


def _ray_task(fn: Callable[[T], R], item: T, verbose: int, origin: tuple[str, str]) -> R:
    """What runs in a Ray worker: trainkit's worker set-up, the driver's working directory
    when the worker is on the driver's machine (relative paths then mean the same files),
    then ``fn(item)``. Ray delivers a graceful cancel as KeyboardInterrupt in here, and
    trainkit marks its run KILLED and releases its lease on the way out."""
    import socket

    worker_init(verbose)
    host, cwd = origin
    if socket.gethostname() == host and os.path.isdir(cwd):
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    return fn(item)


class RayExecutor(Executor):
    """Each item is one Ray task (``num_cpus=1``, one torch/BLAS thread) on a Ray cluster;
    results stream back as they finish, as ``(item, result or exception)``.

    * **Where**: ``address`` (``host:port`` of a head node, ``ray://host:10001``, ``auto``),
      else ``RAY_ADDRESS``, else a new local Ray instance with ``num_cpus`` CPUs (default:
      this machine's). An instance it started is shut down when it is done; a cluster it
      connected to is only disconnected from. Inside ``with RayExecutor(…) as ex:`` the
      connection is kept across calls; otherwise each :meth:`map_unordered` call connects and
      lets go. If this process already called ``ray.init``, that connection is used and kept.
    * **The store**: the workers get the tracking URI and trainkit's settings as
      ``runtime_env`` env vars (:func:`ray_worker_env`). A local-file tracking store
      (``sqlite:///…``, a path, ``file:``) only works when every node is this machine: with a
      remote address (:func:`is_local_ray_address`), or a cluster with nodes on other hosts,
      it refuses with :class:`~trainkit.errors.ConfigError` (exit 2) before submitting anything.
    * **Dedupe** stays in the store: two drivers submitting the same configs to one cluster
      train each once, through the leases. Ray never dedupes.
    * **Failures**: a trainkit error raised in a task comes back as the value (unwrapped from
      Ray's ``RayTaskError``). A task whose worker or node died is retried by Ray
      (``max_retries``); the retry finds the dead worker's lease, waits until it is stale
      (``TRAINKIT_STALE_AFTER``), takes it over and trains. If every retry dies, the value is
      a :class:`WorkerDied`.
    * **Ctrl-C** (or the consumer stopping early): the tasks are cancelled gracefully
      (``ray.cancel(force=False)``: KeyboardInterrupt in the task, whose run ends KILLED and
      lease is released), given ``cancel_grace`` seconds, then force-cancelled; then it
      re-raises.
    """

    in_process = False

    def __init__(self, address: str | None = None, num_cpus: int | None = None, tracking_uri: str | None = None,
                 *, max_retries: int = 3, env_vars: dict[str, str] | None = None, verbose: int = 0,
                 cancel_grace: float = 15.0) -> None:
        if num_cpus is not None and int(num_cpus) < 1:
            raise ValueError("num_cpus must be at least 1")
        self.address = address or None
        self.num_cpus = int(num_cpus) if num_cpus is not None else None
        self.tracking_uri = tracking_uri
        self.max_retries = int(max_retries)
        self.env_vars = dict(env_vars or {})
        self.verbose = verbose
        self.cancel_grace = float(cancel_grace)
        self._held = 0  # `with` depth: keep the connection between calls
        self._connected = False
        self._initialized = False  # we called ray.init: ray.shutdown when done
        self._owns_instance = False  # ... and it started a local Ray instance (shutdown stops it)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.resolved_address()!r})"

    # ---- where
    def resolved_address(self) -> str | None:
        """The address in force: the argument, else ``RAY_ADDRESS``, else ``None`` (a new
        local instance)."""
        return self.address or os.environ.get("RAY_ADDRESS", "").strip() or None

    def use_store(self, tracking_uri: str) -> None:
        """The tracking store the tasks write to (the manager calls this; the argument wins)."""
        if self.tracking_uri is None:
            self.tracking_uri = tracking_uri

    def resolved_tracking_uri(self) -> str:
        """The store the tasks will write to, with a local path made absolute (the workers'
        working directory is not the driver's)."""
        from trainkit.store.connection import resolve_tracking_uri

        return absolute_tracking_uri(resolve_tracking_uri(self.tracking_uri))

    def check(self) -> str:
        """Refuse what cannot work, before connecting or submitting (exit 2): invalid settings,
        or a local-file tracking store with a remote cluster. Returns the tracking URI."""
        from trainkit import settings
        from trainkit.errors import ConfigError
        from trainkit.settings import redact_url
        from trainkit.store.connection import is_local_file_store

        settings.check()
        uri = self.resolved_tracking_uri()
        address = self.resolved_address()
        if is_local_ray_address(address):
            return uri
        if is_local_file_store(uri):
            raise ConfigError(
                f"the Ray cluster at {address} cannot reach the local tracking store {uri}: use an http(s):// "
                "tracking server (mlflow server …; --tracking-uri / MLFLOW_TRACKING_URI)"
            )
        host = _uri_host(uri)
        if host is not None and is_local_ray_address(host):
            raise ConfigError(
                f"the Ray cluster at {address} cannot reach the tracking store at {redact_url(uri)}: {host} is this "
                "machine only; use an address the cluster's nodes can reach (--tracking-uri / MLFLOW_TRACKING_URI)"
            )
        return uri

    # ---- connection
    def __enter__(self) -> RayExecutor:
        self._held += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._held = max(0, self._held - 1)
        if not self._held:
            self.close()

    def connect(self) -> None:
        """Connect to the cluster (or start a local instance); a no-op when connected."""
        import ray

        if self._connected:
            return
        if ray.is_initialized():  # the caller's own connection: use it, leave it alone
            self._connected, self._initialized, self._owns_instance = True, False, False
            return
        address = self.resolved_address()
        quiet = logging.INFO if self.verbose else logging.WARNING
        try:
            if address is None or address == "local":
                ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         logging_level=quiet)
                self._owns_instance = True
            else:
                if self.num_cpus is not None:
                    log.warning("num_cpus=%d is ignored: connecting to the existing Ray cluster at %s",
                                self.num_cpus, address)
                ray.init(address=address, logging_level=quiet)
                self._owns_instance = False
        except ValueError as exc:  # "Invalid address format"
            from trainkit.errors import ConfigError

            raise ConfigError(f"invalid Ray address {address!r} ({_one_line(exc)}): use host:port, "
                              "ray://host:port, auto or local") from None
        except Exception as exc:  # noqa: BLE001 - ConnectionError, AuthenticationError, RuntimeError: one line
            where = f"the Ray cluster at {address}" if address not in (None, "local") else "a local Ray instance"
            hint = (" (token authentication: set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                    "~/.ray/auth_token)" if "auth" in str(exc).lower() else
                    ": start it with `ray start --head`, or check --ray-address / RAY_ADDRESS")
            raise RuntimeFailure(f"cannot connect to {where}: {type(exc).__name__}: {_one_line(exc)}{hint}") from None
        self._connected = self._initialized = True
        log.info("connected to Ray (%s)", "a local instance" if self._owns_instance else address)

    def close(self) -> None:
        """Let go of the cluster: shut down a local instance this executor started, else just
        disconnect (a connection the caller made before is left alone)."""
        import ray

        if not self._connected:
            return
        initialized = self._initialized
        self._connected = self._initialized = self._owns_instance = False
        if initialized:  # stops the processes of a local instance we started; else disconnects
            ray.shutdown()

    def _check_nodes(self, tracking_uri: str) -> None:
        """After connecting: a local-file store needs every alive node on this machine."""
        import ray

        from trainkit.errors import ConfigError
        from trainkit.store.connection import is_local_file_store

        if not is_local_file_store(tracking_uri):
            return
        try:
            here = ray.util.get_node_ip_address()
            hosts = {n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")}
        except Exception as exc:  # noqa: BLE001 - best effort
            log.debug("could not list the Ray cluster's nodes: %s", exc)
            return
        others = sorted(h for h in hosts if h and h != here)
        if others:
            raise ConfigError(
                f"the Ray cluster has nodes on other machines ({', '.join(others)}) that cannot reach the local "
                f"tracking store {tracking_uri}: use an http(s):// tracking server (mlflow server …; --tracking-uri / "
                "MLFLOW_TRACKING_URI)"
            )

    # ---- running
    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | Exception]]:
        items = list(items)
        if not items:
            return
        tracking_uri = self.check()  # exit 2 before anything is submitted
        self.connect()
        try:
            self._check_nodes(tracking_uri)
            yield from self._run(fn, items, tracking_uri)
        finally:
            if not self._held:
                self.close()

    def _run(self, fn: Callable[[T], R], items: list[T], tracking_uri: str) -> Iterator[tuple[T, R | Exception]]:
        import socket

        import ray

        remote = ray.remote(_ray_task)
        runtime_env = {"env_vars": ray_worker_env(tracking_uri, self.env_vars)}
        origin = (socket.gethostname(), os.getcwd())
        fn_ref = ray.put(fn)  # once, not once per task
        pending: dict[Any, T] = {}
        log.info("submitting %d tasks to Ray", len(items))
        try:
            for item in items:
                ref = remote.options(
                    num_cpus=1, max_retries=self.max_retries, retry_exceptions=False, runtime_env=runtime_env,
                    name=f"trainkit:{_label(item)}",
                ).remote(fn_ref, item, self.verbose, origin)
                pending[ref] = item
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    item = pending.pop(ref)
                    yield item, self._value(ref, item)
        except BaseException:  # Ctrl-C, the consumer stopped early, or a bug in a task
            self._cancel(list(pending))
            raise

    def _value(self, ref: Any, item: Any) -> Any:
        """The task's result, its trainkit error, or a :class:`WorkerDied`; anything else
        (a bug in the task) is raised, as :class:`LocalExecutor` does."""
        import ray
        from ray import exceptions as rx

        try:
            return ray.get(ref)
        except rx.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TrainkitError):
                return cause
            if isinstance(cause, rx.TaskCancelledError) or isinstance(exc, rx.TaskCancelledError):
                from trainkit.errors import TrainingInterrupted

                return TrainingInterrupted(f"{_label(item)}: the Ray task was cancelled")
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except rx.TaskCancelledError:
            from trainkit.errors import TrainingInterrupted

            return TrainingInterrupted(f"{_label(item)}: the Ray task was cancelled")
        except rx.RuntimeEnvSetupError as exc:
            return RuntimeFailure(f"{_label(item)}: Ray could not set up the worker's environment: {_one_line(exc)}")
        except rx.RayError as exc:  # WorkerCrashedError, NodeDiedError, OutOfMemoryError, ObjectLostError, …
            return WorkerDied(
                f"{_label(item)}: the Ray worker running it died ({type(exc).__name__}: {_one_line(exc)}) "
                f"and {self.max_retries} retries did not finish it"
            )

    def _cancel(self, refs: list[Any]) -> None:
        """Cancel gracefully (KeyboardInterrupt in each task: runs end KILLED, leases released),
        wait up to ``cancel_grace`` seconds, then force-cancel what is still running."""
        import ray

        if not refs:
            return
        log.warning("cancelling %d Ray tasks", len(refs))
        try:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=False)
            left = list(refs)
            deadline = time.monotonic() + self.cancel_grace
            while left and time.monotonic() < deadline:
                _done, left = ray.wait(left, num_returns=len(left), timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            left = list(refs)
        for ref in left:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


def _uri_host(uri: str) -> str | None:
    """The host of a ``scheme://[user@]host[:port]/…`` URI, or ``None``."""
    import urllib.parse

    try:
        return urllib.parse.urlsplit(uri).hostname
    except ValueError:
        return None


def _one_line(exc: BaseException) -> str:
    """The first line of an error from Ray: its messages run to many lines, trainkit's are one."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def ray_executor(*, workers: int = 1, verbose: int = 0, address: str | None = None, tracking_uri: str | None = None,
                 **options: Any) -> RayExecutor:
    """The ``ray`` row of the executor registry: ``workers`` above 1 sizes a *new* local
    instance (a cluster's size is its own); 1 means "not said", so a new instance gets this
    machine's CPUs. Constructing it imports no ray (connecting does)."""
    return RayExecutor(address, num_cpus=workers if workers > 1 else None, tracking_uri=tracking_uri,
                       verbose=verbose, **options)
