"""Where PEFT's `add_weighted_adapter` computes the same thing, our merge gives the same update.

A tiny randomly initialised BERT (no download) gets two LoRA adapters with different seeds
and alphas; PEFT merges them, and we merge the same adapters' exact factors. PEFT's `cat`
writes A_i·w_i·scaling_i and B_i side by side into an adapter with alpha = r (scaling 1), so
its update is Σ w_i·ΔW_i: ours `weighted_sum` (and `cat`, `linear` for weights 1 and 1/n).
Its `*_svd` variants merge the dense ΔW_i per layer and truncate with an SVD; at full rank
they are our dense merges, with per-layer pruning (PEFT prunes each layer on its own).

The same holds for adapters of unequal ranks (r = 2 and r = 4, which only PEFT's `cat` and `*_svd`
accept) saved with `save_pretrained` on the tiny BERT fixture and read back through the project's
own loader (`loramerge.lora.load_updates`). DARE is random (PEFT draws from the global RNG, we from
a seeded generator), so it is compared by its semantics: PEFT's `density` is our 1 − p, both rescale
survivors by 1/(1 − p), and after the drop our DARE-TIES is PEFT's `dare_ties`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils.merge_utils import dare_ties as peft_dare_ties
from peft.utils.merge_utils import magnitude_based_pruning, random_pruning
from transformers import BertConfig, BertModel

from loramerge.lora import PEFT_PREFIX, deltas_of, load_updates
from loramerge.merging import TaskUpdate, get_method
from loramerge.merging._ops import prune_magnitude
from tests.unit.test_merging_dare import assert_binomial, dare_params, dropped_member, reference_elect_and_mean
from tests.unit.test_merging_methods import merge, random_update

ADAPTERS = {"first": (4, 8.0, 1), "second": (4, 16.0, 2)}  # name: (rank, alpha, seed)
UNEQUAL = {"narrow": (2, 6.0, 3), "wide": (4, 2.0, 4)}  # unequal ranks, scalings alpha/r 3 and 0.5
FULL_RANK = 32  # the smallest side of every adapted layer (hidden 32, intermediate 37)


@pytest.fixture(scope="module")
def peft_model() -> PeftModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
    )
    return with_adapters(BertModel(config), ADAPTERS)


@pytest.fixture(scope="module")
def unequal(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PeftModel, list[TaskUpdate]]:
    """Adapters of ranks 2 and 4 on the tiny BERT fixture: PEFT's model holding them, and the same
    adapters saved with `save_pretrained` and read back by the project's loader, as a merge reads them."""
    torch.manual_seed(1)  # PEFT's random initialisation of A
    model = with_adapters(BertModel.from_pretrained(tiny_backbone), UNEQUAL)
    folder = tmp_path_factory.mktemp("unequal-adapters")
    model.save_pretrained(folder)  # each adapter into folder/<name>
    return model, load_updates(BertModel.from_pretrained(tiny_backbone), {name: folder / name for name in UNEQUAL})


def with_adapters(encoder: BertModel, adapters: dict[str, tuple[int, float, int]]) -> PeftModel:
    """The encoder with one LoRA adapter per entry (rank, alpha, seed of its non-zero B)."""
    (first, (rank, alpha, _)), *others = adapters.items()
    model = get_peft_model(encoder, lora_config(rank, alpha), adapter_name=first)
    for name, (rank, alpha, _) in others:
        model.add_adapter(name, lora_config(rank, alpha))
    for name, (_, _, seed) in adapters.items():
        randomise_b(model, name, seed)
    return model


def lora_config(rank: int, alpha: float) -> LoraConfig:
    """No task type, so PEFT adds no modules_to_save (which add_weighted_adapter refuses to merge)."""
    targets = ["query", "key", "value", "dense"]
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, task_type=None)


