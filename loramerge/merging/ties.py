"""TIES-merging (Yadav et al.): trim, elect sign, disjoint mean — on the dense updates.

Summing updates lets small, noisy entries and entries of opposite sign cancel what the
members learned. TIES keeps each member's top `density` entries by magnitude (per layer, or
one threshold over the member's whole update with `prune_scope="model"`, the paper's
choice and the default), elects a sign per entry, and averages only the surviving entries
that agree with it; the result is scaled by λ. Sparse and dense, so no factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import TiesConfig, expect
from loramerge.merging._ops import dense_members, ties_pipeline
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class Ties(MergeMethod):
    name = "ties"
    Config = TiesConfig
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        return MergeResult(deltas=ties_pipeline(dense_members(updates), expect(config, TiesConfig)))
