"""Unreachable tracking server: every command fails with exit 1 and one line that names the URI
— not a traceback, and not after minutes of MLflow's default retries.

Why it is quick is what these tests check (docs/ARCHITECTURE.md, "MLflow pitfalls"): the failure
is reported by trainkit's own ``GET /health`` check, which runs before any MLflow request, within
``MLFLOW_HTTP_REQUEST_TIMEOUT``; the bounded retry settings themselves are checked in
tests/test_store.py. How many seconds it takes is measured by ``make bench``
(bench/bench_timings.py), not asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .rel_support import FAST_CLI, WINDOW_CLI, assert_clean_failure, cli, error_lines

RUN = "runs:/" + "ab" * 16 + "/model"
COMMANDS = {
    "train": ["train", "--symbols", "AAPL", *WINDOW_CLI, "--data-source", "synthetic", *FAST_CLI],
    "train-json": ["train", "--symbols", "AAPL", *WINDOW_CLI, "--data-source", "synthetic", *FAST_CLI, "--json"],
    "list": ["list"],
    "clear": ["clear", "--yes"],
    "backtest": ["backtest", "--model-uri", RUN, "--start", "2023-01-02", "--end", "2023-06-30"],
    "register": ["register", "--model-uri", RUN],
}


def health_check_said(line: str, uri: str) -> bool:
    """Is ``line`` the one trainkit's ``/health`` check writes (trainkit/store/connection.py,
    ``check_health``), rather than an MLflow request that failed after its retries?"""
    return line.startswith(f"error: cannot reach the MLflow tracking server at {uri} (")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_closed_port_fails_at_the_health_check_naming_the_uri(command: str, closed_port_uri: str, tmp_path: Path) -> None:
    res = cli(*COMMANDS[command], env={"MLFLOW_TRACKING_URI": closed_port_uri}, cwd=tmp_path, timeout=120)
    assert_clean_failure(res, 1, closed_port_uri)
    assert health_check_said(error_lines(res)[0], closed_port_uri), f"not reported by the health check\n{res}"


def test_closed_port_given_by_flag(closed_port_uri: str, tmp_path: Path) -> None:
    res = cli("--tracking-uri", closed_port_uri, "list", "--json", cwd=tmp_path, timeout=120)
    assert_clean_failure(res, 1, closed_port_uri)
    assert health_check_said(error_lines(res)[0], closed_port_uri), f"not reported by the health check\n{res}"


@pytest.mark.slow
def test_silent_server_fails_at_the_health_check_timeout(tmp_path: Path) -> None:
    """A server that accepts connections and never answers (a hung process, a firewall that
    drops): the health check gives up after MLFLOW_HTTP_REQUEST_TIMEOUT (here 3 s) and says so,
    instead of MLflow retrying each request for minutes."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes the handshakes; nobody ever reads or answers
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        res = cli("list", env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}, cwd=tmp_path,
                  timeout=120)
    assert_clean_failure(res, 1, uri, "timed out")
    assert health_check_said(error_lines(res)[0], uri), f"not reported by the health check\n{res}"
