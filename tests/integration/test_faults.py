"""Faults a long pipeline meets: a stage killed with SIGKILL, `dvc repro` killed or interrupted
(Ctrl-C) during a training, a second run of the same configuration, a tracking server that cannot
be reached.

The stages run as the `loramerge` command in their own processes, on the tiny BERT of
tests/conftest.py; a kill is a real SIGKILL the process sends itself at a chosen point (a
training step, or the rename that publishes an output), so the point is exact every time.
The `dvc repro` kills run the README's path on the tiny configuration of the real pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from loramerge.paths import dvc_target
from loramerge.server import free_port
from tests.helpers import comparable_metrics, require_task_data, tiny_params_dict
from tests.sandbox import make_sandbox, run, sandbox_env, tiny_params

pytestmark = pytest.mark.integration

COMBO = "topics+moods"
STAGES = [
    ["prepare", "--task", "topics"],
    ["prepare", "--task", "moods"],
    ["train", "--task", "topics"],
    ["train", "--task", "moods"],
    ["train", "--task", "topics", "--mode", "head_only"],
    ["train", "--task", "moods", "--mode", "head_only"],
    ["train", "--task", "topics", "--mode", "full"],
    ["train", "--task", "moods", "--mode", "full"],
    ["gram", "--task", "topics"],
    ["gram", "--task", "moods"],
    ["evaluate", "--task", "topics"],
    ["evaluate", "--task", "moods"],
    ["evaluate", "--task", "topics", "--baselines"],
    ["evaluate", "--task", "moods", "--baselines"],
    ["merge", "--combo", COMBO],
    ["evaluate", "--combo", COMBO],
    ["similarity"],
    ["report"],
]
RUN_STAGES = "import json, sys\nfrom loramerge.cli import main\nfor argv in json.loads(sys.argv[1]):\n    assert main(argv) == 0, argv\n"

KILL_AT_TRAINING_STEP = """import os, signal, sys
from loramerge import training
epoch, batch = int(sys.argv[1]), int(sys.argv[2])
step = training.ClassifierModule.training_step
def training_step(self, batch_, batch_idx):
    if (self.current_epoch, batch_idx) == (epoch, batch):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, batch_, batch_idx)
training.ClassifierModule.training_step = training_step
from loramerge.cli import main
sys.exit(main(sys.argv[3:]))
"""
"""`loramerge …` that SIGKILLs itself as training step `batch` of epoch `epoch` begins."""

KILL_AT_RENAME = """import os, signal, sys
from pathlib import Path
target, replace = Path(sys.argv[1]).resolve(), os.replace
def dying_replace(source, destination, *args, **kwargs):
    landing = Path(destination).resolve()
    if landing == target or target in landing.parents:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(source, destination, *args, **kwargs)
