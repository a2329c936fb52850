"""Merge methods, one module each, found by name through a registry (as in mergekit)."""

from __future__ import annotations

from loramerge.merging.base import LayerFactors, MergeMethod, MergeParams, MergeResult, TaskUpdate
from loramerge.merging.registry import available_methods, get_method, register

__all__ = [
    "LayerFactors",
    "MergeMethod",
    "MergeParams",
    "MergeResult",
    "TaskUpdate",
    "available_methods",
    "get_method",
    "register",
]
