"""Iso-C (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
Subspaces", ICML 2025): the summed update with a flat singular spectrum, ΔW = λ·σ̄·U·Vh.

A task-arithmetic sum is dominated by its few largest singular directions, usually those of the
strongest task; giving every direction the same weight σ̄ (the mean singular value) lets the
weaker tasks' directions count as much. Per layer: Σ_i ΔW_i = U·diag(s)·Vh, then λ·mean(s)·U·Vh.

Semantics checked against the authors' code (github.com/danielm1405/iso-merging, `iso_c`): the
sum (not the mean) is decomposed, and the mean runs over all min(O, I) singular values, zeros
included. On a low-rank LoRA sum in the "full" space the authors' result spreads σ̄ over the sum's null space too
(arbitrary directions, full-rank result, changed by any rounding); here σ̄ multiplies only the sum's non-zero
directions (`_spectral`), the zeros still counting in the mean, so the result is unique, and the Core Space
version (`core_iso_c`, the mean over the Σ r_i values of the core) equals it up to the factor min(O, I)/Σ r_i
that λ's search absorbs. Deviations: SVDs in float64; only the adapted (LoRA) matrices are merged, so there are
no non-matrix parameters to average.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import ScalingConfig, expect
from loramerge.merging._ops import MemberDeltas
from loramerge.merging._spaces import merge_in_space
from loramerge.merging._spectral import isotropic, per_layer, scale
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


def iso_c(members: MemberDeltas, scaling: float) -> dict:
    return per_layer(members, scaling, lambda tasks: isotropic(sum(tasks), scale(tasks)))


@register
class IsoC(MergeMethod):
    name = "iso_c"
    Config = ScalingConfig
    search_order = ("scaling",)

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        return merge_in_space(updates, p.space, lambda members: iso_c(members, p.scaling))