def randomise_b(model: PeftModel, adapter: str, seed: int) -> None:
    """PEFT initialises B to zero (ΔW = 0); give it values so the merges have something to merge."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_B:
                module.lora_B[adapter].weight.copy_(torch.randn(module.lora_B[adapter].weight.shape, generator=g))


def lora_layers(model: PeftModel) -> dict[str, LoraLayer]:
    """PEFT's LoRA layers by the encoder's layer name (PEFT's prefix removed, as the loader names them)."""
    modules = model.named_modules()
    return {name.removeprefix(PEFT_PREFIX): module for name, module in modules if isinstance(module, LoraLayer)}


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
    return m.merge(our_updates(model), m.Config(**params)).deltas


def test_the_adapters_differ_and_carry_their_own_scaling(peft_model):
    first, second = our_updates(peft_model)
    layer = first.layers[0]
    assert lora_layers(peft_model)[layer].scaling == {"first": 2.0, "second": 4.0}
    assert not torch.allclose(first.delta(layer), second.delta(layer))


@pytest.mark.parametrize(
    ("weights", "method", "params"),
    [([1.0, 1.0], "cat", {}), ([0.5, 0.5], "linear", {}), ([0.3, -0.7], "weighted_sum", {"weights": [0.3, -0.7]})],
)
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


def test_peft_ties_svd_at_full_rank_is_our_per_layer_ties(peft_model):
    majority_sign = "total"  # "frequency" differs on tied counts: the test below
    name = f"ties_svd_{majority_sign}"
    peft_model.add_weighted_adapter(
        list(ADAPTERS),
        [0.7, 0.7],
        name,
        combination_type="ties_svd",
        density=0.5,
        majority_sign_method=majority_sign,
        svd_rank=FULL_RANK,
    )
    theirs = peft_deltas(peft_model, name)
    merged = ours(peft_model, "ties", scaling=0.7, density=0.5, prune_scope="layer", majority_sign=majority_sign)
    assert_same_updates(merged, theirs, atol=1e-5)


def test_peft_magnitude_prune_svd_at_full_rank_is_our_per_layer_magnitude_prune(peft_model):
    peft_model.add_weighted_adapter(
        list(ADAPTERS), [0.4, 0.4], "mp_svd", combination_type="magnitude_prune_svd", density=0.3, svd_rank=FULL_RANK
    )
    merged = ours(peft_model, "magnitude_prune", scaling=0.4, density=0.3, prune_scope="layer")
    assert_same_updates(merged, peft_deltas(peft_model, "mp_svd"), atol=1e-5)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.99])
def test_per_layer_pruning_keeps_the_entries_peft_keeps(density):
    g = torch.Generator().manual_seed(3)
    task = {"a": torch.randn(7, 9, generator=g), "b": torch.randn(5, 3, generator=g)}
    pruned = prune_magnitude(task, density, "layer")
    for layer, tensor in task.items():
        assert torch.equal(pruned[layer], magnitude_based_pruning(tensor, density))


# --- unequal ranks, through the project's adapter loader ------------------------------------------


def test_the_loader_reads_adapters_of_unequal_ranks_as_peft_applies_them(unequal):
    model, updates = unequal
    assert [u.name for u in updates] == list(UNEQUAL)
    for update, (rank, _, _) in zip(updates, UNEQUAL.values()):
        assert {a.shape[0] for _, a in update.factors.values()} == {rank}
        assert_same_updates(deltas_of(update), peft_deltas(model, update.name), atol=1e-6)


@pytest.mark.parametrize(
    ("weights", "method", "params"), [([1.0, 1.0], "cat", {}), ([0.3, -0.7], "weighted_sum", {"weights": [0.3, -0.7]})]
)
def test_peft_cat_of_unequal_ranks_is_our_exact_weighted_sum_of_the_loaded_adapters(unequal, weights, method, params):
    model, updates = unequal
    name = f"unequal_cat_{method}"
    model.add_weighted_adapter(list(UNEQUAL), weights, name, combination_type="cat")
    result = merge(method, updates, **params)
    assert_same_updates(result.deltas, peft_deltas(model, name), atol=1e-6)
    assert {a.shape[0] for _, a in result.factors.values()} == {model.peft_config[name].r} == {2 + 4}


@pytest.mark.parametrize("rank", [6, 3])
def test_peft_svd_of_unequal_ranks_is_our_svd_of_task_arithmetic_at_the_summed_and_a_smaller_rank(unequal, rank):
    model, updates = unequal
    name = f"unequal_svd_{rank}"
    model.add_weighted_adapter(list(UNEQUAL), [1.0, 1.0], name, combination_type="svd", svd_rank=rank)
    theirs = peft_deltas(model, name)
    assert_same_updates(merge("svd", updates, base="task_arithmetic", rank=rank).deltas, theirs, atol=1e-5)
    if rank == 2 + 4:  # the summed rank loses nothing
        assert_same_updates(merge("cat", updates).deltas, theirs, atol=1e-5)


@pytest.mark.parametrize(
    ("combination", "method", "params"),
    [
        ("ties_svd", "ties", {"density": 0.5, "majority_sign": "total"}),
        ("ties_svd", "ties", {"density": 0.3, "majority_sign": "total"}),
        ("magnitude_prune_svd", "magnitude_prune", {"density": 0.4}),
    ],
)
def test_peft_dense_svd_merges_of_unequal_ranks_at_full_rank_are_our_per_layer_merges(
    unequal, combination, method, params
):
    model, updates = unequal
    name = f"unequal_{combination}_{params['density']}".replace(".", "_")
    sign = {"majority_sign_method": params["majority_sign"]} if "majority_sign" in params else {}
    model.add_weighted_adapter(
        list(UNEQUAL),
        [0.6, 0.6],
        name,
        combination_type=combination,
        density=params["density"],
        svd_rank=FULL_RANK,
        **sign,
    )
    ours = merge(method, updates, scaling=0.6, prune_scope="layer", **params).deltas
    assert_same_updates(ours, peft_deltas(model, name), atol=1e-5)


