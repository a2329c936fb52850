"""Task arithmetic (Ilharco et al.): ΔW = λ·Σ_i ΔW_i.

The sum of low-rank updates is itself low-rank (rank Σ r_i), so the result is returned as
exact factors too and can be saved as a PEFT adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import ScalingConfig, expect
from loramerge.merging._ops import weighted_low_rank_sum
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    Config = ScalingConfig
    search_order = ("scaling",)

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        scaling = expect(config, ScalingConfig).scaling
        return weighted_low_rank_sum(updates, [scaling] * len(updates))
