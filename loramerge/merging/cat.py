"""Concatenation: the exact sum Σ_i ΔW_i as one adapter of rank Σ r_i (PEFT's `cat` with weights 1).

Numerically the same as task arithmetic with λ = 1; kept as its own name because it is the
lossless reference every other merge can be compared with, and PEFT users know it as `cat`.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import EmptyConfig, expect
from loramerge.merging._ops import weighted_low_rank_sum
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class Cat(MergeMethod):
    name = "cat"
    Config = EmptyConfig

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        expect(config, EmptyConfig)
        return weighted_low_rank_sum(updates, [1.0] * len(updates))
