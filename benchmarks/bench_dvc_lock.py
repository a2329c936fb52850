"""What DVC itself costs per stage as a pipeline grows: a synthetic DAG of 60, 115 and ~250 stages.

After every stage, DVC parses and dumps the whole `dvc.lock` (ruamel's round trip), so its cost per stage grows
with the number of stages in that lock, and a study's total grows quadratically. This builds a throw-away git +
DVC project whose stages do nothing (`echo`), shaped like loramerge's: each depends on `--code-deps` code files (a
merge stage lists 25 today), one data file and a params key, and writes one output. It records every stage with one
`dvc commit` (no stage runs), then makes `--stale` of them stale through their params key and times `dvc repro`:
(that time − a no-op `dvc repro`) / stale is DVC's own cost per stage at that lock size; the no-op `dvc repro` is the
fixed cost of one `dvc repro --all-pipelines` (reading every dvc.yaml and dvc.lock, checking every stage).

Two ways to bound that cost are measured beside today's layout: fewer code deps a stage (`--code-deps 1`: one entry
standing for a stage module's code), and the stages spread over several `dvc.yaml` files of at most
`--stages-per-file` stages each (in folders `pipelines/partNNN/`, each with its own `dvc.lock`; `wdir` at the root,
so `dvc repro` at the root runs them all).

Run: `python -m benchmarks.bench_dvc_lock [--stages 60 115 250] [--layouts 25:0 1:0 25:10] [--stale 6]` (a layout
is code deps a stage : stages per dvc.yaml, 0 for one dvc.yaml holding every stage).
"""

from __future__ import annotations

import argparse
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


def synthetic_pipeline(stages: int, code_deps: int, stale: int, per_file: int) -> tuple[dict, dict[str, dict]]:
    """params.yaml and the dvc.yaml files by path: `stages` stages, `per_file` to a file (0: all in one), each file
    one foreach over its part of the items; the first `stale` items are in params group `late`."""
    names = [f"s{i:03d}" for i in range(stages)]
    size = per_file or stages
    parts = {f"p{k:03d}": names[k * size : (k + 1) * size] for k in range(-(-stages // size))}
    params = {
        "parts": {
            p: {n: {"group": "late" if n < f"s{stale:03d}" else "early"} for n in part} for p, part in parts.items()
        },
        "groups": {"early": 0, "late": 0},
    }
    files, up = {}, "../../" if per_file else ""  # a part's dvc.yaml sits two folders below the root
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
        if per_file:
            stage["do"]["wdir"] = "../.."
        path = f"pipelines/part{part[1:]}/dvc.yaml" if per_file else "dvc.yaml"
        files[path] = {"vars": [f"{up}params.yaml"], "stages": {"step": stage}}
    return params, files


def build(folder: Path, stages: int, code_deps: int, stale: int, per_file: int) -> None:
    """The project with every stage already recorded in its dvc.lock, the way a finished run leaves it."""
    params, files = synthetic_pipeline(stages, code_deps, stale, per_file)
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


def measure(stages: int, code_deps: int, per_file: int, stale: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, stages, code_deps, stale, per_file)
        lines = max(len(lock.read_text().splitlines()) for lock in folder.rglob("dvc.lock"))
        noop = min(dvc(folder, "repro", "--all-pipelines", "-q") for _ in range(2))
        params = yaml.safe_load((folder / "params.yaml").read_text())
        params["groups"]["late"] = 1
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        repro = dvc(folder, "repro", "--all-pipelines", "-q")
    return {
        "stages": stages,
        "code deps a stage": code_deps,
        "stages a dvc.yaml": per_file or stages,
        "largest dvc.lock, lines": lines,
        "no-op dvc repro, s": noop,
        "DVC per stage, s": (repro - noop) / stale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[60, 115, 250])
    parser.add_argument("--layouts", nargs="+", default=["25:0", "1:0", "25:10"])
    parser.add_argument("--stale", type=int, default=6)
    args = parser.parse_args()
    rows, growth = [], []
    for deps, per_file in (tuple(int(x) for x in layout.split(":")) for layout in args.layouts):
        measured = [measure(n, deps, per_file, args.stale) for n in args.stages]
        rows += measured
        first, last = measured[0], measured[-1]
        where = f"at most {per_file} stages a dvc.yaml" if per_file else "one dvc.yaml"
        growth.append(
            f"- {deps} code deps a stage, {where}: DVC's cost per stage at {last['stages']} stages is "
            f"{last['DVC per stage, s'] / first['DVC per stage, s']:.1f}× its cost at {first['stages']}."
        )
    print("## DVC's own cost per stage as the pipeline grows\n")
    print(f"{machine_description()}; {dvc_description()}\n")
    print(
        f"Synthetic pipelines of `echo` stages; {args.stale} of them rerun after a params change; per stage = "
        "(that `dvc repro` − a no-op `dvc repro`) / stages rerun.\n"
    )
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=(".0f", ".0f", ".0f", ".0f", ".2f", ".2f")))
    print()
    print("\n".join(growth))


if __name__ == "__main__":
    main()
