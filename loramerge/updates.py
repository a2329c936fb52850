"""An adapter as merging and measuring see it: per layer the exact update ΔW = B·A, alpha/r folded into B.

Training writes adapters, merging combines them, similarity compares them: all three read this type, so it lives
at the bottom, below `loramerge.merging` (a stage that merges nothing does not depend on the merge methods).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LayerFactors = tuple[torch.Tensor, torch.Tensor]
"""(B, A) with B @ A equal to a layer's update; B is (out × r), A is (r × in)."""


@dataclass(frozen=True)
class TaskUpdate:
    """One adapter, reduced to what merging needs.

    `factors[layer] = (B·alpha/r, A)`, so `B @ A` is that layer's exact ΔW. Every
    member of a merge has the same layer names.
    """

    name: str
    factors: dict[str, LayerFactors]

    def delta(self, layer: str) -> torch.Tensor:
        b, a = self.factors[layer]
        return b @ a

    @property
    def layers(self) -> list[str]:
        return sorted(self.factors)
