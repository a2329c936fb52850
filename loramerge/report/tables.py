"""The report's numbers as frames: the metrics files that evaluate and export wrote, read into tables, and the tables
computed from them (per combination, per method, the headline, triples ranked, per-task retention, the shipped models).

One definition per table, shared by the CSVs, the figures, the markdown and the HTML, so they show the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loramerge import paths
from loramerge.atomic import read_json
from loramerge.config import Params
from loramerge.lists import combination_kind
from loramerge.metrics import gain_retention
from loramerge.records import BaselineMetrics, MergedMetrics, MergeManifest, SingleMetrics, TrainMetrics
from loramerge.settings import SCORE_NAMES

KINDS = ("pair", "triple")
"""The combination sizes the report compares, in the order it shows them."""
RETENTION = ["normalized_accuracy", "gain_retention"]
"""The two measures of what a merge keeps, per combination."""


def single_table(params: Params) -> pd.DataFrame:
    """Per task: the majority class, head-only, full fine-tuning and the LoRA adapter on test, each by the task's
    score (`metric`: accuracy, or entity micro-F1 for a token task, where always tagging "O" finds nothing: 0)."""
    rows = []
    for task in params.tasks:
        score = SCORE_NAMES[params.tasks[params.task_of(task)].type]  # entity F1: always "O" scores 0
        metrics = SingleMetrics.read(paths.single_metrics(task))
        baselines = BaselineMetrics.read(paths.baseline_metrics(task))
        train = TrainMetrics.read(paths.train_metrics(task, "lora"))
        rows.append(
            {
                "task": task,
                "metric": score,
                "test_examples": metrics.test_examples,
                "majority_accuracy": metrics.majority_baseline_accuracy if score == "accuracy" else 0.0,
                "head_only_score": baselines.head_only.score,
                "full_ft_score": baselines.full.score,
                "lora_score": metrics.score,
                "lora_macro_f1": metrics.macro_f1,
                "lora_trainable_percent": train.trainable_percent,
                "lora_train_s": train.runtime_s,
                "head_only_train_s": baselines.head_only.train.runtime_s,
                "full_ft_train_s": baselines.full.train.runtime_s,
            }
        )
    return pd.DataFrame(rows)


def merged_table(params: Params, single: pd.DataFrame) -> pd.DataFrame:
    """One row per (combination, method, member task), with normalized accuracy and gain retention; `score` is
    the task's score (accuracy; entity micro-F1 for a token task), as in single_table."""
    head_only = single.set_index("task")["head_only_score"].to_dict()
    rows = []
    for combo in params.combinations:
        results = MergedMetrics.read(paths.merged_metrics(combo))
        kind = combination_kind(combo)
        for method, result in results.methods.items():
            for task, metrics in result.tasks.items():
                rows.append(
                    {
                        "combination": combo,
                        "kind": kind,
                        "method": method,
                        "task": task,
                        "score": metrics.score,
                        "single_score": metrics.single_score,
                        "normalized_accuracy": metrics.normalized_accuracy,
                        "macro_f1": metrics.macro_f1,
                        "head_only_score": head_only[task],
                        "beats_head_only": metrics.score > head_only[task],
                        "gain_retention": gain_retention(metrics.score, metrics.single_score, head_only[task]),
                        "adapter_gain": metrics.single_score - head_only[task],
                        "merged_gain": metrics.score - head_only[task],
                    }
                )
    return pd.DataFrame(rows)


def combination_table(merged: pd.DataFrame) -> pd.DataFrame:
    """Per (combination, kind, method): the members' mean normalized accuracy, and their pooled gain
    retention Σ(merged − head-only) / Σ(adapter − head-only).

    Pooled, not averaged per task: a task whose adapter barely beat head-only (agnews: +0.010,
    3 test examples in 300) would otherwise divide noise by almost nothing and swamp the mean.
    """
    groups = merged.groupby(["combination", "kind", "method"], sort=False)
    table = groups["normalized_accuracy"].mean().to_frame()
    gains = groups[["merged_gain", "adapter_gain"]].sum()
    table["gain_retention"] = (gains["merged_gain"] / gains["adapter_gain"]).where(gains["adapter_gain"] > 0)
    return table.reset_index()


