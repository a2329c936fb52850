"""Metrics match scikit-learn's definitions; the validation search tries what it says and keeps the best."""

from __future__ import annotations

import numpy as np
import pytest

from loramerge.merging import get_method
from loramerge.metrics import normalized_accuracy
from loramerge.search import Trial, run_search, validate_points
from loramerge.settings import SearchSpace
from loramerge.tasktypes import classification_metrics


def test_classification_metrics_on_a_worked_example():
    scores = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores["weighted_recall"] == 0.75


def test_normalized_accuracy_is_merged_over_single():
    assert normalized_accuracy(0.45, 0.9) == pytest.approx(0.5)
    assert np.isnan(normalized_accuracy(0.5, 0.0))


def scored_by(score):
    """A search's scoring whose merge is skipped: each trial is scored by `score(point)`."""
    return lambda point, config: Trial(point, config, score(point))


def test_greedy_search_tunes_scaling_first_then_density():
    method = get_method("ties")
    calls = []

    def objective(point):
        calls.append(dict(point))
        return -abs(point["scaling"] - 1.0) - abs(point["density"] - 0.5)

    space = SearchSpace({"scaling": [0.5, 1.0, 1.5], "density": [0.2, 0.5]})
    best, trials = run_search(method, space, "greedy", scored_by(objective))
    assert best.point["scaling"] == 1.0 and best.point["density"] == 0.5
    assert [c["scaling"] for c in calls[:3]] == [0.5, 1.0, 1.5]
    assert all(c["density"] == 0.2 for c in calls[:3])
    assert len(trials) == len(calls) == 4  # the repeated point is scored once


def test_grid_search_scores_every_combination():
    best, trials = run_search(
        get_method("ties"),
        SearchSpace({"scaling": [0.5, 1.0], "density": [0.2, 0.5, 0.9]}),
        "grid",
        scored_by(lambda p: p["density"] * p["scaling"]),
    )
    assert len(trials) == 6
    assert best.point == {"scaling": 1.0, "density": 0.9}


def test_fixed_values_are_used_as_given():
    best, trials = run_search(
        get_method("task_arithmetic"), SearchSpace({"scaling": 0.3}), "greedy", scored_by(lambda p: 1.0)
    )
    assert best.point == {"scaling": 0.3} and [t.row() for t in trials] == [{"scaling": 0.3, "score": 1.0}]


def test_each_trial_carries_the_methods_config_built_from_its_point():
    _, trials = run_search(get_method("ties"), SearchSpace({"density": [0.2, 0.5]}), "grid", scored_by(lambda p: 0.0))
    assert [type(t.config).__name__ for t in trials] == ["TiesConfig", "TiesConfig"]
    assert [t.config.density for t in trials] == [0.2, 0.5] and trials[0].config.scaling == 1.0


def test_every_value_a_search_could_try_is_validated_first():
    with pytest.raises(ValueError, match="density"):
        validate_points(get_method("ties"), SearchSpace({"density": [0.5, 1.5]}))
