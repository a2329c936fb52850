"""MLflow: one run per stage execution, tagged so the UI can filter by commit, stage and experiment.

Tracking must never cost a user their outputs: when the tracking store cannot be
reached, a stage warns once and goes on, unless `tracking.strict` asks it to fail.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loramerge.config import TrackingConfig


class TrackingError(RuntimeError):
    """MLflow failed and tracking.strict is set."""


def tracking_uri(config: TrackingConfig, root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else params `tracking.uri`, else an SQLite file in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or config.uri or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def repro_id(root: Path) -> str:
    """Shared by every stage run of one `dvc repro`: the commit and the exact params it ran with."""
    import hashlib

    params = (root / "params.yaml").read_bytes() if (root / "params.yaml").exists() else b""
    return hashlib.sha256(git_commit(root).encode() + params).hexdigest()[:12]


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as MLflow's flat `a.b.c` keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class StageRun:
    """A handle on the stage's MLflow run whose calls never raise unless strict."""

    def __init__(self, config: TrackingConfig, stage: str) -> None:
        self.config = config
        self.stage = stage
        self.client = None
        self.run_id: str | None = None
        self.uri: str | None = None
        self.failed = False

    def _guard(self, action: str, call, *args, **kwargs) -> Any:
        if self.failed or (self.client is None and action != "start"):
            return None
        try:
            return call(*args, **kwargs)
        except Exception as error:  # MLflow raises many types; all mean "not tracked"
            if self.config.strict:
                raise TrackingError(f"[{self.stage}] MLflow {action} failed at {self.uri}: {error}") from error
            self.failed = True
            warnings.warn(
                f"[{self.stage}] MLflow tracking at {self.uri} failed during {action} ({type(error).__name__}: {error});"
                " outputs are still written, this run is not tracked. Set tracking.strict: true to fail instead.",
                stacklevel=3,
            )
            return None

    def start(self, root: Path, tags: Mapping[str, str]) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(self.config, root)

        def _start() -> None:
            client = MlflowClient(tracking_uri=self.uri)
            experiment = client.get_experiment_by_name(self.config.experiment)
            if experiment is None:
                location = (root / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite") else None
                experiment_id = client.create_experiment(self.config.experiment, artifact_location=location)
            else:
                experiment_id = experiment.experiment_id
            run = client.create_run(experiment_id, run_name=self.stage, tags=dict(tags))
            self.client, self.run_id = client, run.info.run_id

        self._guard("start", _start)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(flat), 100):
            self._guard("log_params", self.client.log_batch, self.run_id, params=flat[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step or 0) for k, v in flatten(metrics).items() if isinstance(v, (int, float))]
        for start in range(0, len(entries), 500):
            self._guard("log_metrics", self.client.log_batch, self.run_id, metrics=entries[start : start + 500])

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._guard("log_artifacts", self.client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.exists():
            self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        self._guard("finish", self.client.set_terminated, self.run_id, status)


@contextmanager
def stage_run(config: TrackingConfig, stage: str, params: Mapping[str, Any], root: Path = Path(".")) -> Iterator[StageRun]:
    """Open the stage's run (tags: git commit, DVC stage and experiment), close it FINISHED or FAILED."""
    os.environ.pop("MLFLOW_RUN_ID", None)  # a leaked id would make MLflow resume someone else's run
    tags = {"git_commit": git_commit(root), "dvc_stage": stage, "loramerge.stage": stage.split("@")[0], "repro_id": repro_id(root)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    run = StageRun(config, stage)
    run.start(root, tags)
    run.log_params(params)
    try:
        yield run
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
