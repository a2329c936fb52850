"""DARE, read as a specification written from the paper (Yu et al. 2024, "Language Models are Super Mario").

The paper's drop-and-rescale, per member update δ and drop probability p (its eqs. 1–2):

    m ~ Bernoulli(p) per entry,   δ̃ = (1 − m) ⊙ δ,   δ̂ = δ̃ / (1 − p)

so an entry survives with probability 1 − p, survivors are scaled by 1/(1 − p) (E[δ̂] = δ), and each
member draws its own m. DARE task arithmetic is then λ·Σ_i δ̂_i; DARE-TIES runs TIES on the δ̂_i
(trim to the top `density` by magnitude, elect a sign per entry, average the agreeing entries)
and multiplies by λ. The drop comes first: TIES trims what DARE left.

The random tests use fixed seeds, so they are repeatable; their bounds are five binomial standard
deviations (a correct drop lands outside with probability below 1e-6 per check), while each of the
wrong drops they guard against (keeping with probability p, one mask for every member) misses by
dozens of deviations. The exact tests compare with `reference_dare_ties`, a float64 rewrite of the
equations above that shares no code with loramerge (and none with PEFT).
"""

from __future__ import annotations

import math

import pytest
import torch

from loramerge.merging import MergeResult, TaskUpdate
from tests.unit.test_merging_methods import merge, random_update

DARE_METHODS = ["dare_task_arithmetic", "dare_ties", "knots_dare_ties"]
WIDE = {"encoder.layer.0.attention.self.query": (40, 300), "encoder.layer.0.output.dense": (30, 200)}
"""Layers wide enough for tight binomial bounds, also in KnOTS' representation (rank × 300 and rank × 200)."""
SMALL = {"encoder.layer.0.attention.self.query": (12, 10), "encoder.layer.1.intermediate.dense": (9, 14)}
SIGMAS = 5.0


# --- the float64 reference -------------------------------------------------------------------------


def reference_dare_ties(
    deltas: list[dict[str, torch.Tensor]],
    survivors: list[dict[str, torch.Tensor]],
    drop_prob: float,
    density: float,
    prune_scope: str,
    majority_sign: str,
    scaling: float,
) -> dict[str, torch.Tensor]:
    """λ·TIES(DARE(δ_i)) in float64, given which entries each member's drop keeps (`survivors`)."""
    rescaled = [
        {layer: torch.where(keep[layer], delta[layer] / (1 - drop_prob), 0.0) for layer in delta}
        for delta, keep in zip(deltas, survivors)
    ]
    trimmed = [reference_trim(member, density, prune_scope) for member in rescaled]
    return {
        layer: scaling * reference_elect_and_mean(torch.stack([m[layer] for m in trimmed]), majority_sign)
        for layer in deltas[0]
    }


def reference_trim(member: dict[str, torch.Tensor], density: float, prune_scope: str) -> dict[str, torch.Tensor]:
    """Keep the int(density·N) largest magnitudes, N counted per layer or over the member's whole update."""
    groups = [[layer] for layer in member] if prune_scope == "layer" else [list(member)]
    trimmed = {}
    for group in groups:
        flat = torch.cat([member[layer].reshape(-1) for layer in group])
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.argsort(flat.abs(), descending=True)[: int(density * flat.numel())]] = True
        for layer, part in zip(group, torch.split(keep, [member[layer].numel() for layer in group])):
            trimmed[layer] = torch.where(part.reshape(member[layer].shape), member[layer], 0.0)
    return trimmed


def reference_elect_and_mean(stacked: torch.Tensor, majority_sign: str) -> torch.Tensor:
    """TIES' sign election (sum of values, or count of signs with a tied count decided by the sum; a zero sum elects
    +) and mean of the agreeing non-zeros."""
    total = stacked.sum(dim=0)
    count = torch.sign(stacked).sum(dim=0)
    votes = total if majority_sign == "total" else torch.where(count == 0, total, count)
    elected = torch.where(votes >= 0, 1.0, -1.0)
    agree = torch.sign(stacked) == elected
    return (stacked * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)


# --- observing the drop from outside ---------------------------------------------------------------


def float64_deltas(update: TaskUpdate) -> dict[str, torch.Tensor]:
    return {layer: b.double() @ a.double() for layer, (b, a) in update.factors.items()}


def zero_like(update: TaskUpdate) -> TaskUpdate:
    return TaskUpdate(
        f"zero-{update.name}",
        {layer: (torch.zeros_like(b), torch.zeros_like(a)) for layer, (b, a) in update.factors.items()},
    )


