"""Where PEFT's `add_weighted_adapter` computes the same thing, our merge gives the same update.

A tiny randomly initialised BERT (no download) gets two LoRA adapters with different seeds
and alphas; PEFT merges them, and we merge the same adapters' exact factors. PEFT's `cat`
writes A_i·w_i·scaling_i and B_i side by side into an adapter with alpha = r (scaling 1), so
its update is Σ w_i·ΔW_i: ours `weighted_sum` (and `cat`, `linear` for weights 1 and 1/n).
Its `*_svd` variants merge the dense ΔW_i per layer and truncate with an SVD; at full rank
they are our dense merges, with per-layer pruning (PEFT prunes each layer on its own).
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils.merge_utils import magnitude_based_pruning
from transformers import BertConfig, BertModel

from loramerge.merging import TaskUpdate, get_method
from loramerge.merging._ops import prune_magnitude

ADAPTERS = {"first": (4, 8.0, 1), "second": (4, 16.0, 2)}  # name: (rank, alpha, seed)
FULL_RANK = 32  # the smallest side of every adapted layer (hidden 32, intermediate 37)


@pytest.fixture(scope="module")
def peft_model() -> PeftModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=32)
    (first, (rank, alpha, _)), *others = ADAPTERS.items()
    model = get_peft_model(BertModel(config), lora_config(rank, alpha), adapter_name=first)
    for name, (rank, alpha, _) in others:
        model.add_adapter(name, lora_config(rank, alpha))
    for name, (_, _, seed) in ADAPTERS.items():
        randomise_b(model, name, seed)
    return model


def lora_config(rank: int, alpha: float) -> LoraConfig:
    """No task type, so PEFT adds no modules_to_save (which add_weighted_adapter refuses to merge)."""
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=["query", "key", "value", "dense"], lora_dropout=0.0, task_type=None)


def randomise_b(model: PeftModel, adapter: str, seed: int) -> None:
    """PEFT initialises B to zero (ΔW = 0); give it values so the merges have something to merge."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_B:
                module.lora_B[adapter].weight.copy_(torch.randn(module.lora_B[adapter].weight.shape, generator=g))


def lora_layers(model: PeftModel) -> dict[str, LoraLayer]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def our_updates(model: PeftModel) -> list[TaskUpdate]:
    """Each adapter as (B·alpha/r, A) per layer, as loramerge.lora.load_updates reads them."""
    updates = []
    for adapter in ADAPTERS:
        factors = {}
        for name, module in lora_layers(model).items():
            b = module.lora_B[adapter].weight.detach() * module.scaling[adapter]
            factors[name] = (b.clone(), module.lora_A[adapter].weight.detach().clone())
        updates.append(TaskUpdate(adapter, factors))
    return updates


def peft_deltas(model: PeftModel, merged: str) -> dict[str, torch.Tensor]:
    return {name: module.get_delta_weight(merged).detach() for name, module in lora_layers(model).items()}


def assert_same_updates(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], atol: float) -> None:
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 * 6 + 1  # 6 per BERT layer + the pooler
    for layer in theirs:
        torch.testing.assert_close(ours[layer], theirs[layer], atol=atol, rtol=1e-4)


def ours(model: PeftModel, method: str, **params) -> dict[str, torch.Tensor]:
    m = get_method(method)
    return m.merge(our_updates(model), m.Params(**params)).deltas


def test_the_adapters_differ_and_carry_their_own_scaling(peft_model):
    first, second = our_updates(peft_model)
    layer = first.layers[0]
    assert lora_layers(peft_model)[layer].scaling == {"first": 2.0, "second": 4.0}
    assert not torch.allclose(first.delta(layer), second.delta(layer))


@pytest.mark.parametrize(("weights", "method", "params"), [([1.0, 1.0], "cat", {}), ([0.5, 0.5], "linear", {}), ([0.3, -0.7], "weighted_sum", {"weights": [0.3, -0.7]})])
def test_peft_cat_is_our_exact_weighted_sum(peft_model, weights, method, params):
    name = f"cat_{method}"
    peft_model.add_weighted_adapter(list(ADAPTERS), weights, name, combination_type="cat")
    assert_same_updates(ours(peft_model, method, **params), peft_deltas(peft_model, name), atol=1e-6)


def test_peft_svd_at_the_summed_rank_is_our_svd_of_task_arithmetic(peft_model):
    rank = sum(r for r, _, _ in ADAPTERS.values())
    peft_model.add_weighted_adapter(list(ADAPTERS), [1.0, 1.0], "svd", combination_type="svd", svd_rank=rank)
    theirs = peft_deltas(peft_model, "svd")
    assert_same_updates(ours(peft_model, "svd", base="task_arithmetic", rank=rank), theirs, atol=1e-5)
    assert_same_updates(ours(peft_model, "cat"), theirs, atol=1e-5)  # rank Σ r_i loses nothing


@pytest.mark.parametrize("majority_sign", ["total", "frequency"])
def test_peft_ties_svd_at_full_rank_is_our_per_layer_ties(peft_model, majority_sign):
    name = f"ties_svd_{majority_sign}"
    peft_model.add_weighted_adapter(list(ADAPTERS), [0.7, 0.7], name, combination_type="ties_svd", density=0.5, majority_sign_method=majority_sign, svd_rank=FULL_RANK)
    theirs = peft_deltas(peft_model, name)
    assert_same_updates(ours(peft_model, "ties", scaling=0.7, density=0.5, prune_scope="layer", majority_sign=majority_sign), theirs, atol=1e-5)


def test_peft_magnitude_prune_svd_at_full_rank_is_our_per_layer_magnitude_prune(peft_model):
    peft_model.add_weighted_adapter(list(ADAPTERS), [0.4, 0.4], "mp_svd", combination_type="magnitude_prune_svd", density=0.3, svd_rank=FULL_RANK)
    assert_same_updates(ours(peft_model, "magnitude_prune", scaling=0.4, density=0.3, prune_scope="layer"), peft_deltas(peft_model, "mp_svd"), atol=1e-5)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.99])
def test_per_layer_pruning_keeps_the_entries_peft_keeps(density):
    g = torch.Generator().manual_seed(3)
    task = {"a": torch.randn(7, 9, generator=g), "b": torch.randn(5, 3, generator=g)}
    pruned = prune_magnitude(task, density, "layer")
    for layer, tensor in task.items():
        assert torch.equal(pruned[layer], magnitude_based_pruning(tensor, density))
