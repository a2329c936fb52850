"""Spectral building blocks of the isotropic (Iso-C, Iso-CTS) and task-singular-vector (TSV-M) merges.

All SVDs run in float64 (the authors' code uses float32 on GPU; float64 makes the results
independent of the SVD's rounding, and these matrices are small), results come back as float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from loramerge.merging._ops import MemberDeltas


def svd64(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64: U (O × k), s (k), Vh (k × I), k = min(O, I)."""
    return torch.linalg.svd(matrix.double(), full_matrices=False)


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor P·Qᵀ of `matrix` = P·Σ·Qᵀ: the nearest matrix with orthonormal columns (or
    rows), i.e. the whitening of a set of singular vectors that removes their overlap (TSV-M, Iso-CTS)."""
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def isotropic(matrix: torch.Tensor) -> torch.Tensor:
    """U·(mean σ)·Vh: the same singular vectors with a flat spectrum, the mean taken over all min(O, I)
    singular values, zeros included (as the Iso-C reference does)."""
    u, s, vh = svd64(matrix)
    return (s.mean() * (u @ vh)).float()


def per_layer(
    members: MemberDeltas, scaling: float, layer_merge: Callable[[list[torch.Tensor]], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """λ · layer_merge(every member's update of a layer), layer by layer: these functions see one layer at a time."""
    return {layer: scaling * layer_merge([member[layer] for member in members]) for layer in members[0]}
