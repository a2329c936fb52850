"""Hyper-parameter types shared by the merge methods, declared once so names and ranges agree.

Every method spells the same knob the same way (`scaling`, `density`, `drop_prob`,
`majority_sign`, `prune_scope`, `seed`, `space`) with the same constraints, so params.yaml reads the
same for every method and a bad value fails validation with the parameter's name in the
message (pydantic puts the field name first in every error).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import Field

from loramerge.merging.base import MethodConfig

Scaling = Annotated[
    float, Field(allow_inf_nan=False, description="λ, one coefficient applied to every member's update")
]
Density = Annotated[
    float, Field(ge=0.0, le=1.0, description="fraction of entries kept by magnitude pruning (TIES' top-k)")
]
DropProb = Annotated[
    float,
    Field(ge=0.0, lt=1.0, description="DARE's probability of dropping an entry; survivors are rescaled by 1/(1-p)"),
]
Seed = Annotated[int, Field(ge=0, description="seed of DARE's random drop; the same seed gives the same merge")]
MajoritySign = Literal["total", "frequency"]
"""Sign election: by summed values ("total", TIES' default) or by counting signs ("frequency", a tie going to the sum's sign: `_ops.agreeing`)."""
PruneScope = Literal["layer", "model"]
"""Magnitude threshold per layer, or one threshold over each member's whole flattened update."""
Space = Literal["full", "knots", "core"]
"""Where a merge function runs (`_spaces`): the full updates ΔW_i, KnOTS' aligned space, or Core Space."""

DEFAULT_DENSITY = 0.2
"""TIES' recommended top-k (the TIES paper and the tuned KnOTS-TIES setting both keep 20%)."""


class EmptyConfig(MethodConfig):
    """A method without hyper-parameters; any key is an error."""


class ScalingConfig(MethodConfig):
    """Merge functions that scale the merged update by one λ; each runs in any `space`."""

    scaling: Scaling = 1.0
    space: Space = "full"


class MagnitudeConfig(ScalingConfig):
    """Magnitude pruning to `density` before summing.

    `prune_scope` defaults to "model": the TIES paper and the KnOTS reference trim each
    member's whole flattened task vector with one threshold; PEFT trims each layer.
    """

    density: Density = DEFAULT_DENSITY
    prune_scope: PruneScope = "model"


class TiesConfig(MagnitudeConfig):
    """TIES: trim to `density`, elect a sign per entry, average the agreeing entries, times λ."""

    majority_sign: MajoritySign = "total"


class DareConfig(ScalingConfig):
    """DARE: drop entries with probability `drop_prob`, rescale the rest, then sum times λ."""

    drop_prob: DropProb = 0.1
    seed: Seed = 0


class DareTiesConfig(TiesConfig, DareConfig):
    """DARE then TIES. `density` defaults to 1 (no top-k trim) as in the tuned KnOTS DARE-TIES settings."""

    density: Density = 1.0


P = TypeVar("P", bound=MethodConfig)


def expect(config: MethodConfig, cls: type[P]) -> P:
    """`config` as the method's own Config class, exactly: a subclass could carry keys this method
    would silently ignore (TIES' density passed to task arithmetic), so it is a TypeError too."""
    if type(config) is not cls:
        raise TypeError(
            f"expected {cls.__name__} hyper-parameters, got {type(config).__name__}: build them with method.Config(...)"
        )
    return config
