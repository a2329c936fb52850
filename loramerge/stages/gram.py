"""Stage `gram@<task>`: the Gram matrices of the adapted layers' inputs over the task's training texts.

What the data-aware merge RegMean needs of a task, computed once and cached (models/gram/<task>/)
instead of once per pair and triple it is merged in. Reads the task's adapter and its prepared
training split only: no labels, never validation or test. Float32 forward passes (a Gram matrix
sums ~10⁴ token products per entry; bf16's 8-bit mantissa would blur it).
"""

from __future__ import annotations

from pathlib import Path

from loramerge import paths
from loramerge.atomic import atomic_dir, check_writable
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.config import Params
from loramerge.data import file_digest, prepared_splits
from loramerge.evaluation import load_task_split
from loramerge.gram import GramRecord, gram_dir, save_grams, task_grams
from loramerge.lora import AdapterError, check_same_base, load_updates
from loramerge.tracking import stage_run

HELP = "Gram matrices of one adapted task's layer inputs (what RegMean merges with)"
ARGUMENTS = {"--task": {"required": True, "help": "a task, or its replica <task>-repeat<k>"}}

SPLIT = "train"


def write_grams(params: Params, name: str) -> Path:
    """Compute and write models/gram/<name>/ atomically, for a task or one of its replicas (another seed)."""
    adapter, task = paths.adapter_dir(name), params.task_of(name)
    if not (adapter / "adapter_model.safetensors").exists():
        raise AdapterError(
            f"no adapter for task {name!r} at {adapter}; run `dvc repro {paths.dvc_target(paths.training_stage(name))}` first"
        )
    check_same_base({name: adapter}, params.backbone.name)
    check_writable(folders=(gram_dir(name),))
    tokenizer, encoder = load_tokenizer(params.backbone), load_encoder(params.backbone)
    (update,) = load_updates(encoder, {name: adapter})
    data = load_task_split(params, name, SPLIT, tokenizer)
    run_params = {
        "task": task,
        "replica": name,
        "split": SPLIT,
        "examples": data.examples,
        "backbone": params.backbone.name,
    }
    with stage_run(params.tracking, f"gram@{name}", run_params) as run, atomic_dir(gram_dir(name)) as out:
        run.log_datasets(prepared_splits(task, (SPLIT,)))
        grams, tokens = task_grams(encoder, update, data.texts.sorted_batches(params.evaluate.batch_size))
        record = GramRecord(
            task=name,
            split=SPLIT,
            examples=data.examples,
            tokens=tokens,
            layers=sorted(grams),
            adapter_sha256=file_digest(adapter / "adapter_model.safetensors"),
            backbone=params.backbone.name,
        )
        save_grams(out, grams, record)
        run.log_metrics({"tokens": tokens, "examples": data.examples})
    return gram_dir(name)


def run(params: Params, task: str) -> Path:
    """`loramerge gram --task T`."""
    params.replica(task)  # a task or one of its replicas; the error names the configured ones
    return write_grams(params, task)
