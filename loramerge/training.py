"""Training machinery under the train stage (`stages/train.py`): Lightning's pieces for one task's model.

A length-grouped sampler (texts of like length share a batch: less padding), the data module (tokenized splits, or
the frozen encoder's cached features for a head-only baseline), the LightningModule (loss, validation score, the
optimizer and its schedule), checkpoints that resume a killed run only when they belong to the same run
(`fingerprint.json`), and the trainer built from `train` settings (precision, devices, strategy, early stopping).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from transformers import get_linear_schedule_with_warmup

from loramerge import paths
from loramerge.atomic import write_json
from loramerge.batching import CachedFeatures
from loramerge.config import ConfigError
from loramerge.data import file_digest, load_split
from loramerge.dropout import use_fast_dropout
from loramerge.model import Classifier, per_text, pooled_features
from loramerge.precision import Precision
from loramerge.settings import TrainConfig
from loramerge.tasktypes import TaskType
from loramerge.tokens import IGNORED, token_loss
from loramerge.tracking import StageRun, kept_environment

CHECKPOINT_FILES = ("last.ckpt", "best.ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from safely; the message says what to delete."""


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
    """A prepared task, tokenised once; training batches shuffled per epoch from the seed.

    `batch_size` is the batch of one optimizer step: under DDP each of the N processes loads
    batch_size / N of it (Lightning's distributed sampler gives process r every N-th example
    of the seeded order, so together they see exactly the single-process batch).
    """

    def __init__(
        self, task: str, kind: TaskType, labels: list[str], tokenizer, max_length: int, batch_size: int, seed: int
    ) -> None:
        super().__init__()
        self.task, self.kind, self.labels = task, kind, labels
        self.tokenizer, self.max_length = tokenizer, max_length
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        """Tokenise once: Lightning calls this again at `fit`, which must keep the splits (and cached features)."""
        if getattr(self, "splits", None):
            return
        self.splits = {
            split: self.kind.inputs(load_split(self.task, split), self.tokenizer, self.labels, self.max_length)
            for split in ("train", "validation")
        }

    def cache_features(self, encoder: torch.nn.Module, pooling: str) -> None:
        """Replace both splits' texts by the frozen encoder's pooled vectors, computed once (head-only training)."""
        for split, texts in self.splits.items():
            self.splits[split] = CachedFeatures(pooled_features(encoder, texts, self.batch_size * 2, pooling), texts)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """The seeded order, sharded by Lightning's own wrapper: process r takes every N-th example.

        Sharded here because Lightning's automatic sharding of a custom sampler reshuffles its
        order (shuffle=True for training), which would lose both the seeded order and the
        length grouping under DDP.
        """
        data = self.splits["train"]
        processes, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        order = LengthGroupedSampler(data.lengths(), self.batch_size, self.seed)
        shard = DistributedSamplerWrapper(order, num_replicas=processes, rank=rank, shuffle=False)
        return torch.utils.data.DataLoader(
            data, batch_size=per_process_batch(self.batch_size, processes), sampler=shard, collate_fn=data.collate
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Every process scores the whole validation split (Lightning would shard it), so val_score,
        early stopping and the best checkpoint are the same on every rank and as in one process."""
        batches = list(self.splits["validation"].sorted_batches(self.batch_size * 2))
        whole = torch.utils.data.DistributedSampler(batches, num_replicas=1, rank=0, shuffle=False)
        return torch.utils.data.DataLoader(batches, batch_size=None, sampler=whole)


def step_seed(seed: int, step: int) -> int:
    """A seed for one optimizer step, distinct across (seed, step) pairs and in torch's accepted range."""
    return (seed * 1_000_003 + step) % 2**63


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of whatever requires grad (LoRA, all weights, or the head alone) + head.

    Its dropout draws masks with `FastDropout`: torch's distribution, a quarter of its CPU cost off Intel CPUs.

    AdamW with linear warm-up and decay; the head has its own learning rate. Validation scores the task's
    type's way (`val_score`: accuracy, or entity micro-F1), which early stopping and the best checkpoint follow.
    """

    def __init__(
        self, classifier: Classifier, config: TrainConfig, total_steps: int, data: TaskDataModule | None = None
    ) -> None:
        """`data`: the task whose validation split validation scores; None for training steps alone (no validation)."""
        super().__init__()
        self.classifier = use_fast_dropout(classifier)
        self.config, self.total_steps, self.data = config, total_steps, data
        self._val_rows: list[tuple[np.ndarray, np.ndarray]] = []
        self._val_loss, self._val_labelled = 0.0, 0

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Dropout's randomness restarts from (seed, step) before every step: a resumed run replays bit
        for bit. Per epoch is not enough: between an epoch's start and its first step Lightning draws
        from the global generator a different number of times in a resumed run than in an
        uninterrupted one (data-loader set-up), which shifted every later dropout mask."""
        torch.manual_seed(step_seed(self.config.seed, self.global_step))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.classifier.logits(batch)
        loss = token_loss(logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, labels = self.classifier.logits(batch), batch["labels"]
        flat = logits.reshape(-1, logits.shape[-1]).float()
        self._val_loss += float(F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORED, reduction="sum"))
        self._val_labelled += int((labels != IGNORED).sum())
        self._val_rows.append((batch["index"].numpy(), predicted_ids(logits, batch, self.classifier.head.per_token)))

    def on_validation_epoch_end(self) -> None:
        scores = validation_scores(self._val_rows, self.data)
        self.log("val_loss", self._val_loss / max(self._val_labelled, 1))
        self.log("val_score", scores["score"], prog_bar=True)
        self.log("val_acc", scores["accuracy"])
        self.log("val_macro_f1", scores["macro_f1"])
        self._val_rows, self._val_loss, self._val_labelled = [], 0.0, 0

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


def predicted_ids(logits: torch.Tensor, batch: dict, per_token: bool) -> np.ndarray:
    """Each row's predicted label id, or (per-token heads) each text's array of per-piece ids without padding."""
    found = logits.argmax(-1).numpy()
    return per_text(found, batch["attention_mask"]) if per_token else found


def validation_scores(rows: list[tuple[np.ndarray, np.ndarray]], data: TaskDataModule) -> dict[str, float]:
    """The task type's scores of (indices, predictions) batches on the validation split, put back in order."""
    order = np.argsort(np.concatenate([index for index, _ in rows]))
    predicted = np.concatenate([found for _, found in rows])[order]
    return data.kind.score(data.splits["validation"], predicted, data.labels).metrics


def count_parameters(model: torch.nn.Module) -> dict[str, int | float]:
    """TrainMetrics' parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total}


def prepare_checkpoints(folder: Path, fingerprint: dict, owner: bool = True) -> str | None:
    """Resume from `last.ckpt` only if it was written by this very configuration; else start clean.

    Only the owner (DDP rank 0) cleans the folder; the other processes, started after it
    did, just find the same answer.
    """
    stamp = folder / "fingerprint.json"
    if (folder / "last.ckpt").exists() and stamp.exists() and json.loads(stamp.read_text()) == fingerprint:
        return str(folder / "last.ckpt")
    if owner:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_json(stamp, fingerprint)
    return None


def checkpoint_position(path: str) -> tuple[int, int]:
    """(epochs completed, global step) of a resume checkpoint, read as plain weights only.

    A file that does not load that way (pickled code, or damage) is refused before any
    compute, with the folder to delete named: it was not written by this training.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for code, RuntimeError/EOFError for damage
        raise CheckpointError(
            f"{path} does not load as a plain-weights Lightning checkpoint ({type(error).__name__}); "
            f"it was not written by this training or is damaged: delete {Path(path).parent} to start over"
        ) from None
    return int(state["epoch"]) + 1, int(state["global_step"])


def resume_point(folder: Path, fingerprint: dict, lead: bool, stage: str, max_epochs: int) -> str | None:
    """The checkpoint to resume from, checked and announced by rank 0 (the log line says resuming happened)."""
    resume_from = prepare_checkpoints(folder, fingerprint, owner=lead)
    if resume_from and lead:
        epochs, step = checkpoint_position(resume_from)
        print(
            f"[{stage}] resuming from {resume_from}: {epochs} of {max_epochs} epoch(s) done, global step {step}",
            flush=True,
        )
    return resume_from


def clear_checkpoints(folder: Path) -> None:
    """Drop the checkpoints once the model is saved: they exist to finish an interrupted run, and a
    finished run's `last.ckpt` would otherwise be "resumed" by a rerun of the same params (e.g. after
    a code change) and hand back the old model untrained. fingerprint.json stays (DVC's output)."""
    for name in CHECKPOINT_FILES:
        (folder / name).unlink(missing_ok=True)


def data_fingerprint(task: str) -> dict[str, str]:
    """Content hashes of the prepared data training reads: a resumed run must see the same data."""
    folder = paths.prepared_dir(task)
    return {name: file_digest(folder / name) for name in ("train.parquet", "validation.parquet", "labels.json")}


def per_process_batch(batch_size: int, processes: int) -> int:
    """Each process's share of one optimizer step's batch; refused (before compute) unless even."""
    if batch_size % processes:
        raise ValueError(
            f"train.batch_size={batch_size} must split evenly over the {processes} training processes (train.devices x train.num_nodes)"
        )
    return batch_size // processes


def check_hardware(config: TrainConfig) -> None:
    """Lightning's own checks of `train.accelerator/devices/strategy/num_nodes`, on throw-away Trainers built
    before any data or model loads, one key at a time so the error names the key at fault (`accelerator: gpu`
    on a machine without one fails in a second, not after the encoder is built)."""
    probe: dict = {}
    for key in ("accelerator", "devices", "strategy", "num_nodes"):
        probe[key] = getattr(config, key)
        logging.disable(logging.INFO)  # each probe would print Lightning's "GPU available" banner
        try:
            L.Trainer(
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                **probe,
            )
        except (MisconfigurationException, ValueError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[0]
            raise ConfigError(
                f"train.{key}: Lightning refuses {probe[key]!r} on this machine ({reason}); fix train.{key} in params.yaml"
            ) from None
        finally:
            logging.disable(logging.NOTSET)


LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}
"""Our resolved precision -> Lightning's name for it: bf16 autocast around forward and backward, float32 weights."""


def build_trainer(
    config: TrainConfig, folder: Path, val_every: int, precision: Precision
) -> tuple[L.Trainer, ModelCheckpoint]:
    """Two checkpoints: `best.ckpt` (highest val_score, what gets saved) and `last.ckpt`, written only
    at epoch ends so that resuming never starts mid-epoch. The logger is attached once the stage's
    MLflow run exists (rank 0 only); the Trainer comes first because it knows this process's rank."""
    checkpoint = ModelCheckpoint(
        dirpath=folder, filename="best", monitor="val_score", mode="max", save_top_k=1, enable_version_counter=False
    )
    # `save_last` alone no longer writes (Lightning >= 2.6 saves "last" only beside a top-k save), so the
    # resume point is an unmonitored top-1 checkpoint named "last", replaced at every epoch end.
    epoch_end = ModelCheckpoint(
        dirpath=folder,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=LIGHTNING_PRECISION[precision.name],
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        callbacks=[EarlyStopping(monitor="val_score", mode="max", patience=config.patience), checkpoint, epoch_end],
        logger=False,
        deterministic=True,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # every step's loss reaches MLflow, however short the run
    )
    return trainer, checkpoint


def lightning_logger(run: StageRun):
    """Lightning's MLFlowLogger writing into the stage's own run, under the same policy as the run's calls.

    Without the guard, a tracking server that goes away mid-training would raise inside
    `trainer.fit` and cost the user the model; with it, that is one warning (or, if
    strict, the failure asked for). False (no logger) when the run is not tracked.
    """
    if run.run_id is None:
        return False
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_only

    class GuardedMLFlowLogger(MLFlowLogger):
        @rank_zero_only
        def log_hyperparams(self, params) -> None:
            run.guarded("log_hyperparams", super().log_hyperparams, params)

        @rank_zero_only
        def log_metrics(self, metrics, step=None) -> None:
            run.guarded("log_metrics", super().log_metrics, metrics, step)

        @rank_zero_only
        def finalize(self, status: str = "success") -> None:
            run.guarded("finalize", super().finalize, status)

    logger = GuardedMLFlowLogger(
        experiment_name=run.config.experiment, tracking_uri=run.uri, run_id=run.run_id, log_model=False
    )
    # Lightning's first access sets MLflow's global URI, and the variable
    with kept_environment("MLFLOW_TRACKING_URI"):
        run.guarded("attach_logger", lambda: logger.experiment)
    return logger
