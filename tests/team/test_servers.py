"""The test servers themselves: PostgreSQL runs as ``postgres`` on loopback only and really
holds MLflow's tables; the mlflow server proxies artifacts and comes back after a restart on
the same port with the same data (what the server-restart tests rely on)."""

from __future__ import annotations

import os
import pwd
import uuid

import pytest

from .team_support import mlflow_client

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.team]


def test_postgres_is_loopback_only_and_holds_mlflows_tables(postgres, team_server) -> None:
    import psycopg

    with psycopg.connect(postgres.uri, connect_timeout=10) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1  # mlflow migrated it
    pid = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid == (pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid())


def test_server_restart_keeps_port_and_data_and_proxies_artifacts(team_server) -> None:
    if not team_server.alive():
        team_server.start()
    uri, port = team_server.uri, team_server.port
    c = mlflow_client(uri)
    exp_id = c.create_experiment(f"servers-{uuid.uuid4().hex[:8]}")
    run = c.create_run(exp_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri

    team_server.restart()
    assert (team_server.uri, team_server.port) == (uri, port) and team_server.healthy()
    c = mlflow_client(uri)
    assert c.get_run(run.info.run_id).info.experiment_id == exp_id
    c.log_text(run.info.run_id, "hello", "hello.txt")  # through the server, onto its disk
    c.set_terminated(run.info.run_id)
    on_disk = [os.path.join(d, f) for d, _s, files in os.walk(team_server.artifacts) for f in files if f == "hello.txt"]
    assert len(on_disk) == 1 and run.info.run_id in on_disk[0], on_disk
