"""A real PostgreSQL and a real ``mlflow server`` on it, for the team-cache tests.

Not a test module. ``PostgresServer`` runs PostgreSQL's own tools the way an admin would::

    initdb -D DATA -U postgres --auth=trust -E UTF8 --locale=C
    # DATA/postgresql.conf += listen_addresses = '127.0.0.1', port = P, unix_socket_directories = 'DIR'
    pg_ctl -D DATA -l DIR/postgres.log -w start
    createdb -h 127.0.0.1 -p P -U postgres mlflow
    ...
    pg_ctl -D DATA -m fast -w stop

PostgreSQL refuses to run as root: as root, every one of those runs as the ``postgres`` OS user
(``runuser -u postgres -- …``) in a directory of its own that it owns (pytest's tmp dirs under
/tmp/pytest-of-root are 0700, so they are not used). Only 127.0.0.1 is listened on; loopback
connections are trusted (no password), which is what initdb's ``--auth=trust`` writes.

``MlflowPgServer`` is ``mlflow server --backend-store-uri postgresql://… --artifacts-destination
DIR`` (proxied artifacts: clients talk HTTP only), with ``kill()``/``start()``/``restart()`` on
the same port and database for tests that take the server away.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PYTHON = sys.executable
PG_USER = "postgres"  # the OS user that runs the server when we are root, and the DB superuser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and createdb: PATH first (Debian's /usr/local/bin
    links point into /usr/lib/postgresql/N/bin), else the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(Path(d) / "initdb", os.X_OK)]
    dirs.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return dirs[-1] if dirs else None


def missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    if pg_bin_dir() is None:
        return "PostgreSQL's initdb/pg_ctl are not installed (.ci/run installs them: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} OS user to run PostgreSQL as (.ci/run creates it)"
        if not shutil.which("runuser"):
            return "running as root and runuser is missing"
    return None


def _world_traversable(path: str) -> bool:
    p = Path(path).resolve()
    return all(os.stat(d).st_mode & 0o001 for d in [p, *p.parents])


def make_shared_dir(prefix: str) -> Path:
    """A new temp dir the ``postgres`` user can use (owned by it when we are root)."""
    parent = tempfile.gettempdir()
    if os.geteuid() == 0 and not _world_traversable(parent):
        parent = "/tmp"
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_USER)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


class PostgresServer:
    """One throw-away PostgreSQL cluster on 127.0.0.1:``port`` with one database ``dbname``."""

    def __init__(self, dbname: str = "mlflow", port: int | None = None) -> None:
        bindir = pg_bin_dir()
        if bindir is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        self.bindir = bindir
        self.dbname = dbname
        self.port = port or free_port()
        self.root: Path | None = None
        self.running = False

    # -------------------------------------------------------------------- URIs
    @property
    def uri(self) -> str:
        """``postgresql://postgres@127.0.0.1:P/mlflow`` (SQLAlchemy 2.1 maps it to psycopg 3)."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def sqlalchemy_uri(self) -> str:
        """The same database, naming the driver explicitly."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    # -------------------------------------------------------------------- commands
    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log = self.log_path.read_text()[-2000:] if self.root and self.log_path.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n{log}")
        return proc

    # -------------------------------------------------------------------- life cycle
    def start(self) -> "PostgresServer":
        self.root = make_shared_dir("trainkit-pg-")
        atexit.register(self.stop)  # a crashed session must not leave a postmaster behind
        self._run("initdb", "-D", str(self.data_dir), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-instructions")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# trainkit tests: loopback only, sockets in our own dir\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                # a throw-away test database: durability is not what is tested here
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        for attempt in range(3):
            self._set_port()
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "60", "start")
                break
            except RuntimeError:
                if attempt == 2 or "already in use" not in self.log_path.read_text():
                    raise
                self.port = free_port()  # someone took the port between free_port() and the bind
        self.running = True
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, self.dbname)
        return self

    def _set_port(self) -> None:
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.port}\n")  # the last setting in the file wins

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, then remove the cluster's directory. Idempotent."""
        if self.root is None:
            return
        if self.running:
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MlflowPgServer:
    """``mlflow server`` on 127.0.0.1:``port``, tracking in PostgreSQL, artifacts proxied to
    ``artifacts`` (a dir of the server's; clients only ever see ``mlflow-artifacts:/…``)."""

    def __init__(self, backend_uri: str, root: Path, port: int | None = None) -> None:
        self.backend_uri = backend_uri
        self.root = root
        self.artifacts = root / "artifacts"
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.root / f"server-{self.starts}.log"

    def command(self) -> list[str]:
        return [PYTHON, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
                "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1"]

    def start(self, timeout: float = 120) -> "MlflowPgServer":
        """Start (again) on the same port and database; returns once ``/health`` answers."""
        assert not self.alive(), "the server is already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
            start_new_session=True,  # its own process group: kill() takes the uvicorn worker too
            # trainkit uses no server-side jobs: fewer processes, up in a third of the time
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()
        atexit.register(self.kill)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"mlflow server did not answer /health within {timeout:.0f}s:\n"
                           f"{self.log_path.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Take the server away (SIGKILL by default: no goodbye to its clients); waits until
        the process group is gone and the port is free again."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)  # the group we started (start_new_session)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        try:  # the worker may outlive the master for a moment
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._wait_port_free()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self, down_for: float = 0.0) -> "MlflowPgServer":
        """Kill the server, keep it away ``down_for`` seconds, start it on the same port and DB."""
        self.kill()
        if down_for:
            time.sleep(down_for)
        return self.start()

    def _wait_port_free(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", self.port))
                    return
                except OSError:
                    time.sleep(0.2)
