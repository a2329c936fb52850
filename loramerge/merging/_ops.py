"""The maths the merge methods share, written once.

Members are handled as `MemberDeltas`: one dict {layer: tensor} per member, in the members' order.
The tensors are dense updates ΔW_i for the plain methods and KnOTS' per-member
representations for the KnOTS methods, so pruning, dropping, sign election and the
disjoint mean below serve both. Where PEFT's `merge_utils` has the exact operation (sign
election, disjoint mean) it is used as is; what it lacks (a seeded random drop, a magnitude
threshold over a whole model, low-rank sums and SVDs from factors) is written here.

Everything is float32 on CPU, except the low-rank SVD which runs in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from peft.utils.merge_utils import calculate_majority_sign_mask, disjoint_merge

from loramerge.merging._config import DareTiesConfig, MajoritySign, PruneScope, TiesConfig
from loramerge.merging.base import LayerFactors, MergeResult, TaskUpdate

MemberDeltas = list[dict[str, torch.Tensor]]

RELATIVE_TOLERANCE = 1e-5
"""Singular values at or below this fraction of a layer's scale are numerical zeros: their directions are whatever
the SVD's rounding made them, so no merge keeps them (a float32 product's rounding sits near 1e-7 of its scale)."""


def significant(values: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Mask of the singular values above the numerical zero of a layer whose largest singular value is `scale`."""
    return values > RELATIVE_TOLERANCE * scale


# --- members ---------------------------------------------------------------------------------


def check_updates(updates: Sequence[TaskUpdate]) -> list[str]:
    """The layers every member adapts, after checking that the members can be merged at all."""
    if not updates:
        raise ValueError("a merge needs at least one adapter update")
    layers = updates[0].layers
    for update in updates[1:]:
        if update.layers != layers:
            missing = sorted(set(layers) ^ set(update.layers))
            raise ValueError(
                f"adapters {updates[0].name!r} and {update.name!r} adapt different layers (differing: {missing[:5]})"
            )
    for layer in layers:
        shapes = {update.name: _delta_shape(update, layer) for update in updates}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"layer {layer!r} has updates of different shapes across adapters: {shapes}")
    return layers


def _delta_shape(update: TaskUpdate, layer: str) -> tuple[int, int]:
    b, a = update.factors[layer]
    if b.dim() != 2 or a.dim() != 2 or b.shape[1] != a.shape[0]:
        raise ValueError(
            f"adapter {update.name!r}, layer {layer!r}: B {tuple(b.shape)} and A {tuple(a.shape)} do not multiply"
        )
    return (b.shape[0], a.shape[1])


def factors32(update: TaskUpdate, layer: str) -> LayerFactors:
    b, a = update.factors[layer]
    return b.detach().float(), a.detach().float()


def dense_members(updates: Sequence[TaskUpdate]) -> MemberDeltas:
    """Each member's exact ΔW = B·A per layer, in float32 (after `check_updates`)."""
    layers = check_updates(updates)
    return [{layer: _product(factors32(update, layer)) for layer in layers} for update in updates]


def _product(factors: LayerFactors) -> torch.Tensor:
    b, a = factors
    return b @ a


# --- low-rank results ------------------------------------------------------------------------


def low_rank_result(factors: dict[str, LayerFactors]) -> MergeResult:
    """A result whose deltas are exactly its factors' products, so the two never disagree."""
    return MergeResult(deltas={layer: _product(pair) for layer, pair in factors.items()}, factors=factors)


def weighted_low_rank_sum(updates: Sequence[TaskUpdate], weights: Sequence[float]) -> MergeResult:
    """Σ w_i·ΔW_i without forming any ΔW_i: B's scaled by w_i side by side, A's stacked (rank Σ r_i).

    [w_1·B_1 … w_n·B_n] @ [A_1; …; A_n] = Σ w_i·B_i·A_i exactly, with no cross terms B_i·A_j.
    """
    layers = check_updates(updates)
    if len(weights) != len(updates):
        raise ValueError(f"weights: {len(weights)} weights for {len(updates)} adapters; give one weight per adapter")
    factors = {}
    for layer in layers:
        pairs = [factors32(update, layer) for update in updates]
        b = torch.cat([weight * b for weight, (b, _) in zip(weights, pairs)], dim=1)
        a = torch.cat([a for _, a in pairs], dim=0)
        factors[layer] = (b, a)
    return low_rank_result(factors)


