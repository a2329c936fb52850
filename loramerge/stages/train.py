"""Stages `train@<task>`, `baseline_head@<task>`, `baseline_full@<task>`: one model per task and mode.

`lora` (the adapters that get merged) writes models/adapters/<task>/ in PEFT's own format
(adapter_config.json + adapter_model.safetensors); the baselines a user would pick
instead write models/baselines/{head_only,full}/<task>/ (the frozen backbone with a trained
head; all backbone weights fine-tuned). Every mode saves head.safetensors, labels.json and
train_metrics.json. Head-only training reads the frozen encoder's pooled vector of each text,
computed once in eval mode (the encoder never changes, so running it every epoch was waste);
the head keeps its own dropout. Lightning checkpoints hold only the trainable weights and persist in
models/checkpoints/<mode>/<task>/, so a killed run resumes instead of starting over; they are
read as plain weights only (`weights_only=True`), and removed once the model is saved, so a
later rerun (changed code, `dvc repro -f`) trains again instead of "resuming" a finished run.

Multi-process training (`train.strategy: ddp`, `train.devices`, `train.num_nodes`): Lightning
starts this command once per process; only global rank 0 prepares checkpoints, opens the
MLflow run and writes outputs. `train.batch_size` stays the batch of one optimizer step,
split evenly over the processes, so adding processes changes the speed, not the recipe.
"""

from __future__ import annotations

import resource
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from loramerge import paths
from loramerge.adopt import adopt
from loramerge.atomic import atomic_dir, check_writable, write_json
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import CachedFeatures
from loramerge.config import Params
from loramerge.data import load_labels, prepared_splits
from loramerge.lora import add_lora
from loramerge.model import ClassificationHead, Classifier
from loramerge.precision import Precision, resolve
from loramerge.records import PrecisionRecord, TrainMetrics
from loramerge.settings import TrainConfig
from loramerge.tasktypes import TASK_TYPES
from loramerge.tracking import stage_run, untracked
from loramerge.training import (
    ClassifierModule,
    TaskDataModule,
    build_trainer,
    check_hardware,
    clear_checkpoints,
    count_parameters,
    data_fingerprint,
    lightning_logger,
    per_process_batch,
    predicted_ids,
    resume_point,
    validation_scores,
)

HELP = "train one task's LoRA adapter and head, or a baseline (--mode)"
ARGUMENTS = {
    "--task": {"required": True, "help": "a task, or its replica <task>-repeat<k>"},
    "--mode": {
        "default": "lora",
        "choices": ["lora", "head_only", "full"],
        "help": "lora (merged later), or a baseline: head_only, full",
    },
}


def build_encoder(params: Params, mode: str):
    """The encoder as each mode trains it: LoRA-wrapped, frozen, or fully trainable."""
    encoder = load_encoder(params.backbone)
    if mode == "lora":
        return add_lora(encoder, params.lora, params.backbone.name)
    encoder.requires_grad_(mode == "full")
    return encoder


