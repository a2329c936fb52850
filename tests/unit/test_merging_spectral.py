"""Iso-C, Iso-CTS and TSV-M against float64 numpy references written from the papers' equations.

Full-space references use members whose sum has full rank (rank ≥ min(O, I)): with a rank-deficient
sum, the singular vectors of the zero singular values are arbitrary, and so is a full-space Iso-C
(the reason Core Space runs it in the core). Core-space references decompose the dense sum and
keep its Σ r_i meaningful directions, which is what the core holds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loramerge.merging import TaskUpdate
from loramerge.merging.iso_cts import subspace_sizes
from tests.unit.test_merging_methods import merge, random_update

LAYER = "encoder.layer.0.attention.self.query"


def members(ranks: tuple[int, ...], shape: tuple[int, int] = (8, 6), scales=(1.0, 0.4, 2.5)) -> list[TaskUpdate]:
    """Adapters of unequal ranks and alphas (alpha/r folded into B) on one layer."""
    updates = [random_update(f"t{i}", {LAYER: shape}, r, seed=10 + i) for i, r in enumerate(ranks)]
    return [
        TaskUpdate(u.name, {LAYER: (s * u.factors[LAYER][0], u.factors[LAYER][1])}) for u, s in zip(updates, scales)
    ]


def dense(updates: list[TaskUpdate]) -> list[np.ndarray]:
    return [u.factors[LAYER][0].double().numpy() @ u.factors[LAYER][1].double().numpy() for u in updates]


def polar(x: np.ndarray) -> np.ndarray:
    p, _, qh = np.linalg.svd(x, full_matrices=False)
    return p @ qh


def reference_iso_c(deltas: list[np.ndarray], scaling: float, keep: int | None = None) -> np.ndarray:
    """Iso-C: Σ ΔW_i = U S Vᵀ, ΔW = α·mean(S)·U Vᵀ (over the top `keep` directions when given)."""
    u, s, vh = np.linalg.svd(sum(deltas), full_matrices=False)
    k = keep or s.size
    return scaling * s[:k].mean() * u[:, :k] @ vh[:k]


def reference_iso_cts(deltas: list[np.ndarray], scaling: float, fraction: float, k: int) -> np.ndarray:
    """Iso-CTS over the top k directions of the space: common top-c of the sum, n per task from the residuals."""
    t = len(deltas)
    n = round((k - int(k * fraction)) / t)
    c = k - n * t
    u, s, vh = np.linalg.svd(sum(deltas), full_matrices=False)
    lefts, values, rights = [], [], []
    for delta in deltas:
        residual = delta - u[:, :c] @ u[:, :c].T @ delta
        ut, st, vt = np.linalg.svd(residual, full_matrices=False)
        lefts.append(ut[:, :n]), values.append(st[:n]), rights.append(vt[:n])
    left = polar(np.concatenate([*lefts, u[:, :c]], axis=1))
    right = polar(np.concatenate([*rights, vh[:c]], axis=0))
    return scaling * np.concatenate([*values, s[:c]]).mean() * left @ right


def reference_tsv(deltas: list[np.ndarray], scaling: float, kept: int) -> np.ndarray:
    """TSV-M: each task's top `kept` singular triplets, both sides whitened by their polar factor."""
    svds = [np.linalg.svd(d, full_matrices=False) for d in deltas]
    left = polar(np.concatenate([u[:, :kept] for u, _, _ in svds], axis=1))
    right = polar(np.concatenate([vh[:kept] for _, _, vh in svds], axis=0))
    return scaling * left @ np.diag(np.concatenate([s[:kept] for _, s, _ in svds])) @ right


def close(result, expected: np.ndarray) -> None:
    np.testing.assert_allclose(result.deltas[LAYER].double().numpy(), expected, atol=2e-5, rtol=1e-4)


def test_iso_c_flattens_the_whole_spectrum_of_the_sum_in_the_full_space():
    updates = members((4, 3, 2))  # Σ r = 9 ≥ min(8, 6): the sum has full rank
    close(merge("iso_c", updates, scaling=1.7), reference_iso_c(dense(updates), 1.7))


def test_core_iso_c_flattens_only_the_sums_meaningful_directions():
    updates = members((2, 1, 1), shape=(12, 10))  # Σ r = 4 < 10
    close(merge("core_iso_c", updates, scaling=0.8), reference_iso_c(dense(updates), 0.8, keep=4))


def test_isotropic_merges_have_one_singular_value():
    s = np.linalg.svd(merge("core_iso_c", members((2, 1, 1), shape=(12, 10))).deltas[LAYER].double().numpy())[1]
    np.testing.assert_allclose(s[:4], np.full(4, s[0]), rtol=1e-5)
    assert s[4:].max() < 1e-5 * s[0]


@pytest.mark.parametrize("fraction", [0.8, 0.5])
def test_iso_cts_matches_the_reference_in_the_full_space(fraction):
    updates = members((6, 6, 6))
    close(
        merge("iso_cts", updates, scaling=1.3, common_fraction=fraction),
        reference_iso_cts(dense(updates), 1.3, fraction, 6),
    )


def test_core_iso_cts_matches_the_reference_over_the_summed_rank():
    updates = members((3, 2, 3), shape=(16, 14))  # core k = Σ r = 8: c = 5, n = 1 per task
    assert subspace_sizes(8, 3, 0.8) == (5, 1)
    close(merge("core_iso_cts", updates, scaling=1.1), reference_iso_cts(dense(updates), 1.1, 0.8, 8))


def test_iso_cts_splits_the_directions_as_the_authors_code_rounds_them():
    assert subspace_sizes(768, 8, 0.8) == (616, 19)  # ViT-B/32, 8 tasks: the numbers the reference produces
    assert subspace_sizes(512, 8, 0.8) == (408, 13)
    common, per_task = subspace_sizes(7, 2, 0.0)  # rounding would ask for 8 > 7 slots: n falls back to ⌊k/T⌋
    assert (common, per_task) == (1, 3)


def test_tsv_m_keeps_one_over_t_of_the_directions_per_task_by_default():
    updates = members((6, 6, 6))  # k = 6, T = 3: two directions per task
    close(merge("tsv_m", updates, scaling=0.9), reference_tsv(dense(updates), 0.9, kept=2))
    close(merge("tsv_m", updates, scaling=0.9, kept_fraction=0.5), reference_tsv(dense(updates), 0.9, kept=3))


def test_core_tsv_m_keeps_each_members_rank_and_whitens_in_the_core():
    updates = members((2, 2, 2), shape=(12, 10))  # core k = 6, T = 3: each member's 2 directions
    close(merge("core_tsv_m", updates), reference_tsv(dense(updates), 1.0, kept=2))


def test_tsv_m_of_orthogonal_tasks_is_their_sum():
    """Tasks in orthogonal subspaces do not interfere: whitening changes nothing and TSV-M is task arithmetic."""
    a = np.zeros((6, 6))
    a[0, 0], a[1, 1] = 3.0, 1.0
    b = np.zeros((6, 6))
    b[2, 3], b[4, 5] = 2.0, 0.5
    updates = [
        TaskUpdate(n, {LAYER: (torch.tensor(d, dtype=torch.float32), torch.eye(6))}) for n, d in (("a", a), ("b", b))
    ]
    close(merge("tsv_m", updates, kept_fraction=1 / 3), a + b)
