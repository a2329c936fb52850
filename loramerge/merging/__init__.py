"""Merge methods, one module each, found by name through a registry (as in mergekit).

Exact and low-rank (they return factors): task_arithmetic, linear, weighted_sum, cat, svd
(any method re-factorised to a chosen rank) and the KnOTS family knots_task_arithmetic,
knots_ties, knots_dare_ties. Dense (deltas only): ties, magnitude_prune,
dare_task_arithmetic, dare_ties. Shared maths lives in the private modules `_ops` (pruning,
DARE, sign election, low-rank sums and SVDs), `_knots` (the shared SVD basis) and `_params`
(hyper-parameter types, the same names and ranges in every method).
"""

from __future__ import annotations

from loramerge.merging.base import LayerFactors, MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import available_methods, get_method, register

__all__ = [
    "LayerFactors",
    "MergeMethod",
    "MethodConfig",
    "MergeResult",
    "TaskUpdate",
    "available_methods",
    "get_method",
    "register",
]
