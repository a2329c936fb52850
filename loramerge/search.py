"""Choosing a merge method's hyper-parameters on validation data, never on test.

params.yaml gives each hyper-parameter either a value (fixed) or a list (searched), typed as a
`SearchSpace`. `greedy` tunes one at a time in the method's `search_order` (the KnOTS recipe:
scaling, then density/top-k, then drop probability), starting from each list's first value;
`grid` tries every combination. Each point tried is one `Trial`: the point, the method's `Config`
built from it once, and whatever the caller's scoring returns (score, per-task accuracies, the merge).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from loramerge.config import ConfigError, describe
from loramerge.merging import MergeMethod, MergeResult, MethodConfig, get_method
from loramerge.metrics import ranked
from loramerge.settings import SearchSpace

Point = dict[str, Any]


@dataclass
class Trial:
    """One point of a search and what it scored: the record the manifest's search table is written from."""

    point: Point
    config: MethodConfig
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    """Per member task, its score on validation (accuracy; entity micro-F1 for a token task)."""
    result: MergeResult | None = None
    """The merged update itself, so the best trial's merge need not be recomputed."""

    def row(self) -> dict[str, Any]:
        return {**self.point, "score": self.score}


Scoring = Callable[[Point, MethodConfig], Trial]
"""Merges with one config and scores the merge: the caller's half of a trial."""


def search_order(method: MergeMethod, searched: Mapping[str, list]) -> list[str]:
    known = [k for k in method.search_order if k in searched]
    return known + sorted(k for k in searched if k not in known)


def candidate_points(method: MergeMethod, space: SearchSpace) -> list[Point]:
    """The points that validate every value a search could try: the start, and each searched value in turn with
    the other keys at their first value (a grid point's values are each valid, since they are checked key by key)."""
    start = space.start
    return [start] + [{**start, key: value} for key, values in space.searched.items() for value in values]


def validate_points(method: MergeMethod, space: SearchSpace) -> None:
    """Check every value a search could try, before any compute: errors name the key."""
    for point in candidate_points(method, space):
        method.Config(**point)


def run_search(method: MergeMethod, space: SearchSpace, strategy: str, scoring: Scoring) -> tuple[Trial, list[Trial]]:
    """The best trial and every trial, in the order tried; a point met twice (greedy revisits its start) is scored
    once."""
    trials: list[Trial] = []

    def trial(point: Point) -> Trial:
        done = next((t for t in trials if t.point == point), None)
        if done is None:
            done = scoring(point, method.Config(**point))
            trials.append(done)
        return done

    if strategy == "grid":
        names = list(space.searched)
        points = [
            {**space.fixed, **dict(zip(names, values))} for values in itertools.product(*space.searched.values())
        ]
        best = max((trial(p) for p in points), key=lambda t: ranked(t.score))
    else:
        best = trial(space.start)
        for name in search_order(method, space.searched):
            best = max(
                (trial({**best.point, name: value}) for value in space.searched[name]), key=lambda t: ranked(t.score)
            )
    return best, trials


def check_methods(methods: Mapping[str, SearchSpace]) -> dict[str, MergeMethod]:
    """Every configured method, with every value its search could try validated: the whole of `merge.methods` is
    checked when any stage starts, so a typo fails in seconds, not after the training it would follow."""
    resolved = {}
    for name, space in methods.items():
        key = f"merge.methods.{name}"
        try:
            resolved[name] = get_method(name)
            validate_points(resolved[name], space)
        except ValidationError as error:
            raise ConfigError(f"invalid params.yaml: {describe(error, key)}") from None
        except ValueError as error:
            raise ConfigError(f"invalid params.yaml: {key}: {error}") from None
    return resolved
