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
from loramerge.tracking import stage_run

TABLES = paths.REPORTS / "tables"
FIGURES = paths.REPORTS / "figures"


def single_table(params: Params) -> pd.DataFrame:
    rows = []
    for task in params.tasks:
        metrics = read_json(paths.single_metrics(task))
        train = read_json(paths.adapter_dir(task) / "train_metrics.json")
        rows.append({
            "task": task,
            "test_examples": metrics["test_examples"],
            "majority_baseline_accuracy": metrics["majority_baseline_accuracy"],
            "lora_accuracy": metrics["accuracy"],
            "lora_macro_f1": metrics["macro_f1"],
            "train_runtime_s": train["runtime_s"],
            "trainable_percent": train["trainable_percent"],
        })
    return pd.DataFrame(rows)


def merged_table(params: Params) -> pd.DataFrame:
    """One row per (combination, method, member task)."""
    rows = []
    for combo in params.combinations:
        results = read_json(paths.merged_metrics(combo))
        kind = "pair" if len(split_combination(combo)) == 2 else "triple"
        for method, result in results["methods"].items():
            for task, metrics in result["tasks"].items():
                rows.append({"combination": combo, "kind": kind, "method": method, "task": task,
                             "accuracy": metrics["accuracy"], "single_accuracy": metrics["single_accuracy"],
                             "normalized_accuracy": metrics["normalized_accuracy"], "macro_f1": metrics["macro_f1"]})
    return pd.DataFrame(rows)


def method_summary(merged: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean normalized accuracy over pairs and over triples (each combination weighs once)."""
    per_combo = merged.groupby(["method", "kind", "combination"])["normalized_accuracy"].mean().reset_index()
    table = per_combo.groupby(["method", "kind"])["normalized_accuracy"].mean().unstack("kind")
    return table.reindex(columns=[c for c in ("pair", "triple") if c in table.columns]).reset_index()


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
    merged = merged_table(params)
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
        "## Mean normalized accuracy per method\n\n" + to_markdown(summary),
        "## Single-task adapters vs the majority-class baseline (test)\n\n" + to_markdown(single),
        "## Every combination\n\n" + to_markdown(per_combo.pivot(index=["combination", "kind"], columns="method", values="normalized_accuracy").reset_index()),
        "## Pairwise heat-maps\n\n" + "\n".join(f"![{m}](figures/heatmap_{m}.png)" for m in params.merge.methods),
    ])
    path = paths.REPORTS / "summary.md"
    write_text(path, text + "\n")
    with stage_run(params.tracking, "report", {"tasks": tasks, "methods": list(params.merge.methods)}) as run:
        for _, row in summary.iterrows():
            run.log_metrics({f"mean_norm_acc/{kind}/{row['method']}": row[kind] for kind in ("pair", "triple") if kind in row and pd.notna(row[kind])})
        run.log_artifacts(paths.REPORTS, "reports")
    return path
