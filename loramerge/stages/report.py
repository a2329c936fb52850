"""Stage `report`: which merges keep their accuracy, as tables, heat-maps and a markdown summary.

Reads only the metrics JSON files the evaluate stages wrote; writes reports/summary.md,
reports/tables/*.csv (also read by `dvc plots`), and reports/figures/heatmap_<method>.png.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from loramerge import paths
from loramerge.atomic import read_json, write_text
from loramerge.config import Params, split_combination
from loramerge.metrics import gain_retention
from loramerge.tracking import stage_run

TABLES = paths.REPORTS / "tables"
FIGURES = paths.REPORTS / "figures"


def single_table(params: Params) -> pd.DataFrame:
    """Per task: the majority class, head-only, full fine-tuning and the LoRA adapter on test."""
    rows = []
    for task in params.tasks:
        metrics = read_json(paths.single_metrics(task))
        baselines = read_json(paths.baseline_metrics(task))
        train = read_json(paths.adapter_dir(task) / "train_metrics.json")
        rows.append({
            "task": task,
            "test_examples": metrics["test_examples"],
            "majority_accuracy": metrics["majority_baseline_accuracy"],
            "head_only_accuracy": baselines["head_only"]["accuracy"],
            "full_ft_accuracy": baselines["full"]["accuracy"],
            "lora_accuracy": metrics["accuracy"],
            "lora_macro_f1": metrics["macro_f1"],
            "lora_trainable_percent": train["trainable_percent"],
            "lora_train_s": train["runtime_s"],
            "full_ft_train_s": baselines["full"]["train"]["runtime_s"],
        })
    return pd.DataFrame(rows)


def merged_table(params: Params, single: pd.DataFrame) -> pd.DataFrame:
    """One row per (combination, method, member task), with normalized accuracy and gain retention."""
    head_only = single.set_index("task")["head_only_accuracy"].to_dict()
    rows = []
    for combo in params.combinations:
        results = read_json(paths.merged_metrics(combo))
        kind = "pair" if len(split_combination(combo)) == 2 else "triple"
        for method, result in results["methods"].items():
            for task, metrics in result["tasks"].items():
                rows.append({"combination": combo, "kind": kind, "method": method, "task": task,
                             "accuracy": metrics["accuracy"], "single_accuracy": metrics["single_accuracy"],
                             "normalized_accuracy": metrics["normalized_accuracy"], "macro_f1": metrics["macro_f1"],
                             "head_only_accuracy": head_only[task],
                             "beats_head_only": metrics["accuracy"] > head_only[task],
                             "gain_retention": gain_retention(metrics["accuracy"], metrics["single_accuracy"], head_only[task])})
    return pd.DataFrame(rows)


def method_summary(merged: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean normalized accuracy and gain retention over pairs and over triples.

    Each combination weighs once (its members' mean first).
    """
    measures = ["normalized_accuracy", "gain_retention"]
    per_combo = merged.groupby(["method", "kind", "combination"])[measures].mean().reset_index()
    table = per_combo.groupby(["method", "kind"])[measures].mean().unstack("kind")
    table.columns = [f"{measure}_{kind}" for measure, kind in table.columns]
    order = [f"{m}_{k}" for m in measures for k in ("pair", "triple") if f"{m}_{k}" in table.columns]
    return table[order].reset_index().sort_values(order[0], ascending=False)


def pair_heatmap(merged: pd.DataFrame, method: str, tasks: list[str], path: Path) -> None:
    """Mean normalized accuracy of each pair, as a symmetric task × task grid."""
    grid = pd.DataFrame(np.nan, index=tasks, columns=tasks)
    pairs = merged[(merged["kind"] == "pair") & (merged["method"] == method)]
    for combo, score in pairs.groupby("combination")["normalized_accuracy"].mean().items():
        a, b = split_combination(combo)
        grid.loc[a, b] = grid.loc[b, a] = score
    figure, axes = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.0 * len(tasks) + 1.5))
    image = axes.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0.0, vmax=1.05)
    axes.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    axes.set_yticks(range(len(tasks)), tasks)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            if not np.isnan(grid.iat[i, j]):
                axes.text(j, i, f"{grid.iat[i, j]:.2f}", ha="center", va="center", color="white")
    axes.set_xlabel("task")
    axes.set_ylabel("task")
    axes.set_title(f"{method}: pair mean normalized accuracy (merged / single)")
    figure.colorbar(image, ax=axes, label="normalized accuracy (ratio)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def to_markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def write_report(params: Params) -> Path:
    single = single_table(params)
    merged = merged_table(params, single)
    summary = method_summary(merged)
    for name, frame in {"single": single, "merged": merged, "methods": summary}.items():
        TABLES.mkdir(parents=True, exist_ok=True)
        frame.to_csv(TABLES / f"{name}.csv", index=False)
    per_combo = merged.groupby(["combination", "kind", "method"])["normalized_accuracy"].mean().reset_index()
    per_combo.to_csv(TABLES / "combinations.csv", index=False)
    tasks = list(params.tasks)
    for method in params.merge.methods:
        pair_heatmap(merged, method, tasks, FIGURES / f"heatmap_{method}.png")
    text = "\n\n".join([
        "# loramerge summary",
        f"Backbone `{params.backbone.name}`, LoRA r={params.lora.rank} alpha={params.lora.alpha} on `{params.lora.targets}`; "
        f"{len(tasks)} tasks, {len(merged['combination'].unique())} combinations. Normalized accuracy = merged test accuracy / single-adapter test accuracy.",
        "## Mean normalized accuracy and gain retention per method (test)\n\n" + to_markdown(summary),
        "## Single-task models on test: majority class, head-only, full fine-tuning, LoRA\n\n" + to_markdown(single),
        "## Merged vs head-only, per task and combination\n\nGain retention = (merged − head-only) / (LoRA − head-only): "
        "the share of what the adapter added over a trained head that survives the merge.\n\n"
        + to_markdown(merged[["combination", "method", "task", "accuracy", "single_accuracy", "head_only_accuracy", "normalized_accuracy", "gain_retention", "beats_head_only"]]),
        "## Every combination\n\n" + to_markdown(per_combo.pivot(index=["combination", "kind"], columns="method", values="normalized_accuracy").reset_index()),
        "## Pairwise heat-maps\n\n" + "\n".join(f"![{m}](figures/heatmap_{m}.png)" for m in params.merge.methods),
    ])
    path = paths.REPORTS / "summary.md"
    write_text(path, text + "\n")
    with stage_run(params.tracking, "report", {"tasks": tasks, "methods": list(params.merge.methods)}) as run:
        for _, row in summary.iterrows():
            run.log_metrics({f"summary/{column}/{row['method']}": row[column] for column in summary.columns if column != "method" and pd.notna(row[column])})
        run.log_artifacts(paths.REPORTS, "reports")
    return path
