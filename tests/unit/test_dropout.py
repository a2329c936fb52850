"""FastDropout: torch's dropout distribution (keep 1 - p, kept values scaled to keep the mean), seeded by torch."""

from __future__ import annotations

import torch

from loramerge.dropout import FastDropout, use_fast_dropout

P = 0.1
KEEP = 1 - round(P * 65536) / 65536
"""P(keep) after p is rounded to 1/65536: 0.8999939 for p = 0.1."""


def dropped(inputs: torch.Tensor, seed: int = 0, p: float = P) -> torch.Tensor:
    torch.manual_seed(seed)
    return FastDropout(p).train()(inputs)


def test_each_element_is_kept_with_probability_one_minus_p_and_kept_values_are_divided_by_it():
    outputs = dropped(torch.ones(1_000_000))
    kept = outputs != 0
    spread = (KEEP * (1 - KEEP) / kept.numel()) ** 0.5
    assert abs(kept.float().mean().item() - KEEP) < 5 * spread
    assert torch.equal(outputs[kept], torch.full_like(outputs[kept], 1 / KEEP))


def test_the_expected_output_is_the_input():
    inputs = torch.randn(2000, 500, dtype=torch.float64)
    assert abs(dropped(inputs).sum().item() - inputs.sum().item()) < 5 * (inputs.pow(2).sum().item() * P / KEEP) ** 0.5


def test_torch_seed_fixes_the_mask_and_another_seed_draws_another():
    inputs = torch.ones(64, 128)
    assert torch.equal(dropped(inputs, seed=3), dropped(inputs, seed=3))
    assert not torch.equal(dropped(inputs, seed=3), dropped(inputs, seed=4))


def test_successive_masks_under_one_seed_differ():
    torch.manual_seed(0)
    layer = FastDropout(P).train()
    assert not torch.equal(layer(torch.ones(4096)), layer(torch.ones(4096)))


def test_gradients_reach_the_kept_elements_only_with_the_same_scale():
    inputs = torch.randn(300, 40, requires_grad=True)
    outputs = dropped(inputs)
    outputs.sum().backward()
    assert torch.equal(inputs.grad, (outputs != 0).float() / KEEP)


def test_bf16_stays_bf16_and_evaluation_or_p_zero_changes_nothing():
    inputs = torch.randn(32, 16, 8).bfloat16()
    assert dropped(inputs).dtype == torch.bfloat16
    assert torch.equal(FastDropout(P).eval()(inputs), inputs)
    assert torch.equal(dropped(inputs, p=0.0), inputs)


def test_every_dropout_module_is_replaced_keeping_its_p_and_the_state_dict():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.Dropout(0.2), torch.nn.Sequential(torch.nn.Dropout(0.3))
    )
    keys = set(model.state_dict())
    use_fast_dropout(model)
    assert [type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [FastDropout, FastDropout]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.3]
    assert set(model.state_dict()) == keys
