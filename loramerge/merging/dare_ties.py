"""DARE-TIES: DARE's seeded random drop and rescale on each member's update, then TIES.

DARE thins the updates at random (keeping their expectation), TIES then trims by magnitude
(`density`, 1 by default: no trim, as in the tuned KnOTS DARE-TIES setting), elects signs
and averages agreeing entries, times λ. With p = 0 it is exactly TIES. Dense, so no factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import DareTiesConfig, expect
from loramerge.merging._ops import dare_ties_pipeline, dense_members
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class DareTies(MergeMethod):
    name = "dare_ties"
    Config = DareTiesConfig
    search_order = ("scaling", "density", "drop_prob")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        return MergeResult(deltas=dare_ties_pipeline(dense_members(updates), expect(config, DareTiesConfig)))
