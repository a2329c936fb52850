"""TSV-M (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging", CVPR 2025).

Each task's update is compressed to its top singular directions; the tasks' directions are then
put side by side and whitened (replaced by the nearest orthonormal set, the polar factor), which
removes the overlap between tasks that makes a plain sum interfere. Per layer, T tasks,
k = min(O, I), r = int(k·f) with f = `kept_fraction` (1/T when null, the authors' choice):

    ΔW_i = u_i·diag(s_i)·vh_i, keep the top r of each
    ΔW = λ·polar([u_1 … u_T])·diag([s_1 … s_T])·polar([vh_1; …; vh_T])

Semantics checked against the authors' code (github.com/AntoAndGar/task_singular_vectors,
`compute_and_sum_svd_mem_reduction`): singular values concatenated in task order (unsorted, not
rescaled), both sides whitened by the polar factor of the SVD. Deviations: SVDs in float64; r is at
least 1; a task keeps at most its own non-zero directions (`_spectral`): on a LoRA update in the "full" space
r = k/T exceeds its rank r_i, and the authors' code also keeps r − r_i null-space vectors with zero values,
arbitrary ones, which the whitening mixes into the others (a 1e-7 change of a factor then moves the result by
O(1)); in the "core" space (`core_tsv_m`, the Core Space paper's TSV) the same holds for members of unequal
ranks (ranks 4 and 8: a 12-direction core, r = 6 per task, two of the rank-4 task's directions are zeros). Where
every kept value is non-zero (full-rank task vectors; equal ranks in the core) the result is the authors'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from loramerge.merging._config import ScalingConfig, expect
from loramerge.merging._ops import MemberDeltas, significant
from loramerge.merging._spaces import merge_in_space
from loramerge.merging._spectral import per_layer, polar, svd64
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


class TsvConfig(ScalingConfig):
    """`kept_fraction`: share of min(O, I) directions kept per task; null = 1/T (the authors')."""

    kept_fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None


def tsv_layer(tasks: list[torch.Tensor], kept_fraction: float | None) -> torch.Tensor:
    fraction = kept_fraction if kept_fraction is not None else 1.0 / len(tasks)
    kept = max(1, int(min(tasks[0].shape) * fraction))
    svds = [svd64(task) for task in tasks]
    layer_scale = max(s.max() for _, s, _ in svds)  # the largest spectral norm, from the SVDs already made
    lefts, values, rights = [], [], []
    for u, s, vh in svds:
        own = min(kept, int(significant(s, layer_scale).sum()))  # never a direction of a zero singular value
        lefts.append(u[:, :own]), values.append(s[:own]), rights.append(vh[:own])
    if not sum(v.numel() for v in values):
        return torch.zeros_like(tasks[0], dtype=torch.float32)
    left, right = polar(torch.cat(lefts, dim=1)), polar(torch.cat(rights, dim=0))
    return ((left * torch.cat(values)) @ right).float()


def tsv_m(members: MemberDeltas, config: TsvConfig) -> dict:
    return per_layer(members, config.scaling, lambda tasks: tsv_layer(tasks, config.kept_fraction))


@register
class TsvM(MergeMethod):
    name = "tsv_m"
    Config = TsvConfig
    search_order = ("scaling", "kept_fraction")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        return merge_in_space(updates, p.space, lambda members: tsv_m(members, p))
