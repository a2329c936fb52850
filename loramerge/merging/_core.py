"""Core Space (Panariello et al., "Accurate and Efficient Low-Rank Model Merging in Core Space", NeurIPS 2025).

Per layer the members' updates are stacked side by side, [ΔW_1 … ΔW_n] (O × n·I), and on top of each other,
[ΔW_1; …; ΔW_n] (n·O × I). Orthonormal bases of their spans, U (O × k) and V (I × k'), k, k' ≤ R = Σ r_i, hold
every member: ΔW_i = U·Uᵀ·ΔW_i·V·Vᵀ. So member i is exactly its k × k' *core* M_i = (Uᵀ·B_i)·(A_i·V), with
ΔW_i = U·M_i·Vᵀ (lossless). A merge function combines the cores, and the result maps back as U·M·Vᵀ: exactly
rank ≤ R, so factors (U·M, Vᵀ) come with it. Nothing of size O × I is ever formed, so a merge costs O(R³) per
layer instead of KnOTS' SVD of an O × n·I matrix.

Linear functions are basis-free (Core-space task arithmetic is task arithmetic); TIES' trim and sign
election act on core coordinates, Iso-C and TSV-M only on singular values and vectors, which the
orthonormal bases preserve.

Differences from the reference implementation (github.com/apanariello4/core-space-merging):
- the bases are the singular vectors of the stacked *updates* (U is KnOTS' shared basis, V its transpose's),
  computed from the factors (`_ops.low_rank_svd`); the authors take them from the stacked factors,
  [B_1 … B_n] and [A_1; …; A_n]. The spans are the same, but their basis changes with how each ΔW_i is split
  into B_i·A_i (B·G and G⁻¹·A give the same update and another basis), and TIES' and DARE's coordinate-wise
  trim, drop and election would change with it. Rotation-invariant functions (TA, Iso-C, Iso-CTS, TSV-M) give
  the same result in either basis;
- TIES' trim keeps the `prune_scope` of every space, one threshold over each member's whole model by default
  (the TIES paper, KnOTS); the authors trim each layer's core on its own: `prune_scope: layer` is theirs. One
  rule for `ties`, `knots_ties` and `core_ties` makes the space the only thing that differs between them;
- each member's B includes alpha/r (as everywhere in loramerge, `TaskUpdate`);
- directions whose singular value is ≤ 1e-5 × the stack's largest are dropped (`_ops.RELATIVE_TOLERANCE`),
  so rank-deficient stacks (identical members, zero adapters) give a smaller core, never a noisy basis;
- the bases come from float64 SVDs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from loramerge.merging._ops import MemberDeltas, check_updates, factors32, low_rank_result, range_svd
from loramerge.merging.base import LayerFactors, MergeResult, TaskUpdate


def span_basis(b: torch.Tensor, a_blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Orthonormal basis (float64, columns) of the column span of B·blockdiag(A_1 … A_n), numerical zeros dropped:
    the left singular vectors of that product, which depend on the product only, not on its factors."""
    return range_svd(b, a_blocks)[0]


def layer_cores(pairs: Sequence[LayerFactors]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """U, V and every member's core M_i for one layer, from the members' (B_i, A_i)."""
    u = span_basis(torch.cat([b for b, _ in pairs], dim=1), [a for _, a in pairs])  # [ΔW_1 … ΔW_n]
    v = span_basis(torch.cat([a.T for _, a in pairs], dim=1), [b.T for b, _ in pairs])  # [ΔW_1ᵀ … ΔW_nᵀ]
    cores = [((u.T @ b.double()) @ (a.double() @ v)).float() for b, a in pairs]
    return u.float(), v.float(), cores


def core_merge(
    updates: Sequence[TaskUpdate], merge_cores: Callable[[MemberDeltas], dict[str, torch.Tensor]]
) -> MergeResult:
    """Project every layer into its core, merge the cores with the given function, map back."""
    layers = check_updates(updates)
    bases: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    cores: MemberDeltas = [{} for _ in updates]
    for layer in layers:
        u, v, members = layer_cores([factors32(update, layer) for update in updates])
        bases[layer] = (u, v)
        for task, core in zip(cores, members):
            task[layer] = core
    merged = merge_cores(cores)
    return low_rank_result({layer: (u @ merged[layer], v.T) for layer, (u, v) in bases.items()})
