"""KnOTS-TIES: TIES on the members' representations in the shared SVD basis (the paper's best method).

In the shared basis the members' updates are aligned, so TIES' trim and sign election act on
comparable coordinates instead of on raw weights. As in the reference, the top-k trim is one
threshold over each member's whole representation (all layers) by default
(`prune_scope="model"`), sign election sums values, the mean is over agreeing non-zeros,
and one λ scales the result. Low-rank (U times the merged representation): factors returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from loramerge.merging._config import TiesConfig, expect
from loramerge.merging._knots import knots_merge
from loramerge.merging._ops import ties_pipeline
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


@register
class KnotsTies(MergeMethod):
    name = "knots_ties"
    Config = TiesConfig
    search_order = ("scaling", "density")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, TiesConfig)
        return knots_merge(updates, lambda representations: ties_pipeline(representations, p))
