"""Who may do what on a tracking server with users, and where the credentials go.

A team server may run MLflow's basic-auth app (``mlflow server --app-name basic-auth``): users,
and READ / USE / EDIT / MANAGE per experiment and per registered model. Three things follow,
each in one place here (docs/ARCHITECTURE.md, *Users, permissions and secrets*):

* **Credentials stay in this process.** A tracking URI with ``user:password@`` in it is split:
  the URI trainkit uses, prints and hands to Ray has no credentials, and the credentials become
  this process's ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, which MLflow sends
  as an ``Authorization`` header (urllib and MLflow would otherwise read ``user:password@host``
  as a host name, and the URI would be printed with the password).
* **A refusal says which one it is.** 401 (no or wrong credentials), 403 for a missing
  permission, and 403 for a ``Host`` the server's ``--allowed-hosts`` rejects are three
  different fixes; :func:`refusal` tells them apart.
* **Permissions are asked before the work, not discovered half-way.** :class:`Permissions`
  asks the server for the signed-in user's effective permission on an experiment
  (``GET /api/3.0/mlflow/users/permissions/get``, a user may ask about themself), once per
  experiment and process, so a viewer's cache miss fails before any data is fetched and a
  ``clear`` without MANAGE deletes nothing. A server without the auth app, or a token whose
  user is unknown, answers nothing to ask: then the server's own answers decide.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from trainkit import settings
from trainkit.errors import PermissionDenied, StoreError

#: MLflow's permissions, weakest first (``DENY`` and ``NO_PERMISSIONS`` allow nothing)
PERMISSION_ORDER = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")

#: what the basic-auth app answers when the request's Host is not in ``--allowed-hosts``
#: (``mlflow.server.security_utils.INVALID_HOST_MSG``, not imported: that loads the server)
_INVALID_HOST = "Invalid Host header"

#: the basic-auth app's "effective permission of a user on a resource" endpoint (MLflow 3.17,
#: ``mlflow.server.auth.routes.GET_USER_PERMISSION``; a user may ask about themself)
_GET_USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"

_CREDENTIAL_HINT = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                    "to your account on that server")


def adopt_uri_credentials(uri: str) -> str:
    """``uri`` without ``user:password@``; the credentials it carried become this process's
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the URI's win over the
    environment's: they were given last and explicitly). ``MLFLOW_TRACKING_URI`` is rewritten
    when it held them, so nothing downstream (MLflow, child processes) sees them in a URI."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    if user:
        settings.MLFLOW_TRACKING_USERNAME.put(urllib.parse.unquote(user))
    if password:
        settings.MLFLOW_TRACKING_PASSWORD.put(urllib.parse.unquote(password))
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    if settings.MLFLOW_TRACKING_URI.raw() == uri.strip():
        settings.MLFLOW_TRACKING_URI.put(clean)
    return clean


