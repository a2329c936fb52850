"""RegMean (Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023), on LoRA updates.

Per linear layer, the merged weight is the one whose outputs are closest, in least squares, to
every member's own outputs on that member's inputs: min_W Σ_i ‖X_i·Wᵀ − X_i·W_iᵀ‖², solved by
Wᵀ = (Σ_i G_i)⁻¹·Σ_i G_i·W_iᵀ with G_i = X_iᵀX_i. The members share the pretrained W₀, and the
solution is linear in the W_i, so it applies to the updates exactly:

    ΔW = λ·Σ_i ΔW_i·G̃_i·(Σ_j G̃_j)⁻¹,   G̃ = α·G + (1 − α)·diag(G)   (α = `off_diagonal`)

Shrinking the off-diagonal Gram entries (α < 1) pulls the solution toward a per-input-feature
weighted mean; with identity (or equal) Grams it is the plain mean. Since ΔW_i = B_i·A_i, the
result is exactly low-rank: B = [λ·B_1 … λ·B_n], A = [A_1·G̃_1·(ΣG̃)⁻¹; …] (rank Σ r_i), a PEFT adapter.

Data: each member's Gram matrices over its own training texts, in its own adapted model (stage
`gram`); no labels, no validation or test data. Deviations from the reference
(github.com/bloomberg/dataless-model-merging): only the adapted (LoRA) layers are merged, since
every other weight is the shared pretrained one; G is averaged over the non-padding tokens (the
reference sums over examples), so members with more or longer texts do not weigh more; `scaling`
λ (1 = the paper's RegMean) is added so the search can scale the solution like task arithmetic's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from loramerge.merging._config import Scaling, expect
from loramerge.merging._ops import check_updates, factors32, low_rank_result
from loramerge.merging.base import MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.observed import DataAwareMethod, observed
from loramerge.merging.registry import register


class RegMeanConfig(MethodConfig):
    """`off_diagonal`: α, the factor on the Gram matrices' off-diagonal entries; `scaling`: λ on the result."""

    off_diagonal: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    scaling: Scaling = 1.0


def shrink(gram: torch.Tensor, off_diagonal: float) -> torch.Tensor:
    """α·G + (1 − α)·diag(G), in float64."""
    gram = gram.double()
    return off_diagonal * gram + (1.0 - off_diagonal) * torch.diag(torch.diagonal(gram))


@register
class RegMean(DataAwareMethod):
    name = "regmean"
    Config = RegMeanConfig
    search_order = ("scaling", "off_diagonal")
    needs = "grams"
    data = "each member's layer-input Gram matrices over its training texts (no labels)"

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        members = observed(updates, self)
        factors = {}
        for layer in check_updates(members):
            grams = [shrink(member.grams[layer], p.off_diagonal) for member in members]
            total = sum(grams)
            pairs = [factors32(member, layer) for member in members]
            # A_i·G̃_i·(ΣG̃)⁻¹ = ((ΣG̃)⁻¹·G̃_i·A_iᵀ)ᵀ, both Grams symmetric: a solve, never an inverse
            a = torch.cat([torch.linalg.solve(total, g @ a_i.double().T).T for g, (_, a_i) in zip(grams, pairs)])
            b = torch.cat([p.scaling * b_i for b_i, _ in pairs], dim=1)
            factors[layer] = (b, a.float())
        return low_rank_result(factors)
