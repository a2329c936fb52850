"""Magnitude pruning then task arithmetic: ΔW = λ·Σ_i prune(ΔW_i, density).

TIES without sign election and disjoint mean: isolates how much of TIES' effect comes from
trimming alone (PEFT's `magnitude_prune_svd` without the SVD). Dense, so no factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import MagnitudeConfig, expect
from loramerge.merging._ops import dense_members, prune_members, scaled_sum
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class MagnitudePrune(MergeMethod):
    name = "magnitude_prune"
    Config = MagnitudeConfig
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, MagnitudeConfig)
        members = prune_members(dense_members(updates), p.density, p.prune_scope)
        return MergeResult(deltas=scaled_sum(members, p.scaling))
