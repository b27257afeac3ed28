"""Fixtures of the reliability tests (issue 7). The stores come from tests/conftest.py
(``sqlite_uri``: a fresh sqlite store; ``server_uri``: a real ``mlflow server``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture
def experiment_name() -> str:
    """A fresh experiment on the shared server, so each server test starts uncached."""
    return f"trainkit-rel-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def closed_port_uri() -> str:
    """An http URI on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d
