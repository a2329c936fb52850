"""Tokenise once, pad per batch: the cheapest way to feed short texts to an encoder on a CPU.

Evaluation batches are sorted by length so that padding, which is wasted compute, stays
small; every batch carries the rows' original indices so predictions can be put back
in order.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Union

import torch
from transformers import PreTrainedTokenizerBase


class TokenizedTexts(torch.utils.data.Dataset):
    """Token ids of each text (no padding), and its label id when known."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], labels: Sequence[int] | None, max_length: int
    ) -> None:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = list(labels) if labels is not None else None
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        """Tokens per text: what the training sampler groups batches by."""
        return [len(ids) for ids in self.input_ids]

    def __getitem__(self, index: int) -> dict:
        item = {"input_ids": self.input_ids[index], "index": index}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest text of this batch only."""
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
            mask[row, : len(item["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "index": torch.tensor([i["index"] for i in items])}
        if self.labels is not None:
            batch["labels"] = self.label_tensor(items, width)
        return batch

    def label_tensor(self, items: list[dict], width: int) -> torch.Tensor:  # noqa: ARG002 - a tagger pads to it
        """One label id per text."""
        return torch.tensor([i["labels"] for i in items])

    def sorted_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of similar length, for inference."""
        order = sorted(range(len(self)), key=lambda i: len(self.input_ids[i]))
        for start in range(0, len(order), batch_size):
            yield self.collate([self[i] for i in order[start : start + batch_size]])


class InputOrder(torch.utils.data.Dataset):
    """Inputs of one size (pooled vectors, resized images): no padding to save, so batches keep input order."""

    def sorted_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.collate([self[i] for i in range(start, min(start + batch_size, len(self)))])


class CachedFeatures(InputOrder):
    """The frozen encoder's pooled vector of every text, computed once, standing in for the texts themselves.

    A head trained on a frozen encoder sees the same vector for a text at every epoch, so the encoder runs
    once per text instead of once per text and epoch. It keeps the texts' lengths, so the training sampler
    orders examples exactly as it orders the texts.
    """

    def __init__(self, features: torch.Tensor, texts: TokenizedTexts) -> None:
        self.features, self.labels, self.token_lengths = features, texts.labels, texts.lengths()

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> list[int]:
        return self.token_lengths

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[index], "labels": self.labels[index], "index": index}

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {
            "features": torch.stack([i["features"] for i in items]),
            "labels": torch.tensor([i["labels"] for i in items]),
            "index": torch.tensor([i["index"] for i in items]),
        }


Picture = Union[bytes, str, Path, "PIL.Image.Image"]  # noqa: F821 - PIL is imported only for image tasks
"""An image as the pipeline stores it (its file's bytes), as a user hands it over (a file path), or a PIL image."""


def rgb(picture: Picture):
    """A PIL RGB image from file bytes, a file path or a PIL image (the image processors expect RGB)."""
    from PIL import Image  # import cost only for image tasks

    if isinstance(picture, bytes):
        picture = Image.open(io.BytesIO(picture))
    elif isinstance(picture, (str, Path)):
        picture = Image.open(picture)
    return picture.convert("RGB")


class PixelImages(InputOrder):
    """Images (file bytes, paths or PIL images) and label ids; the backbone's image processor turns each batch into
    pixel values when the batch is drawn, so the decoded pixels of a whole split never sit in memory at once."""

    def __init__(self, processor, images: Sequence[Picture], labels: Sequence[int] | None) -> None:
        self.processor, self.images = processor, list(images)
        self.labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def lengths(self) -> list[int]:
        """Every image is as long as every other (the processor resizes them): nothing to group by."""
        return [1] * len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index], "index": index}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        pictures = [rgb(item["image"]) for item in items]
        batch = {
            "pixel_values": self.processor(images=pictures, return_tensors="pt")["pixel_values"],
            "index": torch.tensor([i["index"] for i in items]),
        }
        if self.labels is not None:
            batch["labels"] = torch.tensor([i["labels"] for i in items])
        return batch
