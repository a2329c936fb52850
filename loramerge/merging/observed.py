"""Data-aware merging: members that carry statistics of the data their layers saw.

Most methods see only the updates. A data-aware method (RegMean) also needs, per adapted layer,
the Gram matrix G = XᵀX/N of that layer's inputs X (N token vectors) in the member's own adapted
model; the merge stage computes them once per task (stage `gram`) and hands the members over as
`ObservedUpdate`s. Such methods say which data they used (`DataAwareMethod.data`), so the report
can label them: they are not comparable to data-free merges as if they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from loramerge.merging.base import MergeMethod, TaskUpdate


@dataclass(frozen=True)
class ObservedUpdate(TaskUpdate):
    """A member's update plus, per adapted layer, the Gram matrix (I × I) of that layer's inputs."""

    grams: dict[str, torch.Tensor]


class DataAwareMethod(MergeMethod):
    """A method whose merge reads statistics of the members' data, not only their updates."""

    data: ClassVar[str]
    """What data it uses, in words, for the report (which split, which statistic)."""


def observed(updates: Sequence[TaskUpdate], method: str) -> list[ObservedUpdate]:
    """The members as ObservedUpdates with a Gram matrix for every layer, or a ValueError naming what is missing."""
    for update in updates:
        if not isinstance(update, ObservedUpdate):
            raise ValueError(
                f"merge method {method!r} needs each member's layer-input Gram matrices; {update.name!r} has none "
                "(the merge stage loads them from models/gram/<task>: run `dvc repro gram@<task>`)"
            )
        missing = sorted(set(update.layers) - set(update.grams))
        if missing:
            raise ValueError(f"{update.name!r} has no Gram matrix for layers {missing[:3]}: rerun its `gram` stage")
    return list(updates)
