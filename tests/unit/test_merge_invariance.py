"""A merge depends only on the members' updates ΔW_i.

Every registered method, in every space it runs in, merges members of equal and of unequal ranks, then merges
them again after a change that leaves each ΔW_i as it is, or moves it below float32's precision:
- refactored: B_i → B_i·G, A_i → G⁻¹·A_i, G a random orthogonal matrix, or any well-conditioned one;
- re-split by an SVD with random signs: B_i = U·S·D, A_i = D·Vh, D a random ±1 diagonal (an SVD's sign of each
  singular pair is a convention; so is the sign a merge's own SVDs give their directions);
- perturbed: every factor entry times (1 + 1e-7·noise).
The merged ΔW moves by at most 1e-5 of its norm. The layers are low-rank (Σ r_i < min(O, I)), so every full-space
spectral method meets the null space its SVDs leave free.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from loramerge.merging import TaskUpdate, available_methods, get_method
from loramerge.merging.observed import ObservedUpdate
from tests.unit.test_merging_methods import random_update

SHAPES = {"encoder.layer.0.attention.self.query": (24, 20), "encoder.layer.0.output.dense": (20, 32)}
RANKS = {"equal": (4, 4), "unequal": (4, 8), "three": (4, 8, 4)}
TOLERANCE = 1e-5
NEEDS_A_MODEL = {
    "adamerging"
}  # its members carry an entropy probe of a real encoder (tests/unit/test_merging_adamerging.py)


def settings() -> list[tuple[str, dict]]:
    """Every method at its defaults, and each sign election and pruning scope it offers."""
    cases = []
    for name in available_methods():
        if name in NEEDS_A_MODEL:
            continue
        fields = get_method(name).Config.model_fields
        cases.append((name, {}))
        if "majority_sign" in fields:
            cases.append((name, {"majority_sign": "frequency"}))
        if "prune_scope" in fields:
            cases.append((name, {"prune_scope": "layer", "density": 0.5}))
    return cases


def members(ranks: tuple[int, ...]) -> list[TaskUpdate]:
    """Adapters of the given ranks with unequal alphas (alpha/r folded into B), each with Gram matrices of its own."""
    g = torch.Generator().manual_seed(7)
    updates = []
    for i, rank in enumerate(ranks):
        update = random_update(f"t{i}", SHAPES, rank, seed=100 + i)
        grams = {}
        for layer, (_, width) in SHAPES.items():
            x = torch.randn(3 * width, width, generator=g)
            grams[layer] = x.T @ x / x.shape[0]
        factors = {layer: ((1.0 + i) * b, a) for layer, (b, a) in update.factors.items()}
        updates.append(ObservedUpdate(update.name, factors, grams))
    return updates


def refactored(update: ObservedUpdate, split: Callable[[torch.Tensor, torch.Tensor], tuple]) -> ObservedUpdate:
    return ObservedUpdate(update.name, {layer: split(b, a) for layer, (b, a) in update.factors.items()}, update.grams)


def orthogonal(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, _ = torch.linalg.qr(torch.randn(b.shape[1], b.shape[1], dtype=torch.float64))
    return (b.double() @ q).float(), (q.T @ a.double()).float()


def rebalanced(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B·G, G⁻¹·A with G well-conditioned but not orthogonal (B's and A's scales traded, directions mixed)."""
    r = b.shape[1]
    g = 3.0 * torch.eye(r, dtype=torch.float64) + torch.randn(r, r, dtype=torch.float64) / r**0.5
    return (b.double() @ g).float(), torch.linalg.solve(g, a.double()).float()


def svd_signs(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(b.double() @ a.double(), full_matrices=False)
    r = b.shape[1]
    d = torch.where(torch.rand(r) < 0.5, -1.0, 1.0).double()
    return (u[:, :r] * (s[:r] * d)).float(), (d[:, None] * vh[:r]).float()


def perturbed(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return b * (1 + 1e-7 * torch.randn_like(b)), a * (1 + 1e-7 * torch.randn_like(a))


CHANGES = {"orthogonal": orthogonal, "rebalanced": rebalanced, "svd_signs": svd_signs, "perturbed": perturbed}


def merged(name: str, params: dict, updates: list[TaskUpdate]) -> torch.Tensor:
    method = get_method(name)
    deltas = method.merge(updates, method.Config(**params)).deltas
    return torch.cat([deltas[layer].double().reshape(-1) for layer in sorted(deltas)])


@pytest.mark.parametrize("ranks", RANKS.values(), ids=RANKS.keys())
@pytest.mark.parametrize(
    ("name", "params"),
    settings(),
    ids=lambda x: x if isinstance(x, str) else "-".join(map(str, x.values())) or "defaults",
)
def test_a_merge_moves_by_no_more_than_rounding_when_each_update_is_refactored_re_signed_or_perturbed(
    name, params, ranks
):
    torch.manual_seed(0)
    updates = members(ranks)
    before = merged(name, params, updates)
    assert before.norm() > 0
    moved = {
        change: (
            (merged(name, params, [refactored(u, split) for u in updates]) - before).norm() / before.norm()
        ).item()
        for change, split in CHANGES.items()
    }
    assert max(moved.values()) <= TOLERANCE, moved


def test_every_method_but_the_one_that_needs_a_model_is_covered():
    assert {name for name, _ in settings()} | NEEDS_A_MODEL == set(available_methods())