@pytest.mark.parametrize(
    ("combination", "method"), [("dare_linear_svd", "dare_task_arithmetic"), ("dare_ties_svd", "dare_ties")]
)
def test_peft_dare_and_ours_on_unequal_ranks_give_each_entry_one_of_the_same_outcomes_with_the_same_odds(
    unequal, combination, method
):
    # Per entry and member, δ̂_i = δ_i/(1 − p) if kept, else 0. With two members every merged entry is
    # λ times one of: 0 (both dropped), δ̂_1, δ̂_2 (one kept), or both kept — their sum, or TIES'
    # disjoint mean. Zero, where both members dropped the entry, has probability p² in both merges
    # (PEFT's density is 1 − p); one shared mask would give p, keeping with probability p gives (1 − p)².
    model, updates = unequal
    drop_prob, scaling = 0.3, 0.8
    name = f"unequal_{combination}"
    torch.manual_seed(0)  # PEFT's drop uses the global RNG
    model.add_weighted_adapter(
        list(UNEQUAL),
        [scaling, scaling],
        name,
        combination_type=combination,
        density=1 - drop_prob,
        svd_rank=FULL_RANK,
    )
    ours = merge(method, updates, **dare_params(method, drop_prob=drop_prob, seed=0, scaling=scaling)).deltas
    for who, merged in [("PEFT", peft_deltas(model, name)), ("ours", ours)]:
        zeros = total = 0
        for layer, entries in merged.items():
            outcomes = dare_outcomes([deltas_of(u)[layer] / (1 - drop_prob) for u in updates], method, scaling)
            distance, nearest = (entries - outcomes).abs().min(dim=0)
            assert bool((distance <= 1e-5 * (1 + entries.abs())).all()), f"{who} {layer}: {distance.max()}"
            zeros, total = zeros + int((nearest == 0).sum()), total + entries.numel()
        assert_binomial(zeros, total, drop_prob**2, f"{who}: entries dropped by both members")


def dare_outcomes(rescaled: list[torch.Tensor], method: str, scaling: float) -> torch.Tensor:
    """λ·[0, δ̂_1, δ̂_2, both kept] per entry of two members, stacked on dimension 0."""
    first, second = rescaled
    if method == "dare_task_arithmetic":
        both = first + second
    else:
        both = reference_elect_and_mean(torch.stack(rescaled), "total")
    return scaling * torch.stack([torch.zeros_like(first), first, second, both])


# --- DARE's primitives, against PEFT's merge_utils --------------------------------------------------


def test_our_drop_probability_is_one_minus_the_density_of_pefts_random_pruning_and_both_rescale_the_same():
    member = random_update("m", {"l": (200, 150)}, 8, 0)
    delta, drop_prob = member.delta("l"), 0.2
    torch.manual_seed(0)
    theirs = random_pruning(delta, density=1 - drop_prob, rescale=True)
    ours = merge("dare_task_arithmetic", [member], drop_prob=drop_prob, seed=0).deltas["l"]
    for who, pruned in [("PEFT", theirs), ("ours", ours)]:
        kept = pruned != 0
        assert_binomial(int(kept.sum()), kept.numel(), 1 - drop_prob, f"{who}: entries kept")
        torch.testing.assert_close(pruned[kept], delta[kept] / (1 - drop_prob))


@pytest.mark.parametrize(("majority_sign", "scaling"), [("total", 0.8), ("total", -1.2)])
def test_our_dare_ties_is_pefts_dare_ties_of_what_our_drop_left(majority_sign, scaling):
    # PEFT's dare_ties at density 1 does not drop (it warns and keeps everything), so given the members
    # as our drop left them it is exactly the rest of DARE-TIES: sign election, disjoint mean, weights.
    members = [random_update(f"m{i}", {"a": (7, 9), "b": (5, 4)}, r, 50 + i) for i, r in enumerate((1, 3, 2))]
    drop_prob, seed = 0.4, 5
    left = [dropped_member(members, i, drop_prob, seed) for i in range(len(members))]
    ours = merge(
        "dare_ties", members, drop_prob=drop_prob, seed=seed, scaling=scaling, density=1.0, majority_sign=majority_sign
    )
    for layer, delta in ours.deltas.items():
        with pytest.warns(UserWarning, match="no pruning"):
            theirs = peft_dare_ties([m[layer] for m in left], torch.tensor([scaling] * 3), 1.0, majority_sign)
        torch.testing.assert_close(delta, theirs, atol=1e-6, rtol=1e-5)


def test_frequency_elects_as_peft_does_except_on_a_tied_count_where_the_sum_decides_as_total_would():
    from peft.utils.merge_utils import calculate_majority_sign_mask

    from loramerge.merging._ops import agreeing

    g = torch.Generator().manual_seed(3)
    stacked = torch.randn(4, 30, 20, generator=g) * (torch.rand(4, 30, 20, generator=g) > 0.3)  # zeros: trimmed
    tied = stacked.sign().sum(dim=0) == 0
    assert tied.any() and not tied.all()
    expected = torch.where(
        tied,
        calculate_majority_sign_mask(stacked, method="total"),
        calculate_majority_sign_mask(stacked, method="frequency"),
    )
    assert torch.equal(agreeing(stacked, "frequency"), expected)
