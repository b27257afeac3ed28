"""Unreachable tracking server: every command fails within seconds with exit 1 and one line that
names the URI — not minutes of MLflow's default retries, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .rel_support import FAST_CLI, WINDOW_CLI, assert_clean_failure, cli

RUN = "runs:/" + "ab" * 16 + "/model"
COMMANDS = {
    "train": ["train", "--symbols", "AAPL", *WINDOW_CLI, "--data-source", "synthetic", *FAST_CLI],
    "train-json": ["train", "--symbols", "AAPL", *WINDOW_CLI, "--data-source", "synthetic", *FAST_CLI, "--json"],
    "list": ["list"],
    "clear": ["clear", "--yes"],
    "backtest": ["backtest", "--model-uri", RUN, "--start", "2023-01-02", "--end", "2023-06-30"],
    "register": ["register", "--model-uri", RUN],
}
LIMIT = 15.0  # seconds, Python start-up included (docs/ARCHITECTURE.md, "MLflow pitfalls" allows 10 s for the server to answer)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_closed_port_fails_fast_naming_the_uri(command: str, closed_port_uri: str, tmp_path: Path) -> None:
    res = cli(*COMMANDS[command], env={"MLFLOW_TRACKING_URI": closed_port_uri}, cwd=tmp_path, timeout=120)
    assert_clean_failure(res, 1, closed_port_uri)
    assert res.seconds < LIMIT, f"took {res.seconds:.1f}s\n{res}"


def test_closed_port_given_by_flag(closed_port_uri: str, tmp_path: Path) -> None:
    res = cli("--tracking-uri", closed_port_uri, "list", "--json", cwd=tmp_path, timeout=120)
    assert_clean_failure(res, 1, closed_port_uri)
    assert res.seconds < LIMIT, str(res)


@pytest.mark.slow
def test_silent_server_fails_within_the_timeout(tmp_path: Path) -> None:
    """A server that accepts connections and never answers (a hung process, a firewall that
    drops): reported within the request timeout (docs/ARCHITECTURE.md, "MLflow pitfalls": 10 s unless the user set
    MLFLOW_HTTP_REQUEST_TIMEOUT, here 3 s to keep the test short), not after minutes of retries."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes the handshakes; nobody ever reads or answers
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        res = cli("list", env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}, cwd=tmp_path,
                  timeout=120)
    assert_clean_failure(res, 1, uri)
    assert res.seconds < 3 + LIMIT, f"took {res.seconds:.1f}s\n{res}"
