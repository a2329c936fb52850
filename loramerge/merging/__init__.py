"""Merge methods, one module each, found by name through a registry (as in mergekit).

Functions of the members' updates: task_arithmetic, linear, weighted_sum, cat (exact sums), svd (any method
re-factorised to a chosen rank), magnitude_prune, ties, dare_task_arithmetic, dare_ties, iso_c, iso_cts, tsv_m;
those that take a `space` also run in KnOTS' aligned space and in Core Space, under generated aliases
`knots_<name>` and `core_<name>` (`aliases`). Data-aware: regmean (Gram matrices) and adamerging (an entropy
probe), `observed`. Results are low-rank factors where exact (sums; every knots_/core_ result), dense otherwise.
Shared maths lives in the private modules `_ops` (pruning, DARE, sign election, low-rank sums and SVDs),
`_spectral` (SVD building blocks of Iso and TSV), `_spaces` with `_knots` and `_core` (where a function runs)
and `_config` (hyper-parameter types, the same names and ranges in every method).
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