def validation_table(params: Params) -> pd.DataFrame:
    """Per (combination, kind, method): the validation score the merge search reached (mean normalized accuracy, or
    the joint setting's under `merge.objective: joint`), from the manifests. Methods are ranked on this, never on
    test: the test scores are what the ranking is judged by."""
    rows = []
    for combo in params.combinations:
        for method in params.merge.methods:
            manifest = MergeManifest.read(paths.merge_manifest(combo, method))
            rows.append(
                {
                    "combination": combo,
                    "kind": combination_kind(combo),
                    "method": method,
                    "data": manifest.data,
                    "validation_normalized_accuracy": manifest.validation.score,
                }
            )
    return pd.DataFrame(rows, columns=["combination", "kind", "method", "data", "validation_normalized_accuracy"])


def identical_methods(merged: pd.DataFrame, methods: list[str]) -> dict[str, list[str]]:
    """Methods whose merges scored exactly alike on test everywhere (every task's accuracy and macro-F1 in every
    combination), grouped under the first in `merge.methods` order: such methods (KnOTS-TA and TA, by construction)
    are one result, shown once, not two that agree. Validation scores are not compared: under a bf16 search two
    merges equal up to float rounding can differ by an example or two there."""
    scored = merged.sort_values(["combination", "task"]).groupby("method")[["score", "macro_f1"]]
    fingerprints = {m: tuple(scored.get_group(m).to_numpy().ravel()) for m in methods}
    groups: dict[str, list[str]] = {}
    for method in methods:
        twin = next((m for m in groups if fingerprints[m] == fingerprints[method]), None)
        if twin is None:
            groups[method] = []
        else:
            groups[twin].append(method)
    return groups


def joint_table(params: Params) -> pd.DataFrame:
    """Per (combination, method), KnOTS' joint setting (no task id, one head over every member's labels): the merged
    model's pooled top-1 accuracy, the single adapters' (each input through every member's own adapter and head), and
    merged / single; no rows for combinations with a word tagger, where the setting does not apply."""
    rows = []
    for combo in params.combinations:
        results = MergedMetrics.read(paths.merged_metrics(combo))
        if results.joint_single is None:
            continue
        for method, result in results.methods.items():
            rows.append(
                {
                    "combination": combo,
                    "tasks": len(results.members),
                    "method": method,
                    "joint_classes": result.joint.classes,
                    "joint_accuracy": result.joint.accuracy,
                    "single_joint_accuracy": results.joint_single.accuracy,
                    "joint_normalized_accuracy": result.joint_normalized_accuracy,
                }
            )
    return pd.DataFrame(rows)


