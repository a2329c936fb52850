"""KnOTS-DARE-TIES: DARE's seeded drop on the members' KnOTS representations, then TIES.

As in the reference, the random drop acts on the representations diag(s)·V_i (not on the
dense updates), followed by the top-k trim (`density`, default 1: none), sign election and
disjoint mean, times λ. With p = 0 it equals KnOTS-TIES. Low-rank: factors returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import DareTiesConfig, expect
from loramerge.merging._knots import knots_merge
from loramerge.merging._ops import dare_ties_pipeline
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class KnotsDareTies(MergeMethod):
    name = "knots_dare_ties"
    Config = DareTiesConfig
    search_order = ("scaling", "density", "drop_prob")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, DareTiesConfig)
        return knots_merge(updates, lambda representations: dare_ties_pipeline(representations, p))
