"""What DVC itself costs per stage as a pipeline grows: a synthetic DAG of 60, 115 and ~250 stages.

After every stage, DVC parses and dumps the whole `dvc.lock` (ruamel's round trip), so its cost per stage grows
with the number of stages in that lock, and a study's total grows quadratically. This builds a throw-away git +
DVC project whose stages do nothing (`echo`), shaped like loramerge's: each depends on `--code-deps` code files (a
merge stage lists 25 today), one data file and a params key, and writes one output. It records every stage with one
`dvc commit` (no stage runs), then makes `--stale` of them stale through their params key and times `dvc repro`:
(that time − a no-op `dvc repro`) / stale is DVC's own cost per stage at that lock size; the no-op `dvc repro` is the
fixed cost of one `dvc repro --all-pipelines` (reading every dvc.yaml and dvc.lock, checking every stage).

Ways to bound that cost are measured beside one lock for all: fewer code deps a stage (one entry standing for a
stage module's code), the stages spread over `dvc.yaml` files of at most N stages each, and loramerge's own layout
since 2026-12-08, one `dvc.yaml` per stage group (`groups`: for T tasks, the seven per-task groups of T stages, merge
and evaluate of every pair and every triple, merge, evaluate and export of the all-task merge, similarity and the
report). Each file sits in its own folder `pipelines/partNNN/` with its own `dvc.lock`, `wdir` at the root. The
stale stages are spread evenly over the pipeline, so each pays the lock of the group it is in.

Run: `python -m benchmarks.bench_dvc_lock [--stages 60 115 250] [--tasks 4 8] [--layouts 25:0 1:0 25:10 25:groups]
[--stale 6]` (a layout is code deps a stage : stages per dvc.yaml, 0 for one dvc.yaml holding every stage, `groups`
for loramerge's stage groups of each of `--tasks` task counts).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.common import machine_description


def dvc(folder: Path, *arguments: str) -> float:
    """Seconds one DVC command takes in `folder` (a fresh process, as `make run` starts it)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def stage_groups(tasks: int) -> list[int]:
    """The sizes of loramerge's stage groups for `tasks` tasks with every pair, every triple and the all-task merge:
    prepare, train, baseline_head, baseline_full, gram, evaluate, evaluate_baselines (one stage a task each), merge
    and evaluate of the pairs and of the triples, merge, evaluate and export of the all-task merge, similarity, report."""
    return [tasks] * 7 + [math.comb(tasks, 2)] * 2 + [math.comb(tasks, 3)] * 2 + [1] * 5


def part_sizes(stages: int, per_file: int) -> list[int]:
    """Stages a dvc.yaml: all in one (`per_file` 0), or files of at most `per_file`."""
    size = per_file or stages
    return [min(size, stages - start) for start in range(0, stages, size)]


def synthetic_pipeline(sizes: list[int], code_deps: int, stale: int) -> tuple[dict, dict[str, dict]]:
    """params.yaml and the dvc.yaml files by path: one file of each size in `sizes` (one file: at the root), each one
    foreach over its part of the items; `stale` items spread evenly over them are in params group `late`."""
    stages = sum(sizes)
    names = [f"s{i:03d}" for i in range(stages)]
    late = {names[round(k * stages / stale)] for k in range(stale)}
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    parts = {f"p{k:03d}": names[start : start + size] for k, (start, size) in enumerate(zip(starts, sizes))}
    params = {
        "parts": {p: {n: {"group": "late" if n in late else "early"} for n in part} for p, part in parts.items()},
        "groups": {"early": 0, "late": 0},
    }
    split = len(sizes) > 1
    files, up = {}, "../../" if split else ""  # a part's dvc.yaml sits two folders below the root
    for part in parts:
        stage = {
            "foreach": f"${{parts.{part}}}",
            "do": {
                "cmd": "echo ${key} > out/${key}.txt",
                "deps": [f"code/module{j:02d}.py" for j in range(code_deps)] + ["data/${key}.txt"],
                "params": ["groups.${item.group}"],
                "outs": ["out/${key}.txt"],
            },
        }
        if split:
            stage["do"]["wdir"] = "../.."
        path = f"pipelines/part{part[1:]}/dvc.yaml" if split else "dvc.yaml"
        files[path] = {"vars": [f"{up}params.yaml"], "stages": {"step": stage}}
    return params, files


