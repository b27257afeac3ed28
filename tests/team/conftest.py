"""Fixtures of the team-cache tests (issue 15): a real PostgreSQL, a real ``mlflow server`` on
it with proxied artifacts, and team members (clients) that share nothing but that server.

PostgreSQL comes from tests/pg_support.py (initdb + pg_ctl as the ``postgres`` OS user, on
127.0.0.1 only). Without PostgreSQL installed the tests skip, except in CI (``CI=true``), where
.ci/run installs it and a skip would hide a broken set-up: there they fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from pg_support import MlflowPgServer, PostgresServer, missing_reason

from .team_support import TeamClient


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster with an empty ``mlflow`` database, for the session."""
    reason = missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the team-cache tests: {reason}", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer(dbname="mlflow").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def team_server(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowPgServer]:
    """``mlflow server --backend-store-uri postgresql://… --artifacts-destination DIR`` on a
    free loopback port, shared by the session. ``team_server.restart(down_for=…)`` kills it and
    starts it again on the same port and database (see ``team_uri``: later tests get it back)."""
    server = MlflowPgServer(postgres.uri, tmp_path_factory.mktemp("team-mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def team_uri(team_server: MlflowPgServer) -> str:
    """The shared server's URI, running again if an earlier test took it away."""
    if not team_server.alive():
        team_server.start()
    return team_server.uri


@pytest.fixture
def make_client(team_uri: str, tmp_path: Path):
    """``make_client("alice")``: a team member with its own working dir and download cache."""
    def make(name: str, **extra_env: str) -> TeamClient:
        return TeamClient(name, tmp_path / "team", team_uri, extra_env=extra_env)

    return make
