"""The report's uncertainty: paired bootstrap intervals, paired tests, and what the headline says about them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from loramerge.report.sections import noise_text
from loramerge.report.uncertainty import (
    Outcomes,
    combination_replicates,
    compare_with_best,
    interval,
    mcnemar_exact,
    replicate_accuracies,
)


def right(n: int, correct: int, seed: int) -> np.ndarray:
    """n test examples of which `correct` (at random places) are right."""
    flags = np.zeros(n, dtype=bool)
    flags[np.random.default_rng(seed).choice(n, correct, replace=False)] = True
    return flags


def outcomes(merged_right: dict[str, int], n: int = 400) -> tuple[Outcomes, SimpleNamespace]:
    """Two tasks a and b in one pair a+b: single adapters 90% right, head-only 60%, and each method's merge."""
    tasks = {}
    for k, task in enumerate(("a", "b")):
        single = right(n, int(0.9 * n), seed=k)
        columns = {"single": single, "head_only": right(n, int(0.6 * n), seed=10 + k), "full": single}
        for j, (method, count) in enumerate(merged_right.items()):
            columns[("a+b", method)] = single & right(n, count, seed=100 * (j + 1) + k)  # a merge loses examples
        tasks[task] = pd.DataFrame(columns)
    params = SimpleNamespace(combinations=["a+b"], merge=SimpleNamespace(methods=list(merged_right)))
    return Outcomes(tasks), params


def test_the_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    found, _ = outcomes({"ta": 380})
    first = replicate_accuracies(found, 1000, seed=0)["a"]
    assert first.equals(replicate_accuracies(found, 1000, seed=0)["a"])
    assert not first.equals(replicate_accuracies(found, 1000, seed=1)["a"])


def test_the_interval_of_a_binomial_accuracy_matches_the_analytic_one_within_a_point():
    n, p = 300, 0.8
    table = Outcomes({"a": pd.DataFrame({"single": right(n, int(p * n), seed=3)})})
    low, high = interval(replicate_accuracies(table, 4000, seed=0)["a"]["single"])
    half = norm.ppf(0.975) * np.sqrt(p * (1 - p) / n)  # Wald: 0.8 ± 0.045
    assert low == pytest.approx(p - half, abs=0.01) and high == pytest.approx(p + half, abs=0.01)


def test_models_of_a_task_are_resampled_together_so_identical_models_have_a_zero_width_difference():
    found, params = outcomes({"ta": 380, "twin": 380})
    found.tasks["a"][("a+b", "twin")] = found.tasks["a"][("a+b", "ta")]
    found.tasks["b"][("a+b", "twin")] = found.tasks["b"][("a+b", "ta")]
    replicates = combination_replicates(replicate_accuracies(found, 1000, seed=0), params)
    comparison = compare_with_best(replicates, "ta", ["ta", "twin"], 0.05)
    row = comparison.iloc[0]
    assert (row.difference, row.ci_low, row.ci_high) == (0.0, 0.0, 0.0) and row.within_noise


def test_mcnemar_exact_matches_a_hand_computed_case():
    # 2 examples only the first model got right, 8 only the second: p = 2·P(X ≤ 2), X ~ Bin(10, ½) = 112/1024
    first = np.array([True] * 2 + [False] * 8 + [True] * 5)
    second = np.array([False] * 2 + [True] * 8 + [True] * 5)
    assert mcnemar_exact(first, second) == pytest.approx(112 / 1024)
    assert mcnemar_exact(first, first) == 1.0


def test_a_clear_winner_is_named_and_close_methods_are_said_to_be_within_noise():
    found, params = outcomes({"best": 358, "close": 355, "poor": 250})
    replicates = combination_replicates(replicate_accuracies(found, 2000, seed=0), params)
    comparison = compare_with_best(replicates, "best", ["best", "close", "poor"], 0.05).set_index("method")
    assert comparison.loc["close", "within_noise"] and not comparison.loc["poor", "within_noise"]
    assert comparison.loc["poor", "p_holm"] < 0.01  # the smallest p 2000 resamples give, ×2 (Holm)
    text = noise_text(comparison.reset_index(), "best", 0.05)
    assert text.startswith("close is within noise of best (paired bootstrap") and "poor" not in text
    clear = compare_with_best(replicates, "best", ["best", "poor"], 0.05)
    assert noise_text(clear, "best", 0.05).startswith("Every other method is worse than best beyond noise")
