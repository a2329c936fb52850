"""Gram matrices of the adapted layers' inputs: the data statistics RegMean merges with.

For one task, the encoder runs with the task's own adapter merged in over the task's training
texts; a forward pre-hook on every adapted layer collects G = XᵀX/N, X being that layer's N input
vectors of real tokens (padding is masked out: it is not data, and its share would depend on how
texts were batched). Inputs of later layers are the adapted model's own, as RegMean prescribes.
Written per task under models/gram/<task>/ (stage `gram`), read by the merge stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from loramerge import paths
from loramerge.atomic import read_json, write_json
from loramerge.backbone import encode
from loramerge.lora import patched
from loramerge.settings import Strict
from loramerge.updates import TaskUpdate
from loramerge.weights import read_weights

GRAMS = Path("models/gram")
GRAM_FILE = "gram.safetensors"
RECORD_FILE = "gram.json"


def gram_dir(task: str, root: Path = GRAMS) -> Path:
    return root / task


class GramRecord(Strict):
    """What a task's Gram matrices were computed from (models/gram/<task>/gram.json)."""

    task: str
    split: str
    examples: int
    tokens: int
    layers: list[str]
    adapter_sha256: str
    backbone: str


def layer_input_grams(
    encoder: torch.nn.Module, layers: Sequence[str], batches: Iterable[dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], int]:
    """Per layer, XᵀX/N over the real positions of every batch (a text's tokens, every patch of an image), and N.
    Each batch's product is taken in float32 (a few thousand rows: relative error ~1e-6) and summed in float64."""
    modules = dict(encoder.named_modules())
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    mask: dict[str, torch.Tensor | None] = {}

    def hook(layer: str):
        def collect(_module, inputs):
            x = inputs[0]
            x = (x[mask["tokens"]] if mask["tokens"] is not None else x.reshape(-1, x.shape[-1])).float()
            product = (x.T @ x).double()  # one batch in float32 (2-4x faster), the running sum in float64
            sums[layer] = sums[layer] + product if layer in sums else product
            rows[layer] = rows.get(layer, 0) + x.shape[0]

        return collect

    handles = [modules[layer].register_forward_pre_hook(hook(layer)) for layer in layers]
    try:
        with torch.inference_mode():
            for batch in batches:
                mask["tokens"] = batch["attention_mask"].bool() if "attention_mask" in batch else None
                encode(encoder, batch)
    finally:
        for handle in handles:
            handle.remove()
    tokens = max(rows.values(), default=0)
    if tokens == 0:
        raise ValueError("no tokens to compute Gram matrices from: the split is empty")
    return {layer: (total / tokens).float() for layer, total in sums.items()}, tokens


def task_grams(
    encoder: torch.nn.Module, update: TaskUpdate, batches: Iterable[dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], int]:
    """The Gram matrices of `update`'s layers, in the encoder adapted by `update` itself."""
    deltas = {layer: update.delta(layer) for layer in update.layers}
    with patched(encoder, deltas):
        return layer_input_grams(encoder, update.layers, batches)


def save_grams(folder: Path, grams: dict[str, torch.Tensor], record: GramRecord) -> None:
    save_file({layer: gram.contiguous() for layer, gram in grams.items()}, str(folder / GRAM_FILE))
    write_json(folder / RECORD_FILE, record.model_dump())


def load_grams(task: str, adapter_digest: str, root: Path = GRAMS) -> dict[str, torch.Tensor]:
    """A task's Gram matrices. Missing, or computed from another version of the adapter than `adapter_digest`
    (its safetensors' SHA-256), they are an error naming the stage to rerun."""
    folder = gram_dir(task, root)
    rerun = f"run `dvc repro {paths.dvc_target(f'gram@{task}')}`"
    if not (folder / GRAM_FILE).exists():
        raise FileNotFoundError(f"no Gram matrices for task {task!r} at {folder}; {rerun}")
    record = GramRecord.model_validate(read_json(folder / RECORD_FILE))
    if record.adapter_sha256 != adapter_digest:
        raise ValueError(f"{folder} was computed from another version of the {task!r} adapter; {rerun}")
    return read_weights(folder / GRAM_FILE, rerun)
