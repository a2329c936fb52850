"""Where a merge function runs: on the full updates, in KnOTS' aligned space, or in Core Space.

A merge *function* (TA, TIES, DARE-TIES, Iso-C, TSV-M, …) maps the members' per-layer matrices to
one merged matrix per layer; the *space* (`Config.space`) decides which matrices those are:
- "full": each member's exact ΔW_i (O × I);
- "knots": KnOTS' representations R_i (k × I) in the shared left basis of [ΔW_1 … ΔW_n] (`_knots`);
- "core": Core Space's R × R cores between bases of the members' column and row spans (`_core`).
The merged matrix is mapped back to ΔW; from "knots" and "core" it is exactly low-rank, so the
result carries factors and saves as a PEFT adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from loramerge.merging._config import Space
from loramerge.merging._core import core_merge
from loramerge.merging._knots import knots_merge
from loramerge.merging._ops import MemberDeltas, dense_members
from loramerge.merging.base import MergeResult, TaskUpdate

MergeFunction = Callable[[MemberDeltas], dict[str, torch.Tensor]]


def merge_in_space(updates: Sequence[TaskUpdate], space: Space, function: MergeFunction) -> MergeResult:
    """Run `function` on the members' matrices in `space` and return the merged updates ΔW."""
    if space == "knots":
        return knots_merge(updates, function)
    if space == "core":
        return core_merge(updates, function)
    return MergeResult(deltas=function(dense_members(updates)))
