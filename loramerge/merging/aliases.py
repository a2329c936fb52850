"""`<space>_<function>`: a merge function with its space fixed, e.g. `knots_ties` = TIES in KnOTS' space.

The KnOTS paper's names (knots_task_arithmetic, knots_ties, knots_dare_ties) keep working, and
`core_*` names the Core Space versions, so params.yaml can list a function in several spaces side
by side (`ties`, `knots_ties`, `core_ties`). An alias's Config is its function's with `space`
fixed: asking `knots_ties` for `space: core` is a validation error, not a silent override.

Every registered function whose Config has a `space` gets its aliases when the registry loads
(`registry._load_all` registers what `missing_aliases` makes): a new function needs no entry here.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import create_model

from loramerge.merging._config import Space
from loramerge.merging.base import MergeMethod

ALIASED_SPACES = [space for space in get_args(Space) if space != "full"]


def in_space(function: type[MergeMethod], space: str) -> type[MergeMethod]:
    """A subclass of `function` named `<space>_<name>` whose Config pins `space`."""
    config = create_model(
        f"{function.Config.__name__}In{space.title()}",
        __base__=function.Config,
        __doc__=f"{function.Config.__doc__} Space fixed to {space!r}.",
        space=(Literal[space], space),
    )
    alias = type(
        f"{space.title()}{function.__name__}",
        (function,),
        {
            "name": f"{space}_{function.name}",
            "Config": config,
            "fixed_space": space,
            "__doc__": f"{function.name} in the {space} space.",
        },
    )
    return alias


def missing_aliases(methods: dict[str, type[MergeMethod]]) -> list[type[MergeMethod]]:
    """`<space>_<name>` for every method in `methods` that takes a `space`, is not an alias itself and lacks it."""
    return [
        in_space(function, space)
        for function in methods.values()
        if "space" in function.Config.model_fields and getattr(function, "fixed_space", None) is None
        for space in ALIASED_SPACES
        if f"{space}_{function.name}" not in methods
    ]
