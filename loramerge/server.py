"""`loramerge mlflow-server`: the project's MLflow store served over HTTP, for parallel and multi-machine runs, and
for the length of one command (`--during`, what `make run` does).

Why a server: an SQLite file takes one writer at a time and lives on one disk; a server takes
runs from parallel `dvc queue` jobs, from every DDP node and from other machines, and stores
their artifacts itself (proxied artifact storage), so clients need no access to its disk.
Clients set `MLFLOW_TRACKING_URI=http://127.0.0.1:<port>` (or `tracking.uri`).

It binds to 127.0.0.1 only: whoever reaches an MLflow server can read, change and delete
every run. Reach it from other machines through an SSH tunnel or an authenticating proxy.

Why a server during one run (`--during dvc repro`): a stage that opens the SQLite store itself pays SQLAlchemy's
engine and MLflow's schema check (every alembic migration parsed) in every process, about a second; over HTTP the
server has paid it once. That server writes no artifacts itself (`--no-serve-artifacts`): the stages write them
into the project's `mlartifacts/` as they do without it, so every run, model and alias stays readable from
`mlflow.db` alone after it stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def default_backend_store(root: Path) -> str:
    """The project's own store, the one stages use without a server: served, not copied."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def server_command(
    root: Path, port: int, backend_store_uri: str | None = None, proxied_artifacts: bool = True
) -> list[str]:
    """`mlflow server` on 127.0.0.1 with an SQL backend store and a local artifact root.

    SQLite gets one worker: more would only queue on its write lock. A PostgreSQL URL
    (`postgresql://user@host/db`, needs `pip install psycopg2-binary`) keeps MLflow's default.
    Proxied artifacts (the default) reach the server's disk from anywhere; without them, clients on this machine
    write into the project's `mlartifacts/` themselves.
    """
    store = backend_store_uri or default_backend_store(root)
    artifacts = str((root / "mlartifacts").resolve())
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--backend-store-uri",
        store,
    ]
    if proxied_artifacts:
        command += ["--artifacts-destination", artifacts]
    else:
        command += ["--no-serve-artifacts", "--default-artifact-root", Path(artifacts).as_uri()]
    if store.startswith("sqlite"):
        command += ["--workers", "1"]
    return command


def serve(root: Path, port: int, backend_store_uri: str | None = None) -> None:
    """Become the MLflow server (exec, so signals and the exit status are the server's own)."""
    command = server_command(root, port, backend_store_uri)
    print(
        f"MLflow tracking server on http://{HOST}:{port} (store {command[command.index('--backend-store-uri') + 1]});"
        f" point stages at it with MLFLOW_TRACKING_URI=http://{HOST}:{port}",
        flush=True,
    )
    os.execv(command[0], command)


def free_port() -> int:
    """A local port nothing listens on right now (found by letting the OS bind one, then released)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def stop(server: subprocess.Popen) -> None:
    """End a server started in a session of its own, with every process it forked (SIGKILL after 30 s)."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def healthy(uri: str) -> bool:
    try:
        return urllib.request.urlopen(f"{uri}/health", timeout=5).status == 200
    except OSError:
        return False


@contextmanager
def running_server(
    command: list[str], port: int, log: Path, timeout: float, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[str | None]:
    """`command` (an MLflow server on `port`) running in `cwd`, its output in `log`; yields its URI once /health
    answers, or None when it has not within `timeout` seconds or has exited. Stopped, its whole process group, after."""
    uri = f"http://{HOST}:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        server = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline, up = time.monotonic() + timeout, False
        while server.poll() is None and not (up := healthy(uri)) and time.monotonic() < deadline:
            time.sleep(0.5)
        yield uri if up and server.poll() is None else None
    finally:
        if server.poll() is None:
            stop(server)


def run_server_environment() -> dict[str, str]:
    """The environment of a server for one run: without MLflow's GenAI job workers (seven processes, none used)."""
    return dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")


def serve_during(root: Path, command: list[str], timeout: float = 120.0) -> int:
    """Run `command` (e.g. `dvc repro`) with its stages' MLflow runs sent to a server of the project's own store,
    started for it and stopped after; its exit status. A server that does not come up costs one warning: the
    command then runs with the stages opening the store themselves.

    MLflow's run links and INFO notices are off in the command: over HTTP its client prints a link to every run it
    ends and says it waits for each registered model version, neither of which the SQL store prints (its warnings
    still show)."""
    port, log = free_port(), root / "logs" / "mlflow-server.log"
    server = server_command(root, port, proxied_artifacts=False)
    with running_server(server, port, log, timeout, root, run_server_environment()) as uri:
        env = dict(os.environ, MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true", MLFLOW_LOGGING_LEVEL="WARNING")
        if uri is None:
            print(
                f"loramerge: the MLflow server did not start (see {log}); stages open mlflow.db themselves", flush=True
            )
        else:
            env["MLFLOW_TRACKING_URI"] = uri
        return subprocess.run(command, cwd=root, env=env).returncode
