"""`loramerge mlflow-server`: the project's MLflow store served over HTTP, for parallel and multi-machine runs.

Why a server: an SQLite file takes one writer at a time and lives on one disk; a server takes
runs from parallel `dvc queue` jobs, from every DDP node and from other machines, and stores
their artifacts itself (proxied artifact storage), so clients need no access to its disk.
Clients set `MLFLOW_TRACKING_URI=http://127.0.0.1:<port>` (or `tracking.uri`).

It binds to 127.0.0.1 only: whoever reaches an MLflow server can read, change and delete
every run. Reach it from other machines through an SSH tunnel or an authenticating proxy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def default_backend_store(root: Path) -> str:
    """The project's own store, the one stages use without a server: served, not copied."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def server_command(root: Path, port: int, backend_store_uri: str | None = None) -> list[str]:
    """`mlflow server` on 127.0.0.1 with an SQL backend store and a local artifact root.

    SQLite gets one worker: more would only queue on its write lock. A PostgreSQL URL
    (`postgresql://user@host/db`, needs `pip install psycopg2-binary`) keeps MLflow's default.
    """
    store = backend_store_uri or default_backend_store(root)
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
        "--artifacts-destination",
        str((root / "mlartifacts").resolve()),
    ]
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
