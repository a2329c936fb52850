"""RegMean on LoRA updates: the least-squares merge over each member's layer inputs, and where its data comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from loramerge.batching import TokenizedTexts
from loramerge.gram import layer_input_grams
from loramerge.merging import TaskUpdate
from loramerge.merging.observed import ObservedUpdate
from tests.unit.test_merging_methods import assert_deltas_close, exact_sum, merge, random_update

SHAPES = {"l1": (5, 4), "l2": (3, 6)}


def observed(updates: list[TaskUpdate], grams: list[dict[str, torch.Tensor]]) -> list[ObservedUpdate]:
    return [ObservedUpdate(u.name, u.factors, g) for u, g in zip(updates, grams)]


def random_gram(size: int, seed: int) -> torch.Tensor:
    x = torch.randn(3 * size, size, generator=torch.Generator().manual_seed(seed))
    return x.T @ x / (3 * size)


def members(seed: int = 0) -> list[TaskUpdate]:
    return [random_update(f"t{i}", SHAPES, rank, seed + i) for i, rank in enumerate((2, 3, 1))]


def test_with_identity_grams_regmean_is_the_mean_of_the_updates():
    updates = members()
    identity = [{layer: torch.eye(i) for layer, (_, i) in SHAPES.items()} for _ in updates]
    result = merge("regmean", observed(updates, identity))
    assert_deltas_close(result.deltas, exact_sum(updates, 1 / 3))


def test_regmean_solves_the_least_squares_problem_over_every_members_inputs():
    """min_W Σ_i ‖X_i·Wᵀ − X_i·ΔW_iᵀ‖², solved by numpy's lstsq on the stacked inputs (α = 1: no shrinkage)."""
    updates = members(3)
    inputs = [
        {layer: torch.randn(20, i, generator=torch.Generator().manual_seed(k)) for layer, (_, i) in SHAPES.items()}
        for k in range(3)
    ]
    grams = [{layer: x.T @ x / 20 for layer, x in member.items()} for member in inputs]
    result = merge("regmean", observed(updates, grams), off_diagonal=1.0)
    for layer in SHAPES:
        x = np.concatenate([member[layer].double().numpy() for member in inputs])
        y = np.concatenate(
            [m[layer].double().numpy() @ u.delta(layer).double().numpy().T for m, u in zip(inputs, updates)]
        )
        solution = np.linalg.lstsq(x, y, rcond=None)[0].T
        np.testing.assert_allclose(result.deltas[layer].double().numpy(), solution, atol=1e-5)


@pytest.mark.parametrize("off_diagonal", [0.0, 0.5, 0.9])
def test_regmean_matches_the_papers_closed_form_with_shrunk_off_diagonals(off_diagonal):
    updates = members(7)
    grams = [{layer: random_gram(i, 10 * k + j) for j, (layer, (_, i)) in enumerate(SHAPES.items())} for k in range(3)]
    result = merge("regmean", observed(updates, grams), off_diagonal=off_diagonal, scaling=1.5)
    for layer in SHAPES:
        shrunk = [
            off_diagonal * g[layer].double().numpy() + (1 - off_diagonal) * np.diag(np.diag(g[layer].double().numpy()))
            for g in grams
        ]
        w = np.linalg.inv(sum(shrunk)) @ sum(g @ u.delta(layer).double().numpy().T for g, u in zip(shrunk, updates))
        np.testing.assert_allclose(result.deltas[layer].double().numpy(), 1.5 * w.T, atol=1e-5)
    assert result.factors is not None and result.factors["l1"][1].shape[0] == 6  # exactly low-rank: Σ r_i


def test_regmean_without_gram_matrices_names_the_stage_that_computes_them():
    with pytest.raises(ValueError, match=r"needs each member.s grams.*dvc repro pipelines/gram/dvc.yaml:gram@"):
        merge("regmean", members())
    partial = observed(members()[:2], [{"l1": torch.eye(4)}] * 2)
    with pytest.raises(ValueError, match="no Gram matrix for layers"):
        merge("regmean", partial)


def test_layer_input_grams_count_real_tokens_only_however_texts_are_batched():
    """Padding is not data: the Gram matrices of texts batched together equal those of each text alone."""
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    ).eval()
    layers = ["encoder.layer.0.attention.self.query", "encoder.layer.1.attention.self.value"]

    class Tokenizer:
        pad_token_id = 0

        def __call__(self, texts, truncation, max_length):
            return {"input_ids": [[int(w) for w in t.split()] for t in texts]}

    texts = TokenizedTexts(Tokenizer(), ["5 6 7 8 9 10", "11 12", "13 14 15"], None, 16)
    together, tokens = layer_input_grams(encoder, layers, texts.sorted_batches(3))
    assert tokens == 11
    alone, _ = layer_input_grams(encoder, layers, texts.sorted_batches(1))
    for layer in layers:
        torch.testing.assert_close(together[layer], alone[layer], atol=1e-5, rtol=1e-4)
        assert torch.allclose(together[layer], together[layer].T)
