"""Metrics match scikit-learn's definitions; the validation search tries what it says and keeps the best."""

from __future__ import annotations

import numpy as np
import pytest

from loramerge.merging import get_method
from loramerge.metrics import classification_metrics, normalized_accuracy
from loramerge.search import run_search, validate_points


def test_classification_metrics_on_a_worked_example():
    scores = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores["weighted_recall"] == 0.75


def test_normalized_accuracy_is_merged_over_single():
    assert normalized_accuracy(0.45, 0.9) == pytest.approx(0.5)
    assert np.isnan(normalized_accuracy(0.5, 0.0))


def test_greedy_search_tunes_scaling_first_then_density():
    method = get_method("ties")
    calls = []

    def objective(point):
        calls.append(dict(point))
        return -abs(point["scaling"] - 1.0) - abs(point["density"] - 0.5)

    best, table = run_search(method, {"scaling": [0.5, 1.0, 1.5], "density": [0.2, 0.5]}, "greedy", objective)
    assert best["scaling"] == 1.0 and best["density"] == 0.5
    assert [c["scaling"] for c in calls[:3]] == [0.5, 1.0, 1.5]
    assert all(c["density"] == 0.2 for c in calls[:3])
    assert len(table) == len(calls) == 4  # the repeated point is scored once


def test_grid_search_scores_every_combination():
    best, table = run_search(
        get_method("ties"),
        {"scaling": [0.5, 1.0], "density": [0.2, 0.5, 0.9]},
        "grid",
        lambda p: p["density"] * p["scaling"],
    )
    assert len(table) == 6
    assert best == {"scaling": 1.0, "density": 0.9}


def test_fixed_values_are_used_as_given():
    best, table = run_search(get_method("task_arithmetic"), {"scaling": 0.3}, "greedy", lambda p: 1.0)
    assert best == {"scaling": 0.3} and table == [{"scaling": 0.3, "score": 1.0}]


def test_every_value_a_search_could_try_is_validated_first():
    with pytest.raises(ValueError, match="density"):
        validate_points(get_method("ties"), {"density": [0.5, 1.5]})
