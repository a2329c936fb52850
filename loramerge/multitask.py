"""The exported multi-task model: one encoder (merged update folded in) feeding every member task's head.

An export folder is a Hugging Face model folder (config.json, model.safetensors, the tokenizer's files
or, for an image encoder, the image processor's, README.md model card) plus what the k tasks need on
top of the encoder: heads/<task>/ (the head's safetensors and its label map), export.json (members,
method, hyper-parameters, hashes, what the model reads), and for exactly low-rank merges adapter/ (a
PEFT adapter over the base encoder). Reading it needs no pipeline outputs, so `loramerge predict`,
the MLflow pyfunc and tests all load it the same way.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoModel, AutoTokenizer

from loramerge.atomic import read_json, write_json
from loramerge.backbone import Backbone, quiet_loading
from loramerge.batching import Picture, PixelImages, TokenizedTexts
from loramerge.model import ClassificationHead, head_outputs
from loramerge.paths import dvc_target
from loramerge.tokens import TaggedWords, first_pieces
from loramerge.weights import check_weights

EXPORT_MANIFEST = "export.json"
HEADS = "heads"
ADAPTER = "adapter"
LABELS_FILE = "labels.json"
PROBABILITY_SUFFIX = "_probability"
CARD = "README.md"
UNHASHED = {CARD, EXPORT_MANIFEST}
"""Files left out of the content hash: they record when and how, not what the model computes."""


def fold(encoder: torch.nn.Module, deltas: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """W <- W + ΔW for good: what `lora.patched` does for the length of a block, kept for export."""
    modules = dict(encoder.named_modules())
    with torch.no_grad():
        for layer, delta in deltas.items():
            modules[layer].weight.add_(delta.to(modules[layer].weight.dtype))
    return encoder


def content_hash(folder: Path) -> str:
    """sha256 over every file that defines the model's outputs (names and bytes), in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in UNHASHED
    ):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write_model(
    out: Path,
    backbone: Backbone,
    deltas: Mapping[str, torch.Tensor],
    heads: Mapping[str, Path],
    adapter: Path | None,
    provenance: dict,
) -> dict:
    """Write an export folder (its card aside): the encoder with `deltas` folded in, its tokenizer or image
    processor, each task's head folder, the PEFT `adapter` when the merge is exactly low-rank, and export.json,
    `provenance` (what the model was made from) plus what reading it needs; returns export.json's content."""
    with quiet_loading(out):
        fold(backbone.encoder, deltas).save_pretrained(out, safe_serialization=True)
    backbone.tokenizer.save_pretrained(out)
    for task, folder in heads.items():
        shutil.copytree(folder, out / HEADS / task)
    if adapter is not None:
        (out / ADAPTER).mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(adapter / name, out / ADAPTER / name)
    manifest = {
        **provenance,
        "members": list(heads),
        "base_model": backbone.config.name,
        "input": backbone.input,
        "pooling": backbone.config.pooling,
        "max_length": backbone.config.max_length,
        "labels": {t: read_json(out / HEADS / t / LABELS_FILE)["labels"] for t in heads},
        "content_sha256": content_hash(out),
    }
    write_json(out / EXPORT_MANIFEST, manifest)
    return manifest


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
    return {
        task: found.get(task, np.empty(0, dtype=object) if head.per_token else np.zeros((0, head.linear.out_features)))
        for task, head in heads.items()
    }


