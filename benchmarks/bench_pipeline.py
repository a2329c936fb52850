"""DVC's overhead on the default pipeline: a no-op `dvc repro`, and what one changed parameter reruns.

1. With every stage up to date, `dvc repro` only hashes and compares: timed (best of 3).
   Goal: under 5 seconds.
2. One task's training parameter (`tasks.<task>.train.learning_rate`) is changed and
   `dvc repro --dry --force-downstream` lists the stages DVC would run (a dry run computes
   nothing, so without `--force-downstream` it cannot know that the retrained adapter
   changes, and would list the training stage alone). Goal: exactly that task's `train`
   stage and the stages downstream of it (its evaluation, every merge and evaluation of a
   combination it belongs to, the similarity stage and the report), nothing else.
   params.yaml is restored byte for byte afterwards, even if the run is interrupted.

Needs an up-to-date default pipeline: run `make run` first.

    python -m benchmarks.bench_pipeline [--task emotion]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

import yaml

from loramerge.config import load_params
from loramerge.lists import combination_kind
from loramerge.paths import stage_name


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], capture_output=True, text=True, check=True)


def stages_to_run(dry_run_output: str) -> set[str]:
    """The stages a dry run names, by name."""
    return {stage_name(address) for address in re.findall(r"Running stage '([^']+)'", dry_run_output)}


def expected_reruns(params, task: str) -> set[str]:
    """The task's training stage and everything downstream of it, by the DAG's own definition."""
    combos = [c for c in params.combinations if task in c.split("+")]
    downstream = {f"{stage}_{combination_kind(c)}@{c}" for c in combos for stage in ("merge", "evaluate")}
    downstream |= {f"export_{combination_kind(c)}@{c}" for c in combos if c in params.shipped()}
    return {f"train@{task}", f"gram@{task}", f"evaluate@{task}", "similarity", "report"} | downstream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default=None, help="the task whose training parameter changes (default: the first)")
    args = parser.parse_args()
    params = load_params("params.yaml")
    task = args.task or next(iter(params.tasks))
    if subprocess.run(["dvc", "status", "--quiet"], capture_output=True).returncode:
        raise SystemExit("the pipeline is not up to date (`dvc status`): run `make run` first")
    stage_count = len(dvc("stage", "list", "--all", "--name-only").stdout.split())
    no_op = []
    for _ in range(3):
        started = time.perf_counter()
        dvc("repro")
        no_op.append(time.perf_counter() - started)

    path = Path("params.yaml")
    original = path.read_bytes()
    changed = yaml.safe_load(original)
    current = params.task_train(task).learning_rate
    changed["tasks"][task].setdefault("train", {})["learning_rate"] = current * 2
    try:
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
        would_run = stages_to_run(dvc("repro", "--dry", "--force-downstream").stdout)
    finally:
        path.write_bytes(original)
    expected = expected_reruns(params, task)

    print("## Pipeline overhead: no-op `dvc repro` and what one changed parameter reruns\n")
    print(f"Default pipeline, {stage_count} stages.\n")
    print("| measure | result | goal | met |")
    print("|---|---:|---:|---|")
    print(
        f"| no-op `dvc repro` (best of 3; all {', '.join(f'{s:.1f}' for s in no_op)} s) | {min(no_op):.1f} s | < 5 s | {'yes' if min(no_op) < 5 else 'no'} |"
    )
    exact = would_run == expected
    print(
        f"| stages rerun after `tasks.{task}.train.learning_rate` ×2 | {len(would_run)} of {stage_count} | {len(expected)} (train@{task} and downstream) | {'yes' if exact else 'no'} |"
    )
    if not exact:
        print(f"\nUnexpected: {sorted(would_run - expected)}; missing: {sorted(expected - would_run)}")
    print(f"\nStages that would rerun: {', '.join(sorted(would_run))}.")


if __name__ == "__main__":
    main()
