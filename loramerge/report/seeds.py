"""Across training seeds (`repeats`): every repeat scored apart, then mean ± sd over the repeats and intervals that
include the spread between seeds.

Repeat k is the whole experiment with training seed train.seed + k: its own adapters, baselines and merges, scored
on the same test examples as every other repeat. Per repeat, the report's paired bootstrap gives in replicate b each
method's mean normalized accuracy and gain retention (pairs, triples) and each task's single, head-only and full
fine-tuning accuracy; the example draws of replicate b are the same in every repeat (same seed per task), so repeats
are paired too. A two-level bootstrap then adds the seeds: replicate b also draws as many repeats as there are, with
replacement, and averages their replicate-b values. Its 95% interval therefore widens with the spread between seeds as
well as with the test sample; with one repeat it is the one-seed interval. The standard deviation is over the repeats'
full-split values (n − 1 in the denominator).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loramerge.config import Params
from loramerge.lists import combination_kind
from loramerge.report.tables import KINDS
from loramerge.report.uncertainty import (
    FULL,
    HEAD_ONLY,
    LEVEL,
    SINGLE,
    combination_replicates,
    method_means,
    read_outcomes,
    replicate_accuracies,
)

MODELS = {SINGLE: "single_adapter", HEAD_ONLY: "head_only", FULL: "full_fine_tuning"}
COLUMNS = ["subject", "kind", "measure", "repeats", "mean", "sd", "ci_low", "ci_high"]
"""The seeds table's columns, then one `repeat_<k>` per repeat."""


def repeat_accuracy(params: Params, repeat: int) -> dict[str, pd.DataFrame]:
    """One repeat's per-task bootstrap accuracies of every model, as the report computes them for the first."""
    view = params.repeat_view(repeat)
    return replicate_accuracies(read_outcomes(view), params.report.bootstrap_resamples, params.report.bootstrap_seed)


def repeat_values(params: Params, repeat: int, accuracy: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One repeat's bootstrap replicates (rows, then "point") of every number the seeds table shows: columns
    (subject, kind, measure), subject a method (kind pair/triple) or a task (kind a model of MODELS)."""
    view = params.repeat_view(repeat)
    columns = {}
    replicates = combination_replicates(accuracy, view)
    for kind in KINDS:
        if any(combination_kind(c) == kind for c in view.combinations):
            for (method, measure), values in method_means(replicates, kind).items():
                columns[(method, kind, measure)] = values
    for name, table in accuracy.items():
        for model, shown in MODELS.items():
            columns[(params.task_of(name), shown, "accuracy")] = table[model]
    return pd.DataFrame(columns)


def seed_spread(params: Params, first: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per method and kind (and per task and model): the mean over repeats, its standard deviation, the two-level
    bootstrap interval, and each repeat's value (`repeat_<k>`: trained with seed train.seed + k). `first` is the
    first repeat's bootstrap accuracies, already computed for the report's tables. With one repeat there is no
    spread to show: the table is empty (its columns only)."""
    if params.repeats == 1:
        return pd.DataFrame(columns=COLUMNS)
    accuracies = [first, *(repeat_accuracy(params, k) for k in range(1, params.repeats))]
    repeats = [repeat_values(params, k, accuracy) for k, accuracy in enumerate(accuracies)]
    points = pd.DataFrame([values.loc["point"] for values in repeats])
    draws = np.stack([values.drop("point").to_numpy(dtype=float) for values in repeats])
    resampled = two_level(draws, np.random.default_rng([params.report.bootstrap_seed, params.repeats]))
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail], axis=0)
    rows = []
    for index, (subject, kind, measure) in enumerate(points.columns):
        values = points.iloc[:, index].to_numpy(dtype=float)
        row = {"subject": subject, "kind": kind, "measure": measure, "repeats": len(values)}
        row |= {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
        row |= {"ci_low": float(low[index]), "ci_high": float(high[index])}
        row |= {f"repeat_{k}": float(v) for k, v in enumerate(values)}
        rows.append(row)
    return pd.DataFrame(rows)


def two_level(draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(replicates × columns) from (repeats × replicates × columns) example-level bootstrap draws: replicate b
    averages replicate b of as many repeats as there are, drawn with replacement (seeds resampled on top of the
    test examples)."""
    repeats, replicates = draws.shape[:2]
    chosen = rng.integers(0, repeats, size=(replicates, repeats))
    return draws[chosen, np.arange(replicates)[:, None], :].mean(axis=1)
