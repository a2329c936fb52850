"""Layer-wise AdaMerging: coefficients per task and layer learned by entropy minimisation, and its probe."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from loramerge.batching import TokenizedTexts
from loramerge.merging.observed import ObservedUpdate
from loramerge.model import ClassificationHead
from loramerge.probe import EntropyProbe
from tests.unit.test_merging_methods import assert_deltas_close, exact_sum, merge, random_update

SHAPES = {"l1": (5, 4), "l2": (3, 6)}


def members(entropy) -> list[ObservedUpdate]:
    updates = [random_update(f"t{i}", SHAPES, rank, seed=i) for i, rank in enumerate((2, 3))]
    return [ObservedUpdate(u.name, u.factors, entropy=entropy) for u in updates]


def size(deltas, step, batch_size):
    """A stand-in objective that is smallest for the zero update."""
    return sum((d**2).sum() for d in deltas.values())


def test_without_steps_adamerging_is_task_arithmetic_at_the_initial_coefficient():
    updates = members(size)
    assert_deltas_close(merge("adamerging", updates, initial=0.4, steps=0).deltas, exact_sum(updates, 0.4))


def test_coefficients_stay_in_zero_one_however_hard_the_objective_pushes():
    shrink = merge("adamerging", members(size), initial=0.5, steps=200, learning_rate=0.1)
    assert all(d.abs().max() < 1e-6 for d in shrink.deltas.values())
    grow = members(lambda deltas, step, batch_size: -size(deltas, step, batch_size))
    assert_deltas_close(
        merge("adamerging", grow, initial=0.5, steps=200, learning_rate=0.1).deltas, exact_sum(grow, 1.0)
    )


def test_one_adam_step_moves_every_coefficient_by_the_learning_rate_against_its_gradient():
    """Adam's first step is lr·sign(g) (bias-corrected moments: m̂ = g, v̂ = g²): solvable by hand."""
    layer = "l1"
    (update,) = [random_update("a", {layer: (4, 4)}, 2, seed=3)]
    target = 0.8 * update.delta(layer)  # from λ = 0.3 the objective wants λ larger

    def distance(deltas, step, batch_size):
        return ((deltas[layer] - target) ** 2).sum()

    result = merge("adamerging", [ObservedUpdate("a", update.factors, entropy=distance)], steps=1, learning_rate=0.05)
    assert_deltas_close(result.deltas, {layer: (0.3 + 0.05) * update.delta(layer)})


def test_adamerging_is_deterministic_and_low_rank():
    def wavy(deltas, step, batch_size):
        return sum(torch.sin((d * (step + 1)).sum()) for d in deltas.values())

    first = merge("adamerging", members(wavy), steps=15, learning_rate=0.05)
    again = merge("adamerging", members(wavy), steps=15, learning_rate=0.05)
    assert all(torch.equal(first.deltas[k], again.deltas[k]) for k in SHAPES)
    assert first.factors is not None and first.factors["l1"][1].shape[0] == 5  # Σ r_i


def test_adamerging_without_a_probe_says_what_it_needs():
    plain = [random_update("a", SHAPES, 2, seed=0)]
    with pytest.raises(ValueError, match="needs each member's entropy"):
        merge("adamerging", plain)


class Tokenizer:
    pad_token_id = 0

    def __call__(self, texts, truncation, max_length):
        return {"input_ids": [[int(w) for w in t.split()] for t in texts]}


def test_the_probe_is_differentiable_in_the_update_and_leaves_the_encoder_untouched():
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    )
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    texts = TokenizedTexts(Tokenizer(), ["5 6 7", "8 9", "10 11 12 13", "14"], None, 8)  # no labels at all
    probe = EntropyProbe(encoder, ClassificationHead(8, 3, 0.5), texts, "mean", seed=0)
    layer = "encoder.layer.0.attention.self.query"
    delta = torch.zeros(8, 8, requires_grad=True)
    entropy = probe({layer: delta}, step=0, batch_size=2)
    (gradient,) = torch.autograd.grad(entropy, [delta])
    assert 0 < entropy.item() <= torch.log(torch.tensor(3.0)).item() + 1e-6
    assert gradient.abs().sum() > 0
    assert probe({layer: delta.detach()}, step=0, batch_size=2).item() == pytest.approx(entropy.item())
    assert probe.batch(0, 2)["input_ids"].tolist() != probe.batch(1, 2)["input_ids"].tolist()
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