def train_task(params: Params, name: str, mode: str = "lora") -> Path:
    """Train one replica's model (a task with one seed; a task's name is its first) in one mode and write its
    folder atomically."""
    config, task = params.task_train(name, mode), params.task_of(name)
    check_hardware(config)
    labels = load_labels(task)  # before the model: a task not yet prepared fails here, naming the stage to run
    check_writable(
        paths.train_metrics(name, mode), folders=(paths.model_dir(name, mode), paths.checkpoint_dir(name, mode))
    )
    kind = TASK_TYPES[params.tasks[task].type]
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    L.seed_everything(config.seed, workers=True)
    tokenizer = load_tokenizer(params.backbone)
    adapter = params.tasks[task].adapter if mode == "lora" else None
    if adapter:  # tasks.<task>.adapter: that adapter, frozen, and its classifier's weights if it carries one
        encoder, carried = adopt(load_encoder(params.backbone), adapter, params.backbone.name)
    else:
        encoder, carried = build_encoder(params, mode), {}
    head = ClassificationHead(encoder.config.hidden_size, len(labels), config.head_dropout, kind.per_token)
    head_from_adapter = bool(carried) and carried["weight"].shape == head.linear.weight.shape
    if head_from_adapter:  # the adapter's own classifier, of this task's size: where the head starts
        head.linear.load_state_dict(carried)
    classifier = Classifier(
        encoder, head, params.backbone.pooling
    ).train()  # from_pretrained leaves eval mode: no dropout
    data = TaskDataModule(task, kind, labels, tokenizer, params.backbone.max_length, config.batch_size, config.seed)
    data.setup()
    if (mode == "head_only" or adapter) and not kind.per_token:  # frozen encoder; a token head reads every token
        data.cache_features(encoder, params.backbone.pooling)
    steps_per_epoch = -(-len(data.splits["train"]) // config.batch_size)
    module = ClassifierModule(classifier, config, steps_per_epoch * config.max_epochs, data)
    precision = resolve(config.precision)
    settings = {
        "task": task,
        "type": kind.name,
        "replica": name,
        "mode": mode,
        "backbone": params.backbone.model_dump(),
        "train": config.model_dump(),
        "precision": precision.record(),
    }
    if mode == "lora" and not adapter:
        settings["lora"] = params.lora.model_dump()
    if adapter:
        settings["adapter"] = {"source": adapter, "head_from_its_classifier": head_from_adapter}
    if mode == "head_only":
        settings["head_inputs"] = "the frozen encoder's pooled features, computed once in eval mode"
    folder = paths.checkpoint_dir(name, mode)
    trainer, checkpoint = build_trainer(config, folder, min(config.val_check_interval, steps_per_epoch), precision)
    per_process_batch(config.batch_size, trainer.world_size)
    lead, stage = trainer.is_global_zero, paths.training_stage(name, mode)
    fingerprint = {**settings, "data": params.tasks[task].data.model_dump(), "prepared_sha256": data_fingerprint(task)}
    resume_from = resume_point(folder, fingerprint, lead, stage, config.max_epochs)
    with stage_run(params.tracking, stage, settings) if lead else untracked(params.tracking, stage) as run:
        run.log_datasets(prepared_splits(task, ("train", "validation")))
        trainer.logger = lightning_logger(run)
        started = time.perf_counter()
        with warnings.catch_warnings():
            if isinstance(data.splits["train"], CachedFeatures):
                # the frozen encoder stays in eval mode on purpose: the head reads its cached vectors
                warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode", UserWarning)
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
        runtime = time.perf_counter() - started
        if not trainer.is_global_zero:
            return paths.model_dir(name, mode)
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        metrics = final_metrics(module, data, trainer, int(best["global_step"]), runtime, config, precision)
        run.log_metrics({f"final/{k}": v for k, v in metrics.model_dump().items()})
        out = save_model(paths.model_dir(name, mode), mode, encoder, head, labels, metrics)
        metrics.write(paths.train_metrics(name, mode))
        clear_checkpoints(folder)
        for item in sorted(out.iterdir()):  # a fully fine-tuned encoder stays in DVC's cache only
            if item.name != "encoder":
                run.log_artifacts(item, "model")
    return out


def final_metrics(
    module: ClassifierModule,
    data: TaskDataModule,
    trainer: L.Trainer,
    best_step: int,
    runtime: float,
    config: TrainConfig,
    precision: Precision,
) -> TrainMetrics:
    """The best checkpoint's validation scores (in float32: the saved model as every later stage reads it),
    the run's cost (time, steps, memory), its training precision and the model's size."""
    module.eval()
    rows = []
    with torch.inference_mode():
        for batch in data.splits["validation"].sorted_batches(config.batch_size * 2):
            logits = module.classifier.logits(batch)
            rows.append((batch["index"].numpy(), predicted_ids(logits, batch, module.classifier.head.per_token)))
    scores = validation_scores(rows, data)
    return TrainMetrics(
        **{f"val_{k}": v for k, v in scores.items()},
        global_steps=trainer.global_step,
        best_step=best_step,
        runtime_s=runtime,
        steps_per_s=trainer.global_step / runtime if runtime > 0 else 0.0,
        train_samples_per_s=trainer.global_step * config.batch_size / runtime if runtime > 0 else 0.0,
        train_loss=float(trainer.callback_metrics.get("train_loss", float("nan"))),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        precision=PrecisionRecord(**precision.record()),
        **count_parameters(module.classifier),
    )


def save_model(
    folder: Path, mode: str, encoder, head: ClassificationHead, labels: list[str], metrics: TrainMetrics
) -> Path:
    """The head always; the LoRA adapter (PEFT format) or the fine-tuned encoder (safetensors) by mode."""
    with atomic_dir(folder) as out:
        if mode == "lora":
            encoder.save_pretrained(str(out), save_embedding_layers=False)  # no Hub lookup of the base config
        elif mode == "full":
            encoder.save_pretrained(str(out / "encoder"), safe_serialization=True)
        head.save(out)
        write_json(out / "labels.json", {"labels": labels})
        metrics.write(out / paths.TRAIN_METRICS_FILE)
    return folder


def run(params: Params, task: str, mode: str) -> Path:
    """`loramerge train --task T --mode M`."""
    params.replica(task)  # a task or one of its replicas; the error names the configured ones
    return train_task(params, task, mode)
