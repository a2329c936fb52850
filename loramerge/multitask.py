"""The exported multi-task model: one encoder (merged update folded in) feeding every member task's head.

An export folder is a Hugging Face model folder (config.json, model.safetensors, tokenizer files,
README.md model card) plus what the k tasks need on top of the encoder: heads/<task>/ (the head's
safetensors and its label map), export.json (members, method, hyper-parameters, hashes), and for
exactly low-rank merges adapter/ (a PEFT adapter over the base encoder). Reading it needs no
pipeline outputs, so `loramerge predict`, the MLflow pyfunc and tests all load it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoModel, AutoTokenizer

from loramerge.batching import TokenizedTexts
from loramerge.model import ClassificationHead, head_outputs

EXPORT_MANIFEST = "export.json"
HEADS = "heads"
ADAPTER = "adapter"
LABELS_FILE = "labels.json"
PROBABILITY_SUFFIX = "_probability"


def fold(encoder: torch.nn.Module, deltas: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """W <- W + ΔW for good: what `lora.patched` does for the length of a block, kept for export."""
    modules = dict(encoder.named_modules())
    with torch.no_grad():
        for layer, delta in deltas.items():
            modules[layer].weight.add_(delta.to(modules[layer].weight.dtype))
    return encoder


def predict_probabilities(
    encoder: torch.nn.Module,
    heads: Mapping[str, ClassificationHead],
    batches: Iterable[dict[str, torch.Tensor]],
    pooling: str,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Each head's class probabilities (rows in input order) from one encoder pass per batch: `model.predict`'s
    computation keeping the softmax instead of only the argmax, so label ids agree with the evaluate stage's."""
    found = head_outputs(encoder, heads, batches, pooling, lambda logits: torch.softmax(logits, -1), progress)
    return {task: found.get(task, np.zeros((0, head.linear.out_features))) for task, head in heads.items()}


class MultiTaskModel:
    """A loaded export folder: classify texts for every member task at once."""

    def __init__(
        self,
        folder: Path,
        encoder,
        tokenizer,
        heads: dict[str, ClassificationHead],
        labels: dict[str, list[str]],
        manifest: dict,
    ) -> None:
        self.folder, self.encoder, self.tokenizer = Path(folder) if folder else None, encoder.eval(), tokenizer
        self.heads, self.labels, self.manifest = heads, labels, manifest
        self.pooling, self.max_length = manifest["pooling"], manifest["max_length"]

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    @classmethod
    def load(cls, folder: str | Path) -> MultiTaskModel:
        """Read an export folder; a missing or incomplete one is named with the command that makes it."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"model folder {folder} not found: run `dvc repro export@<combo>` (models/export/<combo>)"
                " or pass an MLflow model URI"
            )
        if not (folder / EXPORT_MANIFEST).exists():
            raise ValueError(
                f"{folder} is not an exported loramerge model (no {EXPORT_MANIFEST}):"
                " pass a models/export/<combo> folder"
            )
        manifest = json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))
        encoder = AutoModel.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        heads = {t: ClassificationHead.load(folder / HEADS / t) for t in manifest["members"]}
        labels = {
            t: json.loads((folder / HEADS / t / LABELS_FILE).read_text(encoding="utf-8"))["labels"]
            for t in manifest["members"]
        }
        return cls(folder, encoder, tokenizer, heads, labels, manifest)

    def probabilities(
        self, texts: Sequence[str], batch_size: int = 64, progress: Callable[[int], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Class probabilities per task, in input order (texts batched by length, one encoder pass each)."""
        inputs = TokenizedTexts(self.tokenizer, list(texts), None, self.max_length)
        return predict_probabilities(
            self.encoder, self.heads, inputs.sorted_batches(batch_size), self.pooling, progress
        )

    def predict_frame(
        self, texts: Sequence[str], batch_size: int = 64, progress: Callable[[int], None] | None = None
    ) -> pd.DataFrame:
        """One row per text: `<task>` (the label) and `<task>_probability` (its probability) for every task."""
        probabilities = self.probabilities(texts, batch_size, progress)
        columns: dict[str, list] = {}
        for task, p in probabilities.items():
            best = p.argmax(-1) if len(p) else np.array([], dtype=int)
            columns[task] = [self.labels[task][i] for i in best]
            columns[f"{task}{PROBABILITY_SUFFIX}"] = p[np.arange(len(best)), best].astype(float)
        return pd.DataFrame(columns)
