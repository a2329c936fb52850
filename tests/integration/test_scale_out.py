"""Scaling out for real: a shared MLflow server, a DVC remote (a folder, and a real OpenSSH server) and a
fresh clone, experiments run two at a time from DVC's queue, and DDP training in two processes.

One sandbox (2 tasks of the tiny configuration, real MiniLM and data) runs `dvc repro` of the pair's
evaluation (training, merging and scoring; the baselines, export and report are the session sandbox's
to test) once with its runs sent to `loramerge mlflow-server`; the remote, clone and queue tests reuse
that run.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

from loramerge.config import load_params
from loramerge.paths import dvc_target
from loramerge.server import free_port, running_server, stop
from loramerge.stages.prepare import prepare_task
from tests.helpers import comparable_metrics, tiny_params_dict
from tests.sandbox import make_sandbox, run, sandbox_env, shared_data_dir, tiny_params

pytestmark = pytest.mark.integration

if not (shared_data_dir() / "emotion" / "train.csv").exists():
    pytest.skip(f"the task data is not at {shared_data_dir()} (set LORAMERGE_DATA_DIR)", allow_module_level=True)

TASKS = ("emotion", "agnews")
PAIR = "emotion+agnews"
TARGET = dvc_target(f"evaluate_pair@{PAIR}")
"""What the sandbox reproduces: the pair's evaluation and everything it needs."""
QUEUE_RANKS = [2, 4]


def scale_params() -> dict:
    """The tiny configuration on two tasks (one pair, no triple), with a two-point sweep for the queue."""
    params = tiny_params(TASKS)
    params["sweep"].update(
        task="emotion",
        lora_ranks=QUEUE_RANKS,
        lora_learning_rates=[0.001],
        lora_targets=["attention"],
        full_learning_rates=[],
        full_weight_decays=[],
    )
    return params


@contextmanager
def mlflow_server(project: Path, log: Path) -> Iterator[tuple[str, int]]:
    """`loramerge mlflow-server` on a free port, healthy before yielding, stopped (its whole process group) after."""
    port = free_port()
    command = ["loramerge", "mlflow-server", "--port", str(port)]
    with running_server(command, port, log, 300, project, sandbox_env()) as uri:
        assert uri is not None, "the MLflow server did not come up:\n" + log.read_text()[-3000:]
        yield uri, port


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Path, str, int]]:
    """The sandbox after `dvc repro` with MLFLOW_TRACKING_URI pointing at the tooling's own server."""
    root = tmp_path_factory.mktemp("scale-out")
    sandbox = make_sandbox(root / "repo", scale_params())
    with mlflow_server(sandbox, root / "mlflow-server.log") as (uri, port):
        completed = run(["dvc", "repro", TARGET], sandbox, check=False, MLFLOW_TRACKING_URI=uri)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        yield sandbox, uri, port


@pytest.fixture(scope="module")
def committed(served) -> Path:
    """The run committed: dvc.lock and the uncached metrics/reports in git, models and data in DVC's cache."""
    sandbox = served[0]
    run(["git", "add", "-A"], sandbox)
    commit(sandbox, "tiny pipeline run")
    return sandbox


def commit(checkout: Path, message: str) -> None:
    run(["git", "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost", "commit", "-qm", message], checkout)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- MLflow server


def test_stage_runs_metrics_and_artifacts_arrive_at_the_mlflow_server(served, tmp_path):
    from mlflow.tracking import MlflowClient

    sandbox, uri, _ = served
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("loramerge")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), "artifacts go through the server"
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    stages = {r.data.tags["dvc_stage"]: r for r in runs}
    assert {f"train@{t}" for t in TASKS} | {f"gram@{t}" for t in TASKS} | {
        f"merge_pair@{PAIR}",
        f"evaluate_pair@{PAIR}",
    } <= set(stages)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = stages["train@emotion"]
    assert {"val_acc", "val_loss", "final/val_accuracy", "final/train_loss"} <= set(train.data.metrics)
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val_acc")], (
        "per-step curves, not just finals"
    )
    downloaded = client.download_artifacts(train.info.run_id, "model/labels.json", str(tmp_path))
    assert Path(downloaded).read_bytes() == (sandbox / "models/adapters/emotion/labels.json").read_bytes()


def test_the_mlflow_server_listens_on_the_loopback_address_only(served):
    port = served[2]
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ConnectionRefusedError):  # 127.0.0.2 is this machine too: open only if bound to every address
        socket.create_connection(("127.0.0.2", port), timeout=5).close()


# ---------------------------------------------------------------- the same numbers elsewhere


