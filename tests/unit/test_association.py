"""Does similarity predict retention, beyond a bare ρ: its bootstrap interval over combinations, the partial ρ
that holds the adapters' gain fixed, and the similar-vs-other contrast; checked on hand-made numbers against
textbook formulas written here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from loramerge.report.statistics import association, association_text, group_contrast, partial_spearman, rho_interval


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def textbook_partial(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """First-order partial correlation of the ranks: (r_xy − r_xz·r_yz) / √((1 − r_xz²)(1 − r_yz²))."""
    rx, ry, rz = rankdata(x), rankdata(y), rankdata(z)
    xy, xz, yz = pearson(rx, ry), pearson(rx, rz), pearson(ry, rz)
    return (xy - xz * yz) / math.sqrt((1 - xz**2) * (1 - yz**2))


def test_a_perfect_ranking_keeps_rho_one_in_every_resample_and_noise_widens_the_interval():
    x = np.arange(10.0)
    assert rho_interval(x, 2 * x + 1, 500, 0) == pytest.approx((1.0, 1.0))
    noisy = x + np.random.default_rng(0).normal(0, 3, 10)
    low, high = rho_interval(x, noisy, 500, 0)
    assert -1 <= low < high <= 1 and high - low > 0.2
    assert math.isnan(rho_interval(x[:2], x[:2], 100, 0)[0])


def test_partial_rho_equals_the_textbook_formula_and_vanishes_when_the_control_drives_both():
    rng = np.random.default_rng(1)
    gain = np.arange(15.0)
    x, y = gain + rng.normal(0, 1.5, 15), gain + rng.normal(0, 1.5, 15)
    rho, p = partial_spearman(x, y, gain)
    assert rho == pytest.approx(textbook_partial(x, y, gain), abs=1e-12)
    assert pearson(rankdata(x), rankdata(y)) > 0.8 and abs(rho) < 0.5 and 0 < p <= 1
    assert math.isnan(partial_spearman(x[:3], y[:3], gain[:3])[0])


def test_the_contrast_is_the_difference_of_group_means_with_an_exact_permutation_p():
    values = np.array([0.90, 0.91, 0.97, 0.98, 0.99, 0.985])
    similar = np.array([True, True, False, False, False, False])
    result = group_contrast(values, similar, 2000, 0)
    assert result["difference"] == pytest.approx(0.905 - np.mean([0.97, 0.98, 0.99, 0.985]))
    assert result["ci_low"] <= result["difference"] <= result["ci_high"] < 0
    # 15 ways to pick the 2 "similar" of 6; ours is the most extreme low one: two-sided p = 2/15
    assert result["p"] == pytest.approx(2 / 15)
    assert math.isnan(group_contrast(values, np.zeros(6, bool), 100, 0)["difference"])


def test_association_rows_per_method_and_kind_and_the_sentence_names_each_number():
    tasks = ["a", "b", "c", "d", "e"]
    pairs = [f"{s}+{t}" for i, s in enumerate(tasks) for t in tasks[i + 1 :]]
    rng = np.random.default_rng(2)
    cosine = rng.uniform(0, 1, len(pairs))
    combos = pd.DataFrame(
        {"combination": pairs, "kind": "pair", "method": "ta", "normalized_accuracy": 1 - 0.1 * cosine}
    )
    similarity = pd.DataFrame({"combination": pairs, "kind": "pair", "data_cosine": cosine})
    single = pd.DataFrame({"task": tasks, "lora_score": [0.9, 0.8, 0.85, 0.7, 0.95], "head_only_score": 0.5})
    table = association(combos, similarity, single, ["ta"], [("b", "a"), ("x", "y")], 500, 0)
    row = table.iloc[0]
    assert (row["method"], row["kind"], row["n"], row["similar_pairs"]) == ("ta", "pair", 10, 1)
    assert row["rho"] == pytest.approx(-1.0) and row["rho_ci_high"] == pytest.approx(-1.0)
    text = " ".join(association_text(table, "ta", 0.05))
    assert "ρ(data cosine, normalized accuracy) = -1.00 [-1.00, -1.00]" in text and "partial ρ = " in text
    assert "The 1 similar pair(s)" in text and "the other 9" in text
