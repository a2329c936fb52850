"""TIES-merging (Yadav et al.): trim, elect sign, disjoint mean — on the dense updates.

Summing updates lets small, noisy entries and entries of opposite sign cancel what the
members learned. TIES keeps each member's top `density` entries by magnitude (per layer, or
one threshold over the member's whole update with `prune_scope="model"`, the paper's
choice and the default), elects a sign per entry, and averages only the surviving entries
that agree with it; the result is scaled by λ. Dense in the full space (no factors); in
"knots" (KnOTS-TIES, the KnOTS paper's best method) and "core" it acts on the members'
aligned representations and the result is low-rank.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import TiesConfig, expect
from loramerge.merging._ops import ties_pipeline
from loramerge.merging._spaces import merge_in_space
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class Ties(MergeMethod):
    name = "ties"
    Config = TiesConfig
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        return merge_in_space(updates, p.space, lambda members: ties_pipeline(members, p))