def test_another_sandbox_with_the_same_params_and_seed_reproduces_every_shared_number(served, repro):
    """The session's 3-task sandbox trained the same two tasks with the same params: same models, same metrics."""
    sandbox = served[0]
    shared = [f"metrics/{kind}/{t}.json" for t in TASKS for kind in ("single", "train/lora")]
    for name in [*shared, f"metrics/merged/{PAIR}.json"]:
        assert comparable_metrics(json.loads((sandbox / name).read_text())) == comparable_metrics(
            json.loads((repro / name).read_text())
        ), name
    for task in TASKS:
        for name in ("adapter_model.safetensors", "adapter_config.json", "head.safetensors", "labels.json"):
            assert (sandbox / "models/adapters" / task / name).read_bytes() == (
                repro / "models/adapters" / task / name
            ).read_bytes(), name


# ---------------------------------------------------------------- DVC remote


class Remote(NamedTuple):
    """A DVC remote: `url` for `dvc remote add`, `storage` the folder its objects land in (as this machine
    sees it), `credentials` the options every checkout sets for itself with `dvc remote modify --local`."""

    url: str
    storage: Path
    credentials: dict[str, str]


SSHD = Path("/usr/sbin/sshd")
SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {folder}/host_key
AuthorizedKeysFile {folder}/client_key.pub
PidFile {folder}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""
"""Keys only (root too, as in CI), no PAM; StrictModes off because pytest's tmp folders are not sshd's idea of
private; DVC talks SFTP, served by sshd itself (internal-sftp)."""


@contextmanager
def ssh_server(folder: Path) -> Iterator[tuple[int, Path]]:
    """Debian's sshd on a free loopback port with a host key and one client key made here, accepting
    connections before yielding (port, client key), stopped after."""
    if not SSHD.exists():
        pytest.fail(f"{SSHD} is missing: install Debian's openssh-server (`make test` does)", pytrace=False)
    folder.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    port = free_port()
    (folder / "sshd_config").write_text(SSHD_CONFIG.format(port=port, folder=folder))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation; systemd makes it for the service
    log = folder / "sshd.log"
    with log.open("w") as output:
        command = [str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")]
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, "sshd exited:\n" + log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not come up:\n" + log.read_text()[-3000:]
                time.sleep(0.2)
        yield port, folder / "client_key"
    finally:
        stop(server)


@pytest.fixture
def folder_remote(tmp_path) -> Remote:
    """A plain folder, as a mounted share would be: no credentials."""
    return Remote(str(tmp_path / "folder-remote"), tmp_path / "folder-remote", {})


@pytest.fixture
def ssh_remote(tmp_path) -> Iterator[Remote]:
    """`storage` served over SFTP by a real sshd to this user, who logs in with a key (dvc-ssh does not check
    the server's host key: sshfs connects with known_hosts=None, so no known_hosts file is needed)."""
    storage = tmp_path / "ssh-remote"
    storage.mkdir()
    user = pwd.getpwuid(os.getuid()).pw_name
    with ssh_server(tmp_path / "sshd") as (port, key):
        yield Remote(f"ssh://{user}@127.0.0.1:{port}{storage}", storage, {"keyfile": str(key)})


@pytest.fixture(params=["folder", "ssh"])
def remote(request) -> Remote:
    """Every remote kind that can run here without network (S3 and GCS would need a cloud account)."""
    return request.getfixturevalue(f"{request.param}_remote")


def set_credentials(checkout: Path, remote: Remote) -> None:
    """What each machine does for itself: credentials go to the git-ignored .dvc/config.local."""
    for option, value in remote.credentials.items():
        run(["dvc", "remote", "modify", "--local", "store", option, value], checkout)


def test_a_fresh_clone_pulls_every_output_it_needs_from_the_dvc_remote_and_reruns_nothing(committed, remote, tmp_path):
    """The README's recipe: the remote's URL committed, credentials local, `dvc push --run-cache`; then a
    `git clone` elsewhere (an empty DVC cache) gets every output from the remote alone."""
    run(["dvc", "remote", "add", "--force", "-d", "store", remote.url], committed)
    set_credentials(committed, remote)
    run(["git", "add", "-A"], committed)
    commit(committed, f"DVC remote {remote.url}")
    run(["dvc", "push", "--run-cache"], committed)
    assert files_under(remote.storage / "files"), f"nothing arrived in {remote.storage}"

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(committed), str(clone)], check=True)
    assert not (clone / ".dvc/config.local").exists(), "credentials stayed out of git"
    set_credentials(clone, remote)
    run(["dvc", "pull", "--with-deps", TARGET], clone)
    again = run(["dvc", "repro", TARGET], clone)
    assert "Running stage" not in again.stdout, again.stdout[-3000:]
    assert "up to date" in run(["dvc", "status", TARGET], clone).stdout
    for folder in ("models/adapters", "models/merged", "data/prepared"):
        assert files_under(clone / folder) == files_under(committed / folder), folder


# ---------------------------------------------------------------- DVC queue, two jobs


def queue_states(sandbox: Path) -> list[str]:
    lines = run(["dvc", "queue", "status"], sandbox).stdout.splitlines()[1:]
    return [line.split()[-1] for line in lines if line.strip() and not line.startswith("Worker")]


