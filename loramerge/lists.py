"""The lists `loramerge combos` writes into params.yaml (`replicas`, `pairs`, `triples`, `many`, `exported`) and the
names in them: a combination is its members joined by `+`, a task's repeat k is `<task>-repeat<k>`.

dvc.yaml loops over these lists, so they are generated from the task list, never edited by hand; `config.Params`
checks that they are current.
"""

from __future__ import annotations

import re
from itertools import combinations as iter_combinations
from typing import Any

COMBO_SEPARATOR = "+"
REPEAT_SUFFIX = re.compile(r"-repeat\d+$")
ALL = "all"
"""In `combos.sizes` and `export.combinations`: the merge of every configured task at once, whatever they are."""


def replica_name(task: str, repeat: int) -> str:
    """A task's first repeat keeps the task's name (one seed is the plain pipeline); repeat k is `<task>-repeat<k>`."""
    return task if repeat == 0 else f"{task}-repeat{repeat}"


def is_local_path(adapter: str) -> bool:
    """A local folder is written as a path (/, ./, ../ or ~); anything else is a Hub id."""
    return adapter.startswith(("/", "./", "../", "~"))


def adapter_source(task: str, adapter: str | None) -> str:
    """The train stage's dependency for a task's adapter: its own folder, else the data it is trained (or, for a Hub
    adapter, its head is trained) from."""
    return adapter if adapter and is_local_path(adapter) else f"data/prepared/{task}"


def replica_entries(
    tasks: list[str], repeats: int, adapters: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """`replicas:` as `loramerge combos` writes it: every task of every repeat, repeat by repeat."""
    adapters = adapters or {}
    return {
        replica_name(t, k): {"task": t, "repeat": k, "source": adapter_source(t, adapters.get(t))}
        for k in range(repeats)
        for t in tasks
    }


def combination_entries(chosen: list[str], repeats: int) -> dict[str, dict[str, list[str]]]:
    """`pairs:`/`triples:` as `loramerge combos` writes them: each chosen task combination once per repeat."""
    entries = {}
    for k in range(repeats):
        for combo in chosen:
            tasks = split_combination(combo)
            members = [replica_name(t, k) for t in tasks]
            entries[COMBO_SEPARATOR.join(members)] = {"members": members, "tasks": tasks}
    return entries


def exported_entries(shipped: list[str]) -> dict[str, dict]:
    """`exported:` as `loramerge combos` writes it: the shipped combinations (of the first seed), by kind."""
    return {
        section: combination_entries([c for c in shipped if combination_kind(c) == kind], 1)
        for kind, section in SECTIONS.items()
    }


def generated_lists(
    tasks: list[str],
    repeats: int,
    pairs: list[str],
    triples: list[str],
    adapters: dict[str, str] | None = None,
    shipped: list[str] | None = (ALL,),
    many: list[str] = (),
) -> dict[str, dict]:
    """The sections `loramerge combos` owns, for these tasks (those in `adapters` bring their own), repeats,
    chosen task pairs, triples and larger merges, and the combinations export ships (`all`: the merge of every task
    when chosen, the default; None: all of them, as `export.combinations: null` says)."""
    chosen = [*pairs, *triples, *many]
    every = [c for c in chosen if set(split_combination(c)) == set(tasks)]
    return {
        "replicas": replica_entries(tasks, repeats, adapters),
        "pairs": combination_entries(pairs, repeats),
        "triples": combination_entries(triples, repeats),
        "many": combination_entries(list(many), repeats),
        "exported": exported_entries(
            chosen if shipped is None else [s for c in shipped for s in (every if c == ALL else [c])]
        ),
    }


GENERATED = ("replicas", "pairs", "triples", "many", "exported")
"""The sections of params.yaml that `loramerge combos` writes."""


def split_combination(combo: str) -> list[str]:
    return combo.split(COMBO_SEPARATOR)


SECTIONS = {"pair": "pairs", "triple": "triples", "many": "many"}
"""Each kind of combination and the params.yaml list of it: dvc.yaml's stage groups are named by kind (merge_pair,
evaluate_triple, export_many, ...). Pairs and triples depend on each member's files; a merge of four tasks or more
depends on the whole task folders, since DVC's templating cannot list a variable number of members."""


def combination_kind(combo: str) -> str:
    """Pair, triple, or many (four tasks or more), as the dvc.yaml stage groups name it and the report splits."""
    return {2: "pair", 3: "triple"}.get(len(split_combination(combo)), "many")


def all_combinations(tasks: list[str], sizes: tuple[int, ...] = (2, 3)) -> list[str]:
    """Every unordered pair and triple, in the task list's order, as 'a+b' names."""
    return [COMBO_SEPARATOR.join(c) for size in sizes for c in iter_combinations(tasks, size)]
