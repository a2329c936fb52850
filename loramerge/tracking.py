"""MLflow: one run per stage execution, tagged so the UI can filter by commit, stage and experiment.

Tracking must never cost a user their outputs: when the tracking store cannot be
reached, a stage warns once and goes on, unless `tracking.strict` asks it to fail.
It must not cost them their time either: the first call to a tracking server is made
with MLflow's HTTP retries off and a short timeout, so an unreachable server is found
in seconds, not after MLflow's default minutes of back-off. A local SQLite store shared
by parallel stages (`dvc queue start -j 2`) is created by one process at a time (MLflow's
schema migrations race otherwise), and calls that find it briefly locked are retried.
MLflow is imported inside the calls that use it (import cost: seconds, paid only by a tracked run).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from loramerge import paths
from loramerge.lists import COMBO_SEPARATOR
from loramerge.settings import TrackingConfig

PROBE_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""MLflow's HTTP settings while a stage first reaches its tracking server: fail fast, not after minutes."""

SQLITE_ATTEMPTS = 5
"""Tries of one call on a busy SQLite store; waits of 0.5, 1, 2, 4 s ride out another process's write lock."""
SQLITE_BUSY_SIGNS = ("database is locked",)
"""What SQLite says while another process holds the write lock."""


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3 shows an experiment without this kind as a GenAI one (traces overview); this marks it model training."""


DATASET_CONTEXT_TAG = "mlflow.data.context"
"""The dataset-input tag the MLflow UI shows as a dataset's role in a run (train, validation, test)."""
DIGEST_LENGTH = 32
"""MLflow's store keeps at most 36 characters of a dataset digest: the first 32 hex digits of its SHA-256."""
ARROW_TO_MLFLOW = {
    "string": "string",
    "large_string": "string",
    "int64": "long",
    "int32": "integer",
    "double": "double",
}
"""Parquet column types as MLflow column-spec types, for the dataset schema the UI shows."""


class DatasetFile(Protocol):
    """A data file a stage read, as MLflow records a dataset input (data.PreparedSplit is one)."""

    name: str
    context: str
    path: Path
    digest: str
    rows: int
    columns: dict[str, str]


class TrackingError(RuntimeError):
    """MLflow failed and tracking.strict is set."""


class TrackingWarning(UserWarning):
    """MLflow failed; the stage goes on untracked."""


