"""DARE (Yu et al., "Language models are Super Mario") then task arithmetic.

Each member's update loses a random fraction `drop_prob` of its entries and the rest are
rescaled by 1/(1-p), which keeps the update's expectation while making members' updates
collide less; then ΔW = λ·Σ_i ΔW_i'. The drop is seeded per (seed, member, layer), so a seed
gives one repeatable merge. With p = 0 nothing is dropped and this is task arithmetic,
returned by the same code (low-rank factors included); otherwise the result is dense.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._ops import dense_tasks, drop_tasks, scaled_sum, weighted_low_rank_sum
from loramerge.merging._params import DareParams, expect
from loramerge.merging.base import MergeMethod, MergeParams, MergeResult, TaskUpdate
from loramerge.merging.registry import register


@register
class DareTaskArithmetic(MergeMethod):
    name = "dare_task_arithmetic"
    Params = DareParams
    search_order = ("scaling", "drop_prob")

    def merge(self, updates: Sequence[TaskUpdate], params: MergeParams) -> MergeResult:
        p = expect(params, DareParams)
        if p.drop_prob == 0:
            return weighted_low_rank_sum(updates, [p.scaling] * len(updates))
        tasks = drop_tasks(dense_tasks(updates), p.drop_prob, p.seed)
        return MergeResult(deltas=scaled_sum(tasks, p.scaling))
