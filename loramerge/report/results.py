"""Everything the report shows, computed once (`Results`), and the numbers it hands on: reports/metrics.json, the flat
reports/headline/*.json that `dvc metrics show` prints, and the metrics of the MLflow summary run.

One computation feeds the tables, figures, document and metrics, so none of them can disagree with another.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from loramerge import paths
from loramerge.atomic import read_json
from loramerge.config import Params
from loramerge.records import SIMILARITY_MEASURES
from loramerge.report.seeds import seed_spread
from loramerge.report.statistics import association, correlations, similarity_table
from loramerge.report.tables import (
    KINDS,
    RETENTION,
    combination_table,
    headline_table,
    identical_methods,
    joint_ranking,
    joint_table,
    merged_table,
    method_summary,
    retention_table,
    single_table,
    triples_ranked,
    validation_means,
    validation_table,
)
from loramerge.report.uncertainty import (
    combination_intervals,
    combination_replicates,
    compare_with_best,
    members_table,
    merged_task_intervals,
    merging_cost,
    method_intervals,
    read_outcomes,
    replicate_accuracies,
    size_intervals,
    task_intervals,
)
from loramerge.tracking import metric_key

SHORT_NAMES = {"normalized_accuracy": "norm_acc", "gain_retention": "gain_retention"}  # MLflow metric prefixes


@dataclass
class Results:
    """Everything the report shows, computed once."""

    single: pd.DataFrame
    merged: pd.DataFrame
    combos: pd.DataFrame
    summary: pd.DataFrame
    headline: pd.DataFrame
    similarity: pd.DataFrame
    correlations: pd.DataFrame
    association: pd.DataFrame
    """Per distinct method and kind: ρ with a bootstrap interval, partial ρ given adapter gain, similar-pair contrast."""
    validation: pd.DataFrame
    triples: pd.DataFrame
    identical: dict[str, list[str]]
    """Each shown method and the methods whose results were exactly its own (shown once, under it)."""
    comparison: pd.DataFrame
    """Each shown method against the best: difference in mean normalized accuracy, interval, Holm-adjusted p."""
    cost: pd.DataFrame
    """The best method's merged models against the single adapters, per combination and task (McNemar)."""
    retention: pd.DataFrame
    """Per task: head-only, full, single and the best method's merged accuracy, with intervals (the figure's bars)."""
    seeds: pd.DataFrame
    """With `repeats` > 1: per method and kind, and per task and model, mean ± sd over the training seeds and an
    interval that includes their spread (loramerge/report/seeds.py); empty with one seed."""
    sizes: pd.DataFrame
    """Per method and number of tasks merged (2, 3, …, every task): mean normalized accuracy and gain retention over
    the merges of that size, with intervals."""
    everything: pd.DataFrame
    """The merge of every task (when listed), per member task, with the method its validation score chose: merged,
    single, head-only and full fine-tuning scores and merged / single, with intervals; empty when not listed."""
    everything_method: str | None
    joint: pd.DataFrame
    """KnOTS' joint setting per combination and method (no task id, one head over every member's labels)."""
    joint_ranking: pd.DataFrame
    """Per number of tasks and method: the joint setting's means beside the per-task ones, and each ranking."""


def compute_results(everything: Params) -> Results:
    """Every table and statistic, from the files earlier stages wrote; every compared number with its 95%
    paired-bootstrap interval (loramerge/report/uncertainty.py). The tables are the first training seed's; with
    `repeats` > 1 the seeds table adds every seed's. The pair and triple tables and tests are those of pairs and
    triples alone, as before larger merges existed; the sizes table and the all-task scorecard show every size."""
    study = everything.repeat_view(0)
    outcomes = read_outcomes(study)
    accuracy = replicate_accuracies(outcomes, study.report.bootstrap_resamples, study.report.bootstrap_seed)
    sizes = size_intervals(combination_replicates(accuracy, study), list(study.merge.methods))
    every, chosen = all_tasks(study, accuracy)
    joint = joint_table(study)
    params = study.model_copy(update={"many": {}})
    replicates = combination_replicates(accuracy, params)
    single = single_table(params).merge(task_intervals(accuracy), on="task")
    merged = merged_table(params, single)
    combos = combination_table(merged).merge(combination_intervals(replicates), on=["combination", "method"])
    similarity = similarity_table(params)
    validation, methods = validation_table(params), list(params.merge.methods)
    identical = identical_methods(merged, methods)
    intervals = method_intervals(replicates, KINDS)
    headline = headline_table(combos, validation, methods)
    best = headline["best_method"].item()
    significance = params.similarity.significance_level
    return Results(
        single,
        merged,
        combos,
        method_summary(combos, validation, methods).merge(intervals, on="method", how="left"),
        headline_intervals(headline, intervals),
        similarity,
        correlations(combos, similarity, list(identical)),
        association(
            combos,
            similarity,
            single,
            list(identical),
            params.similarity.similar_pairs,
            params.report.bootstrap_resamples,
            params.report.bootstrap_seed,
        )
        if len(similarity)
        else pd.DataFrame(),
        validation,
        triples_ranked(combos, validation, methods),
        identical,
        compare_with_best(replicates, best, list(identical), significance),
        merging_cost(outcomes, best, params, significance),
        retention_table(single, merged, best)
        .merge(task_intervals(accuracy), on="task")
        .merge(merged_task_intervals(accuracy, best, params), on="task"),
        seed_spread(everything, accuracy),
        sizes,
        every,
        chosen,
        joint,
        joint_ranking(joint, sizes),
    )


