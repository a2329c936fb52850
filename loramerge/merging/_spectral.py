"""Spectral building blocks of the isotropic (Iso-C, Iso-CTS) and task-singular-vector (TSV-M) merges.

All SVDs run in float64 (the authors' code uses float32 on GPU; float64 makes the results
independent of the SVD's rounding, and these matrices are small), results come back as float32.

A singular direction whose value is a numerical zero (`_ops.significant`) is whatever the SVD's rounding made
it: an update of rank r in an O × I layer has min(O, I) − r of them, and any rotation of them, or a sign flip,
is an equally valid SVD. The authors' code keeps such directions (full-rank task vectors of fine-tuned ViTs
have none); on LoRA updates they make a result change with a factor's last bit. So every function here keeps
only directions with a non-zero value: where the authors' result is unique (every kept value non-zero) the
two agree, and elsewhere this one is the unique result on the members' range.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from loramerge.merging._ops import MemberDeltas, significant


def svd64(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64: U (O × k), s (k), Vh (k × I), k = min(O, I)."""
    return torch.linalg.svd(matrix.double(), full_matrices=False)


def scale(matrices: list[torch.Tensor]) -> torch.Tensor:
    """The largest spectral norm among `matrices`: the scale against which a layer's singular values are zeros."""
    return torch.stack([torch.linalg.matrix_norm(m.double(), ord=2) for m in matrices]).max()


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The polar factor P·Qᵀ of `matrix` = P·Σ·Qᵀ over its non-zero Σ: the nearest matrix with orthonormal
    columns (or rows), i.e. the whitening of a set of singular vectors that removes their overlap (TSV-M,
    Iso-CTS). Dependent vectors (two members with a common direction) leave zeros in Σ, whose P and Q are
    arbitrary: the factor keeps only the others, so it is unique."""
    p, s, qh = torch.linalg.svd(matrix, full_matrices=False)
    keep = significant(s, s.max())
    return p[:, keep] @ qh[keep]


def isotropic(matrix: torch.Tensor, members_scale: torch.Tensor) -> torch.Tensor:
    """σ̄·U·Vh over the singular directions with a non-zero value (against the larger of `matrix`'s own scale and
    `members_scale`, which stays large when the members cancel): the same directions with a flat spectrum, σ̄ the
    mean of all min(O, I) singular values, zeros included (as the Iso-C reference does)."""
    u, s, vh = svd64(matrix)
    keep = significant(s, torch.maximum(s.max(), members_scale))
    return (s.mean() * (u[:, keep] @ vh[keep])).float()


def per_layer(
    members: MemberDeltas, scaling: float, layer_merge: Callable[[list[torch.Tensor]], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """λ · layer_merge(every member's update of a layer), layer by layer: these functions see one layer at a time."""
    return {layer: scaling * layer_merge([member[layer] for member in members]) for layer in members[0]}
