"""The dvc.lock files without the entries of stages the pipeline no longer has.

DVC keeps a stage's lock entry after the stage leaves its dvc.yaml (on purpose: switching branches should not rerun
anything; treeverse/dvc#5293), and it parses and rewrites the whole lock after every stage it runs. A lock that
kept every combination ever configured makes each later stage pay for entries nothing reads: the default's had 10
of 63. `loramerge combos`, which is what changes this project's stages, drops them; a dropped combination that
comes back is restored from DVC's run cache, not recomputed.
"""

from __future__ import annotations

import io
from pathlib import Path

from loramerge import paths
from loramerge.atomic import write_text

LOCK = "dvc.lock"
PIPELINE = "dvc.yaml"
PIPELINE_PARAMS = "params.yaml"
"""The file every dvc.yaml takes its variables from (`vars:`), whose lists `loramerge combos` writes."""


def pipeline_files(root: Path) -> list[Path]:
    """The root dvc.yaml and each stage group's (`pipelines/<group>/dvc.yaml`), each with its dvc.lock beside it."""
    return [root / PIPELINE, *sorted((root / paths.PIPELINES).glob(f"*/{PIPELINE}"))]


def lock_files(root: Path) -> list[Path]:
    """The dvc.lock files the pipeline has now (a group that never ran has none)."""
    return [lock for file in pipeline_files(root) if (lock := file.parent / LOCK).exists()]


def pipeline_stages(root: Path) -> dict[Path, set[str]]:
    """The stage names each dvc.yaml defines now (its `foreach` lists resolved by DVC from params.yaml)."""
    from dvc.repo import Repo  # import cost: about a second, for `combos` only

    defined: dict[Path, set[str]] = {file.resolve(): set() for file in pipeline_files(root)}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            defined.setdefault(Path(stage.path).resolve(), set()).add(stage.name)
    return defined


def prune_lock(root: Path) -> list[str]:
    """Remove the lock entries of stages their dvc.yaml no longer defines; the stages removed, sorted, as DVC
    addresses them (`pipelines/<group>/dvc.yaml:<name>`)."""
    from ruamel.yaml import YAML

    locks = lock_files(root)
    if not locks:
        return []
    defined, gone = pipeline_stages(root), []
    yaml = YAML()  # round trip, as DVC writes it: the kept entries stay byte for byte
    for lock in locks:
        file = lock.parent / PIPELINE
        document = yaml.load(lock.read_text(encoding="utf-8"))
        stages = document.get("stages") or {}
        dropped = sorted(set(stages) - defined.get(file.resolve(), set()))
        if dropped:
            for name in dropped:
                del stages[name]
            text = io.StringIO()
            yaml.dump(document, text)
            write_text(lock, text.getvalue())
            where = "" if file == root / PIPELINE else f"{file.relative_to(root).as_posix()}:"  # DVC's address
            gone += [f"{where}{name}" for name in dropped]
    return sorted(gone)
