"""The merge methods, read as a specification: what each one returns for hand-made adapters.

Adapters are built directly as `TaskUpdate`s from small random or hand-written tensors;
nothing is downloaded. An update given as (ΔW, I) is the dense matrix ΔW itself.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loramerge.merging import MergeResult, TaskUpdate, available_methods, get_method
from loramerge.merging._ops import magnitude_threshold
from loramerge.merging.observed import ObservedUpdate

PROPERTY = settings(max_examples=25, deadline=None)
LOW_RANK_METHODS = [
    "task_arithmetic",
    "linear",
    "weighted_sum",
    "cat",
    "svd",
    "knots_task_arithmetic",
    "knots_ties",
    "knots_dare_ties",
    "knots_dare_task_arithmetic",
    "knots_magnitude_prune",
    "core_task_arithmetic",
    "core_ties",
    "core_dare_ties",
    "core_dare_task_arithmetic",
    "core_magnitude_prune",
    "core_iso_c",
    "core_iso_cts",
    "core_tsv_m",
    "knots_iso_c",
    "knots_iso_cts",
    "knots_tsv_m",
]
DATA_AWARE_METHODS = ["regmean", "adamerging"]  # low-rank too, but they read the members' data (their own tests)
DENSE_METHODS = ["ties", "dare_task_arithmetic", "dare_ties", "magnitude_prune", "iso_c", "iso_cts", "tsv_m"]


def random_update(
    name: str, shapes: dict[str, tuple[int, int]], rank: int, seed: int, dtype: torch.dtype = torch.float32
) -> TaskUpdate:
    """An adapter with ΔW = B·A of the given rank in each layer (B already scaled by alpha/r)."""
    g = torch.Generator().manual_seed(seed)
    return TaskUpdate(
        name,
        {
            layer: (torch.randn(o, rank, generator=g, dtype=dtype), torch.randn(rank, i, generator=g, dtype=dtype))
            for layer, (o, i) in shapes.items()
        },
    )


def dense_update(name: str, deltas: dict[str, list[list[float]]]) -> TaskUpdate:
    """An adapter whose per-layer update is exactly the written matrix (B = ΔW, A = identity)."""
    factors = {}
    for layer, rows in deltas.items():
        delta = torch.tensor(rows)
        factors[layer] = (delta, torch.eye(delta.shape[1]))
    return TaskUpdate(name, factors)


def merge(method: str, updates: list[TaskUpdate], **params) -> MergeResult:
    m = get_method(method)
    return m.merge(updates, m.Config(**params))


def exact_sum(updates: list[TaskUpdate], scaling: float = 1.0) -> dict[str, torch.Tensor]:
    return {layer: scaling * sum(u.delta(layer) for u in updates) for layer in updates[0].layers}


def assert_deltas_close(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-5
) -> None:
    assert sorted(actual) == sorted(expected)
    for layer in expected:
        torch.testing.assert_close(actual[layer], expected[layer].float(), atol=atol, rtol=1e-4)


@st.composite
def update_sets(draw: st.DrawFn, min_tasks: int = 1, max_tasks: int = 3) -> list[TaskUpdate]:
    """1–3 adapters of independent ranks (1–4) over 1–2 layers of shapes up to 6×6."""
    n = draw(st.integers(min_tasks, max_tasks))
    sizes = draw(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=2))
    shapes = {f"encoder.layer.{j}.query": shape for j, shape in enumerate(sizes)}
    ranks = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**16))
    return [random_update(f"task{i}", shapes, rank, seed * 10 + i) for i, rank in enumerate(ranks)]


# --- the registry and hyper-parameters ---------------------------------------------------------


def data_free_methods() -> list[str]:
    """Every registered method but the data-aware ones: a new module is covered by the properties below by itself."""
    return [name for name in available_methods() if name not in DATA_AWARE_METHODS]


def test_every_documented_method_is_registered():
    assert set(LOW_RANK_METHODS + DENSE_METHODS + DATA_AWARE_METHODS) <= set(available_methods())


def test_an_unknown_method_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown merge method 'nope'; known methods: .*knots_ties.*ties"):
        get_method("nope")


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("ties", {"density": 1.5}, "density"),
        ("ties", {"density": -0.1}, "density"),
        ("dare_ties", {"drop_prob": 1.0}, "drop_prob"),
        ("dare_task_arithmetic", {"drop_prob": -0.5}, "drop_prob"),
        ("svd", {"rank": 0}, "rank"),
        ("ties", {"majority_sign": "max"}, "majority_sign"),
        ("knots_ties", {"prune_scope": "global"}, "prune_scope"),
        ("task_arithmetic", {"scaling": float("nan")}, "scaling"),
        ("dare_ties", {"seed": -1}, "seed"),
        ("task_arithmetic", {"density": 0.5}, "density"),  # a key the method does not have
        ("svd", {"base": "svd"}, "base"),
        ("svd", {"base": "ties", "base_params": {"density": 2.0}}, "base_params"),
    ],
)
def test_bad_hyper_parameters_are_refused_naming_the_parameter(method, params, named):
    with pytest.raises(ValueError, match=named):
        get_method(method).Config(**params)


def test_hyper_parameter_names_and_search_orders_agree_across_methods():
    fields = {name: set(get_method(name).Config.model_fields) for name in available_methods()}
    assert fields["ties"] == fields["knots_ties"] == {"scaling", "space", "density", "majority_sign", "prune_scope"}
    assert fields["dare_ties"] == fields["knots_dare_ties"] == fields["ties"] | {"drop_prob", "seed"}
    assert fields["dare_task_arithmetic"] == {"scaling", "space", "drop_prob", "seed"}
    assert get_method("ties").search_order == ("scaling", "density")
    assert get_method("dare_ties").search_order == ("scaling", "density", "drop_prob")
    assert get_method("task_arithmetic").search_order == ("scaling",)
    for name in available_methods():
        assert set(get_method(name).search_order) <= fields[name]


def test_params_of_another_method_are_refused():
    ties_params = get_method("ties").Config(density=0.5)
    with pytest.raises(TypeError, match="ScalingConfig"):
        get_method("task_arithmetic").merge([random_update("a", {"l": (3, 3)}, 1, 0)], ties_params)


def test_members_must_adapt_the_same_layers_with_the_same_shapes():
    a = random_update("a", {"l1": (3, 4)}, 2, 0)
    with pytest.raises(ValueError, match="different layers"):
        merge("cat", [a, random_update("b", {"l2": (3, 4)}, 2, 1)])
    with pytest.raises(ValueError, match="different shapes"):
        merge("ties", [a, random_update("b", {"l1": (4, 3)}, 2, 1)])
    for method in available_methods():
        with pytest.raises(ValueError, match="at least one"):
            merge(method, [])


def test_weighted_sum_needs_one_weight_per_adapter():
    updates = [random_update(n, {"l": (3, 3)}, 1, i) for i, n in enumerate("ab")]
    with pytest.raises(ValueError, match="weights"):
        merge("weighted_sum", updates, weights=[1.0, 2.0, 3.0])


# --- exact, low-rank merges -------------------------------------------------------------------


@PROPERTY
@given(update_sets())
def test_factors_multiply_back_to_the_deltas(updates):
    for method in data_free_methods():
        result = merge(method, updates)
        if method in LOW_RANK_METHODS + DENSE_METHODS:  # the documented kinds; any other method: its factors multiply
            assert (result.factors is not None) == (method in LOW_RANK_METHODS), method
        for layer, (b, a) in (result.factors or {}).items():
            assert b.dtype == a.dtype == result.deltas[layer].dtype == torch.float32
            torch.testing.assert_close(b @ a, result.deltas[layer], atol=1e-5, rtol=1e-5)


@PROPERTY
@given(update_sets())
def test_cat_equals_task_arithmetic_at_scaling_one_and_the_exact_sum(updates):
    cat = merge("cat", updates)
    assert_deltas_close(cat.deltas, merge("task_arithmetic", updates, scaling=1.0).deltas, atol=1e-6)
    assert_deltas_close(cat.deltas, exact_sum(updates))
    assert_deltas_close(merge("weighted_sum", updates).deltas, cat.deltas, atol=1e-6)
    for layer, (_, a) in cat.factors.items():
        assert a.shape[0] == sum(u.factors[layer][1].shape[0] for u in updates)  # rank Σ r_i


@PROPERTY
@given(update_sets(), st.floats(-2, 2))
def test_task_arithmetic_linear_and_weighted_sum_scale_the_sum(updates, scaling):
    assert_deltas_close(merge("task_arithmetic", updates, scaling=scaling).deltas, exact_sum(updates, scaling))
    assert_deltas_close(merge("linear", updates).deltas, exact_sum(updates, 1 / len(updates)))
    weights = [scaling * (i + 1) for i in range(len(updates))]
    expected = {layer: sum(w * u.delta(layer) for w, u in zip(weights, updates)) for layer in updates[0].layers}
    assert_deltas_close(merge("weighted_sum", updates, weights=weights).deltas, expected)


@PROPERTY
@given(update_sets(), st.floats(-2, 2))
def test_knots_task_arithmetic_reconstructs_the_exact_scaled_sum(updates, scaling):
    assert_deltas_close(merge("knots_task_arithmetic", updates, scaling=scaling).deltas, exact_sum(updates, scaling))


def test_adapters_of_different_ranks_merge():
    shapes = {"a": (5, 4), "b": (3, 6)}
    updates = [random_update("r1", shapes, 1, 0), random_update("r3", shapes, 3, 1), random_update("r2", shapes, 2, 2)]
    for method in data_free_methods():
        result = merge(method, updates)
        assert {layer: tuple(d.shape) for layer, d in result.deltas.items()} == shapes, method
    assert merge("cat", updates).factors["a"][1].shape == (6, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_inputs_are_left_untouched_and_outputs_are_float32(dtype):
    updates = [random_update(n, {"l": (4, 4)}, 2, i, dtype=dtype) for i, n in enumerate("ab")]

    def entropy(deltas, step, batch_size):  # AdaMerging's objective, any differentiable function of the update
        return sum((d**2).sum() for d in deltas.values())

    updates = [ObservedUpdate(u.name, u.factors, {"l": torch.eye(4, dtype=dtype)}, entropy) for u in updates]
    before = [{k: (b.clone(), a.clone()) for k, (b, a) in u.factors.items()} for u in updates]
    for method in available_methods():
        result = merge(method, updates)
        assert all(d.dtype == torch.float32 for d in result.deltas.values()), method
        assert result.factors is None or all(
            b.dtype == a.dtype == torch.float32 for b, a in result.factors.values()
        ), method
    for update, saved in zip(updates, before):
        for layer, (b, a) in update.factors.items():
            assert torch.equal(b, saved[layer][0]) and torch.equal(a, saved[layer][1])


# --- merging one adapter returns it ------------------------------------------------------------


@PROPERTY
@given(update_sets(max_tasks=1))
def test_merging_one_adapter_returns_it(updates):
    (update,) = updates
    own = {layer: update.delta(layer) for layer in update.layers}
    for method, params in [
        ("task_arithmetic", {}),
        ("linear", {}),
        ("cat", {}),
        ("weighted_sum", {"weights": [1.0]}),
        ("ties", {"density": 1.0}),
        ("magnitude_prune", {"density": 1.0}),
        ("dare_ties", {"drop_prob": 0.0}),
        ("knots_task_arithmetic", {}),
        ("knots_ties", {"density": 1.0}),
        ("knots_dare_ties", {"density": 1.0, "drop_prob": 0.0}),
        ("svd", {"rank": 4}),
    ]:
        assert_deltas_close(merge(method, updates, **params).deltas, own)


def test_merging_one_adapter_returns_it_times_the_documented_scaling():
    update = random_update("a", {"l": (4, 3)}, 2, 7)
    expected = {"l": 0.3 * update.delta("l")}
    for method in ["task_arithmetic", "ties", "knots_task_arithmetic", "knots_ties"]:
        params = {"scaling": 0.3} | ({"density": 1.0} if "ties" in method else {})
        assert_deltas_close(merge(method, [update], **params).deltas, expected)


# --- TIES, magnitude pruning -------------------------------------------------------------------

TIES_MEMBERS = [
    dense_update("t1", {"l": [[3.0, -1.0], [2.0, 0.5]]}),
    dense_update("t2", {"l": [[-1.5, -4.0], [1.0, -0.2]]}),
    dense_update("t3", {"l": [[2.0, 1.0], [-3.0, 0.1]]}),
]


def test_ties_on_a_worked_example():
    # Trim to density 0.5 (2 of 4 entries per member):
    #   t1 [[3, 0], [2, 0]]   t2 [[-1.5, -4], [0, 0]]   t3 [[2, 0], [-3, 0]]
    # Elect by summed values: (0,0) 3.5 → +, (0,1) -4 → -, (1,0) -1 → -, (1,1) 0 → + (nothing left).
    # Disjoint mean of agreeing entries: (0,0) mean(3, 2) = 2.5, (0,1) -4, (1,0) -3, (1,1) 0; then × λ.
    result = merge("ties", TIES_MEMBERS, scaling=0.5, density=0.5, prune_scope="layer")
    torch.testing.assert_close(result.deltas["l"], 0.5 * torch.tensor([[2.5, -4.0], [-3.0, 0.0]]))
    assert result.factors is None


def test_frequency_elects_the_sign_more_members_have_and_a_tie_goes_to_the_sign_of_the_sum():
    members = [dense_update(n, {"l": [[v, w]]}) for n, v, w in (("a", 1.0, 2.0), ("b", 1.0, -3.0), ("c", -5.0, 0.0))]
    # entry 0: + + − elects + by count (mean of 1 and 1), − by sum (−3). entry 1: + and − (c's 0 casts no vote) tie,
    # and their sum −1 elects −: PEFT's rule would take +2, the KnOTS code's −3 by a fixed preference for −.
    frequency = merge("ties", members, density=1.0, majority_sign="frequency").deltas["l"]
    assert frequency.tolist() == [[1.0, -3.0]]
    assert merge("ties", members, density=1.0, majority_sign="total").deltas["l"].tolist() == [[-5.0, -3.0]]
    # every entry negated (what the other sign of an SVD's direction does in KnOTS' space) negates the merge, tie
    # included; with a fixed tie rule entry 1 would be +3 for both signs
    negated = [TaskUpdate(u.name, {"l": (-u.factors["l"][0], u.factors["l"][1])}) for u in members]
    assert merge("ties", negated, density=1.0, majority_sign="frequency").deltas["l"].tolist() == [[-1.0, 3.0]]


def test_model_wide_pruning_uses_one_threshold_per_member_and_per_layer_pruning_one_per_layer():
    loud = [[10.0, 9.0], [8.0, 7.0]]
    quiet = [[1.0, 2.0], [3.0, 4.0]]
    member = dense_update("m", {"loud": loud, "quiet": quiet})
    # density 0.5 of 8 entries keeps 4. Per layer: 2 per layer, thresholds 9 and 3.
    assert magnitude_threshold([torch.tensor(loud)], 0.5) == 9.0
    assert magnitude_threshold([torch.tensor(quiet)], 0.5) == 3.0
    per_layer = merge("magnitude_prune", [member], density=0.5, prune_scope="layer").deltas
    torch.testing.assert_close(per_layer["loud"], torch.tensor([[10.0, 9.0], [0.0, 0.0]]))
    torch.testing.assert_close(per_layer["quiet"], torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    # Model-wide: the 4th largest of all 8 is 7, so the loud layer keeps everything and the quiet one nothing.
    assert magnitude_threshold([torch.tensor(loud), torch.tensor(quiet)], 0.5) == 7.0
    model = merge("magnitude_prune", [member], density=0.5, prune_scope="model").deltas
    torch.testing.assert_close(model["loud"], torch.tensor(loud))
    torch.testing.assert_close(model["quiet"], torch.zeros(2, 2))


def test_density_zero_keeps_nothing():
    assert magnitude_threshold([torch.ones(3, 3)], 0.0) == float("inf")
    assert torch.count_nonzero(merge("ties", TIES_MEMBERS, density=0.0).deltas["l"]) == 0


@PROPERTY
@given(update_sets(), st.floats(0.05, 1.0), st.sampled_from(["layer", "model"]))
def test_magnitude_pruning_keeps_int_density_n_entries(updates, density, scope):
    kept = merge("magnitude_prune", updates[:1], density=density, prune_scope=scope).deltas
    if scope == "model":
        total = sum(d.numel() for d in kept.values())
        assert sum(int(torch.count_nonzero(d)) for d in kept.values()) == int(density * total)
    else:
        for d in kept.values():
            assert int(torch.count_nonzero(d)) == int(density * d.numel())


@PROPERTY
@given(update_sets(min_tasks=2), st.floats(0.1, 1.0), st.sampled_from(["total", "frequency"]))
def test_ties_entries_agree_with_a_member_and_lie_between_the_agreeing_values(updates, density, majority_sign):
    merged = merge("ties", updates, density=1.0, majority_sign=majority_sign).deltas
    for layer, entry in merged.items():
        stacked = torch.stack([u.delta(layer) for u in updates])
        lower, upper = stacked.min(dim=0).values, stacked.max(dim=0).values
        assert bool(((entry >= lower - 1e-5) & (entry <= upper + 1e-5)).all())
    pruned = merge("ties", updates, density=density, majority_sign=majority_sign).deltas
    assert sum(int(torch.count_nonzero(d)) for d in pruned.values()) <= sum(
        int(torch.count_nonzero(d)) for d in merged.values()
    )


# --- DARE --------------------------------------------------------------------------------------

DARE_MEMBERS = [random_update(n, {"a": (8, 8), "b": (6, 9)}, 3, i) for i, n in enumerate("xyz")]


@PROPERTY
@given(update_sets(), st.floats(-2, 2))
def test_dare_with_no_drop_is_exactly_task_arithmetic_and_ties(updates, scaling):
    ta = merge("task_arithmetic", updates, scaling=scaling)
    dare = merge("dare_task_arithmetic", updates, scaling=scaling, drop_prob=0.0, seed=3)
    assert all(torch.equal(dare.deltas[k], ta.deltas[k]) for k in ta.deltas)
    ties = merge("ties", updates, scaling=scaling, density=0.5)
    dare_ties = merge("dare_ties", updates, scaling=scaling, density=0.5, drop_prob=0.0)
    assert all(torch.equal(dare_ties.deltas[k], ties.deltas[k]) for k in ties.deltas)
    knots = merge("knots_ties", updates, density=0.5)
    knots_dare = merge("knots_dare_ties", updates, density=0.5, drop_prob=0.0)
    assert all(torch.equal(knots_dare.deltas[k], knots.deltas[k]) for k in knots.deltas)


@pytest.mark.parametrize("method", ["dare_task_arithmetic", "dare_ties", "knots_dare_ties"])
def test_dare_is_repeatable_for_a_seed_and_changes_with_it(method):
    first = merge(method, DARE_MEMBERS, drop_prob=0.5, seed=11).deltas
    again = merge(method, DARE_MEMBERS, drop_prob=0.5, seed=11).deltas
    other = merge(method, DARE_MEMBERS, drop_prob=0.5, seed=12).deltas
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_dare_drops_entries_and_rescales_the_survivors():
    (member,) = DARE_MEMBERS[:1]
    dropped = merge("dare_task_arithmetic", [member], drop_prob=0.25, seed=0).deltas
    for layer, delta in dropped.items():
        original = member.delta(layer)
        kept = delta != 0
        torch.testing.assert_close(delta[kept], original[kept] / 0.75)
        assert 0 < int(kept.sum()) < delta.numel()


# --- SVD re-factorisation ----------------------------------------------------------------------


@PROPERTY
@given(update_sets())
def test_svd_of_task_arithmetic_at_full_rank_is_exact(updates):
    rank = sum(u.factors[updates[0].layers[0]][1].shape[0] for u in updates)
    assert_deltas_close(merge("svd", updates, rank=rank).deltas, exact_sum(updates))


def test_svd_truncates_to_the_best_rank_r_approximation():
    updates = [random_update(n, {"l": (9, 7)}, 3, i) for i, n in enumerate("ab")]
    total = exact_sum(updates)["l"]
    u, s, vh = torch.linalg.svd(total.double())
    best = (u[:, :2] * s[:2]) @ vh[:2]
    for base, params in [("task_arithmetic", {}), ("ties", {"density": 1.0})]:  # low-rank and dense paths
        result = merge("svd", updates, base=base, rank=2, base_params=params)
        b, a = result.factors["l"]
        assert b.shape == (9, 2) and a.shape == (2, 7)
        if base == "task_arithmetic":
            torch.testing.assert_close(result.deltas["l"], best.float(), atol=1e-4, rtol=1e-4)
        assert torch.linalg.matrix_rank(result.deltas["l"]) == 2


def test_svd_runs_its_base_method_with_the_base_params():
    result = merge(
        "svd", TIES_MEMBERS, base="ties", rank=2, base_params={"density": 0.5, "prune_scope": "layer", "scaling": 0.5}
    )
    torch.testing.assert_close(
        result.deltas["l"], 0.5 * torch.tensor([[2.5, -4.0], [-3.0, 0.0]]), atol=1e-6, rtol=1e-6
    )
