"""Task arithmetic (Ilharco et al.): ΔW = λ·Σ_i ΔW_i.

The sum of low-rank updates is itself low-rank (rank Σ r_i), so the result is returned as
exact factors too and can be saved as a PEFT adapter. A sum is linear, so every space gives
the same update: in "knots" and "core" it is the check that those decompositions are lossless
(`knots_task_arithmetic` is the KnOTS paper's TA baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import ScalingConfig, expect
from loramerge.merging._ops import scaled_sum, weighted_low_rank_sum
from loramerge.merging._spaces import merge_in_space
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    Config = ScalingConfig
    search_order = ("scaling",)

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        if p.space == "full":
            return weighted_low_rank_sum(updates, [p.scaling] * len(updates))
        return merge_in_space(updates, p.space, lambda members: scaled_sum(members, p.scaling))
