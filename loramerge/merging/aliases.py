"""`<space>_<function>`: a merge function with its space fixed, e.g. `knots_ties` = TIES in KnOTS' space.

The KnOTS paper's names (knots_task_arithmetic, knots_ties, knots_dare_ties) keep working, and
`core_*` names the Core Space versions, so params.yaml can list a function in several spaces side
by side (`ties`, `knots_ties`, `core_ties`). An alias's Config is its function's with `space`
fixed: asking `knots_ties` for `space: core` is a validation error, not a silent override.
"""

from __future__ import annotations

from typing import Literal

from pydantic import create_model

from loramerge.merging.base import MergeMethod
from loramerge.merging.dare_ties import DareTies
from loramerge.merging.iso_c import IsoC
from loramerge.merging.iso_cts import IsoCts
from loramerge.merging.registry import register
from loramerge.merging.task_arithmetic import TaskArithmetic
from loramerge.merging.ties import Ties
from loramerge.merging.tsv_m import TsvM

ALIASED = {
    "knots": (TaskArithmetic, Ties, DareTies, IsoC, IsoCts, TsvM),
    "core": (TaskArithmetic, Ties, DareTies, IsoC, IsoCts, TsvM),
}


def in_space(function: type[MergeMethod], space: str) -> type[MergeMethod]:
    """A registered subclass of `function` named `<space>_<name>` whose Config pins `space`."""
    config = create_model(
        f"{function.Config.__name__}In{space.title()}",
        __base__=function.Config,
        __doc__=f"{function.Config.__doc__} Space fixed to {space!r}.",
        space=(Literal[space], space),
    )
    alias = type(
        f"{space.title()}{function.__name__}",
        (function,),
        {"name": f"{space}_{function.name}", "Config": config, "__doc__": f"{function.name} in the {space} space."},
    )
    return register(alias)


for _space, _functions in ALIASED.items():
    for _function in _functions:
        in_space(_function, _space)