def low_rank_svd(b: torch.Tensor, a_blocks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of M = B·blockdiag(A_1 … A_n) from its factors, in float64, without forming M.

    One block is a plain product B·A; KnOTS' side-by-side updates [B_1A_1 … B_nA_n] are
    [B_1 … B_n]·blockdiag(A_1 … A_n). With B = Q·R_B and each A_j^T = Q_j·R_j (thin QRs, Q's
    orthonormal), M = Q·K·blockdiag(Q_j)^T where K = R_B·blockdiag(R_j^T) is at most R×R; the
    SVD K = u·diag(s)·w^T gives M = (Q·u)·diag(s)·(w^T·blockdiag(Q_j)^T): the singular values
    and vectors `torch.linalg.svd(M)` would give (up to the usual sign choice), at O·R² + I·Σr_j²
    + R³ cost instead of O·nI·min(O, nI). Returns U (O×k), s (k), Vh (k × n·I).
    """
    q, r_b = torch.linalg.qr(b.double(), mode="reduced")
    block_qrs = [torch.linalg.qr(a.double().T, mode="reduced") for a in a_blocks]
    core = r_b @ torch.block_diag(*[r.T for _, r in block_qrs])
    u, s, w_t = torch.linalg.svd(core, full_matrices=False)
    widths = [q_j.shape[1] for q_j, _ in block_qrs]
    vh = torch.cat([w_j @ q_j.T for w_j, (q_j, _) in zip(torch.split(w_t, widths, dim=1), block_qrs)], dim=1)
    return q @ u, s, vh


def range_svd(b: torch.Tensor, a_blocks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`low_rank_svd` with its numerical zeros dropped (`significant`), keeping at least one direction so that even
    all-zero members have a (rank ≥ 1) factorisation: the singular triplets of B·blockdiag(A_1 … A_n) on its range."""
    u, s, vh = low_rank_svd(b, a_blocks)
    keep = significant(s, s.max())
    keep[0] = True
    return u[:, keep], s[keep], vh[keep]


def truncated_factors(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> LayerFactors:
    """(U_r·diag(S_r), Vh_r) in float32: the best rank-r approximation's factors, as PEFT's svd merges write them."""
    r = min(rank, s.numel())
    return (u[:, :r] * s[:r]).float(), vh[:r].float()


def dense_truncated_factors(delta: torch.Tensor, rank: int) -> LayerFactors:
    """Best rank-r factors of a dense update, from one thin float32 SVD."""
    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    return truncated_factors(u, s, vh, rank)


# --- sums ------------------------------------------------------------------------------------


def scaled_sum(members: MemberDeltas, scaling: float) -> dict[str, torch.Tensor]:
    """λ·Σ_i T_i per layer."""
    return {layer: scaling * torch.stack([member[layer] for member in members]).sum(dim=0) for layer in members[0]}


# --- magnitude pruning -----------------------------------------------------------------------


def prune_magnitude(member: dict[str, torch.Tensor], density: float, scope: PruneScope) -> dict[str, torch.Tensor]:
    """One member's entries outside its top `density` fraction by magnitude set to zero.

    scope "layer": each layer keeps its own top int(density·numel) entries (as PEFT's
    `magnitude_based_pruning`). scope "model": one threshold over all the member's layers
    flattened together (the TIES paper and the KnOTS reference), so layers with large updates
    keep more than `density` of their entries and quiet layers less. Both scopes use the same
    threshold rule (`magnitude_threshold`); PEFT's top-k selection gives the same entries
    (barring exact ties) but is about 3x slower on CPU.
    """
    if density >= 1.0:
        return dict(member)
    if scope == "layer":
        return {layer: keep_above(tensor, magnitude_threshold([tensor], density)) for layer, tensor in member.items()}
    threshold = magnitude_threshold(list(member.values()), density)
    return {layer: keep_above(tensor, threshold) for layer, tensor in member.items()}


def keep_above(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    return tensor * (tensor.abs() >= threshold)


def magnitude_threshold(tensors: Sequence[torch.Tensor], density: float) -> float:
    """The magnitude of the k-th largest entry over all tensors together, k = int(density·N).

    Keeping |x| ≥ threshold keeps exactly k entries unless magnitudes tie at the threshold
    (then all tied entries are kept). The KnOTS reference's `topk_values_mask` keeps one entry
    more than int(density·N) (it takes the (N − k)-th smallest value); we keep k, as PEFT does.
    With k = 0 the threshold is +inf and nothing is kept.
    """
    magnitudes = torch.cat([t.detach().abs().reshape(-1) for t in tensors])
    k = int(density * magnitudes.numel())
    if k == 0:
        return math.inf
    return torch.kthvalue(magnitudes, magnitudes.numel() - k + 1).values.item()


def prune_members(members: MemberDeltas, density: float, scope: PruneScope) -> MemberDeltas:
    return [prune_magnitude(member, density, scope) for member in members]


# --- DARE ------------------------------------------------------------------------------------


def dare_generator(seed: int, task_index: int, layer_index: int) -> torch.Generator:
    """A generator for one (member, layer), reproducible from the seed alone.

    The three numbers are mixed by numpy's SeedSequence rather than added (seed + member +
    layer would give member 0/layer 1 and member 1/layer 0 the same random stream), so every
    (member, layer) gets an independent stream.
    """
    state = np.random.SeedSequence([seed, task_index, layer_index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


def random_drop(tensor: torch.Tensor, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: zero each entry with probability p and rescale survivors by 1/(1-p) (expectation kept).

    PEFT's `random_pruning` does the same with the global RNG; a seeded generator per layer
    is what makes a merge repeatable. p = 0 returns the tensor unchanged.
    """
    if drop_prob == 0:
        return tensor
    keep = torch.rand(tensor.shape, generator=generator, dtype=torch.float32) >= drop_prob
    return torch.where(keep, tensor / (1.0 - drop_prob), torch.zeros((), dtype=tensor.dtype))


def drop_members(members: MemberDeltas, drop_prob: float, seed: int) -> MemberDeltas:
    """DARE on every member; layers are numbered in sorted-name order for the generators."""
    order = {layer: index for index, layer in enumerate(sorted(members[0]))}
    return [
        {
            layer: random_drop(tensor, drop_prob, dare_generator(seed, i, order[layer]))
            for layer, tensor in member.items()
        }
        for i, member in enumerate(members)
    ]


# --- TIES ------------------------------------------------------------------------------------


def ties_merge(members: MemberDeltas, majority_sign: MajoritySign, scaling: float) -> dict[str, torch.Tensor]:
    """Per layer: elect a sign per entry, average the members' non-zero entries that agree, times λ.

    Entries whose elected sign a member does not share, and zeros, do not count in the mean
    (PEFT's `disjoint_merge`). The pruning step is separate (`prune_members`), so TIES, DARE-TIES
    and their KnOTS and Core variants share this function.
    """
    merged = {}
    for layer in members[0]:
        stacked = torch.stack([member[layer] for member in members])
        merged[layer] = scaling * disjoint_merge(stacked, agreeing(stacked, majority_sign))
    return merged


def agreeing(stacked: torch.Tensor, majority_sign: MajoritySign) -> torch.Tensor:
    """Mask of the members' entries (dim 0: members) whose sign is the one elected for their entry.

    "total" elects sgn(Σ_i τ_i), TIES' γ (PEFT's `calculate_majority_sign_mask`; a sum of exactly 0 elects +).
    "frequency" elects the sign more members' non-zero entries have; a tie (as many + as −: any two members that
    disagree) goes to the sign of the sum, as "total" would elect it. PEFT breaks such a tie towards +, the KnOTS
    code towards −, and in the KnOTS and Core spaces either rule makes the merge depend on the sign an SVD gave
    each direction (an equally valid SVD flips a direction: every member's entry there flips and a fixed rule's
    winner stays); the sum flips with them, so this rule does not.
    """
    if majority_sign == "total":
        return calculate_majority_sign_mask(stacked, method="total")
    votes = stacked.sign().sum(dim=0)
    tally = torch.where(votes == 0, stacked.sum(dim=0), votes)
    return stacked.sign() == torch.where(tally >= 0, 1.0, -1.0)


def ties_pipeline(members: MemberDeltas, config: TiesConfig) -> dict[str, torch.Tensor]:
    """TIES' three steps: trim to `density`, elect signs, disjoint mean, times λ."""
    return ties_merge(prune_members(members, config.density, config.prune_scope), config.majority_sign, config.scaling)


def dare_ties_pipeline(members: MemberDeltas, config: DareTiesConfig) -> dict[str, torch.Tensor]:
    """DARE's seeded drop and rescale, then TIES."""
    return ties_pipeline(drop_members(members, config.drop_prob, config.seed), config)
