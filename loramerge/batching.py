"""Tokenise once, pad per batch: the cheapest way to feed short texts to an encoder on a CPU.

Evaluation batches are sorted by length so that padding, which is wasted compute, stays
small; every batch carries the rows' original indices so predictions can be put back
in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
            batch["labels"] = torch.tensor([i["labels"] for i in items])
        return batch

    def sorted_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of similar length, for inference."""
        order = sorted(range(len(self)), key=lambda i: len(self.input_ids[i]))
        for start in range(0, len(order), batch_size):
            yield self.collate([self[i] for i in order[start : start + batch_size]])
