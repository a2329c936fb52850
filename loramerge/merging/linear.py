"""Linear merge: the plain mean of the members' updates, (1/n)·Σ_i ΔW_i.

Task arithmetic with λ = 1/n, kept as its own method because it is the usual baseline
("simple average") and needs no tuning. Unlike PEFT's `linear`, which averages the A and
B matrices separately (adding cross terms B_i·A_j), this averages the exact updates.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import EmptyConfig, expect
from loramerge.merging._ops import weighted_low_rank_sum
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class Linear(MergeMethod):
    name = "linear"
    Config = EmptyConfig

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        expect(config, EmptyConfig)
        return weighted_low_rank_sum(updates, [1.0 / len(updates)] * len(updates) if updates else [])