def build(folder: Path, sizes: list[int], code_deps: int, stale: int) -> None:
    """The project with every stage already recorded in its dvc.lock, the way a finished run leaves it."""
    params, files = synthetic_pipeline(sizes, code_deps, stale)
    for sub in ("code", "data", "out"):
        (folder / sub).mkdir(parents=True)
    for j in range(code_deps):
        (folder / "code" / f"module{j:02d}.py").write_text(f"# module {j}\n" * 100)
    for part in params["parts"].values():
        for name in part:
            (folder / "data" / f"{name}.txt").write_text(name)
            (folder / "out" / f"{name}.txt").write_text(f"{name}\n")
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    for path, pipeline in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(yaml.safe_dump(pipeline, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    dvc(folder, "init", "-q")
    dvc(folder, "commit", "-f", "-q")


def dvc_description() -> str:
    """DVC's version and whether ruamel.yaml reads YAML in C: DVC parses every dvc.yaml, dvc.lock and params file with
    YAML(typ="safe"), pure Python without the C parser (several times slower)."""
    from importlib.metadata import version

    from ruamel.yaml.main import CParser

    return (
        f"DVC {version('dvc')}, ruamel.yaml {version('ruamel.yaml')} {'with' if CParser else 'without'} its C parser"
    )


def measure(sizes: list[int], code_deps: int, stale: int, layout: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, sizes, code_deps, stale)
        lines = max(len(lock.read_text().splitlines()) for lock in folder.rglob("dvc.lock"))
        noop = min(dvc(folder, "repro", "--all-pipelines", "-q") for _ in range(2))
        params = yaml.safe_load((folder / "params.yaml").read_text())
        params["groups"]["late"] = 1
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        repro = dvc(folder, "repro", "--all-pipelines", "-q")
    return {
        "stages": sum(sizes),
        "code deps a stage": code_deps,
        "dvc.yaml files": layout,
        "largest dvc.lock, lines": lines,
        "no-op dvc repro, s": noop,
        "DVC per stage, s": (repro - noop) / stale,
    }


def layout_sizes(layout: str, stages: list[int], tasks: list[int]) -> tuple[int, str, list[list[int]]]:
    """A layout `deps:files` as (code deps a stage, its description, the file sizes at each pipeline size)."""
    deps, files = layout.split(":")
    if files == "groups":
        return int(deps), "one a stage group", [stage_groups(t) for t in tasks]
    per_file = int(files)
    where = f"at most {per_file} stages each" if per_file else "one"
    return int(deps), where, [part_sizes(n, per_file) for n in stages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[60, 115, 250])
    parser.add_argument("--tasks", type=int, nargs="+", default=[4, 8], help="task counts of the `groups` layout")
    parser.add_argument("--layouts", nargs="+", default=["25:0", "1:0", "25:10", "25:groups"])
    parser.add_argument("--stale", type=int, default=6)
    args = parser.parse_args()
    rows, growth = [], []
    for layout in args.layouts:
        deps, where, sizes = layout_sizes(layout, args.stages, args.tasks)
        measured = [measure(s, deps, args.stale, where) for s in sizes]
        rows += measured
        first, last = measured[0], measured[-1]
        growth.append(
            f"- {deps} code deps a stage, dvc.yaml files: {where}: DVC's cost per stage at {last['stages']} stages is "
            f"{last['DVC per stage, s'] / first['DVC per stage, s']:.1f}× its cost at {first['stages']}."
        )
    print("## DVC's own cost per stage as the pipeline grows\n")
    print(f"{machine_description()}; {dvc_description()}\n")
    print(
        f"Synthetic pipelines of `echo` stages; {args.stale} of them, spread over the pipeline, rerun after a params "
        "change; per stage = (that `dvc repro` − a no-op `dvc repro`) / stages rerun.\n"
    )
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=(".0f", ".0f", "", ".0f", ".2f", ".2f")))
    print()
    print("\n".join(growth))


if __name__ == "__main__":
    main()
