"""Spaces: a merge function runs on the full updates, in KnOTS' aligned space or in Core Space.

Core Space (Panariello et al., NeurIPS 2025) is checked from its definition: orthonormal bases of the members'
column and row spans (here the stacked updates' singular vectors), each member an R × R core, mapped back
through the bases. The references here form the
dense matrices in float64 with numpy, never the library's helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from loramerge.merging import TaskUpdate, available_methods, get_method
from loramerge.merging._core import layer_cores
from tests.unit.test_merging_methods import PROPERTY, assert_deltas_close, exact_sum, merge, random_update, update_sets

FUNCTIONS = ["task_arithmetic", "ties", "dare_ties", "iso_c", "iso_cts", "tsv_m"]
SHAPES = {"encoder.layer.0.attention.self.query": (12, 10), "encoder.layer.0.output.dense": (10, 16)}


def unequal_members() -> list[TaskUpdate]:
    """Three adapters of ranks 2, 3 and 1 whose alphas differ (alpha/r is folded into B, so B's scale differs)."""
    updates = [random_update(f"t{i}", SHAPES, rank, seed=i) for i, rank in enumerate((2, 3, 1))]
    return [
        TaskUpdate(u.name, {k: (scale * b, a) for k, (b, a) in u.factors.items()})
        for u, scale in zip(updates, (2.0, 0.5, 4.0))
    ]


def test_every_function_has_a_knots_and_a_core_alias_with_the_space_fixed():
    names = set(available_methods())
    for function in FUNCTIONS:
        assert {f"knots_{function}", f"core_{function}"} <= names
        assert get_method(f"core_{function}").Config().space == "core"
        with pytest.raises(ValueError, match="space"):
            get_method(f"core_{function}").Config(space="full")
    assert get_method("knots_ties").Config().model_dump() == get_method("ties").Config(space="knots").model_dump()


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("space", ["knots", "core"])
def test_an_alias_merges_as_its_function_in_that_space(function, space):
    updates = unequal_members()
    alias = merge(f"{space}_{function}", updates)
    direct = merge(function, updates, space=space)
    assert_deltas_close(alias.deltas, direct.deltas, atol=1e-6)


def test_core_space_is_lossless_each_member_is_its_core_mapped_back():
    updates = unequal_members()
    for layer in SHAPES:
        left, right, cores = layer_cores([u.factors[layer] for u in updates])
        assert cores[0].shape == (6, 6)  # R = Σ r_i = 2 + 3 + 1
        np.testing.assert_allclose(left.double().T @ left.double(), np.eye(6), atol=1e-6)
        for update, core in zip(updates, cores):
            b, a = (t.double().numpy() for t in update.factors[layer])
            np.testing.assert_allclose(
                left.double().numpy() @ core.double().numpy() @ right.double().numpy().T, b @ a, atol=1e-5
            )


@PROPERTY
@given(update_sets(), st.floats(-2, 2))
def test_core_and_knots_task_arithmetic_equal_task_arithmetic(updates, scaling):
    for name in ["core_task_arithmetic", "knots_task_arithmetic"]:
        assert_deltas_close(merge(name, updates, scaling=scaling).deltas, exact_sum(updates, scaling))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_core_results_are_low_rank_factors_of_rank_at_most_the_summed_rank(function):
    updates = unequal_members()
    result = merge(f"core_{function}", updates)
    assert result.factors is not None
    for layer, (b, a) in result.factors.items():
        assert a.shape[0] <= 6
        torch.testing.assert_close(b @ a, result.deltas[layer])
        delta = result.deltas[layer].double().numpy()
        assert np.linalg.matrix_rank(delta, tol=1e-5 * np.linalg.norm(delta, 2)) <= 6  # float32's rounding aside


def reference_core_ties(updates: list[TaskUpdate], layer: str, density: float, scaling: float) -> np.ndarray:
    """Core Space TIES from the paper, one layer (prune per layer here: one layer only), in float64 numpy, in the
    bases of the stacked updates (`_core`: the paper's bases of the stacked factors span the same, but depend on
    how each update is factored)."""
    deltas = [u.factors[layer][0].double().numpy() @ u.factors[layer][1].double().numpy() for u in updates]
    rank = sum(u.factors[layer][1].shape[0] for u in updates)
    u_b = np.linalg.svd(np.concatenate(deltas, axis=1), full_matrices=False)[0][:, :rank]
    v_a = np.linalg.svd(np.concatenate(deltas, axis=0), full_matrices=False)[2][:rank].T
    cores = np.stack([u_b.T @ delta @ v_a for delta in deltas])
    kept = []
    for core in cores:
        k = int(density * core.size)
        threshold = np.sort(np.abs(core).ravel())[::-1][k - 1]
        kept.append(core * (np.abs(core) >= threshold))
    kept = np.stack(kept)
    sign = np.sign(kept.sum(axis=0))
    sign[sign == 0] = 1
    agree = (np.sign(kept) == sign) & (kept != 0)
    merged = (kept * agree).sum(axis=0) / np.maximum(agree.sum(axis=0), 1)
    return scaling * u_b @ merged @ v_a.T


def test_core_ties_is_ties_on_the_members_cores():
    layer = "encoder.layer.0.attention.self.query"
    updates = [TaskUpdate(u.name, {layer: u.factors[layer]}) for u in unequal_members()]
    result = merge("core_ties", updates, density=0.3, scaling=0.7)
    np.testing.assert_allclose(
        result.deltas[layer].double().numpy(), reference_core_ties(updates, layer, 0.3, 0.7), atol=1e-5
    )
