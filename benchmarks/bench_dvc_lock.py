"""What DVC itself costs per stage as a pipeline grows: a synthetic DAG of 60, 115 and ~250 stages.

After every stage, DVC parses and dumps the whole `dvc.lock` (ruamel's round trip), so its cost per stage grows
with the number of stages in that lock, and a study's total grows quadratically. This builds a throw-away git +
DVC project whose stages do nothing (`echo`), shaped like loramerge's: each depends on `--code-deps` code files (a
merge stage lists 25 today), one data file and a params key, and writes one output. It records every stage with one
`dvc commit` (no stage runs), then makes `--stale` of them stale through their params key and times `dvc repro`:
(that time − a no-op `dvc repro`) / stale is DVC's own cost per stage at that lock size; the no-op `dvc repro` is the
fixed cost of one `dvc repro` (reading dvc.yaml and dvc.lock, checking every stage).

Run: `python -m benchmarks.bench_dvc_lock [--stages 60 115 250] [--code-deps 25 1] [--stale 6]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import machine_description


def dvc(folder: Path, *arguments: str) -> float:
    """Seconds one DVC command takes in `folder` (a fresh process, as `make run` starts it)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def synthetic_pipeline(stages: int, code_deps: int, stale: int) -> dict:
    """dvc.yaml and params.yaml: `stages` stages over one foreach, the first `stale` in params group `late`."""
    params = {
        "items": {f"s{i:03d}": {"group": "late" if i < stale else "early"} for i in range(stages)},
        "groups": {"early": 0, "late": 0},
    }
    stage = {
        "foreach": "${items}",
        "do": {
            "cmd": "echo ${key} > out/${key}.txt",
            "deps": [f"code/module{j:02d}.py" for j in range(code_deps)] + ["data/${key}.txt"],
            "params": ["groups.${item.group}"],
            "outs": ["out/${key}.txt"],
        },
    }
    return {"params": params, "dvc": {"vars": ["params.yaml"], "stages": {"step": stage}}}


def build(folder: Path, stages: int, code_deps: int, stale: int) -> None:
    """The project with every stage already recorded in dvc.lock, the way a finished run leaves it."""
    pipeline = synthetic_pipeline(stages, code_deps, stale)
    for sub in ("code", "data", "out"):
        (folder / sub).mkdir(parents=True)
    for j in range(code_deps):
        (folder / "code" / f"module{j:02d}.py").write_text(f"# module {j}\n" * 100)
    for name in pipeline["params"]["items"]:
        (folder / "data" / f"{name}.txt").write_text(name)
        (folder / "out" / f"{name}.txt").write_text(f"{name}\n")
    (folder / "params.yaml").write_text(yaml.safe_dump(pipeline["params"]))
    (folder / "dvc.yaml").write_text(yaml.safe_dump(pipeline["dvc"], sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    dvc(folder, "init", "-q")
    dvc(folder, "commit", "-f", "-q")


def measure(stages: int, code_deps: int, stale: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, stages, code_deps, stale)
        lines = len((folder / "dvc.lock").read_text().splitlines())
        noop = min(dvc(folder, "repro", "-q") for _ in range(2))
        params = yaml.safe_load((folder / "params.yaml").read_text())
        params["groups"]["late"] = 1
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        repro = dvc(folder, "repro", "-q")
    return {
        "stages": stages,
        "code deps a stage": code_deps,
        "dvc.lock lines": lines,
        "no-op dvc repro, s": noop,
        "DVC per stage, s": (repro - noop) / stale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[60, 115, 250])
    parser.add_argument("--code-deps", type=int, nargs="+", default=[25, 1])
    parser.add_argument("--stale", type=int, default=6)
    args = parser.parse_args()
    import pandas as pd

    rows = [measure(n, d, args.stale) for d in args.code_deps for n in args.stages]
    table = pd.DataFrame(rows)
    print("## DVC's own cost per stage as the pipeline grows\n")
    print(machine_description() + "\n")
    print(
        f"Synthetic pipelines of `echo` stages; {args.stale} of them rerun after a params change; per stage = "
        "(that `dvc repro` − a no-op `dvc repro`) / stages rerun.\n"
    )
    print(table.to_markdown(index=False, floatfmt=(".0f", ".0f", ".0f", ".2f", ".2f")))
    for deps, group in table.groupby("code deps a stage", sort=False):
        first, last = group.iloc[0], group.iloc[-1]
        print(
            f"\n- {deps} code deps a stage: DVC's cost per stage at {last['stages']:.0f} stages is "
            f"{last['DVC per stage, s'] / first['DVC per stage, s']:.1f}× its cost at {first['stages']:.0f}."
        )


if __name__ == "__main__":
    main()
