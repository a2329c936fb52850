"""Stages `train@<task>`, `baseline_head@<task>`, `baseline_full@<task>`: one model per task and mode.

`lora` (the adapters that get merged) writes models/adapters/<task>/ in PEFT's own format
(adapter_config.json + adapter_model.safetensors); the baselines a user would pick
instead write models/baselines/{head_only,full}/<task>/ (the frozen backbone with a trained
head; all backbone weights fine-tuned). Every mode saves head.safetensors, labels.json and
train_metrics.json. Lightning checkpoints hold only the trainable weights and persist in
models/checkpoints/<mode>/<task>/, so a killed run resumes instead of starting over.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from transformers import get_linear_schedule_with_warmup

from loramerge import paths
from loramerge.atomic import atomic_dir, write_json
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import TokenizedTexts
from loramerge.config import Params, TrainConfig
from loramerge.lora import add_lora
from loramerge.metrics import classification_metrics
from loramerge.model import ClassificationHead, Classifier
from loramerge.stages.prepare import load_labels, load_split
from loramerge.tracking import StageRun, stage_run

STAGE_NAMES = {"lora": "train", "head_only": "baseline_head", "full": "baseline_full"}


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """A shuffle that depends only on (seed, epoch), with texts of similar length next to each other.

    Shuffled indices are cut into mega-batches of `group` batches, each sorted by length, so
    consecutive batches pad to similar widths: padding is wasted compute, and short tweets
    padded to the longest text of a random batch waste about half of it. Depending only on
    (seed, epoch) means a run resumed at an epoch boundary sees exactly the batches an
    uninterrupted run would (Lightning calls `set_epoch`).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 16) -> None:
        self.lengths, self.seed, self.epoch = lengths, seed, 0
        self.mega_batch = batch_size * group

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        chunks = (order[i : i + self.mega_batch] for i in range(0, len(order), self.mega_batch))
        return iter([i for chunk in chunks for i in sorted(chunk, key=lambda j: -self.lengths[j])])

    def __len__(self) -> int:
        return len(self.lengths)


