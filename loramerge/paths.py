"""Where each stage reads and writes, relative to the project root, and what each stage is called: the dvc.yaml files
use the same layout and the same names (`<group>@<key>`), spelled here once for the code."""

from __future__ import annotations

from pathlib import Path

from loramerge.lists import combination_kind

PREPARED = Path("data/prepared")
ADAPTERS = Path("models/adapters")
BASELINES = Path("models/baselines")
CHECKPOINTS = Path("models/checkpoints")
MERGED = Path("models/merged")
EXPORT = Path("models/export")
METRICS = Path("metrics")
REPORTS = Path("reports")
SIMILARITY = METRICS / "similarity.json"

SPLITS = ("train", "validation", "test")

PIPELINES = Path("pipelines")
"""One folder per stage group (`pipelines/<group>/dvc.yaml` and its own dvc.lock); the root dvc.yaml holds the report,
which depends on every group, so `dvc repro` at the root runs the whole DAG. DVC parses and rewrites a stage's whole
lock after the stage runs: one lock per group stays small as a study adds stages."""
ROOT_STAGES = ("report",)
"""The stages of the root dvc.yaml, which DVC addresses by name alone."""

DENSE_FILE = "deltas.safetensors"
"""A merged update that is not exactly low-rank, saved per layer beside its manifest."""
MANIFEST = "manifest.json"
"""What a merge stage records per method: members, chosen hyper-parameters, every search point."""
TRAIN_METRICS_FILE = "train_metrics.json"
"""What training recorded (best validation scores, cost, parameter counts), in every trained model's folder."""


def prepared_dir(task: str) -> Path:
    return PREPARED / task


def prepared_stats(task: str) -> Path:
    """What prepare counted: rows per split, dropped and shared texts, class counts, the majority baseline."""
    return prepared_dir(task) / "stats.json"


def adapter_dir(task: str) -> Path:
    return ADAPTERS / task


TRAINING_STAGES = {"lora": "train", "head_only": "baseline_head", "full": "baseline_full"}
"""The stage group that trains each mode."""


def dvc_target(stage: str) -> str:
    """What `dvc repro` takes for a stage: `train@emotion` -> `pipelines/train/dvc.yaml:train@emotion` (DVC looks up a
    bare name in the root dvc.yaml only)."""
    group = stage.partition("@")[0]
    return stage if group in ROOT_STAGES else f"{(PIPELINES / group / 'dvc.yaml').as_posix()}:{stage}"


def stage_name(address: str) -> str:
    """The stage a DVC address names (what `dvc status --json`, `dvc repro`'s log and $DVC_STAGE give):
    `pipelines/train/dvc.yaml:train@emotion` -> `train@emotion`."""
    return address.rpartition(":")[2]


def training_stage(task: str, mode: str = "lora") -> str:
    """`train@<task>`, `baseline_head@<task>` or `baseline_full@<task>`."""
    return f"{TRAINING_STAGES[mode]}@{task}"


def combination_stage(operation: str, combo: str) -> str:
    """`<operation>_<kind>@<combo>` (merge_pair@a+b, evaluate_many@a+b+c+d, export_triple@...): the pipeline has one
    stage group per operation and combination kind."""
    return f"{operation}_{combination_kind(combo)}@{combo}"


def model_dir(task: str, mode: str) -> Path:
    """Where a trained model of one mode goes: the LoRA adapter, or a baseline's weights and head."""
    return adapter_dir(task) if mode == "lora" else BASELINES / mode / task


def trained_model(task: str, mode: str) -> Path:
    """A trained model's folder, or an error naming the stage to run when it has not been trained yet."""
    folder = model_dir(task, mode)
    if not (folder / "head.safetensors").exists():
        raise FileNotFoundError(
            f"{folder} holds no trained model; run `dvc repro {dvc_target(training_stage(task, mode))}` first"
        )
    return folder


def checkpoint_dir(task: str, mode: str) -> Path:
    return CHECKPOINTS / mode / task


def merged_dir(combo: str) -> Path:
    return MERGED / combo


def merge_manifest(combo: str, method: str) -> Path:
    return merged_dir(combo) / method / MANIFEST


def single_metrics(task: str) -> Path:
    return METRICS / "single" / f"{task}.json"


def train_metrics(task: str, mode: str) -> Path:
    """A copy of train_metrics.json outside the model folder, so `dvc metrics`/`dvc exp show` read it."""
    return METRICS / "train" / mode / f"{task}.json"


def single_predictions(task: str) -> Path:
    """Test labels and the single adapter's predictions, for `dvc plots` confusion matrices."""
    return METRICS / "predictions" / f"{task}.csv"


def baseline_predictions(task: str) -> Path:
    """Per test example, whether head-only and full fine-tuning got it right (the report's paired bootstrap)."""
    return METRICS / "predictions" / "baselines" / f"{task}.parquet"


def merged_predictions(combo: str) -> Path:
    """Per method, member task and test example, whether the merged model got it right."""
    return METRICS / "predictions" / "merged" / f"{combo}.parquet"


def baseline_metrics(task: str) -> Path:
    return METRICS / "baselines" / f"{task}.json"


def merged_metrics(combo: str) -> Path:
    return METRICS / "merged" / f"{combo}.json"


def export_dir(combo: str) -> Path:
    """The shipped multi-task model of a combination (stage export_<kind>)."""
    return EXPORT / combo


def export_metrics(combo: str) -> Path:
    """What the export measured of it: sizes, latency and accuracy per precision, and the method chosen."""
    return METRICS / "export" / f"{combo}.json"