def all_tasks(params: Params, accuracy: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, str | None]:
    """The merge of every task, scored per member with the method the export shipped (else the one of best validation
    score, ties to the first in `merge.methods`), and that method; empty when the all-task merge is not listed."""
    combo = params.every_task()
    if combo not in params.combinations:
        return pd.DataFrame(), None
    shipped = paths.export_metrics(combo)
    if shipped.exists():
        method = read_json(shipped)["method"]
    else:
        validation = validation_table(params)
        method = validation_means(validation[validation["combination"] == combo], list(params.merge.methods)).idxmax()
    return members_table(accuracy, combo, method), method


def headline_intervals(headline: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """The headline row with the best method's intervals beside its pair and triple means."""
    row = intervals.set_index("method").loc[headline["best_method"].item()]
    table = headline.copy()
    for kind in KINDS:
        position = table.columns.get_loc(f"normalized_accuracy_{kind}s")
        for offset, bound in enumerate(("ci_low", "ci_high"), start=1):
            key = f"normalized_accuracy_{kind}_{bound}"
            if key in row:
                table.insert(position + offset, f"normalized_accuracy_{kind}s_{bound}", row[key])
    return table


def headline_metrics(results: Results) -> dict:
    """reports/metrics.json: per method and kind the mean scores, and the median ρ of each measure over methods."""

    def number(value: float) -> float | None:
        return None if pd.isna(value) else float(value)

    methods = {
        method: {
            kind: {m: number(group[group["kind"] == kind][m].mean()) for m in RETENTION}
            for kind in KINDS
            if (group["kind"] == kind).any()
        }
        for method, group in results.combos.groupby("method")
    }
    rho = results.correlations.groupby(["kind", "measure"])["rho"].median()
    return {
        "best": {k: number(v) for k, v in results.headline.iloc[0].items() if k != "best_method"},
        "identical_methods": {m: twins for m, twins in results.identical.items() if twins},
        "methods": methods,
        "spearman_rho_median": {
            kind: {measure: number(v) for (k, measure), v in rho.items() if k == kind} for kind in KINDS
        },
    }


HEADLINE_KEYS = {
    ("pair", "normalized_accuracy"): "pair_acc",
    ("triple", "normalized_accuracy"): "triple_acc",
    ("pair", "gain_retention"): "pair_gain",
    ("triple", "gain_retention"): "triple_gain",
}
"""Short flat keys of reports/headline/<method>.json: `dvc metrics show` prints one row per file, one column per key."""


def headline_files(results: Results) -> dict[str, dict[str, float]]:
    """reports/headline/: one small flat file per method (mean normalized accuracy and gain retention, pairs and
    triples) and `pipeline.json` (mean single-adapter test accuracy, training seconds, every mode and task), so that `dvc metrics show`
    is a table of methods that fits a terminal; the detailed files stay stage outputs."""
    files = {}
    for method, group in results.combos.groupby("method"):
        means = group.groupby("kind")[RETENTION].mean()
        files[method] = {
            key: round(float(means.loc[kind, m]), 4)
            for (kind, m), key in HEADLINE_KEYS.items()
            if kind in means.index and not pd.isna(means.loc[kind, m])
        }
    largest = results.sizes[results.sizes["tasks"] == results.sizes["tasks"].max()].set_index("method")
    for method in files:
        if method in largest.index and largest.loc[method, "tasks"] > 3:  # the merge of every task, past the triples
            files[method] |= {
                f"all_{short}": round(float(largest.loc[method, measure]), 4)
                for measure, short in (("normalized_accuracy", "acc"), ("gain_retention", "gain"))
                if not pd.isna(largest.loc[method, measure])
            }
    training_s = results.single[["lora_train_s", "head_only_train_s", "full_ft_train_s"]].to_numpy().sum()
    files["pipeline"] = {
        "single_acc": round(float(results.single["lora_score"].mean()), 4),
        "train_s": round(float(training_s), 1),
    }
    return files


def tracked_metrics(results: Results) -> dict[str, float]:
    """MLflow metric names that sort by measure, kind, method, combination (a method's mean is its prefix)."""
    metrics = {}
    for row in results.combos.itertuples():
        metrics.update(
            {metric_key(SHORT_NAMES[m], row.kind, row.method, row.combination): getattr(row, m) for m in RETENTION}
        )
    for method, by_kind in headline_metrics(results)["methods"].items():
        for kind, scores in by_kind.items():
            metrics.update({metric_key(SHORT_NAMES[m], kind, method): v for m, v in scores.items()})
    for row in results.similarity.itertuples(index=False):
        metrics.update(
            {
                metric_key("similarity", measure, row.kind, row.combination): getattr(row, measure)
                for measure in SIMILARITY_MEASURES
            }
        )
    for row in results.correlations.itertuples():
        metrics[metric_key("spearman_rho", row.kind, row.method, row.measure)] = row.rho
        metrics[metric_key("spearman_p", row.kind, row.method, row.measure)] = row.p
    return {k: v for k, v in metrics.items() if v is not None and not pd.isna(v)}
