"""SVD re-factorisation: run another method, then keep the best rank-`rank` approximation of each layer.

Dense results (TIES, DARE, magnitude pruning) cannot be saved as a LoRA adapter, and sums of
adapters grow in rank; a truncated SVD per layer turns any merge into an adapter of a chosen
rank (what PEFT's `svd`, `ties_svd`, `magnitude_prune_svd`, … do). Factors are B = U_r·S_r and
A = V_r^T, as PEFT writes them. A low-rank base result is re-factorised from its factors
(`_ops.low_rank_svd`), a dense one with one thin SVD per layer. The rank is capped by what
the layer has: min(rank, out, in), and the base's own rank when it returns factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from loramerge.merging._config import expect
from loramerge.merging._ops import dense_truncated_factors, low_rank_result, low_rank_svd, truncated_factors
from loramerge.merging.base import LayerFactors, MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.registry import available_methods, get_method, register

SVD = "svd"


class SvdConfig(MethodConfig):
    """`base`: the registered method to run first; `base_params`: its hyper-parameters; `rank`: the output rank."""

    base: str = "task_arithmetic"
    rank: int = Field(default=16, gt=0)
    base_params: dict[str, Any] = {}

    @field_validator("base")
    @classmethod
    def _known_base(cls, base: str) -> str:
        known = [name for name in available_methods() if name != SVD]
        if base not in known:
            raise ValueError(f"base must be another registered merge method, one of: {', '.join(known)}; got {base!r}")
        return base

    @field_validator("base_params")
    @classmethod
    def _valid_base_params(cls, base_params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        base = info.data.get("base")
        if base is not None:
            try:
                get_method(base).Config(**base_params)
            except ValueError as error:
                raise ValueError(f"base_params are not valid for {base!r}: {error}") from None
        return base_params


@register
class Svd(MergeMethod):
    name = SVD
    Config = SvdConfig
    search_order = ("rank",)

    def merge(self, updates: Sequence[TaskUpdate], config: MethodConfig) -> MergeResult:
        p = expect(config, SvdConfig)
        base = get_method(p.base)
        result = base.merge(updates, base.Config(**p.base_params))
        return low_rank_result({layer: self._refactor(result, layer, p.rank) for layer in result.deltas})

    @staticmethod
    def _refactor(result: MergeResult, layer: str, rank: int) -> LayerFactors:
        if result.factors is None:
            return dense_truncated_factors(result.deltas[layer], rank)
        b, a = result.factors[layer]
        return truncated_factors(*low_rank_svd(b, [a]), rank)
