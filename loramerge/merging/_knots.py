"""KnOTS (Stoica et al., "Model merging with SVD to tie the KnOTS"): align LoRA updates in one shared basis, then merge.

Per layer the members' updates are put side by side, M = [ΔW_1 … ΔW_n] (O × n·I), and
decomposed once, M = U·diag(s)·Vh. U is shared by every member; member i is represented by
its block of the right factor, R_i = diag(s)·Vh[:, block i] (k × I), since ΔW_i = U·R_i.
A merge method (TA / TIES / DARE-TIES) then combines the R_i, and ΔW = U·merged — exactly
rank k, so the result comes with factors (B = U, A = merged).

Differences from the reference implementation (github.com/gstoica27/KnOTS), none of which
changes the decomposition:
- the SVD is computed from the LoRA factors (`_ops.low_rank_svd`: thin QRs of [B_1 … B_n] and
  of each A_i^T, then one float64 SVD of an R×R matrix, R = Σ r_i) instead of on the dense
  O × n·I matrix; it yields the same U, s, Vh, but in milliseconds per layer instead of seconds;
- singular values ≤ 1e-5 × the layer's largest are dropped (the reference uses an absolute
  1e-5, tuned to its r = alpha = 16 updates; a relative tolerance does not depend on alpha/r or
  on the updates' scale). A layer whose members are all zero keeps one zero component, so every
  layer still has a (rank ≥ 1) factorisation;
- each member's ΔW includes alpha/r (the reference's configs have alpha = r and skip it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from loramerge.merging._ops import (
    MemberDeltas,
    check_updates,
    factors32,
    low_rank_result,
    range_svd,
)
from loramerge.merging.base import MergeResult, TaskUpdate


@dataclass(frozen=True)
class SharedBasis:
    """Per layer the shared left basis U (O × k), and per member its representation R_i (k × I)."""

    basis: dict[str, torch.Tensor]
    representations: MemberDeltas


def layer_decomposition(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """U and the members' R_i for one layer, from the members' (B_i, A_i).

    [ΔW_1 … ΔW_n] = [B_1 … B_n] · blockdiag(A_1 … A_n), so its SVD comes from the factors.
    """
    u, s, vh = range_svd(torch.cat([b for b, _ in pairs], dim=1), [a for _, a in pairs])
    width = pairs[0][1].shape[1]
    blocks = torch.split(s[:, None] * vh, width, dim=1)
    return u.float(), [block.float() for block in blocks]


def shared_basis(updates: Sequence[TaskUpdate]) -> SharedBasis:
    """KnOTS' decomposition of every layer."""
    layers = check_updates(updates)
    basis: dict[str, torch.Tensor] = {}
    representations: MemberDeltas = [{} for _ in updates]
    for layer in layers:
        u, blocks = layer_decomposition([factors32(update, layer) for update in updates])
        basis[layer] = u
        for task, block in zip(representations, blocks):
            task[layer] = block
    return SharedBasis(basis, representations)


def knots_merge(
    updates: Sequence[TaskUpdate], merge_representations: Callable[[MemberDeltas], dict[str, torch.Tensor]]
) -> MergeResult:
    """Decompose, merge the members' representations with the given rule, map back through U."""
    shared = shared_basis(updates)
    merged = merge_representations(shared.representations)
    return low_rank_result({layer: (u, merged[layer]) for layer, u in shared.basis.items()})