os.replace = dying_replace
from loramerge.cli import main
sys.exit(main(sys.argv[2:]))
"""
"""`loramerge …` that SIGKILLs itself at the first rename landing on or inside `target`: all its data written, not yet published."""


def metrics_files(project: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(project)): json.loads(p.read_text()) for p in sorted((project / "metrics").rglob("*.json"))
    }


def killed(project: Path, script: str, *argv: str) -> subprocess.CompletedProcess:
    completed = run([sys.executable, "-c", script, *argv], project, check=False)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_backbone, tiny_data) -> tuple[Path, Path]:
    """Two projects with the same params and seed, each run through every stage (one process each).

    Three epochs and dropout in the adapter, the head and the backbone: resuming must replay it all.
    """
    raw = tiny_params_dict(tiny_backbone, tiny_data)
    raw["train"].update(max_epochs=3, head_dropout=0.1)
    raw["lora"]["dropout"] = 0.1
    projects = []
    for name in ("first", "second"):
        folder = tmp_path_factory.mktemp(name)
        (folder / "params.yaml").write_text(yaml.safe_dump(raw))
        completed = run([sys.executable, "-c", RUN_STAGES, json.dumps(STAGES)], folder, check=False)
        assert completed.returncode == 0, completed.stderr[-3000:]
        projects.append(folder)
    return projects[0], projects[1]


@pytest.fixture
def copy_of_first(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished[0], tmp_path / "project", symlinks=True))


def remove(project: Path, *relative: str) -> None:
    for name in relative:
        path = project / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# ---------------------------------------------------------------- the same configuration twice


def test_the_same_params_and_seed_twice_give_identical_metrics_models_and_predictions(finished):
    first, second = finished
    one, two = metrics_files(first), metrics_files(second)
    assert set(one) == set(two) and len(one) == 12  # train (3 modes), single, baselines per task; the pair; similarity
    for name in one:
        assert comparable_metrics(one[name]) == comparable_metrics(two[name]), name
    assert {"runtime_s", "peak_rss_mb"} <= set(one["metrics/train/lora/topics.json"])  # excluded, not missing
    assert {"merged_s", "speedup"} <= set(one[f"metrics/merged/{COMBO}.json"]["inference"])
    for path in [
        "models/adapters/topics/adapter_model.safetensors",
        "models/adapters/moods/head.safetensors",
        "metrics/predictions/topics.csv",
    ]:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path
    for path in (first / "models/merged" / COMBO).rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (second / path.relative_to(first)).read_bytes(), path


# ---------------------------------------------------------------- SIGKILL


def test_training_killed_midway_resumes_from_its_last_checkpoint_and_ends_bit_for_bit_as_if_never_killed(
    finished, copy_of_first
):
    project, reference = copy_of_first, finished[0]
    remove(project, "models/adapters/topics", "models/checkpoints/lora/topics", "metrics/train/lora/topics.json")
    killed(
        project, KILL_AT_TRAINING_STEP, "1", "2", "train", "--task", "topics"
    )  # 64 examples / 16 = 4 steps per epoch

    last = project / "models/checkpoints/lora/topics/last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert (state["epoch"], state["global_step"]) == (0, 4), "last.ckpt is written at epoch ends only"
    assert not (project / "models/adapters/topics").exists()

    resumed = run(["loramerge", "train", "--task", "topics"], project, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "[train@topics] resuming from models/checkpoints/lora/topics/last.ckpt: 1 of 3 epoch(s) done, global step 4"
        in resumed.stdout
    )
    for name in ("adapter_model.safetensors", "head.safetensors"):
        assert (project / "models/adapters/topics" / name).read_bytes() == (
            reference / "models/adapters/topics" / name
        ).read_bytes(), name
    metrics = [json.loads((p / "metrics/train/lora/topics.json").read_text()) for p in (project, reference)]
    assert comparable_metrics(metrics[0]) == comparable_metrics(
        metrics[1]
    )  # same steps, same last training loss, same best step
    assert not last.exists(), "a finished run leaves no checkpoint a later rerun could mistake for unfinished work"


@pytest.mark.parametrize("moment", ["mid-search", "before-publishing"])
def test_a_merge_killed_midway_leaves_no_partial_output_and_the_rerun_completes(finished, copy_of_first, moment):
    project, reference = copy_of_first, finished[0]
    output = project / "models/merged" / COMBO
    remove(project, f"models/merged/{COMBO}")
    target = output.parent if moment == "mid-search" else output  # the first method's manifest, or the final rename
    killed(project, KILL_AT_RENAME, str(target), "merge", "--combo", COMBO)
    assert not output.exists(), "DVC would cache a half-written merge"
    assert [p.name for p in output.parent.iterdir()] and all(
        p.name.startswith(f".{COMBO}.") for p in output.parent.iterdir()
    )

    rerun = run(["loramerge", "merge", "--combo", COMBO], project, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [p.name for p in output.parent.iterdir()] == [COMBO], "the killed run's staging copy is cleared"
    for path in (reference / "models/merged" / COMBO).rglob("*"):
        if path.is_file():
            assert (
                output / path.relative_to(reference / "models/merged" / COMBO)
            ).read_bytes() == path.read_bytes(), path


PUBLISHED_BY = {
    "prepare": (["prepare", "--task", "topics"], ["data/prepared/topics"]),
    "evaluate --task": (
        ["evaluate", "--task", "topics"],
        ["metrics/predictions/topics.csv", "metrics/single/topics.json"],
    ),
    "evaluate --task --baselines": (
        ["evaluate", "--task", "topics", "--baselines"],
        ["metrics/baselines/topics.json"],
    ),
    "evaluate --combo": (["evaluate", "--combo", COMBO], [f"metrics/merged/{COMBO}.json"]),
    "similarity": (["similarity"], ["metrics/similarity.json"]),
    "report": (["report"], ["reports"]),
}
"""Per stage: its command and its outputs (what its dvc.yaml declares), the first of them written first."""

DATED = {"reports/report.md", "reports/report.html"}
"""Outputs that state when they were built and list this repro's MLflow runs: compared for presence only."""


