"""The similarity maths on hand-made inputs, where the right answer is known without running anything."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loramerge.combinations import scored_pairs
from loramerge.config import Params
from loramerge.lists import generated_lists
from loramerge.merging import TaskUpdate
from loramerge.similarity import cosine, jaccard, linear_mmd, subspace_alignment, update_similarity, vocabulary
from loramerge.tracking import metric_key


def basis(dim: int, columns: list[int]) -> torch.Tensor:
    """B whose columns are the given standard basis vectors: its span is known exactly."""
    return torch.eye(dim)[:, columns]


def update(name: str, b_columns: list[int], seed: int, dim: int = 16, layers: int = 2) -> TaskUpdate:
    """An adapter whose every layer's ΔW = B·A has column space span(e_i for i in b_columns)."""
    generator = torch.Generator().manual_seed(seed)
    factors = {}
    for layer in range(layers):
        a = torch.randn(len(b_columns), dim, generator=generator)
        factors[f"encoder.layer.{layer}.attention.self.query"] = (basis(dim, b_columns), a)
    return TaskUpdate(name=name, factors=factors)


def test_identical_adapters_have_cosine_one_and_full_alignment():
    a = update("a", [0, 1, 2, 3], seed=0)
    scores = update_similarity(a, a)
    assert scores["adapter_cosine"] == pytest.approx(1.0)
    assert scores["adapter_alignment"] == pytest.approx(1.0, abs=1e-5)


def test_adapters_in_orthogonal_subspaces_have_cosine_and_alignment_zero():
    scores = update_similarity(update("a", [0, 1, 2, 3], seed=0), update("b", [4, 5, 6, 7], seed=1))
    assert scores["adapter_cosine"] == pytest.approx(0.0, abs=1e-6)
    assert scores["adapter_alignment"] == pytest.approx(0.0, abs=1e-6)


def test_sharing_half_the_directions_aligns_half():
    scores = update_similarity(update("a", [0, 1, 2, 3], seed=0), update("b", [0, 1, 8, 9], seed=1))
    assert scores["adapter_alignment"] == pytest.approx(0.5, abs=1e-5)


def test_alignment_ignores_scale_and_sign_but_cosine_keeps_the_sign():
    delta = (basis(16, [0, 1]) @ torch.randn(2, 16, generator=torch.Generator().manual_seed(0))).numpy()
    assert subspace_alignment(delta, -3.0 * delta) == pytest.approx(1.0, abs=1e-5)
    assert cosine(delta, -3.0 * delta) == pytest.approx(-1.0)


def test_an_exactly_low_rank_float32_update_counts_as_its_rank_not_full_rank():
    """Rounding in B @ A must not add directions: two rank-2 updates in random 64-d spaces align near 2/64 at most."""
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(64, 2, generator=generator) @ torch.randn(2, 64, generator=generator)
    second = torch.randn(64, 2, generator=generator) @ torch.randn(2, 64, generator=generator)
    assert subspace_alignment(first.numpy(), second.numpy()) < 0.2
    assert subspace_alignment(
        first.numpy(), (first @ torch.randn(64, 64, generator=generator)).numpy()
    ) == pytest.approx(1.0, abs=1e-4)


def test_a_zero_update_has_no_direction():
    assert math.isnan(cosine(np.zeros(4), np.ones(4)))
    assert math.isnan(subspace_alignment(np.zeros((4, 4)), np.eye(4)))


def test_linear_mmd_is_zero_for_identical_sets_and_the_squared_mean_shift_otherwise():
    points = np.random.default_rng(0).normal(size=(50, 8))
    assert linear_mmd(points, points) == pytest.approx(0.0)
    assert linear_mmd(points, points[::-1]) == pytest.approx(0.0, abs=1e-12)
    shift = np.arange(8.0)
    assert linear_mmd(points, points + shift) == pytest.approx(float(shift @ shift))


def test_jaccard_on_toy_sets():
    assert jaccard({"joy", "anger", "fear"}, {"anger", "fear", "optimism"}) == pytest.approx(0.5)
    assert jaccard(["a"], ["a"]) == 1.0 and jaccard(["a"], ["b"]) == 0.0
    assert math.isnan(jaccard([], []))


def test_vocabulary_is_lower_cased_word_types():
    assert vocabulary(["The cat sat.", "the DOG sat"]) == {"the", "cat", "sat", "dog"}
    assert jaccard(vocabulary(["the cat sat"]), vocabulary(["The dog sat"])) == pytest.approx(0.5)


def test_every_pair_inside_a_triple_is_scored_once():
    params = Params.model_validate(
        {
            "tasks": {t: {"data": {"hub": {"id": f"x/{t}"}}} for t in ("a", "b", "c")},
            **generated_lists(["a", "b", "c"], 1, ["a+b"], ["a+b+c"]),
        }
    )
    assert scored_pairs(params) == ["a+b", "a+c", "b+c"]


def test_metric_keys_are_names_mlflow_accepts():
    assert metric_key("norm_acc", "pair", "ties", "emotion+agnews") == "norm_acc/pair/ties/emotion:agnews"
