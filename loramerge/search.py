"""Choosing a merge method's hyper-parameters on validation data, never on test.

params.yaml gives each hyper-parameter either a value (fixed) or a list (searched).
`greedy` tunes one at a time in the method's `search_order` (the KnOTS recipe: scaling,
then density/top-k, then drop probability), starting from each list's first value;
`grid` tries every combination.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from loramerge.config import ConfigError, describe
from loramerge.merging import MergeMethod, get_method

Point = dict[str, Any]


def split_space(spec: Mapping[str, Any]) -> tuple[Point, dict[str, list]]:
    """Fixed values and searched lists of a method's spec from params.yaml."""
    fixed = {k: v for k, v in spec.items() if not isinstance(v, list)}
    searched = {k: list(v) for k, v in spec.items() if isinstance(v, list)}
    for key, values in searched.items():
        if not values:
            raise ValueError(f"hyper-parameter {key!r} has an empty list of values to search")
    return fixed, searched


def search_order(method: MergeMethod, searched: Mapping[str, list]) -> list[str]:
    known = [k for k in method.search_order if k in searched]
    return known + sorted(k for k in searched if k not in known)


def validate_points(method: MergeMethod, spec: Mapping[str, Any]) -> None:
    """Check every value a search could try, before any compute: errors name the key."""
    fixed, searched = split_space(spec)
    for key, values in searched.items():
        for value in values:
            method.Params(**{**fixed, **{k: v[0] for k, v in searched.items()}, key: value})
    method.Params(**{**fixed, **{k: v[0] for k, v in searched.items()}})


def run_search(
    method: MergeMethod, spec: Mapping[str, Any], strategy: str, objective: Callable[[Point], float]
) -> tuple[Point, list[dict]]:
    """The best point and the table of every point tried with its score."""
    fixed, searched = split_space(spec)
    table: list[dict] = []
    cache: dict[tuple, float] = {}

    def evaluate(point: Point) -> float:
        key = tuple(sorted((k, repr(v)) for k, v in point.items()))
        if key not in cache:
            cache[key] = objective(point)
            table.append({**point, "score": cache[key]})
        return cache[key]

    if strategy == "grid":
        names = list(searched)
        points = [{**fixed, **dict(zip(names, values))} for values in itertools.product(*searched.values())]
        best = max(points, key=evaluate) if points else dict(fixed)
    else:
        best = {**fixed, **{k: v[0] for k, v in searched.items()}}
        for name in search_order(method, searched):
            candidates = [{**best, name: value} for value in searched[name]]
            best = max(candidates, key=evaluate)
    if not table:
        evaluate(best)
    return best, table


def check_methods(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, MergeMethod]:
    """Every configured method, with every value its search could try validated: the whole of `merge.methods` is
    checked when any stage starts, so a typo fails in seconds, not after the training it would follow."""
    resolved = {}
    for name, spec in methods.items():
        key = f"merge.methods.{name}"
        try:
            resolved[name] = get_method(name)
            validate_points(resolved[name], spec)
        except ValidationError as error:
            raise ConfigError(f"invalid params.yaml: {describe(error, key)}") from None
        except ValueError as error:
            raise ConfigError(f"invalid params.yaml: {key}: {error}") from None
    return resolved
