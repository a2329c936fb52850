"""The emotion study's sweep as DVC experiments: queue a grid, run it, collect a table.

Each grid point is one `dvc exp run --queue -S key=value … <target stage>`: LoRA points
stop at `evaluate@<task>`, full fine-tuning points at `evaluate_baselines@<task>`. Queued
experiments run in a temporary copy of the repository (.dvc/tmp/exps), so the data folder
and the MLflow store are passed as absolute paths.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from loramerge import paths
from loramerge.atomic import write_text
from loramerge.config import ConfigError, Params
from loramerge.data import local_data_dir
from loramerge.settings import SweepConfig
from loramerge.tracking import tracking_uri

STUDY_TEST = pd.DataFrame(
    [
        {
            "family": "full fine-tuning",
            "setting": "lr 2e-5..5e-5",
            "accuracy": 0.9300,
            "f1": 0.9290,
            "trainable_params": "108M (99%)",
        },
        {
            "family": "LoRA attention",
            "setting": "r 8, lr 3e-4",
            "accuracy": 0.9225,
            "f1": 0.9227,
            "trainable_params": "304K",
        },
        {
            "family": "LoRA attention+linear",
            "setting": "r 8, lr 3e-4",
            "accuracy": 0.9270,
            "f1": 0.9268,
            "trainable_params": "1.35M",
        },
    ]
)
"""The emotion study's published test numbers (BERT-base, T4 GPU), quoted for comparison only."""


def grid_points(sweep: SweepConfig, tasks: Iterable[str]) -> list[tuple[str, dict[str, object]]]:
    """(target stage, overrides) for every point of the configured grid, on one of the configured `tasks`."""
    task = sweep.task
    if task is None:
        raise ConfigError("sweep.task is not set: name the task whose grid to run in params.yaml (sweep: {task: …})")
    if task not in tasks:
        raise ConfigError(f"sweep.task {task!r} is not a configured task; choose one of {sorted(tasks)}")
    points = [
        (f"evaluate@{task}", {"sweep.family": "lora", "lora.rank": r, "train.learning_rate": lr, "lora.targets": t})
        for r, lr, t in itertools.product(sweep.lora_ranks, sweep.lora_learning_rates, sweep.lora_targets)
    ]
    points += [
        (
            f"evaluate_baselines@{task}",
            {"sweep.family": "full", "baselines.full.learning_rate": lr, "baselines.full.weight_decay": wd},
        )
        for lr, wd in itertools.product(sweep.full_learning_rates, sweep.full_weight_decays)
    ]
    return points


def queue_commands(params: Params, root: Path) -> list[list[str]]:
    """The `dvc exp run --queue` command lines, data and tracking pinned to absolute paths."""
    pinned = {"tracking.uri": tracking_uri(params.tracking, root)}
    data_dir = local_data_dir(params)
    if data_dir is not None:
        pinned["data.local_dir"] = str(data_dir.resolve())
    commands = []
    for target, overrides in grid_points(params.sweep, params.tasks):
        settings = [
            f"++{k}={v}" for k, v in {**pinned, **overrides}.items()
        ]  # Hydra's ++: set a key even where params.yaml omits it
        commands.append(
            [
                "dvc",
                "exp",
                "run",
                "--queue",
                *itertools.chain.from_iterable(("-S", s) for s in settings),
                paths.dvc_target(target),
            ]
        )
    return commands


def queue(params: Params, root: Path) -> int:
    commands = queue_commands(params, root)
    for command in commands:
        subprocess.run(command, cwd=root, check=True)
    return len(commands)


def collect(params: Params, root: Path) -> pd.DataFrame:
    """One row per finished sweep experiment: its setting, validation and test scores, and cost."""
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, check=True, capture_output=True, text=True)
    reader = lambda rev: lambda path: committed_json(root, rev, path)  # noqa: E731
    return experiment_table(json.loads(shown.stdout), reader, params.sweep.task)


def experiment_table(
    shown: list[dict], reader: Callable[[str], Callable[[str], dict | None]], task: str
) -> pd.DataFrame:
    """The rows of `dvc exp show --json` output that are finished sweep experiments; `reader(rev)` reads a file as
    that experiment's commit holds it."""
    rows = []
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs", []):
                name = revision.get("name") or revision["rev"]
                row = experiment_row(name, revision.get("data") or {}, reader(revision["rev"]), task)
                if row is not None:
                    rows.append(row)
    return pd.DataFrame(rows)


TERMINAL = [
    "experiment",
    "family",
    "rank",
    "learning_rate",
    "weight_decay",
    "val_accuracy",
    "test_accuracy",
    "runtime_s",
]
"""What `loramerge sweep show` prints of each experiment: the settings the grid varies and the scores that decide
between them, where `dvc exp show` prints every one of params.yaml's keys (hundreds of columns)."""
WIDTH = 120


def terminal_table(table: pd.DataFrame) -> str:
    """The sweep's experiments as a plain table that fits a terminal of WIDTH columns, best validation first."""
    if table.empty:
        return "no finished sweep experiments yet (`dvc queue status` says what is queued or running)"
    ranked = table.sort_values("val_accuracy", ascending=False)[TERMINAL]
    ranked = ranked.assign(
        experiment=ranked["experiment"].str.slice(0, 24), runtime_s=ranked["runtime_s"].round(0).astype(int)
    )
    return as_text(ranked).to_string(index=False)


