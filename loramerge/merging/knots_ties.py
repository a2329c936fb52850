"""KnOTS-TIES: TIES on the members' representations in the shared SVD basis (the paper's best method).

In the shared basis the members' updates are aligned, so TIES' trim and sign election act on
comparable coordinates instead of on raw weights. As in the reference, the top-k trim is one
threshold over each member's whole representation (all layers) by default
(`prune_scope="model"`), sign election sums values, the mean is over agreeing non-zeros,
and one λ scales the result. Low-rank (U times the merged representation): factors returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._knots import knots_merge
from loramerge.merging._ops import ties_pipeline
from loramerge.merging._params import TiesParams, expect
from loramerge.merging.base import MergeMethod, MergeParams, MergeResult, TaskUpdate
from loramerge.merging.registry import register


@register
class KnotsTies(MergeMethod):
    name = "knots_ties"
    Params = TiesParams
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], params: MergeParams) -> MergeResult:
        p = expect(params, TiesParams)
        return knots_merge(updates, lambda representations: ties_pipeline(representations, p))
