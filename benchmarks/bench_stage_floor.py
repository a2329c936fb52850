"""What a stage costs before it computes anything, and that cost summed over the default run's stages.

Every DVC stage is a new process: the interpreter starts, `loramerge` and its stage module import torch,
transformers, scikit-learn (and Lightning or MLflow's modules where the stage uses them), the stage opens
the MLflow store, and after the stage DVC rewrites its group's dvc.lock. Each is timed here on its own, best of
`--repeats`, the way the stage pays it:
- imports: what a stage process imports before its first line of work, the way `loramerge <module>` dispatches it
  (the command line, params.yaml's validation with the merge-method check where the stage is not `MODEL_FREE`, the
  stage module, MLflow's client), in a fresh process; set beside the import of the libraries its work calls
  (`LIBRARIES`, each with why); what a stage imports beyond them is timed inside a process that has loaded them
  (`beyond_seconds`: a difference of two processes' times would carry both spreads); every process here ends the
  way `loramerge` ends its own (exit handlers, then `os._exit`), and one more column is the teardown of those modules
  that Python's usual exit would add (what `loramerge` skipped before it ended that way);
- MLflow: a fresh process importing MLflow and making one run in the project's store (opened in the process), and the
  same run sent to a server of that store (what `make run` starts: `loramerge mlflow-server --during dvc repro`);
- DVC: `dvc.utils.serialize.modify_yaml` over a copy of each dvc.lock (the root's and each stage group's in
  `pipelines/`), the function DVC's lock-file update runs after every stage (parse, then dump the whole file); a stage
  pays its own group's.
The floor is their sum per stage times the stages of the locks, set beside the last run's wall clock
(`bench_run_time`): what no speed-up inside the stages can remove while the run has this many stages.

Run after `make run`: `python -m benchmarks.bench_stage_floor [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml
from dvc.utils.serialize import modify_yaml

from benchmarks.bench_run_time import last_run, stage_records
from benchmarks.common import best_time, machine_description
from loramerge import lockfile
from loramerge.cli import STAGE_TIMES
from loramerge.server import free_port, run_server_environment, running_server, server_command

MLFLOW_IMPORT = "import mlflow; from mlflow.tracking import MlflowClient"
DATA = ("pandas", "pyarrow.parquet")  # prepared splits are parquet files read through pandas
MODEL = ("torch", "transformers", "peft")  # the encoder, and adapters read and applied through PEFT
LIBRARIES: dict[str, tuple[str, ...]] = {
    "prepare": (*DATA, "sklearn.model_selection"),  # stratified subsampling
    "train": (*DATA, *MODEL, "lightning", "sklearn.metrics"),  # Lightning's trainer; validation scores
    "gram": (*DATA, *MODEL),
    "merge": (*DATA, *MODEL, "sklearn.metrics"),  # the search scores each candidate on validation
    "evaluate": (*DATA, *MODEL, "sklearn.metrics"),
    "similarity": (*DATA, *MODEL, "sklearn.feature_extraction.text", "scipy.linalg"),  # vocabularies, angles
    "export": (*DATA, *MODEL, "sklearn.metrics"),  # the exported model's test scores
    "report": (*DATA, "scipy.stats", "matplotlib.pyplot"),  # bootstrap tests, figures
}
"""Per stage module, the libraries its work calls (besides MLflow, which every stage's run uses)."""
MLFLOW_QUERY = (
    "; client = MlflowClient(tracking_uri='{uri}')"
    "; found = client.get_experiment_by_name('bench_stage_floor')"
    "; experiment = found.experiment_id if found else client.create_experiment('bench_stage_floor')"
    "; run = client.create_run(experiment).info.run_id"
    "; client.log_param(run, 'stage', 'bench'); client.log_metric(run, 'seconds', 1.0); client.set_terminated(run)"
)
"""What a stage's run does with the store, at the least: find the experiment, open a run, log, close it."""


ENDING = "; import atexit, os; atexit._run_exitfuncs(); os._exit(0)"
"""How `loramerge` ends a command's process (`cli.run`): exit handlers, then no teardown of the modules."""


def dispatch_code(module: str) -> str:
    """What `loramerge <module> …` imports before the stage's `run`: the CLI, the validated params (the method check
    unless the stage is model-free), the stage module, and MLflow's client for the stage's run."""
    return (
        "import argparse, importlib, loramerge.cli as cli"
        f"; command = next(c for c in cli.stage_commands() if c.name == {module!r})"
        "; cli.checked_params(argparse.Namespace(params='params.yaml'), methods=not command.model_free)"
        f"; importlib.import_module('loramerge.stages.{module}'); {MLFLOW_IMPORT}"
    )


def process_seconds(code: str, repeats: int, ending: str = ENDING) -> float:
    """A fresh interpreter running `code`, start to exit, ended the way `loramerge` ends (or as `ending` says)."""
    command = [sys.executable, "-c", code + ending]
    return best_time(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL), repeats)  # MLflow's URLs


def beyond_seconds(module: str, repeats: int) -> float:
    """What the dispatch of `module` imports beyond its work's libraries (`LIBRARIES`, and MLflow), timed inside one
    process once they are loaded: the difference of two processes' times would carry both their spreads."""
    libraries = ", ".join((*LIBRARIES[module], "mlflow"))
    code = f"import {libraries}, time; start = time.perf_counter(); {dispatch_code(module)}; print(time.perf_counter() - start)"

    def timed() -> float:
        return float(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
        )

    return min(timed() for _ in range(repeats))


