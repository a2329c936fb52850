"""Weighted sum: ΔW = Σ_i w_i·ΔW_i with one weight per member, in the members' order.

For when members deserve different weights (or a negative one, to subtract a task). Without
weights every member gets 1, i.e. the exact sum (as `cat`). Low-rank, so factors are returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from loramerge.merging._config import expect
from loramerge.merging._ops import weighted_low_rank_sum
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


class WeightedSumConfig(MethodConfig):
    """`weights`: one finite float per member, in the order the updates are given; None means all 1."""

    weights: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None


@register
class WeightedSum(MergeMethod):
    name = "weighted_sum"
    Config = WeightedSumConfig
    search_order = ("weights",)

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        weights = expect(config, WeightedSumConfig).weights
        return weighted_low_rank_sum(updates, [1.0] * len(updates) if weights is None else weights)
