"""Core Space (Panariello et al., "Accurate and Efficient Low-Rank Model Merging in Core Space", NeurIPS 2025).

Per layer the members' factors are stacked, B = [B_1 … B_n] (O × R) and A = [A_1; …; A_n] (R × I),
R = Σ r_i. Orthonormal bases of their spans, U_B (O × R) from B's SVD and V_A (I × R) from A^T's,
hold every member: B_i = U_B·U_B^T·B_i and A_i = A_i·V_A·V_A^T. So member i is exactly its R × R
*core* M_i = (U_B^T·B_i)·(A_i·V_A), with ΔW_i = U_B·M_i·V_A^T (lossless). A merge function combines
the cores, and the result maps back as U_B·M·V_A^T: exactly rank ≤ R, so factors (U_B·M, V_A^T) come
with it. Nothing of size O × I is ever formed, so a merge costs O(R³) per layer instead of KnOTS'
SVD of an O × n·I matrix.

Linear functions are basis-free (Core-space task arithmetic is task arithmetic); TIES' trim and sign
election act on core coordinates, Iso-C and TSV-M only on singular values and vectors, which the
orthonormal bases preserve.

Differences from the reference implementation (github.com/apanariello4/core-space-merging):
- each member's B includes alpha/r (as everywhere in loramerge, `TaskUpdate`);
- directions whose singular value is ≤ 1e-5 × the stack's largest are dropped (`_knots.RELATIVE_TOLERANCE`),
  so rank-deficient stacks (identical members, zero adapters) give a smaller core, never a noisy basis;
- the bases come from float64 SVDs of the stacked factors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from loramerge.merging._knots import RELATIVE_TOLERANCE
from loramerge.merging._ops import MemberDeltas, check_updates, factors32, low_rank_result
from loramerge.merging.base import LayerFactors, MergeResult, TaskUpdate


def span_basis(stacked: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (float64, columns) of the column span of `stacked`, numerical zeros dropped."""
    u, s, _ = torch.linalg.svd(stacked.double(), full_matrices=False)
    keep = s > RELATIVE_TOLERANCE * s.max()
    keep[0] = True
    return u[:, keep]


def layer_cores(pairs: Sequence[LayerFactors]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """U_B, V_A and every member's core M_i for one layer, from the members' (B_i, A_i)."""
    u_b = span_basis(torch.cat([b for b, _ in pairs], dim=1))
    v_a = span_basis(torch.cat([a for _, a in pairs], dim=0).T)
    cores = [((u_b.T @ b.double()) @ (a.double() @ v_a)).float() for b, a in pairs]
    return u_b.float(), v_a.float(), cores


def core_merge(
    updates: Sequence[TaskUpdate], merge_cores: Callable[[MemberDeltas], dict[str, torch.Tensor]]
) -> MergeResult:
    """Project every layer into its core, merge the cores with the given function, map back."""
    layers = check_updates(updates)
    bases: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    cores: MemberDeltas = [{} for _ in updates]
    for layer in layers:
        u_b, v_a, members = layer_cores([factors32(update, layer) for update in updates])
        bases[layer] = (u_b, v_a)
        for task, core in zip(cores, members):
            task[layer] = core
    merged = merge_cores(cores)
    return low_rank_result({layer: (u_b @ merged[layer], v_a.T) for layer, (u_b, v_a) in bases.items()})
