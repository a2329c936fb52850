"""Capping the combinations for many tasks: a deterministic sample spread evenly over the tasks."""

from __future__ import annotations

from collections import Counter

import pytest

from loramerge.combinations import choose_combinations, coverage
from loramerge.lists import all_combinations

TWENTY = [f"task{i:02d}" for i in range(20)]


@pytest.mark.parametrize("size", [2, 3])
def test_without_a_cap_every_combination_is_listed_in_task_order(size):
    assert choose_combinations(TWENTY[:6], size, None, seed=0) == all_combinations(TWENTY[:6], (size,))


def test_a_cap_above_the_total_lists_every_combination():
    assert choose_combinations(TWENTY[:4], 2, 100, seed=0) == all_combinations(TWENTY[:4], (2,))


@pytest.mark.parametrize(("size", "cap"), [(2, 30), (3, 100), (3, 7)])
def test_a_capped_sample_has_that_many_distinct_combinations_spread_evenly(size, cap):
    chosen = choose_combinations(TWENTY, size, cap, seed=0)
    assert len(chosen) == len(set(chosen)) == cap
    assert set(chosen) <= set(all_combinations(TWENTY, (size,)))
    use = Counter(t for c in chosen for t in c.split("+"))
    assert max(use.values()) - min(use[t] for t in TWENTY) <= 1


def test_the_sample_depends_on_the_seed_and_only_on_it():
    assert choose_combinations(TWENTY, 3, 50, seed=3) == choose_combinations(TWENTY, 3, 50, seed=3)
    assert choose_combinations(TWENTY, 3, 50, seed=3) != choose_combinations(TWENTY, 3, 50, seed=4)


def test_coverage_reports_the_share_and_the_task_pairs_that_meet():
    chosen = ["a+b+c", "a+d+e"]
    covered = coverage(list("abcde"), chosen, 3)
    assert covered["chosen"] == 2 and covered["total"] == 10 and covered["share"] == 0.2
    assert (covered["min_per_task"], covered["max_per_task"]) == (1, 2)
    assert covered["task_pairs_met"] == 6 / 10
