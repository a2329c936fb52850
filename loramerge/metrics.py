"""What a merge keeps, as numbers: normalized accuracy (KnOTS'), gain retention over head-only, and how scores rank.

Plain arithmetic on scores (accuracy, or entity micro-F1 for a token task; loramerge/tasktypes.py computes them), so
the report reads it without the model stack."""

from __future__ import annotations

import math


def normalized_accuracy(merged: float, single: float) -> float:
    """Merged accuracy as a share of the single-task adapter's (KnOTS' normalized accuracy)."""
    return merged / single if single > 0 else float("nan")


def mean_normalized_accuracy(merged: dict[str, float], single: dict[str, float]) -> float:
    """The members' mean normalized accuracy: what the merge search maximizes and the report ranks methods by.
    A member whose single adapter scored 0 (a tagger that found no entity) has nothing to normalize by and is left
    out of the mean; NaN when no member has."""
    ratios = [normalized_accuracy(merged[task], single[task]) for task in merged if single[task] > 0]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def ranked(score: float) -> float:
    """A score to take the maximum of: NaN (nothing to compare) ranks below every number."""
    return float("-inf") if math.isnan(score) else score


def gain_retention(merged: float, single: float, head_only: float) -> float:
    """Share of what the adapter added over a head-only model that survives the merge.

    Normalized accuracy flatters weak adapters (one that barely moved the backbone
    "survives" any merge); this does not. NaN when the adapter did not beat head-only.
    """
    gain = single - head_only
    return (merged - head_only) / gain if gain > 0 else float("nan")
