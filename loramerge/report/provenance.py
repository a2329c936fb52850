"""How the run was made, for the report's Provenance section: data sizes, the model, the machine, stage runtimes.

Read from what prepare and train recorded and from this repro's MLflow runs, never recomputed, so the report
describes the run that produced its numbers.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from loramerge import paths
from loramerge.config import Params
from loramerge.cpu import bf16_units, cpu_model
from loramerge.records import MergeManifest, PreparedStats, SingleMetrics, TrainMetrics
from loramerge.tracking import git_commit, repro_id, repro_runs


def data_sizes(params: Params) -> pd.DataFrame:
    """Per task, from prepare's stats.json: where the data came from and how many rows each split kept."""
    rows = []
    for task in params.tasks:
        stats = PreparedStats.read(paths.prepared_stats(task))
        rows.append(
            {
                "task": task,
                "source": stats.source,
                **{f"{s}_rows": stats.rows[s] for s in paths.SPLITS},
                "labels": len(stats.class_counts["train"]),
                "empty_texts_dropped": sum(stats.empty_texts_dropped.values()),
                "texts_shared_across_splits": sum(stats.duplicates_across_splits.values()),
            }
        )
    return pd.DataFrame(rows)


def model_table(params: Params) -> pd.DataFrame:
    """The backbone and each task's LoRA adapter size, as training recorded it."""
    rows = []
    for task in params.tasks:
        train = TrainMetrics.read(paths.train_metrics(task, "lora"))
        rows.append(
            {
                "task": task,
                "backbone": params.backbone.name,
                "total_params": train.total_params,
                "lora_trainable_params": train.trainable_params,
                "lora_rank": params.lora.rank,
                "lora_alpha": params.lora.alpha,
                "lora_targets": params.lora.targets,
            }
        )
    return pd.DataFrame(rows)


def machine_table() -> pd.DataFrame:
    """The platform, CPUs and library versions of the machine that built the report."""
    return pd.DataFrame(
        [
            {
                "cpu": cpu_model(),
                "bf16_units": ", ".join(bf16_units()) or "none",
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "torch": version("torch"),
            }
        ]
    )


def stage_runtimes(params: Params) -> pd.DataFrame:
    """Wall time of every stage run of this `dvc repro` (the MLflow runs sharing its repro_id).

    Empty when the tracking store cannot be read: runtimes are nice to have, never a reason to fail.
    """
    runs = repro_runs(params.tracking)
    rows = [
        {
            "stage": r.data.tags.get("dvc_stage", r.info.run_name),
            "status": r.info.status,
            "start_time": r.info.start_time,
            "runtime_s": (r.info.end_time - r.info.start_time) / 1000,
        }
        for r in runs
        if r.info.end_time
    ]
    table = pd.DataFrame(rows, columns=["stage", "status", "start_time", "runtime_s"])
    return table.sort_values("start_time").drop_duplicates("stage", keep="last").drop(columns="start_time")


def provenance_line(params: Params) -> str:
    """One sentence for the top of the report: where and on what every number below was measured."""
    sizes = data_sizes(params)
    rows = "; ".join(
        f"{r.task} {r.train_rows}/{r.validation_rows}/{r.test_rows}" for r in sizes.itertuples(index=False)
    )
    return (
        f"Measured on {cpu_model()} ({os.cpu_count()} cores; native bf16 units: {', '.join(bf16_units()) or 'none'}), "
        f"torch {version('torch')}. Precision (as the stages ran): {ran_in(params)}. Backbone {params.backbone.name}, "
        f"LoRA rank {params.lora.rank}, alpha {params.lora.alpha} on {params.lora.targets}. "
        f"Data (train/validation/test rows): {rows}. "
        f"{seeds_sentence(params)} Git commit {git_commit(Path('.'))[:12]}."
    )


def ran_in(params: Params) -> str:
    """The number format training, the merge search and test evaluation ran in, as their records say (the stages
    resolve `auto` on the machine they run on, which need not be this one)."""
    first = next(iter(params.tasks))  # its first seed's replica has its name
    formats = [("training", TrainMetrics.read(paths.train_metrics(first, "lora")).precision.name)]
    if params.combinations:
        combo = params.combinations[0]
        manifest = MergeManifest.read(paths.merge_manifest(combo, next(iter(params.merge.methods))))
        formats.append(("merge search", manifest.validation.precision.name))
    formats.append(("test evaluation", SingleMetrics.read(paths.single_metrics(first)).precision.name))
    return ", ".join(f"{stage} {name}" for stage, name in formats)


def seeds_sentence(params: Params) -> str:
    """How many training seeds the numbers rest on, and what the intervals therefore include."""
    bootstrap = f"{params.report.bootstrap_resamples} resamples, seed {params.report.bootstrap_seed}"
    if params.repeats == 1:
        return (
            f"One training seed ({params.train.seed}); intervals are 95% paired bootstraps over test examples "
            f"({bootstrap}), so they do not include seed-to-seed variance."
        )
    return (
        f"{params.repeats} training seeds ({params.train.seed} to {params.train.seed + params.repeats - 1}); the tables "
        f"are the first seed's, with 95% paired bootstraps over test examples ({bootstrap}); the Training seeds "
        "section gives mean ± sd over the seeds and intervals that include their spread."
    )


def run_identity() -> str:
    """Which code and which `dvc repro` made the report: the git commit and the repro_id tagging its MLflow runs."""
    return f"Git commit {git_commit(Path('.'))}, repro_id {repro_id(Path('.'))}"
