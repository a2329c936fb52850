"""The one interface every merge method implements.

A method sees each member adapter as its *exact* per-layer update
ΔW_i = B_i·A_i·(alpha_i/r_i) (ranks and alphas may differ), never the raw A and B
factors on their own: merging A and B separately adds cross terms B_i·A_j.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from loramerge.records import DATA_FREE
from loramerge.updates import LayerFactors, TaskUpdate

__all__ = ["LayerFactors", "MergeMethod", "MergeResult", "MethodConfig", "TaskUpdate"]


@dataclass
class MergeResult:
    """The merged per-layer updates, and low-rank factors when the result is exactly low-rank."""

    deltas: dict[str, torch.Tensor]
    factors: dict[str, LayerFactors] | None = None


class MethodConfig(BaseModel):
    """Base of every method's hyper-parameters: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MergeMethod(ABC):
    """A merge method: a name, a typed hyper-parameter model, and `merge`.

    `search_order` lists the hyper-parameters in the order the greedy validation search
    tunes them (KnOTS' order: scaling, then density/top-k, then drop probability).
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    search_order: ClassVar[tuple[str, ...]] = ()
    data: ClassVar[str] = DATA_FREE
    """What it reads beyond the members' updates, in words (a data-aware method: which split, which statistic); the
    merge manifest records it, and the report shows it beside the method."""

    @abstractmethod
    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        """Merge the members' updates into one update per layer."""