def committed_json(root: Path, rev: str, path: str) -> dict | None:
    """A JSON file as an experiment's commit holds it (its metrics files are git-tracked outputs), or None."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def experiment_row(name: str, data: dict, metrics: Callable[[str], dict | None], task: str) -> dict | None:
    """A sweep experiment's row, or None for experiments the sweep did not queue (or that did not finish)."""
    settings = data.get("params", {}).get("params.yaml", {}).get("data", {})
    family = settings.get("sweep", {}).get("family")
    if family == "lora":
        train, test = metrics(str(paths.train_metrics(task, "lora"))), metrics(str(paths.single_metrics(task)))
        setting = {
            "family": f"LoRA {settings['lora']['targets']}",
            "rank": settings["lora"]["rank"],
            "learning_rate": settings["train"]["learning_rate"],
            "weight_decay": settings["train"]["weight_decay"],
        }
    elif family == "full":
        train, test = (
            metrics(str(paths.train_metrics(task, "full"))),
            (metrics(str(paths.baseline_metrics(task))) or {}).get("full"),
        )
        full = settings["baselines"]["full"]
        setting = {
            "family": "full fine-tuning",
            "rank": None,
            "learning_rate": full["learning_rate"],
            "weight_decay": full.get("weight_decay", settings["train"]["weight_decay"]),
        }
    else:
        return None
    if not train or not test:
        return None
    return {
        "experiment": name,
        **setting,
        "backbone": settings["backbone"]["name"],
        "hardware": "GPU" if train.get("peak_cuda_mb") else "CPU",
        "val_accuracy": train["val_accuracy"],
        "val_weighted_f1": train["val_weighted_f1"],
        "train_loss": train.get("train_loss"),
        "test_accuracy": test["accuracy"],
        "test_weighted_f1": test["weighted_f1"],
        "trainable_params": train["trainable_params"],
        "trainable_percent": train["trainable_percent"],
        "runtime_s": train["runtime_s"],
        "steps_per_s": train["steps_per_s"],
        "best_step": train["best_step"],
        "peak_rss_mb": train["peak_rss_mb"],
    }


def sweep_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The study's table shapes: validation per setting, and test for the best setting of each family
    (chosen on validation accuracy), with the study's published test numbers beside."""
    best = table.sort_values("val_accuracy", ascending=False).groupby("family", as_index=False).head(1)
    return {
        "validation": as_text(table.drop(columns=["test_accuracy", "test_weighted_f1"])),
        "test": as_text(
            best[
                [
                    "family",
                    "rank",
                    "learning_rate",
                    "weight_decay",
                    "test_accuracy",
                    "test_weighted_f1",
                    "trainable_params",
                    "trainable_percent",
                    "backbone",
                    "hardware",
                ]
            ]
        ),
        "study": STUDY_TEST.astype(str),
    }


def as_text(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as written, so no table's float format rounds a learning rate of 5e-05 to 0.000."""

    def cell(column: str, value) -> str:
        if pd.isna(value):
            return "–"
        if column == "rank":
            return str(int(value))
        if column in ("learning_rate", "weight_decay"):
            return f"{value:g}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return pd.DataFrame({column: [cell(column, v) for v in table[column]] for column in table.columns})


SWEEP_CSV = Path("metrics/sweep/sweep.csv")
"""Where `collect` puts the table: under metrics/, a dependency of the report stage, so the report picks it up."""


def finished_sweep() -> pd.DataFrame | None:
    """The table `loramerge sweep collect` left in metrics/sweep/sweep.csv, or None before the sweep ran."""
    return pd.read_csv(SWEEP_CSV) if SWEEP_CSV.exists() else None


def write_sweep_report(table: pd.DataFrame, folder: Path, params: Params) -> Path:
    """metrics/sweep/sweep.csv for the report stage, and reports/sweep.md to read at once."""
    if table.empty:
        raise ValueError(
            "no finished sweep experiments found: run `loramerge sweep queue`, then `dvc queue start -j 1`, and wait for `dvc queue status`"
        )
    write_text(SWEEP_CSV, table.to_csv(index=False))
    tables = sweep_tables(table)
    text = "\n\n".join(
        [
            f"# The emotion study's sweep, reproduced on `{params.backbone.name}` (task `{params.sweep.task}`)",
            "Chosen on validation accuracy; test numbers only for the best setting of each family.",
            "## Validation, every setting\n\n" + tables["validation"].to_markdown(index=False, disable_numparse=True),
            "## Test, best setting of each family (ours)\n\n"
            + tables["test"].to_markdown(index=False, disable_numparse=True),
            "## Test, the study's published numbers (BERT-base, T4 GPU, full emotion data: a different backbone, hardware and data size)\n\n"
            + tables["study"].to_markdown(index=False, disable_numparse=True),
        ]
    )
    path = folder / "sweep.md"
    write_text(path, text + "\n")
    return path