def project_root(root: Path) -> Path:
    """The workspace the stage belongs to, also from inside a DVC experiment's temporary copy.

    `dvc exp run --queue` runs stages in .dvc/tmp/exps/…, which is deleted afterwards; DVC
    points $DVC_ROOT at the original workspace, so the default store stays the project's own.
    """
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def tracking_uri(config: TrackingConfig, root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else params `tracking.uri`, else an SQLite file in the project root.

    A relative SQLite path in `tracking.uri` is taken relative to the project root, not to
    the directory a stage happens to run in.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.uri or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return f"{prefix}{project_root(root) / uri[len(prefix) :]}"
    return uri


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def repro_id(root: Path) -> str:
    """Shared by every stage run of one `dvc repro`: the commit and the exact params it ran with."""
    params = (root / "params.yaml").read_bytes() if (root / "params.yaml").exists() else b""
    return hashlib.sha256(git_commit(root).encode() + params).hexdigest()[:12]


def metric_name(name: str) -> str:
    """MLflow refuses '+' in metric names: a combination's members are joined by ':' instead
    (`norm_acc/pair/ties/emotion:agnews`), which no task name may contain."""
    return name.replace(COMBO_SEPARATOR, ":")


def metric_key(*parts: str) -> str:
    """An MLflow metric name that sorts well, e.g. `norm_acc/pair/ties/emotion:agnews`."""
    return metric_name("/".join(parts))


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


@contextmanager
def kept_environment(*keys: str) -> Iterator[None]:
    """Whatever the block does to these environment variables is undone at its end."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def store_creation_lock(uri: str) -> Iterator[None]:
    """One process at a time opens (and so creates or migrates) a given SQLite store and its experiment.

    Two stages starting together on a fresh file otherwise run MLflow's schema migrations
    concurrently ("duplicate column name", half-applied revisions) and race to create the
    experiment. The lock file lives in the temp folder, keyed by the store's path.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"loramerge-mlflow-{key}.lock", timeout=300):
        yield


@contextmanager
def probe_settings() -> Iterator[None]:
    """MLflow's HTTP client without retries and with a short timeout, for the duration of the block.

    MLflow reads these variables on every request, so setting them around the first calls
    is enough; later calls get MLflow's usual retries against a server known to be up.
    """
    with kept_environment(*PROBE_SETTINGS):
        os.environ.update(PROBE_SETTINGS)
        yield


class StageRun:
    """A handle on the stage's MLflow run whose calls never raise unless strict."""

    def __init__(self, config: TrackingConfig, stage: str) -> None:
        self.config = config
        self.stage = stage
        self.client = None
        self.run_id: str | None = None
        self.uri: str | None = None
        self.failed = False

    def _transient(self, error: Exception) -> bool:
        """A busy local SQLite file (another stage process is writing, or creating the same store)."""
        text = str(error)
        return (self.uri or "").startswith("sqlite") and any(sign in text for sign in SQLITE_BUSY_SIGNS)

    def guarded(self, action: str, call: Callable, *args, **kwargs) -> Any:
        """`call`, any MLflow work of the stage (its own calls, Lightning's logger, registering a model), through the
        run's policy: nothing when the run is not tracked, retried on a busy SQLite store, then one warning (or
        TrackingError if strict)."""
        if self.failed or (self.client is None and action != "start"):
            return None
        for attempt in range(SQLITE_ATTEMPTS):
            try:
                return call(*args, **kwargs)
            except Exception as error:  # MLflow raises many types; all mean "not tracked"
                if attempt + 1 < SQLITE_ATTEMPTS and self._transient(error):
                    time.sleep(0.5 * 2**attempt)
                    continue
                self._give_up(action, error)
                return None
        return None

    def _give_up(self, action: str, error: Exception) -> None:
        if self.config.strict:
            raise TrackingError(
                f"[{self.stage}] MLflow {action} failed at {self.uri}: {type(error).__name__}: {error}"
            ) from error
        self.failed = True
        summary = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        warnings.warn(
            f"[{self.stage}] MLflow tracking at {self.uri} failed during {action} ({type(error).__name__}: {summary});"
            " outputs are still written, this run is not tracked. Set tracking.strict: true to fail instead.",
            TrackingWarning,
            stacklevel=3,
        )

    def _client_call(self, method: str, *args, **kwargs) -> Any:
        """One MlflowClient call through the guard; nothing at all when the run is not tracked."""
        if self.client is None:
            return None
        return self.guarded(method, getattr(self.client, method), *args, **kwargs)

    def start(self, root: Path, tags: Mapping[str, str]) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(self.config, root)

        def _start() -> None:
            client = MlflowClient(tracking_uri=self.uri)
            experiment = client.get_experiment_by_name(self.config.experiment)
            if experiment is None:
                location = (project_root(root) / "mlartifacts").as_uri() if self.uri.startswith("sqlite") else None
                experiment_id = client.create_experiment(
                    self.config.experiment, artifact_location=location, tags=EXPERIMENT_TAGS
                )
            else:
                experiment_id = experiment.experiment_id
            run = client.create_run(experiment_id, run_name=self.stage, tags=dict(tags))
            self.client, self.run_id = client, run.info.run_id

        with probe_settings(), store_creation_lock(self.uri):
            self.guarded("start", _start)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(flat), 100):
            self._client_call("log_batch", self.run_id, params=flat[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [
            Metric(metric_name(k), float(v), now, step or 0)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float))
        ]
        for start in range(0, len(entries), 500):
            self._client_call("log_batch", self.run_id, metrics=entries[start : start + 500])

    def log_datasets(self, files: Iterable[DatasetFile]) -> None:
        """Each file as an MLflow dataset input (name, SHA-256 digest, row count, schema, role), so the runs
        table's Dataset column says what data a run read, and runs on different data look different."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(
                    name=file.name,
                    digest=file.digest[:DIGEST_LENGTH],
                    source_type="local",
                    source=json.dumps({"uri": Path(file.path).resolve().as_uri()}),
                    schema=json.dumps(
                        {
                            "mlflow_colspec": [
                                {"type": ARROW_TO_MLFLOW.get(t, "string"), "name": c, "required": True}
                                for c, t in file.columns.items()
                            ]
                        }
                    ),
                    profile=json.dumps({"num_rows": file.rows}),
                ),
                tags=[InputTag(DATASET_CONTEXT_TAG, file.context)],
            )
            for file in files
        ]
        if inputs:
            self._client_call("log_inputs", self.run_id, datasets=inputs)

    def set_tag(self, key: str, value: str) -> None:
        self._client_call("set_tag", self.run_id, key, value)

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._client_call("log_artifacts", self.run_id, str(path), artifact_path)
        elif path.exists():
            self._client_call("log_artifact", self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        self._client_call("set_terminated", self.run_id, status)


def repro_runs(config: TrackingConfig, root: Path = Path(".")) -> list:
    """The finished and running stage runs of this `dvc repro` (those sharing its repro_id tag), read from the
    store; an empty list with one warning when it cannot be read, since callers use them for nice-to-have views."""
    from mlflow.tracking import MlflowClient  # import cost: seconds, and only the report reads runs back

    try:
        client = MlflowClient(tracking_uri=tracking_uri(config, root))
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            return []
        query = f"tags.repro_id = '{repro_id(root)}'"
        return list(client.search_runs([experiment.experiment_id], query, max_results=5000))
    except Exception as error:  # MLflow raises many types; all mean "no runs to read"
        warnings.warn(f"runs of this repro unavailable from MLflow: {type(error).__name__}: {error}", stacklevel=2)
        return []


@contextmanager
def stage_run(
    config: TrackingConfig, stage: str, params: Mapping[str, Any], root: Path = Path(".")
) -> Iterator[StageRun]:
    """Open the stage's run (tags: git commit, DVC stage and experiment), close it FINISHED or FAILED.

    The `mlflow.source.*` tags fill the runs table's Source column: the DVC stage that ran, at its commit.
    """
    os.environ.pop("MLFLOW_RUN_ID", None)  # a leaked id would make MLflow resume someone else's run
    commit = git_commit(root)
    tags = {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": paths.dvc_target(stage),
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
        "dvc_stage": stage,
        "loramerge.stage": stage.split("@")[0],
        "repro_id": repro_id(root),
    }
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


@contextmanager
def untracked(config: TrackingConfig, stage: str) -> Iterator[StageRun]:
    """A run handle whose calls do nothing: for DDP processes other than rank 0, which must not create runs."""
    yield StageRun(config, stage)
