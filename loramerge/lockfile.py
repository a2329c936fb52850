"""dvc.lock without the entries of stages the pipeline no longer has.

DVC keeps a stage's lock entry after the stage leaves dvc.yaml (on purpose: switching branches should not rerun
anything; treeverse/dvc#5293), and it parses and rewrites the whole lock after every stage it runs. A lock that
kept every combination ever configured makes each later stage pay for entries nothing reads: the default's had 10
of 63. `loramerge combos`, which is what changes this project's stages, drops them; a dropped combination that
comes back is restored from DVC's run cache, not recomputed.
"""

from __future__ import annotations

import io
from pathlib import Path

from loramerge.atomic import write_text

LOCK = "dvc.lock"
PIPELINE = "dvc.yaml"
PIPELINE_PARAMS = "params.yaml"
"""The file dvc.yaml takes its variables from (`vars:`), whose lists `loramerge combos` writes."""


def pipeline_stages(root: Path) -> set[str]:
    """The stage names dvc.yaml defines now (its `foreach` lists resolved by DVC from params.yaml)."""
    from dvc.repo import Repo  # import cost: about a second, for `combos` only

    pipeline = (root / PIPELINE).resolve()
    with Repo(str(root)) as repo:
        return {stage.name for stage in repo.index.stages if Path(stage.path).resolve() == pipeline}


def prune_lock(root: Path) -> list[str]:
    """Remove the lock entries of stages dvc.yaml no longer defines; the names removed, sorted."""
    from ruamel.yaml import YAML

    lock = root / LOCK
    if not lock.exists():
        return []
    yaml = YAML()  # round trip, as DVC writes it: the kept entries stay byte for byte
    document = yaml.load(lock.read_text(encoding="utf-8"))
    stages = document.get("stages") or {}
    gone = sorted(set(stages) - pipeline_stages(root))
    if gone:
        for name in gone:
            del stages[name]
        text = io.StringIO()
        yaml.dump(document, text)
        write_text(lock, text.getvalue())
    return gone