def dropped_member(members: list[TaskUpdate], index: int, drop_prob: float, seed: int) -> dict[str, torch.Tensor]:
    """Member `index` after the drop and rescale of a DARE merge of `members`, seen from outside the library.

    The drop is seeded per (seed, member position, layer), not by the values, so the member merged
    in its own position with every other member set to zero shows what the drop left of it: DARE
    task arithmetic at λ = 1.
    """
    alone = [member if i == index else zero_like(member) for i, member in enumerate(members)]
    return merge("dare_task_arithmetic", alone, drop_prob=drop_prob, seed=seed, scaling=1.0).deltas


def survivors(members: list[TaskUpdate], index: int, drop_prob: float, seed: int) -> dict[str, torch.Tensor]:
    """Which entries the drop keeps of member `index`: the non-zeros of `dropped_member` (the members'
    entries are products of random factors, so none is zero before the drop)."""
    return {layer: delta != 0 for layer, delta in dropped_member(members, index, drop_prob, seed).items()}


def merged_entries(method: str, result: MergeResult) -> dict[str, torch.Tensor]:
    """What the drop acted on: the dense merge, or for KnOTS the merged representation (the factor A)."""
    return {layer: a for layer, (_, a) in result.factors.items()} if method.startswith("knots") else result.deltas


def dare_params(method: str, **params) -> dict:
    """The hyper-parameters for `method`; the TIES variants get no magnitude trim unless `density` is given."""
    return params if method == "dare_task_arithmetic" else {"density": 1.0} | params


def assert_binomial(count: int, trials: int, probability: float, what: str) -> None:
    """`count` successes of `trials` independent draws lie within SIGMAS standard deviations of the mean."""
    expected = trials * probability
    bound = SIGMAS * math.sqrt(trials * probability * (1 - probability))
    assert abs(count - expected) <= bound, f"{what}: {count} of {trials}, expected {expected:.0f} ± {bound:.0f}"


# --- each member keeps a fraction 1 − p, rescaled ---------------------------------------------------


@pytest.mark.parametrize("method", DARE_METHODS)
@pytest.mark.parametrize("drop_prob", [0.1, 0.3, 0.8])
@pytest.mark.parametrize("seed", [0, 7])
def test_dare_keeps_each_entry_with_probability_one_minus_p_within_a_binomial_bound(method, drop_prob, seed):
    member = [random_update("m", WIDE, 16, 40 + seed)]
    undropped = merged_entries(method, merge(method, member, **dare_params(method, drop_prob=0.0)))
    dropped = merged_entries(method, merge(method, member, **dare_params(method, drop_prob=drop_prob, seed=seed)))
    for layer, entries in dropped.items():
        kept = entries != 0
        assert_binomial(int(kept.sum()), kept.numel(), 1 - drop_prob, f"{method} {layer} entries kept")
        torch.testing.assert_close(entries[kept], undropped[layer][kept] / (1 - drop_prob), atol=1e-5, rtol=1e-5)
    total = sum(int((entries != 0).sum()) for entries in dropped.values())
    assert_binomial(total, sum(entries.numel() for entries in dropped.values()), 1 - drop_prob, f"{method} kept")


def test_dare_task_arithmetic_is_unbiased_over_seeds_as_the_rescale_promises():
    # Each seed's merge is δ·(keep)/(1 − p); over S seeds its mean has standard deviation |δ|·√(p/(1−p)/S).
    (member,) = [random_update("m", {"l": (6, 5)}, 2, 3)]
    drop_prob, seeds = 0.3, 400
    merges = [merge("dare_task_arithmetic", [member], drop_prob=drop_prob, seed=s).deltas["l"] for s in range(seeds)]
    mean = torch.stack(merges).mean(dim=0)
    delta = member.delta("l")
    spread = delta.abs() * math.sqrt(drop_prob / (1 - drop_prob) / seeds)
    assert bool(((mean - delta).abs() <= SIGMAS * spread).all()), (mean - delta).abs().max()


# --- every member draws its own mask ------------------------------------------------------------------


@pytest.mark.parametrize("method", DARE_METHODS)
def test_two_identical_members_are_dropped_independently_so_an_entry_vanishes_with_probability_p_squared(method):
    # Same update, same seed, two positions: an entry of the merge is zero exactly where both members
    # dropped it, p² of the entries when each member draws its own mask (p of them with one shared mask).
    twin = random_update("twin", WIDE, 16, 5)
    drop_prob = 0.5
    entries = merged_entries(method, merge(method, [twin, twin], **dare_params(method, drop_prob=drop_prob, seed=3)))
    for layer, merged in entries.items():
        assert_binomial(int((merged == 0).sum()), merged.numel(), drop_prob**2, f"{method} {layer} dropped by both")


