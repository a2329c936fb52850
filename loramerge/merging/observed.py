"""Data-aware merging: members that carry what their data showed, not only their updates.

Most methods see only the updates. A data-aware method also reads, per member, one of:
- `grams` (RegMean): per adapted layer, the Gram matrix G = XᵀX/N of that layer's inputs X (N token
  vectors) in the member's own adapted model, over its training texts (stage `gram`, cached per task);
- `entropy` (AdaMerging): the mean prediction entropy of the member's own head on its unlabeled
  validation texts, for the encoder with any given updates, differentiable in those updates.
The merge stage hands the members over as `ObservedUpdate`s holding what the configured methods
`need`. Data-aware methods say which data they used (`DataAwareMethod.data`), so the report labels
them: they are not comparable to data-free merges as if they were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from loramerge import paths
from loramerge.merging.base import MergeMethod, TaskUpdate

Observation = Literal["grams", "entropy"]
Entropy = Callable[[Mapping[str, torch.Tensor], int, int], torch.Tensor]
"""(updates per layer, step, batch size) -> the member's mean prediction entropy on that step's batch of its
unlabeled texts, differentiable in the updates."""

HOW_TO_GET = {
    "grams": f"the merge stage loads them from models/gram/<task>: run `dvc repro {paths.dvc_target('gram@<task>')}`",
    "entropy": "the merge stage builds it from the member's head and validation texts",
}


@dataclass(frozen=True)
class ObservedUpdate(TaskUpdate):
    """A member's update plus the observations of its data that data-aware methods read."""

    grams: dict[str, torch.Tensor] | None = None
    entropy: Entropy | None = None


class DataAwareMethod(MergeMethod):
    """A method whose merge reads observations of the members' data, not only their updates."""

    needs: ClassVar[Observation]


def observed(updates: Sequence[TaskUpdate], method: DataAwareMethod) -> list[ObservedUpdate]:
    """The members as ObservedUpdates holding what `method` needs, or a ValueError naming what is missing."""
    for update in updates:
        found = getattr(update, method.needs, None) if isinstance(update, ObservedUpdate) else None
        if found is None:
            raise ValueError(
                f"merge method {method.name!r} needs each member's {method.needs}; {update.name!r} has none "
                f"({HOW_TO_GET[method.needs]})"
            )
        if method.needs == "grams" and set(update.layers) - set(found):
            missing = sorted(set(update.layers) - set(found))
            raise ValueError(f"{update.name!r} has no Gram matrix for layers {missing[:3]}: rerun its `gram` stage")
    return list(updates)