def test_two_queued_experiments_run_in_parallel_and_both_record_metrics_and_mlflow_runs(committed, tmp_path):
    """`loramerge sweep queue` pins an absolute SQLite store, fresh here, so both jobs race to create it."""
    from mlflow.tracking import MlflowClient

    sandbox, store = committed, f"sqlite:///{tmp_path / 'queue.db'}"
    queued = run(["loramerge", "sweep", "queue"], sandbox, check=False, MLFLOW_TRACKING_URI=store)
    assert queued.returncode == 0 and f"queued {len(QUEUE_RANKS)} experiments" in queued.stdout, queued.stderr[-3000:]
    run(["dvc", "queue", "start", "--jobs", "2"], sandbox)
    try:
        deadline = time.monotonic() + 900
        while any(state in ("Queued", "Running") for state in queue_states(sandbox)):
            assert time.monotonic() < deadline, run(["dvc", "queue", "status"], sandbox).stdout
            time.sleep(5)
    finally:
        run(["dvc", "queue", "stop"], sandbox, check=False)
    assert queue_states(sandbox) == ["Success"] * len(QUEUE_RANKS), run(["dvc", "queue", "status"], sandbox).stdout

    names = [
        line.split()[1]
        for line in run(["dvc", "queue", "status"], sandbox).stdout.splitlines()[1:]
        if line.strip().endswith("Success")
    ]
    for name in names:
        log = run(["dvc", "queue", "logs", name], sandbox).stdout
        assert "database is locked" not in log and "MLflow tracking at" not in log, log[-3000:]

    collected = run(["loramerge", "sweep", "collect"], sandbox)
    table = (sandbox / "metrics/sweep/sweep.csv").read_text().splitlines()
    assert len(table) == 1 + len(QUEUE_RANKS), collected.stdout
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("loramerge").experiment_id])
    by_experiment = {(r.data.tags.get("dvc_exp_name"), r.data.tags["dvc_stage"]): r for r in runs}
    assert {name for name, _ in by_experiment} == set(names)
    assert sorted(int(by_experiment[(n, "train@emotion")].data.params["lora.rank"]) for n in names) == QUEUE_RANKS
    assert all(r.info.status == "FINISHED" for r in runs) and {s for _, s in by_experiment} == {
        "train@emotion",
        "evaluate@emotion",
    }


# ---------------------------------------------------------------- DDP


@pytest.fixture(scope="module")
def no_dropout_backbone(tiny_backbone, tmp_path_factory) -> Path:
    """The tiny BERT without its own dropout: with every mask gone, DDP must reproduce one process's arithmetic."""
    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout") / "model"
    shutil.copytree(tiny_backbone, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    )
    return folder


def trained_with(
    tmp_path: Path, name: str, backbone: Path, data: Path, **train
) -> tuple[Path, subprocess.CompletedProcess]:
    """`loramerge train --task topics` in a project of its own (as a console script, so DDP can relaunch it)."""
    raw = tiny_params_dict(backbone, data)
    raw["lora"]["dropout"] = 0.0
    raw["train"].update(
        head_dropout=0.0, batch_size=8, max_epochs=1, val_check_interval=100, **train
    )  # one validation, at the end
    folder = tmp_path / name
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        prepare_task(load_params(folder / "params.yaml"), "topics")
    return folder, run(["loramerge", "train", "--task", "topics"], folder, check=False)


def test_ddp_on_two_cpu_processes_trains_the_same_adapter_as_one_process_and_only_rank_0_writes(
    no_dropout_backbone, tiny_data, tmp_path
):
    """Tolerance: every adapter and head tensor within atol 1e-5 + rtol 1e-4 of the single-process one
    (measured: 5e-7 absolute); the same validation accuracy and step count. The two processes see the
    single-process batch split in halves, so only the order of floating-point sums differs."""
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    single, alone = trained_with(tmp_path, "single", no_dropout_backbone, tiny_data)
    ddp, together = trained_with(
        tmp_path, "ddp", no_dropout_backbone, tiny_data, strategy="ddp", devices=2, accelerator="cpu"
    )
    assert alone.returncode == 0 and together.returncode == 0, together.stderr[-3000:]
    assert "MEMBER: 2/2" in together.stderr, "two processes took part"
    for name in ("adapter_model.safetensors", "head.safetensors"):
        one, two = (load_file(str(p / "models/adapters/topics" / name)) for p in (single, ddp))
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4)
    metrics = [json.loads((p / "metrics/train/lora/topics.json").read_text()) for p in (single, ddp)]
    assert (
        metrics[1]["val_accuracy"] == metrics[0]["val_accuracy"]
        and metrics[1]["global_steps"] == metrics[0]["global_steps"]
    )
    client = MlflowClient(f"sqlite:///{ddp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.data.tags["dvc_stage"] for r in runs] == ["train@topics"] and runs[0].info.status == "FINISHED"