def authorization_header(uri: str) -> dict[str, str]:
    """The ``Authorization`` header MLflow would send to ``uri`` (its own host credentials:
    basic from username/password, else bearer from a token), for trainkit's own requests."""
    import base64

    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    if creds.username and creds.password:
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if creds.token:
        return {"Authorization": f"Bearer {creds.token}"}
    return {}


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an MLflow REST error, if it was one."""
    get = getattr(exc, "get_http_status_code", None)
    try:
        return int(get()) if get is not None else None
    except (TypeError, ValueError):
        return None


def _whoami() -> str:
    user = settings.MLFLOW_TRACKING_USERNAME.get()
    if user:
        return f"user '{user}'"
    return "the token in MLFLOW_TRACKING_TOKEN" if settings.MLFLOW_TRACKING_TOKEN.is_set() else "no user"


def refusal(exc: BaseException, what: str, uri: str) -> StoreError | None:
    """The one-line error for a server that refused a request (``None``: not a refusal).

    * 401: no or wrong credentials — names the variables that carry them.
    * 403 with the ``--allowed-hosts`` answer: the server does not accept the host name the
      client used — not a permission, and no credential fixes it.
    * 403 otherwise: the user lacks a permission (:class:`PermissionDenied`)."""
    status = http_status(exc)
    if status not in (401, 403):
        return None
    if status == 401:
        given = "were refused" if (settings.MLFLOW_TRACKING_PASSWORD.is_set() or settings.MLFLOW_TRACKING_TOKEN.is_set()) \
            else "are missing"
        return StoreError(f"{what}: the tracking server at {uri} requires a login and the credentials {given} "
                          f"(HTTP 401): {_CREDENTIAL_HINT}")
    if _INVALID_HOST in str(exc):
        host = urllib.parse.urlsplit(uri).netloc
        return StoreError(f"{what}: the tracking server at {uri} rejected the host name {host!r} (HTTP 403 from its "
                          "--allowed-hosts check; not a permission): use a host name the server allows, or ask its "
                          "admin to add this one to --allowed-hosts")
    return PermissionDenied(f"{what}: permission denied on {uri} for {_whoami()} (HTTP 403): ask the server's admin "
                            "for the permission this needs (docs: README, 'With users and permissions')")


# ---------------------------------------------------------------------------- permissions
_NO_AUTH_APP: set[str] = set()  # servers that answered 404 to the permissions endpoint
_lock = threading.Lock()


class Permissions:
    """The signed-in user's effective permissions on one tracking server's experiments.

    ``conn`` is a :class:`~trainkit.store.connection.Connection`. Answers are kept for the
    life of the object (one request, one process): permissions change rarely, and asking once
    per experiment keeps a cache hit at the speed of a lookup."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._known: dict[str, str | None] = {}

    def of(self, experiment_id: str) -> str | None:
        """The effective permission (``READ`` … ``MANAGE``), or ``None`` when the server cannot
        say: not a remote server, no auth app, or no user name to ask about (a token)."""
        uri, user = self.conn.tracking_uri, settings.MLFLOW_TRACKING_USERNAME.get()
        if not uri.startswith(("http://", "https://")) or not user or uri in _NO_AUTH_APP:
            return None
        if experiment_id not in self._known:
            self._known[experiment_id] = self._ask(uri, user, experiment_id)
        return self._known[experiment_id]

    def _ask(self, uri: str, user: str, experiment_id: str) -> str | None:
        """``AuthServiceClient.get_user_permission``'s request, made with MLflow's REST helpers:
        importing the client would load MLflow's server (Flask, FastAPI) into every trainer."""
        from mlflow.exceptions import MlflowException
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        params = {"username": user, "resource_type": "experiment", "resource_id": experiment_id}
        try:
            with self.conn.errors("asking the server for your permissions"):
                try:
                    resp = http_request(get_default_host_creds(uri), _GET_USER_PERMISSION, "GET", params=params)
                    answer = verify_rest_response(resp, _GET_USER_PERMISSION).json()["permission"]
                except MlflowException as exc:
                    if http_status(exc) == 404:  # no auth app on this server: nothing to ask
                        with _lock:
                            _NO_AUTH_APP.add(uri)
                        return None
                    raise
        except PermissionDenied:
            return None  # a server that will not say: its answers to the real calls decide
        return str(answer)

    def require(self, need: str, experiments: Iterable[str], doing: str) -> None:
        """Raise :class:`PermissionDenied` — naming the user, the permission it lacks and the
        experiment — unless the user holds ``need`` (or more) on every experiment named that
        exists. An experiment that does not exist yet is created by the work itself, and its
        creator manages it."""
        if need not in PERMISSION_ORDER:
            raise ValueError(f"unknown permission {need!r}")
        for name in dict.fromkeys(experiments):
            experiment_id = self.conn.experiment_id_if_exists(name)
            if experiment_id is None:
                continue
            held = self.of(experiment_id)
            if held is None:
                continue
            rank = PERMISSION_ORDER.index(held) if held in PERMISSION_ORDER else 0
            if rank < PERMISSION_ORDER.index(need):
                raise PermissionDenied(
                    f"{doing}: user '{settings.MLFLOW_TRACKING_USERNAME.get()}' has {held} on experiment '{name}' at "
                    f"{self.conn.tracking_uri}, and this needs {need}: ask the server's admin to grant {need} on "
                    f"'{name}' (nothing was done)")

