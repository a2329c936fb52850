"""AdaMerging's objective: how unsure a task's own head is on unlabeled texts, as a function of the encoder's updates.

`EntropyProbe(deltas, step, batch_size)` runs the encoder with W + ΔW in the given layers
(functionally: the module's weights are never touched, so the result is differentiable in ΔW) on
one batch of the task's texts and returns the mean Shannon entropy of its head's softmax. Labels
are never read. The texts are shuffled once, seeded, and step k reads the k-th batch_size texts of
that order (wrapping around), so a step always sees the same texts: the optimisation is
deterministic on CPU. Dropout is off (eval mode), as at inference.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.func import functional_call

from loramerge.batching import TokenizedTexts
from loramerge.model import ClassificationHead
from loramerge.tokens import TaggedWords


class EntropyProbe:
    def __init__(
        self,
        encoder: torch.nn.Module,
        head: ClassificationHead,
        texts: TokenizedTexts | TaggedWords,
        pooling: str,
        seed: int,
    ) -> None:
        self.encoder, self.head, self.texts, self.pooling = encoder.eval(), head.eval(), texts, pooling
        self.modules = dict(encoder.named_modules())
        self.order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
        self.batches: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def batch(self, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """Padded once per (position in the order, size): every search trial replays the same steps."""
        start = step * batch_size % len(self.order)
        if (start, batch_size) not in self.batches:
            rows = [self.texts[self.order[(start + k) % len(self.order)]] for k in range(batch_size)]
            self.batches[start, batch_size] = self.texts.collate(rows)
        return self.batches[start, batch_size]

    def __call__(self, deltas: Mapping[str, torch.Tensor], step: int, batch_size: int) -> torch.Tensor:
        batch = self.batch(step, batch_size)
        weights = {f"{layer}.weight": self.modules[layer].weight.detach() + delta for layer, delta in deltas.items()}
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values") if k in batch}
        hidden = functional_call(self.encoder, weights, args=(), kwargs=inputs, strict=False).last_hidden_state
        mask = batch.get("attention_mask", torch.ones(hidden.shape[:2], dtype=torch.long))  # an image: every patch
        log_p = self.head.read(hidden, mask, self.pooling).log_softmax(-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        if self.head.per_token:  # the mean over real tokens, padding left out
            real = mask.to(entropy.dtype)
            return (entropy * real).sum() / real.sum()
        return entropy.mean()
