"""A real ``mlflow server --app-name basic-auth`` for the permission tests (issue 24): its own
user database (a temporary ``basic_auth.ini`` through ``MLFLOW_AUTH_CONFIG_PATH``, with the
credential cache on so heartbeats do not each pay a password hash), an admin password and a
Flask secret of its own, and the team of three made through MLflow's auth API:

* ``admin`` — made by the server on first start;
* ``trainer`` (and ``trainer2``, a second person with the same grant) — EDIT on every
  experiment trainkit uses, which the admin creates first (so the trainers do not own them);
* ``viewer`` — READ only (the server's ``default_permission``).

Not a test module."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pg_support import MlflowPgServer

#: every experiment trainkit writes to (store/contract.py): the trainers get EDIT on each
EXPERIMENTS = ("trainkit", "trainkit-backtests", "trainkit-walkforward", "trainkit-tune", "trainkit-promotions")


class MlflowAuthServer(MlflowPgServer):
    """``mlflow server --app-name basic-auth`` on ``localhost:port`` (its ``--allowed-hosts``
    names only ``localhost``, so a client that says ``127.0.0.1`` is rejected by the Host check,
    not by a permission). ``uri`` is ``http://localhost:port``; ``passwords`` holds every user's."""

    def __init__(self, backend_uri: str, root: Path) -> None:
        super().__init__(backend_uri, root)
        self.uri = f"http://localhost:{self.port}"
        self.passwords = {name: secrets.token_urlsafe(18) for name in ("admin", "trainer", "trainer2", "viewer")}
        self.secret_key = secrets.token_hex(16)
        self.ini = root / "basic_auth.ini"

    def command(self) -> list[str]:
        return [*super().command(), "--app-name", "basic-auth",
                "--allowed-hosts", f"localhost:{self.port},localhost"]

    def start(self, timeout: float = 120) -> "MlflowAuthServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        saved = {k: os.environ.get(k) for k in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_PASSWORD",
                                                "MLFLOW_FLASK_SERVER_SECRET_KEY")}
        os.environ.update({"MLFLOW_AUTH_CONFIG_PATH": str(self.ini), "MLFLOW_AUTH_ADMIN_PASSWORD": self.passwords["admin"],
                           "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key})
        try:
            super().start(timeout)  # the server's environment is ours at Popen time
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return self

    def as_user(self, name: str) -> dict[str, str]:
        """The environment variables a client of ``name`` sets."""
        return {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": self.passwords[name]}

    def make_team(self) -> None:
        """As the admin (whose credentials the caller set in this process's environment):
        the users, the experiments, and the trainers' EDIT on each."""
        from mlflow.server import get_app_client
        from mlflow.tracking import MlflowClient

        auth = get_app_client("basic-auth", tracking_uri=self.uri)
        for user in ("trainer", "trainer2", "viewer"):
            auth.create_user(user, self.passwords[user])
        client = MlflowClient(self.uri)
        for name in EXPERIMENTS:
            exp = client.create_experiment(name)
            for user in ("trainer", "trainer2"):
                auth.grant_user_permission(user, "experiment", exp, "EDIT")
