"""KnOTS' joint setting: is a merged model a general model? Each member's test inputs are classified over the union of
every member's labels, without being told their task, and scored top-1.

The members' heads, stacked, are one joint head: every head's logits side by side, one column per label. Label names
shared by several tasks are one joint class, as KnOTS' `local2joint_map` makes them (there the heads are CLIP text
encodings, and a shared name has one encoding; here each task's head has its own logit for it, and the joint class
takes the highest). Raw logits compete, not per-head probabilities: a stacked linear head computes logits, and a
softmax per head would hide how far one head's scale dominates another's, which is what this setting measures.
Only for sentence and image tasks: a word tagger has no one label per input to compete with the others.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def joint_classes(labels: Mapping[str, list[str]]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The union of the tasks' label names, first seen first, and per task the joint class of each of its labels."""
    classes: list[str] = list(dict.fromkeys(name for names in labels.values() for name in names))
    index = {name: i for i, name in enumerate(classes)}
    return classes, {task: np.array([index[name] for name in names], dtype=np.int64) for task, names in labels.items()}


def joint_predictions(logits: Mapping[str, np.ndarray], mapping: Mapping[str, np.ndarray], classes: int) -> np.ndarray:
    """Per input, the joint class with the highest logit over every head (a shared class: its highest head's)."""
    rows = len(next(iter(logits.values())))
    stacked = np.full((rows, classes), -np.inf)
    for task, values in logits.items():
        for label, joint in enumerate(mapping[task]):
            stacked[:, joint] = np.maximum(stacked[:, joint], values[:, label])
    return stacked.argmax(-1)


def joint_correct(
    logits: Mapping[str, np.ndarray], gold: np.ndarray, task: str, mapping: Mapping[str, np.ndarray], classes: int
) -> np.ndarray:
    """Which of one task's inputs (gold: its own label ids) the joint head puts in their own label's joint class."""
    return joint_predictions(logits, mapping, classes) == mapping[task][gold]


def joint_scores(correct: Mapping[str, np.ndarray]) -> dict:
    """Top-1 accuracy pooled over every task's inputs (each input once), and per task."""
    every = np.concatenate(list(correct.values()))
    return {
        "accuracy": float(every.mean()) if len(every) else float("nan"),
        "tasks": {task: float(right.mean()) if len(right) else float("nan") for task, right in correct.items()},
    }
