"""KnOTS, checked against a dense re-implementation of the reference code (github.com/gstoica27/KnOTS).

The library computes the shared SVD from the LoRA factors; the reference concatenates the
dense updates and runs one float64 `torch.linalg.svd`. Both must give the same merge.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from loramerge.merging import TaskUpdate, get_method
from loramerge.merging._knots import shared_basis
from loramerge.merging._ops import RELATIVE_TOLERANCE
from tests.unit.test_merging_methods import PROPERTY, random_update, update_sets

SHAPES = {
    "encoder.layer.0.attention.self.query": (12, 10),
    "encoder.layer.0.intermediate.dense": (16, 10),
    "encoder.layer.0.output.dense": (10, 16),
}


def dense_delta(update: TaskUpdate, layer: str) -> torch.Tensor:
    b, a = update.factors[layer]
    return b.double() @ a.double()


def reference_knots_ties(updates: list[TaskUpdate], scaling: float, density: float) -> dict[str, torch.Tensor]:
    """The reference's SVDMerger.transform + merge with TIES masking, on dense float64 matrices.

    One deliberate difference: the reference's `topk_values_mask` keeps int(density·N) + 1
    entries per member; the library (like PEFT) keeps int(density·N), and so does this.
    """
    layers, n = updates[0].layers, len(updates)
    basis, representations = {}, [{} for _ in updates]
    for layer in layers:
        u, s, vh = torch.linalg.svd(torch.cat([dense_delta(m, layer) for m in updates], dim=1), full_matrices=False)
        keep = s > RELATIVE_TOLERANCE * s[0]
        basis[layer] = u[:, keep]
        for i, block in enumerate(torch.split(vh[keep], vh.shape[1] // n, dim=1)):
            representations[i][layer] = torch.diag(s[keep]) @ block
    vectors = torch.stack([torch.cat([r[layer].reshape(-1) for layer in layers]) for r in representations])
    d = vectors.shape[1]
    k = int(d * density)
    kth = vectors.abs().kthvalue(d - k + 1, dim=1, keepdim=True).values
    pruned = vectors * (vectors.abs() >= kth)
    sign = torch.sign(pruned.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    selected = pruned * torch.where(sign > 0, pruned > 0, pruned < 0) * scaling
    merged = selected.sum(dim=0) / (selected != 0).sum(dim=0).clamp(min=1)
    out, start = {}, 0
    for layer in layers:
        size = representations[0][layer].numel()
        out[layer] = basis[layer] @ merged[start : start + size].reshape(representations[0][layer].shape)
        start += size
    return out


@pytest.mark.parametrize(
    ("ranks", "density", "scaling"),
    [((2, 3), 0.2, 1.0), ((4, 4, 4), 0.5, 0.6), ((1, 5, 2), 0.3, 1.3), ((3, 2), 1.0, 0.7)],
)
def test_knots_ties_matches_the_dense_reference(ranks, density, scaling):
    updates = [random_update(f"t{i}", SHAPES, r, 100 + i) for i, r in enumerate(ranks)]
    method = get_method("knots_ties")
    ours = method.merge(updates, method.Config(scaling=scaling, density=density)).deltas
    reference = reference_knots_ties(updates, scaling, density)
    for layer in SHAPES:
        torch.testing.assert_close(ours[layer], reference[layer].float(), atol=1e-4, rtol=1e-4)


@PROPERTY
@given(update_sets())
def test_the_shared_basis_is_orthonormal_and_loses_nothing(updates):
    shared = shared_basis(updates)
    for layer, u in shared.basis.items():
        torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1]), atol=1e-5, rtol=0)
        for update, representation in zip(updates, shared.representations):
            torch.testing.assert_close(u @ representation[layer], update.delta(layer), atol=1e-4, rtol=1e-4)


@PROPERTY
@given(update_sets(min_tasks=2))
def test_the_shared_basis_has_the_singular_values_of_the_concatenated_updates(updates):
    shared = shared_basis(updates)
    for layer, u in shared.basis.items():
        dense = torch.linalg.svdvals(torch.cat([dense_delta(m, layer) for m in updates], dim=1))
        expected = dense[dense > RELATIVE_TOLERANCE * dense[0]]
        # the representations stacked side by side are diag(s)·Vh, whose row norms are s
        ours = torch.cat([r[layer] for r in shared.representations], dim=1).double().norm(dim=1)
        assert u.shape[1] == expected.numel()
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_numerically_zero_directions_are_dropped():
    first = random_update("a", {"l": (8, 6)}, 2, 0)
    twice = TaskUpdate("b", {"l": (2.0 * first.factors["l"][0], first.factors["l"][1])})
    zero = TaskUpdate("c", {"l": (torch.zeros(8, 3), torch.randn(3, 6))})
    method = get_method("knots_task_arithmetic")
    result = method.merge([first, twice, zero], method.Config())
    assert result.factors["l"][0].shape == (8, 2)  # the concatenation has rank 2, not 2 + 2 + 3
    torch.testing.assert_close(result.deltas["l"], 3.0 * first.delta("l"), atol=1e-5, rtol=1e-5)


def test_all_zero_members_give_a_zero_rank_one_update():
    zero = TaskUpdate("z", {"l": (torch.zeros(5, 2), torch.randn(2, 4))})
    for name in ["knots_task_arithmetic", "knots_ties", "knots_dare_ties"]:
        method = get_method(name)
        result = method.merge([zero, zero], method.Config())
        assert result.factors["l"][1].shape == (1, 4)
        assert torch.count_nonzero(result.deltas["l"]) == 0


def test_knots_dare_ties_drops_entries_of_the_representation_not_of_the_update():
    (update,) = [random_update("a", {"l": (9, 7)}, 3, 5)]
    representation = shared_basis([update]).representations[0]["l"]
    method = get_method("knots_dare_ties")
    merged = method.merge([update], method.Config(drop_prob=0.5, seed=1)).factors["l"][1]
    kept = merged != 0
    torch.testing.assert_close(merged[kept], representation[kept] / 0.5)
    assert 0 < int(kept.sum()) < merged.numel()
