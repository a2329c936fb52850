"""TIES-merging (Yadav et al.): trim, elect sign, disjoint mean — on the dense updates.

Summing updates lets small, noisy entries and entries of opposite sign cancel what the
members learned. TIES keeps each member's top `density` entries by magnitude (per layer, or
one threshold over the member's whole update with `prune_scope="model"`, the paper's
choice and the default), elects a sign per entry, and averages only the surviving entries
that agree with it; the result is scaled by λ. Sparse and dense, so no factors.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._ops import dense_tasks, ties_pipeline
from loramerge.merging._params import TiesParams, expect
from loramerge.merging.base import MergeMethod, MergeParams, MergeResult, TaskUpdate
from loramerge.merging.registry import register


@register
class Ties(MergeMethod):
    name = "ties"
    Params = TiesParams
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], params: MergeParams) -> MergeResult:
        return MergeResult(deltas=ties_pipeline(dense_tasks(updates), expect(params, TiesParams)))