def joint_ranking(joint: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Per number of tasks and method: mean joint accuracy and joint normalized accuracy over those merges, beside the
    mean (per-task) normalized accuracy, and the method's rank by each (1 = best): does the ranking change when the
    model is not told the task?"""
    if joint.empty:
        return pd.DataFrame()
    means = joint.groupby(["tasks", "method"], sort=False)[
        ["joint_accuracy", "single_joint_accuracy", "joint_normalized_accuracy"]
    ].mean()
    table = sizes.set_index(["tasks", "method"])[["normalized_accuracy"]].join(means, how="inner").reset_index()
    for column, rank in (("normalized_accuracy", "rank_per_task"), ("joint_normalized_accuracy", "rank_joint")):
        table[rank] = table.groupby("tasks")[column].rank(ascending=False, method="min").astype(int)
    return table


def validation_means(validation: pd.DataFrame, methods: list[str]) -> pd.Series:
    """Each method's mean normalized validation accuracy over every combination (each once), in `merge.methods`
    order, so that `idxmax` breaks a tie in favour of the first configured method (the export's rule too)."""
    return validation.groupby("method")["validation_normalized_accuracy"].mean().reindex(methods)


def method_summary(combos: pd.DataFrame, validation: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method: mean normalized accuracy and gain retention over pairs and over triples (test), ranked by mean
    normalized validation accuracy, the criterion the headline uses. Each combination weighs once. `data` says
    what a method read beyond the adapters, so data-aware merges are never compared as if they were data-free."""
    table = combos.groupby(["method", "kind"])[RETENTION].mean().unstack("kind")
    table.columns = [f"{measure}_{kind}" for measure, kind in table.columns]
    order = [f"{m}_{k}" for m in RETENTION for k in KINDS if f"{m}_{k}" in table.columns]
    table = table[order].reindex(methods)
    table.insert(0, "validation_normalized_accuracy", validation_means(validation, methods))
    table.insert(0, "data", validation.groupby("method")["data"].first().reindex(methods))
    table = table.reset_index().rename(columns={"index": "method"})
    return table.sort_values("validation_normalized_accuracy", ascending=False, kind="stable")


def headline_table(combos: pd.DataFrame, validation: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The best method, chosen by mean normalized validation accuracy over every combination (each once; ties to
    the first in `merge.methods`), with its test mean normalized accuracy over pairs, over triples and over both."""
    means = validation_means(validation, methods)
    best = means.idxmax()
    row = {"best_method": best, "validation_normalized_accuracy": means[best]}
    for kind in KINDS:
        scores = combos[(combos["method"] == best) & (combos["kind"] == kind)]["normalized_accuracy"]
        row[f"{kind}s"] = len(scores)
        row[f"normalized_accuracy_{kind}s"] = scores.mean() if len(scores) else np.nan
    row["normalized_accuracy_all"] = combos[combos["method"] == best]["normalized_accuracy"].mean()
    return pd.DataFrame([row])


def triples_ranked(combos: pd.DataFrame, validation: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Triples from best to worst by mean normalized accuracy over methods (test), with every method's score and
    each triple's best method by validation."""
    triples = combos[combos["kind"] == "triple"]
    table = triples.pivot(index="combination", columns="method", values="normalized_accuracy")
    chosen = validation[validation["kind"] == "triple"].pivot(
        index="combination", columns="method", values="validation_normalized_accuracy"
    )
    ranked = table.assign(
        mean_over_methods=table.mean(axis=1), best_method_by_validation=chosen.reindex(columns=methods).idxmax(axis=1)
    )
    ranked = ranked.sort_values("mean_over_methods", ascending=False).reset_index().rename_axis(columns=None)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked


def retention_table(single: pd.DataFrame, merged: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per task: head-only, full fine-tuning and single-adapter test accuracy beside the method's
    merged accuracy (mean over the pairs, and over the triples, that contain the task)."""
    table = single.set_index("task")[["head_only_score", "full_ft_score", "lora_score"]]
    merged_mean = merged[merged["method"] == method].groupby(["task", "kind"])["score"].mean().unstack("kind")
    for kind in KINDS:
        table[f"merged_{kind}s_score"] = merged_mean[kind] if kind in merged_mean else np.nan
    return table.reset_index()


PRECISIONS = ["fp32", "int8", "bf16"]
"""The exported model's variants, in the order the report shows them."""


def export_tables(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shipped models (stage `export`, metrics/export/<combo>.json): per precision the size, mean member
    accuracy and latency, and per member task the accuracy of each precision; empty before any export ran."""
    models, tasks = [], []
    for combo in params.shipped():
        path = paths.export_metrics(combo)
        if not path.exists():
            continue
        export = read_json(path)
        speedup = MergedMetrics.read(paths.merged_metrics(combo)).inference.speedup
        precisions = export["compression"]["precisions"]
        for precision in sorted(precisions, key=PRECISIONS.index):
            row = precisions[precision]
            models.append(
                {
                    "combination": combo,
                    "method": export["method"],
                    "precision": precision,
                    "size_mib": row["size_bytes"] / 2**20,
                    "mean_accuracy": float(np.mean(list(row["accuracy"].values()))),
                    "latency_b1_p50_ms": row["latency_b1_p50_ms"],
                    "latency_b1_p95_ms": row["latency_b1_p95_ms"],
                    "throughput_b64_per_s": row["throughput_b64_per_s"],
                    "one_pass_vs_k_passes": speedup,
                }
            )
            tasks += [
                {"combination": combo, "task": t, "precision": precision, "accuracy": a}
                for t, a in row["accuracy"].items()
            ]
    by_task = pd.DataFrame(tasks)
    if len(by_task):
        by_task = by_task.pivot(index=["combination", "task"], columns="precision", values="accuracy")
        by_task = by_task[[p for p in PRECISIONS if p in by_task.columns]].reset_index()
        by_task.columns.name = None
    return pd.DataFrame(models), by_task
