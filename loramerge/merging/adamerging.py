"""Layer-wise AdaMerging (Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024).

Task arithmetic uses one λ for every task and layer. AdaMerging learns one coefficient per task and
per layer, λ_{i,l} ∈ [0, 1], ΔW_l = Σ_i λ_{i,l}·ΔW_{i,l}, by minimising the summed prediction
entropy of each task's own head on that task's unlabeled texts (low entropy ≈ confident ≈ usually
right): a data-aware merge that needs no labels. Each step: every member's entropy on one batch of
its texts (`ObservedUpdate.entropy`), summed, one Adam step on the coefficients, clamped to [0, 1].
The result is an exact weighted low-rank sum: B = [λ_{1,l}·B_1 … λ_{n,l}·B_n], A = [A_1; …; A_n].

Semantics checked against the authors' code (github.com/EnnengYang/AdaMerging,
`main_layer_wise_adamerging.py`): coefficients per task and per parameter tensor, initialised to a
prior (0.3), clamped to [0, 1] in the forward pass, Adam (betas 0.9/0.999, no weight decay, lr 1e-3),
500 steps, per step each task's entropy on 2 batches of 16 unlabeled test inputs. Deviations: the
texts are the members' *validation* texts (the merge stage's search sample; never test), batches
are fixed and seeded (deterministic), the step count and learning rate are settings (a CPU budget
allows tens of steps, not 500, so params.yaml raises the learning rate), and only the adapted
(LoRA) matrices carry coefficients: every other weight is the shared pretrained one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from loramerge.merging._config import expect
from loramerge.merging._ops import check_updates, factors32, low_rank_result
from loramerge.merging.base import MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.observed import DataAwareMethod, observed
from loramerge.merging.registry import register

Coefficient = Annotated[float, Field(ge=0.0, le=1.0)]


class AdaMergingConfig(MethodConfig):
    """`initial`: every λ_{i,l} at the start (the authors' prior 0.3); `steps` and `learning_rate` of Adam;
    `batch_size`: unlabeled texts per member per step (the authors' 2 × 16)."""

    initial: Coefficient = 0.3
    steps: Annotated[int, Field(ge=0)] = 500
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    batch_size: Annotated[int, Field(gt=0)] = 32


def weighted_factors(factors: list[dict], coefficients: torch.Tensor, layers: list[str]) -> dict:
    """Per layer (B, A) with B·A = Σ_i λ_{i,l}·B_i·A_i exactly; differentiable in the coefficients."""
    return {
        layer: (
            torch.cat([coefficients[i, j] * member[layer][0] for i, member in enumerate(factors)], dim=1),
            torch.cat([member[layer][1] for member in factors], dim=0),
        )
        for j, layer in enumerate(layers)
    }


@register
class AdaMerging(DataAwareMethod):
    name = "adamerging"
    Config = AdaMergingConfig
    search_order = ("initial", "learning_rate", "steps", "batch_size")
    needs = "entropy"
    data = "each member's unlabeled validation texts (prediction entropy of its own head)"

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        members = observed(updates, self)
        layers = check_updates(members)
        factors = [{layer: factors32(member, layer) for layer in layers} for member in members]
        raw = torch.full((len(members), len(layers)), p.initial, requires_grad=True)
        optimizer = torch.optim.Adam([raw], lr=p.learning_rate, betas=(0.9, 0.999), weight_decay=0.0)
        for step in range(p.steps):
            weighted = weighted_factors(factors, raw.clamp(0.0, 1.0), layers)
            deltas = {layer: b @ a for layer, (b, a) in weighted.items()}
            loss = sum(member.entropy(deltas, step, p.batch_size) for member in members)
            (raw.grad,) = torch.autograd.grad(loss, [raw])
            optimizer.step()
        return low_rank_result(weighted_factors(factors, raw.detach().clamp(0.0, 1.0), layers))
