"""KnOTS-TA: task arithmetic on the members' KnOTS representations, λ·U·Σ_i R_i.

Since U·R_i = ΔW_i exactly, this equals plain task arithmetic (up to the dropped numerical
zeros); it exists as the KnOTS baseline and as a check that the decomposition is lossless.
The result is U (O × k) times the merged representation: low-rank, with factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import ScalingConfig, expect
from loramerge.merging._knots import knots_merge
from loramerge.merging._ops import scaled_sum
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class KnotsTaskArithmetic(MergeMethod):
    name = "knots_task_arithmetic"
    Config = ScalingConfig
    search_order = ("scaling",)

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        scaling = expect(config, ScalingConfig).scaling
        return knots_merge(updates, lambda representations: scaled_sum(representations, scaling))
