"""Magnitude pruning then task arithmetic: ΔW = λ·Σ_i prune(ΔW_i, density).

TIES without sign election and disjoint mean: isolates how much of TIES' effect comes from
trimming alone (PEFT's `magnitude_prune_svd` without the SVD). Dense, so no factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._ops import dense_tasks, prune_tasks, scaled_sum
from loramerge.merging._params import MagnitudeParams, expect
from loramerge.merging.base import MergeMethod, MergeParams, MergeResult, TaskUpdate
from loramerge.merging.registry import register


@register
class MagnitudePrune(MergeMethod):
    name = "magnitude_prune"
    Params = MagnitudeParams
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], params: MergeParams) -> MergeResult:
        p = expect(params, MagnitudeParams)
        tasks = prune_tasks(dense_tasks(updates), p.density, p.prune_scope)
        return MergeResult(deltas=scaled_sum(tasks, p.scaling))
