"""Iso-CTS (Marczak et al., ICML 2025): Iso-C's common subspace plus each task's own directions, flattened.

Iso-C keeps only the directions of the sum, where a task whose update points elsewhere is drowned
out. Iso-CTS keeps the top c = `common_fraction` of the sum's singular directions (the common
subspace) and fills the remaining k − c slots (k = min(O, I)) with each task's top directions
*outside* it; both sides are whitened (orthogonal polar factor) and the spectrum is flattened:

    c = int(k·f); n = round((k − c)/T); c = k − n·T           (T tasks, f = common_fraction)
    Σ_i ΔW_i = U·diag(s)·Vh; common = (U[:, :c], s[:c], Vh[:c])
    per task: (I − U_c·U_cᵀ)·ΔW_i = u_i·diag(s_i)·vh_i, keep its top n
    U = polar([u_1 … u_T, U_c]), Vh = polar([vh_1; …; vh_T; Vh_c]), ΔW = λ·mean([s_1 … s_T, s_c])·U·Vh

Semantics checked against the authors' code (github.com/danielm1405/iso-merging, `iso_cts`, default
common_space_fraction 0.8): the residual is projected on the left only; the flat value is the mean of
the common values of the sum and the kept residual values of the tasks. Deviations: SVDs in float64;
when rounding would make n·T exceed k (possible only for tiny k), n = ⌊k/T⌋ so that c ≥ 0; only directions with
a non-zero value are kept (`_spectral`), the zeros still count in the mean: on LoRA updates in the "full"
space (k = min(O, I), the sum's rank Σ r_i ≪ c) the authors' code fills the common subspace with arbitrary
null-space directions and the result changes with the last bits of the factors; this one is the flattened sum
on its range. In the "core" space (`core_iso_cts`) k = Σ r_i, so c and n count the core's meaningful directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from loramerge.merging._config import ScalingConfig, expect
from loramerge.merging._ops import MemberDeltas, significant
from loramerge.merging._spaces import merge_in_space
from loramerge.merging._spectral import per_layer, polar, scale, svd64
from loramerge.merging.base import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import register


class IsoCtsConfig(ScalingConfig):
    """`common_fraction`: share of the min(O, I) directions given to the common subspace (the authors' 0.8)."""

    common_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8


def subspace_sizes(k: int, tasks: int, common_fraction: float) -> tuple[int, int]:
    """(c, n): directions of the common subspace and per task, with c + n·T = k."""
    per_task = round((k - int(k * common_fraction)) / tasks)
    if per_task * tasks > k:
        per_task = k // tasks
    return k - per_task * tasks, per_task


def iso_cts_layer(tasks: list[torch.Tensor], common_fraction: float) -> torch.Tensor:
    common, per_task = subspace_sizes(min(tasks[0].shape), len(tasks), common_fraction)
    total = sum(tasks)
    u, s, vh = svd64(total)
    layer_scale = torch.maximum(scale(tasks), s.max())  # the sum's own SVD gives its norm
    shared = min(common, int(significant(s, layer_scale).sum()))  # never a direction of a zero singular value
    u_c = u[:, :shared]
    lefts, values, rights = [], [s[:common]], []
    for task in tasks:
        residual = task.double() - u_c @ (u_c.T @ task.double())
        u_t, s_t, vh_t = svd64(residual)
        own = min(per_task, int(significant(s_t, layer_scale).sum()))
        lefts.append(u_t[:, :own]), values.append(s_t[:per_task]), rights.append(vh_t[:own])
    left = polar(torch.cat([*lefts, u_c], dim=1))
    right = polar(torch.cat([*rights, vh[:shared]], dim=0))
    return (torch.cat(values).mean() * (left @ right)).float()


def iso_cts(members: MemberDeltas, config: IsoCtsConfig) -> dict:
    return per_layer(members, config.scaling, lambda tasks: iso_cts_layer(tasks, config.common_fraction))


@register
class IsoCts(MergeMethod):
    name = "iso_cts"
    Config = IsoCtsConfig
    search_order = ("scaling", "common_fraction")

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, self.Config)
        return merge_in_space(updates, p.space, lambda members: iso_cts(members, p))
