"""DARE (Yu et al., "Language models are Super Mario") then task arithmetic.

Each member's update loses a random fraction `drop_prob` of its entries and the rest are
rescaled by 1/(1-p), which keeps the update's expectation while making members' updates
collide less; then ΔW = λ·Σ_i ΔW_i'. The drop is seeded per (seed, member, layer), so a seed
gives one repeatable merge. With p = 0 nothing is dropped and this is task arithmetic,
returned by the same code (low-rank factors included); otherwise the result is dense in the
full space and low-rank in "knots" and "core" (the drop then acts on the representations).
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import DareConfig, expect
from loramerge.merging._ops import drop_members, scaled_sum, weighted_low_rank_sum
from loramerge.merging._spaces import merge_in_space
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class DareTaskArithmetic(MergeMethod):
    name = "dare_task_arithmetic"
    Config = DareConfig
    search_order = ("scaling", "drop_prob")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        if p.drop_prob == 0 and p.space == "full":
            return weighted_low_rank_sum(updates, [p.scaling] * len(updates))
        return merge_in_space(
            updates, p.space, lambda members: scaled_sum(drop_members(members, p.drop_prob, p.seed), p.scaling)
        )