def output_files(project: Path, outputs: list[str]) -> dict[str, Path]:
    """The files of `outputs` under their published names (staging copies beside them start with a dot)."""
    files = {}
    for name in outputs:
        path = project / name
        for file in [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []:
            relative = file.relative_to(project)
            if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                files[str(relative)] = file
    return files


def staging_leftovers(project: Path, outputs: list[str]) -> list[str]:
    """Dot-named staging copies beside or inside `outputs`, as a killed write leaves them."""
    found = []
    for name in outputs:
        path = project / name
        found += [p.name for p in path.parent.glob(f".{path.name}.*")]
        found += [str(p.relative_to(project)) for p in path.rglob(".*")] if path.is_dir() else []
    return found


@pytest.mark.parametrize("stage", list(PUBLISHED_BY))
def test_a_stage_killed_at_its_first_publishing_rename_leaves_no_partial_output_and_the_rerun_gives_the_same_outputs(
    finished, copy_of_first, stage
):
    project, reference = copy_of_first, finished[0]
    argv, outputs = PUBLISHED_BY[stage]
    remove(project, *outputs)  # as DVC does before it runs a stage
    killed(project, KILL_AT_RENAME, str(project / outputs[0]), *argv)
    assert output_files(project, outputs) == {}, "DVC would cache a half-written output"
    assert staging_leftovers(project, outputs), "killed after writing everything, at the rename that publishes it"

    rerun = run(["loramerge", *argv], project, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert staging_leftovers(project, outputs) == [], "the killed run's staging copies are cleared"
    ours, theirs = output_files(project, outputs), output_files(reference, outputs)
    assert sorted(ours) == sorted(theirs) and ours
    for name in sorted(set(ours) - DATED):
        if name.endswith(".json"):
            ours_now, reference_now = (json.loads(files[name].read_text()) for files in (ours, theirs))
            assert comparable_metrics(ours_now) == comparable_metrics(reference_now), name
        else:
            assert ours[name].read_bytes() == theirs[name].read_bytes(), name


# ---------------------------------------------------------------- `dvc repro` killed during a training


EPOCHS = 6


@pytest.fixture(scope="module")
def long_training(tmp_path_factory) -> Path:
    """A sandbox of the tiny pipeline whose trainings run 6 whole epochs (no early stop), its data prepared: a kill
    at the first epoch's checkpoint lands mid-training, with five epochs of margin for a busy machine's delays."""
    require_task_data()
    params = tiny_params()
    params["train"].update(max_epochs=EPOCHS, patience=100)
    folder = make_sandbox(tmp_path_factory.mktemp("dvc-kill") / "repo", params)
    run(["dvc", "repro", dvc_target("prepare@emotion"), dvc_target("prepare@agnews")], folder)
    return folder


def with_default_sigint() -> None:
    """Ctrl-C's default action in the job, as a terminal gives it: launchers that start commands in the background
    (`nohup … &`, some CI runners) pass SIGINT on ignored, and an ignored signal stays ignored in every child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def dvc_repro_stopped_at_first_checkpoint(project: Path, stage: str, checkpoint: Path, signum: int) -> str:
    """`dvc repro <stage>` in its own process group, sent `signum` (as Ctrl-C or `kill -9` of the whole job
    would) once the training has written `checkpoint`; returns its output."""
    log = project.parent / f"killed-{stage}.log"  # outside the workspace DVC and git look at
    with log.open("w") as output:
        job = subprocess.Popen(
            ["dvc", "repro", dvc_target(stage)],
            cwd=project,
            env=sandbox_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=with_default_sigint,
        )
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(job.pid, signum if job.poll() is None and checkpoint.exists() else signal.SIGKILL)
        assert job.wait(timeout=120) != 0 and checkpoint.exists(), f"no checkpoint: {log.read_text()[-3000:]}"
    return log.read_text()


@pytest.mark.parametrize(
    ("stage", "signum"),
    [
        ("train@emotion", signal.SIGKILL),
        ("train@agnews", signal.SIGINT),
        ("baseline_head@emotion", signal.SIGKILL),
    ],
    ids=["train-SIGKILL", "train-SIGINT", "baseline_head-SIGKILL"],
)
def test_dvc_repro_killed_in_training_resumes_on_the_next_dvc_repro_and_ends_byte_identical_to_an_uninterrupted_run(
    long_training, stage, signum
):
    project = long_training
    name, task = stage.split("@")
    mode = {"train": "lora", "baseline_head": "head_only"}[name]
    model = project / ("models/adapters" if mode == "lora" else f"models/baselines/{mode}") / task
    checkpoints = project / "models/checkpoints" / mode / task
    stopped = dvc_repro_stopped_at_first_checkpoint(project, stage, checkpoints / "last.ckpt", signum)
    assert (checkpoints / "last.ckpt").exists() and not model.exists()
    if signum == signal.SIGINT:  # DVC ignores Ctrl-C while its command runs; the training stops itself
        assert "Detected KeyboardInterrupt, attempting graceful shutdown" in stopped, stopped[-3000:]

    resumed = run(["dvc", "repro", dvc_target(stage)], project, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    last = checkpoints.relative_to(project) / "last.ckpt"
    announced = re.escape(f"[{stage}] resuming from {last}: ") + f"[1-{EPOCHS - 1}] of {EPOCHS} epoch"
    assert re.search(announced, resumed.stdout), resumed.stdout[-3000:]  # resumed mid-training, not retrained
    assert not (checkpoints / "last.ckpt").exists() and (checkpoints / "fingerprint.json").exists()
    after_resume = {p.name: p.read_bytes() for p in model.iterdir()}

    anew = ["dvc", "repro", "--force", "--single-item", dvc_target(stage)]  # uninterrupted, from the start
    fresh = run(anew, project, check=False)
    assert fresh.returncode == 0 and "resuming" not in fresh.stdout, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    uninterrupted = {p.name: p.read_bytes() for p in model.iterdir()}
    assert sorted(after_resume) == sorted(uninterrupted) and "head.safetensors" in uninterrupted
    for file, data in uninterrupted.items():
        if file.endswith(".json"):
            assert comparable_metrics(json.loads(after_resume[file])) == comparable_metrics(json.loads(data)), file
        else:
            assert after_resume[file] == data, file


# ---------------------------------------------------------------- an unreachable tracking server


@pytest.fixture
def unreachable_server() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("argv", "output"),
    [
        (["evaluate", "--task", "topics"], "metrics/single/topics.json"),
        (["train", "--task", "moods"], "models/adapters/moods/adapter_model.safetensors"),
    ],
)
def test_with_the_tracking_server_unreachable_a_stage_warns_once_and_still_writes_its_output(
    finished, copy_of_first, unreachable_server, argv, output
):
    project, reference = copy_of_first, finished[0]
    uri = unreachable_server
    remove(project, output)
    started = time.perf_counter()
    completed = run(["loramerge", *argv], project, check=False, MLFLOW_TRACKING_URI=uri)
    elapsed = time.perf_counter() - started
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr.count(f"MLflow tracking at {uri} failed") == 1
    assert (project / output).read_bytes() == (reference / output).read_bytes()
    assert elapsed < 90, f"{elapsed:.0f}s: MLflow's default HTTP retries would add minutes"


def test_with_strict_tracking_an_unreachable_server_fails_the_stage_and_changes_nothing(
    copy_of_first, unreachable_server
):
    project = copy_of_first
    uri = unreachable_server
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["tracking"]["strict"] = True
    (project / "strict.yaml").write_text(yaml.safe_dump(raw))
    before = (project / "metrics/single/topics.json").read_bytes()
    completed = run(
        ["loramerge", "--params", "strict.yaml", "evaluate", "--task", "topics"],
        project,
        check=False,
        MLFLOW_TRACKING_URI=uri,
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "TrackingError" in completed.stderr and uri in completed.stderr
    assert (project / "metrics/single/topics.json").read_bytes() == before
