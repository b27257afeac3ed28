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

import logging
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from trainkit import settings
from trainkit.errors import ConfigError, PermissionDenied, StoreError

log = logging.getLogger("trainkit")

#: MLflow's permissions, weakest first (``DENY`` and ``NO_PERMISSIONS`` allow nothing)
PERMISSION_ORDER = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")

#: what the basic-auth app answers when the request's Host is not in ``--allowed-hosts``
#: (``mlflow.server.security_utils.INVALID_HOST_MSG``, not imported: that loads the server)
_INVALID_HOST = "Invalid Host header"

#: the basic-auth app's "effective permission of a user on a resource" endpoint (MLflow 3.17,
#: ``mlflow.server.auth.routes.GET_USER_PERMISSION``; a user may ask about themself)
_GET_USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"

#: who the signed-in user is, and whether an admin (``mlflow.server.auth.routes.GET_CURRENT_USER``)
_CURRENT_USER = "/api/2.0/mlflow/users/current"

_CREDENTIAL_HINT = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                    "to your account on that server")


def adopt_uri_credentials(uri: str) -> str:
    """``uri`` without ``user:password@``; the credentials it carried become this process's
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the URI's win over the
    environment's: they were given last and explicitly). ``MLFLOW_TRACKING_URI`` (or
    ``MLFLOW_REGISTRY_URI``) is rewritten when it held them, so nothing downstream (MLflow, child processes) sees them in a URI. A
    name without a password (and none in the environment) is refused without being shown: it
    may be a token in the wrong place."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    if not password and not settings.MLFLOW_TRACKING_PASSWORD.is_set():  # a token where a user goes? never echo it
        raise ConfigError("the tracking URI has credentials without a password (name@host): put your user name and "
                          "password in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or a token in "
                          "MLFLOW_TRACKING_TOKEN) and give the URI without them")
    if user:
        settings.MLFLOW_TRACKING_USERNAME.put(urllib.parse.unquote(user))
    if password:
        settings.MLFLOW_TRACKING_PASSWORD.put(urllib.parse.unquote(password))
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    for variable in (settings.MLFLOW_TRACKING_URI, settings.MLFLOW_REGISTRY_URI):
        if variable.raw() == uri.strip():
            variable.put(clean)
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
    return refusal_of(http_status(exc), str(exc), what, uri)


def refusal_of(status: int | None, body: str, what: str, uri: str) -> StoreError | None:
    """:func:`refusal` of an HTTP answer's status and body."""
    if status not in (401, 403):
        return None
    if status == 401:
        given = "were refused" if (settings.MLFLOW_TRACKING_PASSWORD.is_set() or settings.MLFLOW_TRACKING_TOKEN.is_set()) \
            else "are missing"
        return StoreError(f"{what}: the tracking server at {uri} requires a login and the credentials {given} "
                          f"(HTTP 401): {_CREDENTIAL_HINT}")
    if _INVALID_HOST in body:
        host = urllib.parse.urlsplit(uri).netloc
        return StoreError(f"{what}: the tracking server at {uri} rejected the host name {host!r} (HTTP 403 from its "
                          "--allowed-hosts check; not a permission): use a host name the server allows, or ask its "
                          "admin to add this one to --allowed-hosts")
    return PermissionDenied(f"{what}: permission denied on {uri} for {_whoami()} (HTTP 403): ask the server's admin "
                            "for the permission this needs (docs: README, 'With users and permissions')")


# ---------------------------------------------------------------------------- permissions
_NO_AUTH_APP: set[str] = set()  # servers whose auth endpoints answered 404: no users there
_lock = threading.Lock()


class Permissions:
    """The signed-in user's effective permissions on one tracking server's experiments.

    ``conn`` is a :class:`~trainkit.store.connection.Connection`. Who the user is comes from
    the server (``/users/current``: a token's user too, and whether they are an admin, whom no
    grant limits); their permission per experiment from ``/users/permissions/get``. Answers are
    kept per (credentials, experiment) for the life of the object: permissions change rarely,
    and asking once keeps a cache hit at the speed of a lookup. Any answer but a clear one is
    "cannot say" (``None``), and then the server's answers to the real calls decide."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._known: dict[tuple[str, str], str | None] = {}
        self._me: dict[str, dict[str, Any]] = {}  # credentials -> who the server says they are

    def of(self, experiment_id: str) -> str | None:
        """The effective permission (``READ`` … ``MANAGE``; ``MANAGE`` for an admin), or
        ``None`` when the server cannot say: not a remote server, no auth app, no answer."""
        uri = self.conn.tracking_uri
        if not uri.startswith(("http://", "https://")) or uri in _NO_AUTH_APP:
            return None
        who = authorization_header(uri).get("Authorization", "")
        if not who:
            return None  # no credentials: the server's 401 says so, with its fix
        key = (who, experiment_id)
        if key not in self._known:
            self._known[key] = self._ask(uri, self._current(uri, who), experiment_id)
        return self._known[key]

    def user(self) -> str:
        """The signed-in user's name as the server knows it (else the configured one)."""
        uri = self.conn.tracking_uri
        me = self._current(uri, authorization_header(uri).get("Authorization", ""))
        return str(me.get("username") or settings.MLFLOW_TRACKING_USERNAME.get() or "?")

    def _current(self, uri: str, who: str) -> dict[str, Any]:
        """``/users/current`` for these credentials (name, is_admin), asked once."""
        if who not in self._me:
            self._me[who] = (self._get(uri, _CURRENT_USER, {}) or {}).get("user") or {}
        return self._me[who]

    def _ask(self, uri: str, user: dict[str, Any], experiment_id: str) -> str | None:
        if not user.get("username"):
            return None
        if user.get("is_admin"):
            return "MANAGE"  # the server checks nothing for an admin
        answer = self._get(uri, _GET_USER_PERMISSION, {"username": user["username"], "resource_type": "experiment",
                                                       "resource_id": experiment_id})
        permission = (answer or {}).get("permission")
        return str(permission) if permission else None

    @staticmethod
    def _get(uri: str, endpoint: str, params: dict[str, str]) -> dict[str, Any] | None:
        """``GET endpoint`` with MLflow's REST helpers and host credentials (importing MLflow's
        ``AuthServiceClient`` would load its server, Flask and FastAPI, into every trainer): the
        JSON answer, or ``None`` for anything but a clear one (a 404 marks a server without
        users). A 401 or a 403 from ``--allowed-hosts`` raises its one-line error."""
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        what = "asking the server who you are and what you may do"
        try:
            resp = http_request(get_default_host_creds(uri), endpoint, "GET", params=params)
        except Exception as exc:  # the server did not answer: the real calls will say so, and retry
            log.debug("%s: %s", what, exc)
            return None
        if resp.status_code == 404:
            with _lock:
                _NO_AUTH_APP.add(uri)
            return None
        if resp.status_code in (401, 403):
            refused = refusal_of(resp.status_code, resp.text, what, uri)
            if refused is not None and not isinstance(refused, PermissionDenied):
                raise refused
            return None
        try:
            body = resp.json() if resp.status_code == 200 else None
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

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
                    f"{doing}: user '{self.user()}' has {held} on experiment '{name}' at "
                    f"{self.conn.tracking_uri}, and this needs {need}: ask the server's admin to grant {need} on "
                    f"'{name}' (nothing was done)")

