"""Tracking never costs a stage its outputs or its time: an unreachable server is one quick warning
(or, if strict, a failure), a busy SQLite file is waited for, and the server the tooling starts is local only."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from loramerge import paths
from loramerge.data import prepared_splits
from loramerge.server import free_port, serve_during, server_command
from loramerge.settings import TrackingConfig
from loramerge.tracking import (
    PROBE_SETTINGS,
    StageRun,
    TrackingError,
    TrackingWarning,
    stage_run,
    tracking_uri,
)
from loramerge.training import lightning_logger


@pytest.fixture
def unreachable(monkeypatch) -> str:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def sqlite_config(tmp_path: Path) -> TrackingConfig:
    return TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="tests")


# ---------------------------------------------------------------- where runs go


def test_the_default_store_is_an_sqlite_file_in_the_project_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_inside_a_dvc_experiment_copy_the_store_stays_the_workspaces(tmp_path, monkeypatch):
    """Queued experiments run in .dvc/tmp/exps/…, deleted afterwards; DVC names the workspace in $DVC_ROOT."""
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri(TrackingConfig(), copy) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert (
        tracking_uri(TrackingConfig(uri="sqlite:///runs/tracking.db"), copy)
        == f"sqlite:///{tmp_path.resolve() / 'runs/tracking.db'}"
    )


def test_the_environment_beats_params_and_absolute_uris_are_kept(tmp_path, monkeypatch):
    assert tracking_uri(TrackingConfig(uri="sqlite:////srv/mlflow.db"), tmp_path) == "sqlite:////srv/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(TrackingConfig(uri="sqlite:////srv/mlflow.db"), tmp_path) == "http://127.0.0.1:5000"


# ---------------------------------------------------------------- an unreachable server


def test_an_unreachable_server_is_one_warning_within_seconds_and_every_call_is_a_no_op(unreachable, tmp_path):
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with stage_run(TrackingConfig(), "train@topics", {"lr": 0.1}) as run:
            run.log_metrics({"loss": 1.0}, step=1)
            run.log_artifacts(Path(__file__))
    elapsed = time.perf_counter() - started
    messages = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(messages) == 1 and "[train@topics]" in messages[0] and unreachable in messages[0]
    assert "outputs are still written" in messages[0]
    assert elapsed < 15, f"MLflow's default retries would take minutes; took {elapsed:.1f}s"
    assert run.run_id is None and lightning_logger(run) is False


def test_the_fail_fast_http_settings_apply_to_the_probe_only(unreachable, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StageRun(TrackingConfig(), "evaluate@topics").start(Path("."), {})
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert set(PROBE_SETTINGS) == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"}


def test_strict_tracking_turns_an_unreachable_server_into_an_error_naming_stage_and_server(unreachable):
    started = time.perf_counter()
    with pytest.raises(TrackingError, match=r"\[merge_pair@a\+b\].*" + unreachable.replace(".", r"\.")):
        with stage_run(TrackingConfig(strict=True), "merge_pair@a+b", {}):
            pytest.fail("the stage body must not run when strict tracking cannot start")
    assert time.perf_counter() - started < 15


def test_lightnings_logger_failing_mid_training_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    """A server that goes away during `trainer.fit` must not cost the model."""
    monkeypatch.setattr("loramerge.tracking.time.sleep", lambda seconds: None)
    with stage_run(sqlite_config(tmp_path), "train@topics", {}) as run:
        logger = lightning_logger(run)

        def gone(*args, **kwargs):
            raise ConnectionError("server went away")

        monkeypatch.setattr(logger.experiment, "log_batch", gone)
        with pytest.warns(TrackingWarning, match="during log_metrics"):
            logger.log_metrics({"train_loss": 0.5}, step=3)
        logger.log_metrics({"train_loss": 0.4}, step=4)  # already given up: silent


# ---------------------------------------------------------------- a shared SQLite file


def test_a_busy_sqlite_file_is_waited_for_and_a_real_error_is_not_retried(tmp_path, monkeypatch):
    """SQLite already waits 20 s for a lock (MLflow sets busy_timeout); a longer stall is retried, not lost."""
    waits: list[float] = []
    monkeypatch.setattr("loramerge.tracking.time.sleep", waits.append)
    run = StageRun(sqlite_config(tmp_path), "train@topics")
    run.uri, run.client = sqlite_config(tmp_path).uri, object()
    outcomes = iter(
        [sqlite3.OperationalError("database is locked"), sqlite3.OperationalError("database is locked"), "logged"]
    )

    def busy_then_free():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert run.guarded("log_batch", busy_then_free) == "logged" and waits == [0.5, 1.0] and not run.failed

    def invalid():
        raise ValueError("Invalid metric name")

    with pytest.warns(TrackingWarning, match="Invalid metric name"):
        run.guarded("log_batch", invalid)
    assert waits == [0.5, 1.0] and run.failed


def test_stages_starting_together_on_a_fresh_sqlite_store_all_get_their_runs(tmp_path):
    """Without a lock MLflow's schema migrations race ("duplicate column name") and runs are lost."""
    script = (
        "import sys, warnings; from loramerge.config import TrackingConfig; from loramerge.tracking import TrackingWarning, stage_run\n"
        "warnings.simplefilter('error', TrackingWarning)\n"
        "with stage_run(TrackingConfig(uri=sys.argv[1], experiment='race'), sys.argv[2], {'a': 1}) as run:\n"
        "    run.log_metrics({'m': 1.0})\n"
        "print(run.run_id)\n"
    )
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    stages = [
        subprocess.Popen(
            [sys.executable, "-c", script, uri, f"train@t{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outcomes = [stage.communicate(timeout=300) for stage in stages]
    assert all(stage.returncode == 0 for stage in stages), [err[-2000:] for _, err in outcomes]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.data.tags["dvc_stage"] for r in runs) == ["train@t0", "train@t1", "train@t2"]


# ---------------------------------------------------------------- the server the tooling starts


def test_the_server_binds_to_localhost_with_the_projects_sqlite_store_and_artifact_root(tmp_path):
    command = server_command(tmp_path, 5123)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert command[command.index("--artifacts-destination") + 1] == str(tmp_path.resolve() / "mlartifacts")
    assert command[1:4] == ["-m", "mlflow", "server"]


STAGE_DURING_SERVER = """
import os, pathlib
from loramerge.settings import TrackingConfig
from loramerge.tracking import stage_run
assert os.environ["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:"), os.environ.get("MLFLOW_TRACKING_URI")
pathlib.Path("card.md").write_text("the model card")
with stage_run(TrackingConfig(), "export_pair@a+b", {"scaling": 1.0}) as run:
    run.log_metrics({"score": 0.75})
    run.log_artifacts(pathlib.Path("card.md"))
raise SystemExit(3)
"""


def test_a_command_run_during_the_projects_server_logs_there_and_leaves_its_runs_and_artifacts_in_mlflow_db(
    tmp_path, monkeypatch
):
    """What `make run` does (`loramerge mlflow-server --during dvc repro`): the stages talk to a server of the
    project's store; after it stops, the project's sqlite store alone reads their runs and artifacts. The command's
    exit status is passed on."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    assert serve_during(tmp_path, [sys.executable, "-c", STAGE_DURING_SERVER]) == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("loramerge").experiment_id])
    assert run.data.metrics == {"score": 0.75} and run.data.tags["dvc_stage"] == "export_pair@a+b"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri()), "written where mlflow.db finds it"
    downloaded = client.download_artifacts(run.info.run_id, "card.md", str(tmp_path / "read"))
    assert Path(downloaded).read_text() == "the model card"


def test_a_postgresql_store_is_passed_through_and_still_served_on_localhost(tmp_path):
    command = server_command(tmp_path, 5000, "postgresql://mlflow@db.internal/mlflow")
    assert command[command.index("--backend-store-uri") + 1] == "postgresql://mlflow@db.internal/mlflow"
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--workers" not in command


# ---------------------------------------------------------------- what a run read


def test_a_stage_records_each_prepared_split_it_read_as_an_mlflow_dataset_with_its_sha256_rows_and_role(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    folder = paths.prepared_dir("moods")
    folder.mkdir(parents=True)
    for split, rows in {"validation": 3, "test": 5}.items():
        frame = pd.DataFrame({"text": [f"t{i}" for i in range(rows)], "label": ["a"] * rows, "label_id": [0] * rows})
        frame.to_parquet(folder / f"{split}.parquet", index=False)
    with stage_run(sqlite_config(tmp_path), "evaluate@moods", {}) as run:
        run.log_datasets(prepared_splits("moods", ("validation", "test")))
    inputs = MlflowClient(sqlite_config(tmp_path).uri).get_run(run.run_id).inputs.dataset_inputs
    recorded = {i.dataset.name: i for i in inputs}
    assert set(recorded) == {"moods/validation", "moods/test"}
    for split, rows in {"validation": 3, "test": 5}.items():
        dataset = recorded[f"moods/{split}"].dataset
        assert dataset.digest == hashlib.sha256((folder / f"{split}.parquet").read_bytes()).hexdigest()[:32]
        assert json.loads(dataset.profile) == {"num_rows": rows}
        assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == ["text", "label", "label_id"]
        assert {(t.key, t.value) for t in recorded[f"moods/{split}"].tags} == {("mlflow.data.context", split)}