def test_members_masks_overlap_as_independent_draws_and_differ_between_layers_of_one_shape():
    same_shape = {"encoder.layer.0.attention.self.query": (50, 60), "encoder.layer.0.attention.self.key": (50, 60)}
    members = [random_update(f"m{i}", same_shape, 3, 60 + i) for i in range(3)]
    drop_prob = 0.4
    masks = [survivors(members, i, drop_prob, seed=9) for i in range(3)]
    for layer in same_shape:
        for i in range(3):
            for j in range(i + 1, 3):
                both = int((masks[i][layer] & masks[j][layer]).sum())
                what = f"members {i},{j} {layer} kept by both"
                assert_binomial(both, masks[i][layer].numel(), (1 - drop_prob) ** 2, what)
    query, key = (masks[0][layer] for layer in same_shape)
    assert_binomial(int((query & key).sum()), query.numel(), (1 - drop_prob) ** 2, "query and key kept by both")


# --- λ is applied whatever p ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", DARE_METHODS)
@pytest.mark.parametrize("scaling", [0.4, -1.5])
def test_dare_multiplies_the_merge_by_the_scaling_when_it_drops(method, scaling):
    members = [random_update(f"m{i}", SMALL, r, 80 + i) for i, r in enumerate((2, 5, 3))]
    params = {"drop_prob": 0.3, "seed": 4}
    unscaled = merge(method, members, **params, scaling=1.0).deltas
    scaled = merge(method, members, **params, scaling=scaling).deltas
    for layer, delta in unscaled.items():
        assert delta.abs().max() > 0
        torch.testing.assert_close(scaled[layer], scaling * delta, atol=1e-5, rtol=1e-5)


# --- the exact merge, against the float64 reference ------------------------------------------------------


@pytest.mark.parametrize(
    ("drop_prob", "density", "prune_scope", "majority_sign", "scaling"),
    [
        (0.3, 1.0, "model", "total", 1.0),  # the defaults' shape: DARE then sign election, no trim
        (0.5, 0.4, "layer", "total", 0.7),
        (0.2, 0.3, "model", "frequency", 1.3),
        (0.6, 0.5, "model", "total", -0.8),
        (0.4, 0.6, "layer", "frequency", 0.5),
    ],
)
def test_dare_ties_is_the_papers_drop_and_rescale_then_ties_trim_elect_and_disjoint_mean_times_lambda(
    drop_prob, density, prune_scope, majority_sign, scaling
):
    members = [random_update(f"m{i}", SMALL, r, 20 + i) for i, r in enumerate((2, 5, 3))]
    seed = 6
    keeps = [survivors(members, i, drop_prob, seed) for i in range(len(members))]
    expected = reference_dare_ties(
        [float64_deltas(m) for m in members], keeps, drop_prob, density, prune_scope, majority_sign, scaling
    )
    ours = merge(
        "dare_ties",
        members,
        drop_prob=drop_prob,
        seed=seed,
        density=density,
        prune_scope=prune_scope,
        majority_sign=majority_sign,
        scaling=scaling,
    ).deltas
    for layer, delta in expected.items():
        torch.testing.assert_close(ours[layer], delta.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("drop_prob", "scaling"), [(0.3, 1.0), (0.7, 0.45), (0.1, -2.0)])
def test_dare_task_arithmetic_is_lambda_times_the_sum_of_the_dropped_and_rescaled_members(drop_prob, scaling):
    members = [random_update(f"m{i}", SMALL, r, 30 + i) for i, r in enumerate((1, 4, 2))]
    seed = 2
    keeps = [survivors(members, i, drop_prob, seed) for i in range(len(members))]
    deltas = [float64_deltas(m) for m in members]
    ours = merge("dare_task_arithmetic", members, drop_prob=drop_prob, seed=seed, scaling=scaling).deltas
    for layer in SMALL:
        expected = scaling * sum(torch.where(k[layer], d[layer] / (1 - drop_prob), 0.0) for d, k in zip(deltas, keeps))
        torch.testing.assert_close(ours[layer], expected.float(), atol=1e-5, rtol=1e-4)


# --- DARE drops first, TIES trims what is left ---------------------------------------------------------


@pytest.mark.parametrize("method", ["dare_ties", "knots_dare_ties"])
@pytest.mark.parametrize("prune_scope", ["layer", "model"])
def test_dare_ties_trims_after_dropping_so_a_member_keeps_exactly_its_top_density_share(method, prune_scope):
    # Dropping p = 0.5 leaves about half the entries; trimming to density 0.3 afterwards keeps exactly
    # int(0.3·N) of them (N per layer or over the whole member). Trimming first and dropping after
    # would keep only about 0.15·N.
    member = [random_update("m", WIDE, 16, 11)]
    density = 0.3
    result = merge(method, member, drop_prob=0.5, seed=1, density=density, prune_scope=prune_scope)
    kept = merged_entries(method, result)
    counts = {layer: int((entries != 0).sum()) for layer, entries in kept.items()}
    if prune_scope == "layer":
        assert counts == {layer: int(density * entries.numel()) for layer, entries in kept.items()}
    else:
        assert sum(counts.values()) == int(density * sum(entries.numel() for entries in kept.values()))