def mlflow_seconds(repeats: int) -> dict[str, float]:
    """MLflow's share of a stage, beyond the bare interpreter: its import, plus a stage's run in the project's store
    opened in the process (SQLAlchemy and the schema check) or sent to a server of that store over HTTP (runs of
    the experiment `bench_stage_floor`, never the pipeline's)."""
    interpreter = process_seconds("pass", repeats)
    query = MLFLOW_IMPORT + MLFLOW_QUERY
    costs = {"import": process_seconds(MLFLOW_IMPORT, repeats) - interpreter}
    costs["SQL store"] = process_seconds(query.format(uri="sqlite:///mlflow.db"), repeats) - interpreter
    port = free_port()
    command = server_command(Path("."), port, proxied_artifacts=False)
    with (
        tempfile.TemporaryDirectory() as folder,
        running_server(command, port, Path(folder) / "log", 120, Path("."), run_server_environment()) as uri,
    ):
        costs["server"] = process_seconds(query.format(uri=uri), repeats) - interpreter if uri else float("nan")
    return costs


def lock_rewrite_seconds(lock: Path, repeats: int) -> float:
    """DVC's own parse-and-dump of one dvc.lock, on a copy (the real lock is never touched)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / lockfile.LOCK
        shutil.copy(lock, copy)

        def rewrite() -> None:
            with modify_yaml(copy):
                pass

        return best_time(rewrite, repeats)


def locked_stages() -> dict[str, tuple[Path, str]]:
    """Each locked stage's lock (the root's or its group's) and the stage module it runs (`loramerge <module> …`), by
    stage name: every lock read once."""
    return {
        name: (lock, entry["cmd"].split()[1])
        for lock in lockfile.lock_files(Path("."))
        for name, entry in yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"].items()
    }


def stage_locks(locked: dict[str, tuple[Path, str]] | None = None) -> dict[str, Path]:
    """The lock that records each stage, by stage name."""
    return {name: lock for name, (lock, _) in (locked or locked_stages()).items()}


def stage_modules(locked: dict[str, tuple[Path, str]] | None = None) -> dict[str, str]:
    """The stage module each locked stage runs, by stage name."""
    return {name: module for name, (_, module) in (locked or locked_stages()).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    locked = locked_stages()
    module_of = stage_modules(locked)
    modules, stages = Counter(module_of.values()), len(module_of)
    imports = {m: process_seconds(dispatch_code(m), args.repeats) for m in modules}
    teardown = {m: process_seconds(dispatch_code(m), args.repeats, ending="") - imports[m] for m in modules}
    needed = {m: process_seconds(f"import {', '.join((*LIBRARIES[m], 'mlflow'))}", args.repeats) for m in modules}
    beyond = {m: beyond_seconds(m, args.repeats) for m in modules}
    costs = mlflow_seconds(args.repeats)
    mlflow = costs["server"] - costs["import"]  # make run serves the store; the import is in the stage's imports
    lock_of = stage_locks(locked)
    rewrite = {lock: lock_rewrite_seconds(lock, args.repeats) for lock in set(lock_of.values())}
    lock = {name: rewrite[path] for name, path in lock_of.items()}
    print("## What a stage costs before it computes anything\n")
    print(machine_description() + "\n")
    lines = max(len(path.read_text(encoding="utf-8").splitlines()) for path in rewrite)
    print(
        f"{stages} stages in {len(rewrite)} dvc.lock files (the largest {lines:,} lines); best of {args.repeats} each.\n"
    )
    print(
        "| stage module | stages | interpreter + imports, s | × stages, min | its work's libraries (+ mlflow) | "
        "their import, s | beyond them, s | Python's teardown `loramerge` skips, s |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for module, count in modules.items():
        print(
            f"| {module} | {count} | {imports[module]:.2f} | {imports[module] * count / 60:.2f} | "
            f"{', '.join(LIBRARIES[module])} | {needed[module]:.2f} | {beyond[module]:.2f} | "
            f"{teardown[module]:.2f} |"
        )
    total_imports = sum(imports[m] * n for m, n in modules.items()) / 60
    per_stage = {name: imports[module] + mlflow + lock[name] for name, module in module_of.items()}
    floor = sum(per_stage.values()) / 60
    print(
        f"\nMLflow: {costs['SQL store']:.2f} s a stage opening the SQL store itself (plain `dvc repro`), "
        f"{costs['server']:.2f} s through the run's own server (`make run`), of which {costs['import']:.2f} s is "
        f"importing it (counted with the imports above); the run's calls through the server, {mlflow:.2f} s a stage, "
        f"{mlflow * stages / 60:.2f} min a run."
    )
    mean = sum(lock.values()) / stages
    print(
        f"DVC's rewrite of the stage's dvc.lock: {mean:.2f} s a stage on average (at most {max(lock.values()):.2f} s), "
        f"{mean * stages / 60:.2f} min a run."
    )
    print(f"Floor: {floor:.1f} min for {stages} stages (interpreter + imports {total_imports:.1f} min).")
    run = last_run(stage_records(STAGE_TIMES), 120.0) if STAGE_TIMES.exists() else None
    if run is not None and not run.empty:
        wall = (run["end"].max() - run["start"].min()).total_seconds() / 60
        ran = sum(per_stage.get(name, 0.0) for name in run["stage"]) / 60
        print(
            f"The last run ({len(run)} stages): {wall:.1f} min wall clock, of which its stages' floor is {ran:.1f} min "
            f"({ran / wall:.0%}); the rest, {wall - ran:.1f} min, is what the stages compute, log and save."
        )


if __name__ == "__main__":
    main()
