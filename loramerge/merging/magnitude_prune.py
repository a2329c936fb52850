"""Magnitude pruning then task arithmetic: ΔW = λ·Σ_i prune(ΔW_i, density).

TIES without sign election and disjoint mean: isolates how much of TIES' effect comes from
trimming alone (PEFT's `magnitude_prune_svd` without the SVD). Dense in the full space (no
factors); low-rank in "knots" and "core", where it prunes the members' representations.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import MagnitudeConfig, expect
from loramerge.merging._ops import prune_members, scaled_sum
from loramerge.merging._spaces import merge_in_space
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class MagnitudePrune(MergeMethod):
    name = "magnitude_prune"
    Config = MagnitudeConfig
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        return merge_in_space(
            updates, p.space, lambda members: scaled_sum(prune_members(members, p.density, p.prune_scope), p.scaling)
        )