class TaskDataModule(L.LightningDataModule):
    """A prepared task, tokenised once; training batches shuffled per epoch from the seed."""

    def __init__(self, task: str, tokenizer, max_length: int, batch_size: int, seed: int) -> None:
        super().__init__()
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        self.splits = {}
        for split in ("train", "validation"):
            frame = load_split(self.task, split)
            self.splits[split] = TokenizedTexts(self.tokenizer, frame["text"].tolist(), frame["label_id"].tolist(), self.max_length)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        data = self.splits["train"]
        sampler = LengthGroupedSampler([len(ids) for ids in data.input_ids], self.batch_size, self.seed)
        return torch.utils.data.DataLoader(data, batch_size=self.batch_size, sampler=sampler, collate_fn=data.collate)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        data = self.splits["validation"]
        return torch.utils.data.DataLoader(list(data.sorted_batches(self.batch_size * 2)), batch_size=None)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of whatever requires grad (LoRA, all weights, or the head alone) + head.

    AdamW with linear warm-up and decay; the head has its own learning rate.
    """

    def __init__(self, classifier: Classifier, config: TrainConfig, total_steps: int) -> None:
        super().__init__()
        self.classifier, self.config, self.total_steps = classifier, config, total_steps
        self._val_true: list[np.ndarray] = []
        self._val_pred: list[np.ndarray] = []
        self._val_loss: list[float] = []

    def on_train_epoch_start(self) -> None:
        """Dropout's randomness restarts from (seed, epoch): a resumed epoch replays bit for bit."""
        torch.manual_seed(self.config.seed + self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.classifier(batch["input_ids"], batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.classifier(batch["input_ids"], batch["attention_mask"])
        self._val_loss.append(float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")))
        self._val_true.append(batch["labels"].numpy())
        self._val_pred.append(logits.argmax(-1).numpy())

    def on_validation_epoch_end(self) -> None:
        y_true, y_pred = np.concatenate(self._val_true), np.concatenate(self._val_pred)
        scores = classification_metrics(y_true, y_pred)
        self.log("val_loss", sum(self._val_loss) / len(y_true))
        self.log("val_acc", scores["accuracy"], prog_bar=True)
        self.log("val_macro_f1", scores["macro_f1"])
        self._val_true, self._val_pred, self._val_loss = [], [], []

    def configure_optimizers(self):
        head = list(self.classifier.head.parameters())
        encoder = [p for p in self.classifier.encoder.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": self.config.head_learning_rate}]
        if encoder:
            groups.insert(0, {"params": encoder, "lr": self.config.learning_rate})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.config.weight_decay)
        warmup = int(self.config.warmup_ratio * self.total_steps)
        schedule = get_linear_schedule_with_warmup(optimizer, warmup, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def state_dict(self, *args, **kwargs):
        """Only the trainable weights: checkpoints stay small (the frozen backbone is never saved)."""
        full = super().state_dict(*args, **kwargs)
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in full.items() if k in trainable}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return super().load_state_dict(state_dict, strict=False, assign=assign)


def count_parameters(model: torch.nn.Module) -> dict[str, float]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total}


def prepare_checkpoints(folder: Path, fingerprint: dict) -> str | None:
    """Resume from `last.ckpt` only if it was written by this very configuration; else start clean."""
    stamp = folder / "fingerprint.json"
    if (folder / "last.ckpt").exists() and stamp.exists() and json.loads(stamp.read_text()) == fingerprint:
        return str(folder / "last.ckpt")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(stamp, fingerprint)
    return None


def build_trainer(config: TrainConfig, folder: Path, val_every: int, logger) -> tuple[L.Trainer, ModelCheckpoint]:
    """Two checkpoints: `best.ckpt` (highest val_acc, what gets saved) and `last.ckpt`, written only
    at epoch ends so that resuming never starts mid-epoch."""
    checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor="val_acc", mode="max", save_top_k=1, enable_version_counter=False)
    resume_point = ModelCheckpoint(dirpath=folder, save_top_k=0, save_last=True, save_on_train_epoch_end=True, every_n_epochs=1)
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        callbacks=[EarlyStopping(monitor="val_acc", mode="max", patience=config.patience), checkpoint, resume_point],
        logger=logger,
        deterministic=True,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return trainer, checkpoint


def build_encoder(params: Params, mode: str):
    """The encoder as each mode trains it: LoRA-wrapped, frozen, or fully trainable."""
    encoder = load_encoder(params.backbone)
    if mode == "lora":
        return add_lora(encoder, params.lora, params.backbone.name)
    encoder.requires_grad_(mode == "full")
    return encoder


def train_task(params: Params, task: str, mode: str = "lora") -> Path:
    """Train one task's model in one mode and write its folder atomically."""
    config = params.task_train(task, mode)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    L.seed_everything(config.seed, workers=True)
    labels = load_labels(task)
    tokenizer = load_tokenizer(params.backbone)
    encoder = build_encoder(params, mode)
    head = ClassificationHead(encoder.config.hidden_size, len(labels), config.head_dropout)
    classifier = Classifier(encoder, head, params.backbone.pooling).train()  # from_pretrained leaves eval mode: no dropout
    data = TaskDataModule(task, tokenizer, params.backbone.max_length, config.batch_size, config.seed)
    data.setup()
    steps_per_epoch = -(-len(data.splits["train"]) // config.batch_size)
    module = ClassifierModule(classifier, config, total_steps=steps_per_epoch * config.max_epochs)
    settings = {"task": task, "mode": mode, "backbone": params.backbone.model_dump(), "train": config.model_dump()}
    if mode == "lora":
        settings["lora"] = params.lora.model_dump()
    folder = paths.checkpoint_dir(task, mode)
    resume_from = prepare_checkpoints(folder, {**settings, "data": params.tasks[task].data.model_dump()})
    with stage_run(params.tracking, f"{STAGE_NAMES[mode]}@{task}", settings) as run:
        trainer, checkpoint = build_trainer(config, folder, min(config.val_check_interval, steps_per_epoch), mlflow_logger(run))
        started = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        runtime = time.perf_counter() - started
        if not trainer.is_global_zero:
            return paths.model_dir(task, mode)
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        metrics = final_metrics(module, data, trainer, int(best["global_step"]), runtime, config)
        metrics.update(count_parameters(classifier))
        run.log_metrics({f"final/{k}": v for k, v in metrics.items()})
        out = save_model(paths.model_dir(task, mode), mode, encoder, head, labels, metrics)
        write_json(paths.train_metrics(task, mode), metrics)
        for item in sorted(out.iterdir()):  # a fully fine-tuned encoder stays in DVC's cache only
            if item.name != "encoder":
                run.log_artifacts(item, "model")
    return out


def mlflow_logger(run: StageRun) -> MLFlowLogger | bool:
    """Lightning's logger attached to the stage's own run (one logging path), or none if untracked."""
    if run.run_id is None:
        return False
    return MLFlowLogger(experiment_name=run.config.experiment, tracking_uri=run.uri, run_id=run.run_id, log_model=False)


def final_metrics(module: ClassifierModule, data: TaskDataModule, trainer: L.Trainer, best_step: int, runtime: float, config: TrainConfig) -> dict:
    """The best checkpoint's validation scores and the run's cost (time, steps, memory)."""
    module.eval()
    trues, preds = [], []
    with torch.inference_mode():
        for batch in data.splits["validation"].sorted_batches(config.batch_size * 2):
            preds.append(module.classifier(batch["input_ids"], batch["attention_mask"]).argmax(-1).numpy())
            trues.append(batch["labels"].numpy())
    scores = classification_metrics(np.concatenate(trues), np.concatenate(preds))
    return {
        **{f"val_{k}": v for k, v in scores.items()},
        "global_steps": trainer.global_step,
        "best_step": best_step,
        "runtime_s": runtime,
        "steps_per_s": trainer.global_step / runtime if runtime > 0 else 0.0,
        "train_samples_per_s": trainer.global_step * config.batch_size / runtime if runtime > 0 else 0.0,
        "train_loss": float(trainer.callback_metrics.get("train_loss", float("nan"))),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
    }


def save_model(folder: Path, mode: str, encoder, head: ClassificationHead, labels: list[str], metrics: dict) -> Path:
    """The head always; the LoRA adapter (PEFT format) or the fine-tuned encoder (safetensors) by mode."""
    with atomic_dir(folder) as out:
        if mode == "lora":
            encoder.save_pretrained(str(out), save_embedding_layers=False)  # no Hub lookup of the base config
        elif mode == "full":
            encoder.save_pretrained(str(out / "encoder"), safe_serialization=True)
        head.save(out)
        write_json(out / "labels.json", {"labels": labels})
        write_json(out / "train_metrics.json", metrics)
    return folder