class MultiTaskModel:
    """A loaded export folder: classify texts (or images) for every member task at once. `processor` is the
    tokenizer, or an image encoder's image processor."""

    def __init__(
        self,
        folder: Path,
        encoder,
        processor,
        heads: dict[str, ClassificationHead],
        labels: dict[str, list[str]],
        manifest: dict,
    ) -> None:
        self.folder, self.encoder, self.processor = Path(folder) if folder else None, encoder.eval(), processor
        self.heads, self.labels, self.manifest = heads, labels, manifest
        self.pooling, self.max_length = manifest["pooling"], manifest["max_length"]
        self.input = manifest.get("input", "text")
        """What the model reads, "text" or "image" (export.json's `input`; older exports read text): also the name of
        the input column of `loramerge predict`'s output and of the MLflow model's input."""

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    @classmethod
    def load(cls, folder: str | Path) -> MultiTaskModel:
        """Read an export folder; a missing or incomplete one is named with the command that makes it."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"model folder {folder} not found: run `dvc repro {dvc_target('export_<kind>@<combo>')}` (kind: pair, triple or many; models/export/<combo>)"
                " or pass an MLflow model URI"
            )
        if not (folder / EXPORT_MANIFEST).exists():
            raise ValueError(
                f"{folder} is not an exported loramerge model (no {EXPORT_MANIFEST}):"
                " pass a models/export/<combo> folder"
            )
        manifest = read_json(folder / EXPORT_MANIFEST)
        heads = {t: ClassificationHead.load(folder / HEADS / t) for t in manifest["members"]}
        labels = {t: read_json(folder / HEADS / t / LABELS_FILE)["labels"] for t in manifest["members"]}
        check_labels(folder, manifest, heads, labels)
        check_weights(folder / "model.safetensors", "export the model again")
        with quiet_loading(folder):
            encoder = AutoModel.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        if manifest.get("input") == "image":
            from transformers import AutoImageProcessor  # import cost: 1.5 s, paid only by image models

            processor = AutoImageProcessor.from_pretrained(folder)
        else:
            processor = AutoTokenizer.from_pretrained(folder)
        return cls(folder, encoder, processor, heads, labels, manifest)

    def inputs(self, examples: Sequence[str] | Sequence[Picture]) -> TokenizedTexts | TaggedWords | PixelImages:
        """The examples made into encoder inputs once for every head: texts tokenised (split into words at
        whitespace when a head tags words), or images (file bytes, paths or PIL images) processed per batch."""
        if self.input == "image":
            return PixelImages(self.processor, list(examples), None)
        if any(head.per_token for head in self.heads.values()):
            return TaggedWords(self.processor, [t.split() for t in examples], None, [], self.max_length)
        return TokenizedTexts(self.processor, list(examples), None, self.max_length)

    def probabilities(
        self,
        examples: Sequence[str] | Sequence[Picture],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Class probabilities per task, in input order (texts batched by length, one encoder pass each); a word
        tagger's row holds one distribution per word piece."""
        return self.read(self.inputs(examples), batch_size, progress)

    def read(self, inputs, batch_size: int, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        return predict_probabilities(
            self.encoder, self.heads, inputs.sorted_batches(batch_size), self.pooling, progress
        )

    def predict_frame(
        self,
        examples: Sequence[str] | Sequence[Picture],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> pd.DataFrame:
        """One row per text or image: `<task>` (the label) and `<task>_probability` (its probability) for every
        task. A word tagger's `<task>` is one BIO tag per whitespace-separated word, space-joined, and its
        probability the mean over the words of their tag's (each word read at its first piece)."""
        inputs = self.inputs(examples)
        columns: dict[str, list] = {}
        for task, p in self.read(inputs, batch_size, progress).items():
            labels = self.labels[task]
            if self.heads[task].per_token:
                tagged = [word_probabilities(row, w, n) for row, w, n in zip(p, inputs.word_ids, inputs.words)]
                columns[task] = [" ".join(labels[i] for i in row.argmax(-1)) for row in tagged]
                columns[f"{task}{PROBABILITY_SUFFIX}"] = [
                    float(row.max(-1).mean()) if len(row) else 1.0 for row in tagged
                ]
                continue
            best = p.argmax(-1) if len(p) else np.array([], dtype=int)
            columns[task] = [labels[i] for i in best]
            columns[f"{task}{PROBABILITY_SUFFIX}"] = p[np.arange(len(best)), best].astype(float)
        return pd.DataFrame(columns)


def check_labels(
    folder: Path, manifest: dict, heads: Mapping[str, ClassificationHead], labels: Mapping[str, list[str]]
) -> None:
    """Each head's label file against the labels the export recorded and the head's output size: a reordered, short
    or long label file would name every prediction wrongly."""
    for task, names in labels.items():
        path, recorded = folder / HEADS / task / LABELS_FILE, manifest.get("labels", {}).get(task)
        outputs = heads[task].linear.out_features
        if len(names) != outputs:
            raise ValueError(
                f"{path} lists {len(names)} labels but the head predicts {outputs}: export the model again"
            )
        if recorded is not None and names != recorded:
            raise ValueError(
                f"{path} lists the labels {names} but {folder / EXPORT_MANIFEST} recorded {recorded}: export the model again"
            )


def word_probabilities(pieces: np.ndarray, word_ids: Sequence[int | None], words: int) -> np.ndarray:
    """Per word, its first piece's class probabilities; a word cut off by truncation is certain of "O" (id 0)."""
    rows = np.zeros((words, pieces.shape[-1]))
    rows[:, 0] = 1.0
    for word, position in first_pieces(word_ids).items():
        rows[word] = pieces[position]
    return rows
