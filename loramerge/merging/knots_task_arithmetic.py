"""KnOTS-TA: task arithmetic on the members' KnOTS representations, λ·U·Σ_i R_i.

Since U·R_i = ΔW_i exactly, this equals plain task arithmetic (up to the dropped numerical
zeros); it exists as the KnOTS baseline and as a check that the decomposition is lossless.
The result is U (O × k) times the merged representation: low-rank, with factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._knots import knots_merge
from loramerge.merging._ops import scaled_sum
from loramerge.merging._params import ScalingParams, expect
from loramerge.merging.base import MergeMethod, MergeParams, MergeResult, TaskUpdate
from loramerge.merging.registry import register


@register
class KnotsTaskArithmetic(MergeMethod):
    name = "knots_task_arithmetic"
    Params = ScalingParams
    search_order = ("scaling",)

    def merge(self, updates: Sequence[TaskUpdate], params: MergeParams) -> MergeResult:
        scaling = expect(params, ScalingParams).scaling
        return knots_merge(updates, lambda representations: scaled_sum(representations, scaling))
