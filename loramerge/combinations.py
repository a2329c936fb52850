"""Which pairs and triples `loramerge combos` writes into params.yaml: all, or a balanced sample.

Pairs grow as n², triples as n³: 20 tasks make 190 pairs and 1,140 triples, each merged
with every method and evaluated. A cap keeps the sweep affordable; the sample is spread so
that every task appears about equally often (and, for triples, every pair of tasks as
evenly as the cap allows), because a merge study with one task in most combinations would
say more about that task than about merging. What a cap costs is reported by `coverage`.
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import combinations as iter_combinations

from loramerge.config import Params
from loramerge.lists import COMBO_SEPARATOR, all_combinations, split_combination


def choose_combinations(tasks: list[str], size: int, cap: int | None, seed: int) -> list[str]:
    """Every combination of `size` tasks, or `cap` of them spread evenly over the tasks.

    Greedy: walk the combinations in a seeded random order and take, each time, the one
    whose members (and member pairs) have been used least so far. Deterministic for a
    seed; the result is in the task list's order, as `all_combinations` gives it.
    """
    everything = list(iter_combinations(tasks, size))
    if cap is None or cap >= len(everything):
        return all_combinations(tasks, (size,))
    order = everything[:]
    random.Random(seed).shuffle(order)
    task_use: Counter[str] = Counter()
    pair_use: Counter[tuple[str, str]] = Counter()
    chosen: set[tuple[str, ...]] = set()
    for _ in range(cap):
        best = min(
            (c for c in order if c not in chosen),
            key=lambda c: (
                max(task_use[t] for t in c),
                sum(task_use[t] for t in c),
                sum(pair_use[p] for p in iter_combinations(c, 2)),
            ),
        )
        chosen.add(best)
        task_use.update(best)
        pair_use.update(iter_combinations(best, 2))
    return [COMBO_SEPARATOR.join(c) for c in everything if c in chosen]


def coverage(tasks: list[str], chosen: list[str], size: int) -> dict[str, float | int]:
    """What a sample covers: its share of all combinations, how often each task appears, and
    (for triples) the share of task pairs that meet in at least one chosen triple."""
    total = sum(1 for _ in iter_combinations(tasks, size))
    members = [split_combination(c) for c in chosen]
    use = Counter(t for m in members for t in m)
    met = {p for m in members for p in iter_combinations(sorted(m), 2)}
    pairs_total = len(tasks) * (len(tasks) - 1) // 2
    return {
        "chosen": len(chosen),
        "total": total,
        "share": len(chosen) / total if total else 1.0,
        "min_per_task": min((use[t] for t in tasks), default=0),
        "max_per_task": max((use[t] for t in tasks), default=0),
        "task_pairs_met": len(met) / pairs_total if pairs_total else 1.0,
    }


def member_pairs(combo: str) -> list[str]:
    """The pairs inside a combination, as 'a+b' in the combination's order (a pair is its own only one)."""
    return [COMBO_SEPARATOR.join(p) for p in iter_combinations(split_combination(combo), 2)]


def scored_pairs(params: Params) -> list[str]:
    """Every configured pair, and every pair inside a configured triple, once each, as 'a+b' (tasks: the first
    seed's combinations, whose replicas are named after their tasks)."""
    combinations = params.repeat_view(0).combinations
    return list(dict.fromkeys(pair for combo in combinations for pair in member_pairs(combo)))
