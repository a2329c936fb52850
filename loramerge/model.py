"""A text classifier = a (LoRA-wrapped or patched) encoder + a task's own head.

Heads are never merged: a merged model is one shared encoder feeding each task's head,
so the head lives outside the PEFT adapter and is saved on its own. A head reads either the
pooled sentence vector (sentence classification) or every token's hidden state (token
classification, one tag per word piece); the head file says which, so a merged encoder can feed
both kinds in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from loramerge.backbone import encode, pool
from loramerge.batching import TokenizedTexts
from loramerge.weights import check_weights

HEAD_FILE = "head.safetensors"


class ClassificationHead(nn.Module):
    """Dropout and a linear layer: on the pooled vector, or (`per_token`) on every token's hidden state."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, per_token: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_labels)
        self.per_token = per_token

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(inputs))

    def read(self, hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """Logits from the encoder's last hidden states: one row per text, or one per token when `per_token`."""
        return self(hidden if self.per_token else pool(hidden, attention_mask, pooling))

    def save(self, folder: Path) -> None:
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(folder) / HEAD_FILE), metadata={"per_token": str(self.per_token).lower()})

    @classmethod
    def load(cls, folder: Path) -> ClassificationHead:
        path = str(check_weights(Path(folder) / HEAD_FILE))
        with safe_open(path, framework="pt") as handle:
            per_token = (handle.metadata() or {}).get("per_token") == "true"
        state = load_file(path)
        num_labels, hidden = state["linear.weight"].shape
        head = cls(hidden, num_labels, dropout=0.0, per_token=per_token)
        head.load_state_dict(state)
        return head.eval()


class Classifier(nn.Module):
    """Encoder -> pooled sentence vector (or every token's state) -> logits."""

    def __init__(self, encoder: nn.Module, head: ClassificationHead, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.logits({"input_ids": input_ids, "attention_mask": attention_mask})

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A batch of texts (or images) through encoder and head, or of cached pooled features through the head alone."""
        if "features" in batch:
            return self.head(batch["features"])
        hidden, mask = encode(self.encoder, batch)
        return self.head.read(hidden, mask, self.pooling)


@torch.inference_mode()
def pooled_features(encoder: nn.Module, texts: TokenizedTexts, batch_size: int, pooling: str) -> torch.Tensor:
    """The encoder's pooled float32 vector of every text, rows in input order, in eval mode (no dropout)."""
    encoder.eval()
    rows = torch.empty(len(texts), encoder.config.hidden_size)
    for batch in texts.sorted_batches(batch_size):
        hidden, mask = encode(encoder, batch)
        rows[batch["index"]] = pool(hidden, mask, pooling).float()
    return rows


@torch.inference_mode()
def head_outputs(
    encoder: nn.Module,
    heads: Mapping[str, ClassificationHead],
    batches: Iterable[dict[str, torch.Tensor]],
    pooling: str,
    output: Callable[[torch.Tensor], torch.Tensor],
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """`output(logits)` of every head, rows in input order, from one encoder pass per batch (the point of merging).

    A per-token head's row is an array over the text's tokens (padding cut off), in an object array.
    Heads run in float32 whatever the encoder's precision; `progress(n)` is told each batch's size.
    """
    encoder.eval()
    chunks: dict[str, list[np.ndarray]] = {task: [] for task in heads}
    order: list[np.ndarray] = []
    for batch in batches:
        hidden, mask = encode(encoder, batch)
        pooled = pool(hidden, mask, pooling).float()
        order.append(batch["index"].numpy())
        for task, head in heads.items():
            found = output(head(hidden.float() if head.per_token else pooled).float()).numpy()  # bf16 under autocast
            chunks[task].append(per_text(found, mask) if head.per_token else found)
        if progress is not None:
            progress(len(batch["index"]))
    if not order:
        return {}  # no inputs: the callers give each task its empty array of the right shape
    positions = np.argsort(np.concatenate(order))
    return {task: np.concatenate(c)[positions] for task, c in chunks.items()}


def per_text(rows: np.ndarray, attention_mask: torch.Tensor) -> np.ndarray:
    """A batch of per-token outputs as an object array of one array per text, without its padding."""
    lengths = attention_mask.sum(-1).tolist()
    texts = np.empty(len(lengths), dtype=object)
    for i, n in enumerate(lengths):
        texts[i] = rows[i, :n]
    return texts


def predict(
    encoder: nn.Module,
    heads: Mapping[str, ClassificationHead],
    batches: Iterable[dict[str, torch.Tensor]],
    pooling: str,
) -> dict[str, np.ndarray]:
    """Predicted label ids for every head, from one encoder pass per batch."""
    found = head_outputs(encoder, heads, batches, pooling, lambda logits: logits.argmax(-1))
    return {task: found.get(task, np.array([], dtype=int)) for task in heads}
