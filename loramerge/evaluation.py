"""Scoring a (possibly patched) encoder with task heads on prepared splits; shared by merge and evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from loramerge import paths
from loramerge.batching import TokenizedTexts
from loramerge.data import load_split, stratified_subsample
from loramerge.lora import deltas_of, load_updates
from loramerge.metrics import classification_metrics
from loramerge.model import ClassificationHead, predict
from loramerge.paths import DENSE_FILE


@dataclass
class TaskSplit:
    """A task's split tokenised once, with its gold label ids, ready to score many models."""

    task: str
    texts: TokenizedTexts
    labels: np.ndarray


def load_task_split(
    task: str, split: str, tokenizer: PreTrainedTokenizerBase, max_length: int, limit: int | None = None, seed: int = 0
) -> TaskSplit:
    frame = stratified_subsample(load_split(task, split), limit, seed)
    texts = TokenizedTexts(tokenizer, frame["text"].tolist(), None, max_length)
    return TaskSplit(task, texts, frame["label_id"].to_numpy())


def load_head(task: str, adapters_root: Path = paths.ADAPTERS) -> ClassificationHead:
    return ClassificationHead.load(adapters_root / task)


def score(
    encoder, head: ClassificationHead, data: TaskSplit, batch_size: int, pooling: str
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and predicted label ids of one head on one task's split."""
    predicted = predict(encoder, {data.task: head}, data.texts.sorted_batches(batch_size), pooling)[data.task]
    return classification_metrics(data.labels, predicted), predicted


def merged_deltas(encoder, folder: Path) -> dict[str, torch.Tensor]:
    """A merged model's updates, read back from what the merge stage saved (PEFT adapter or dense)."""
    if (folder / DENSE_FILE).exists():
        return load_file(str(folder / DENSE_FILE))
    (update,) = load_updates(encoder, {folder.name: folder})
    return deltas_of(update)
