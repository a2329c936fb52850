"""KnOTS' joint setting, by hand: the stacked heads are one head over the union of the members' labels, a label name
shared by two tasks is one class (its highest logit), and an input is right when the joint head picks its own label."""

from __future__ import annotations

import numpy as np

from loramerge.joint import joint_classes, joint_correct, joint_predictions, joint_scores

LABELS = {"topics": ["money", "sport"], "mixed": ["sport", "sad"]}


def test_the_joint_classes_are_the_union_of_label_names_first_seen_first():
    classes, mapping = joint_classes(LABELS)
    assert classes == ["money", "sport", "sad"]
    assert mapping["topics"].tolist() == [0, 1] and mapping["mixed"].tolist() == [1, 2]


def test_the_highest_logit_over_every_head_wins_and_a_shared_name_takes_its_highest_heads():
    classes, mapping = joint_classes(LABELS)
    logits = {
        "topics": np.array([[2.0, 1.0], [0.0, 0.5], [0.1, 0.2]]),
        "mixed": np.array([[0.0, 1.5], [3.0, 0.0], [0.0, 0.3]]),
    }
    # input 0: money 2.0 beats sad 1.5; input 1: sport max(0.5, 3.0); input 2: sad 0.3 beats sport max(0.2, 0.0)
    assert joint_predictions(logits, mapping, len(classes)).tolist() == [0, 1, 2]
    gold = np.array([0, 1, 0])  # topics' own ids: money, sport, money
    assert joint_correct(logits, gold, "topics", mapping, len(classes)).tolist() == [True, True, False]


def test_joint_accuracy_is_pooled_over_every_input_and_given_per_task():
    scores = joint_scores({"topics": np.array([True, False, True, True]), "mixed": np.array([False, False])})
    assert scores["accuracy"] == 3 / 6 and scores["tasks"] == {"topics": 0.75, "mixed": 0.0}
