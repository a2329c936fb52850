"""DARE-TIES: DARE's seeded random drop and rescale on each member's update, then TIES.

DARE thins the updates at random (keeping their expectation), TIES then trims by magnitude
(`density`, 1 by default: no trim, as in the tuned KnOTS DARE-TIES setting), elects signs
and averages agreeing entries, times λ. With p = 0 it is exactly TIES. Dense in the full space;
in "knots" (KnOTS-DARE-TIES: the drop acts on the representations diag(s)·V_i, as in the KnOTS
reference) and "core" low-rank, with factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import DareTiesConfig, expect
from loramerge.merging._ops import dare_ties_pipeline
from loramerge.merging._spaces import merge_in_space
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class DareTies(MergeMethod):
    name = "dare_ties"
    Config = DareTiesConfig
    search_order = ("scaling", "density", "drop_prob")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        return merge_in_space(updates, p.space, lambda members: dare_ties_pipeline(members, p))
