"""Stage `report`: which merges keep their accuracy, whether task similarity predicts it, and how the run was made.

Reads only what earlier stages wrote (metrics/, data/prepared/*/stats.json) and writes:
reports/report.md and a self-contained reports/report.html (figures inlined, so the file
can be mailed or archived alone), the older reports/summary.md, reports/tables/*.csv,
reports/figures/*.png (every figure of the report), reports/metrics.json (every mean score, nested)
and reports/headline/*.json (one small flat file per method, what `dvc metrics show/diff` prints). Everything is logged to one MLflow run tagged
`loramerge.summary=true`.
"""

from __future__ import annotations

import base64
import html
import os
import platform
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from scipy.stats import pearsonr, permutation_test, rankdata, spearmanr

from loramerge import paths
from loramerge.atomic import atomic_dir, atomic_file, read_json, write_json, write_text
from loramerge.combinations import member_pairs
from loramerge.config import Params, split_combination
from loramerge.metrics import gain_retention
from loramerge.paths import SIMILARITY
from loramerge.similarity import MEASURES
from loramerge.tracking import StageRun, git_commit, metric_key, repro_id, repro_runs, stage_run

TABLES = paths.REPORTS / "tables"
FIGURES = paths.REPORTS / "figures"
BY_METHOD = TABLES / "normalized_accuracy"  # one CSV per method: `dvc plots` draws one bar chart each
SUMMARY_TAG = "loramerge.summary"
KINDS = ("pair", "triple")
RETENTION = ["normalized_accuracy", "gain_retention"]
SHORT_NAMES = {"normalized_accuracy": "norm_acc", "gain_retention": "gain_retention"}  # MLflow metric prefixes
NORMALIZED_LABEL = "mean normalized accuracy\n(merged / single, ratio)"


# ---------------------------------------------------------------- tables


def single_table(params: Params) -> pd.DataFrame:
    """Per task: the majority class, head-only, full fine-tuning and the LoRA adapter on test."""
    rows = []
    for task in params.tasks:
        metrics = read_json(paths.single_metrics(task))
        baselines = read_json(paths.baseline_metrics(task))
        train = read_json(paths.train_metrics(task, "lora"))
        rows.append(
            {
                "task": task,
                "test_examples": metrics["test_examples"],
                "majority_accuracy": metrics["majority_baseline_accuracy"],
                "head_only_accuracy": baselines["head_only"]["accuracy"],
                "full_ft_accuracy": baselines["full"]["accuracy"],
                "lora_accuracy": metrics["accuracy"],
                "lora_macro_f1": metrics["macro_f1"],
                "lora_trainable_percent": train["trainable_percent"],
                "lora_train_s": train["runtime_s"],
                "head_only_train_s": baselines["head_only"]["train"]["runtime_s"],
                "full_ft_train_s": baselines["full"]["train"]["runtime_s"],
            }
        )
    return pd.DataFrame(rows)


def merged_table(params: Params, single: pd.DataFrame) -> pd.DataFrame:
    """One row per (combination, method, member task), with normalized accuracy and gain retention."""
    head_only = single.set_index("task")["head_only_accuracy"].to_dict()
    rows = []
    for combo in params.combinations:
        results = read_json(paths.merged_metrics(combo))
        kind = combination_kind(combo)
        for method, result in results["methods"].items():
            for task, metrics in result["tasks"].items():
                rows.append(
                    {
                        "combination": combo,
                        "kind": kind,
                        "method": method,
                        "task": task,
                        "accuracy": metrics["accuracy"],
                        "single_accuracy": metrics["single_accuracy"],
                        "normalized_accuracy": metrics["normalized_accuracy"],
                        "macro_f1": metrics["macro_f1"],
                        "head_only_accuracy": head_only[task],
                        "beats_head_only": metrics["accuracy"] > head_only[task],
                        "gain_retention": gain_retention(
                            metrics["accuracy"], metrics["single_accuracy"], head_only[task]
                        ),
                        "adapter_gain": metrics["single_accuracy"] - head_only[task],
                        "merged_gain": metrics["accuracy"] - head_only[task],
                    }
                )
    return pd.DataFrame(rows)


def combination_kind(combo: str) -> str:
    return "pair" if len(split_combination(combo)) == 2 else "triple"


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


def method_summary(merged: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean normalized accuracy and gain retention over pairs and over triples.

    Each combination weighs once (its members' mean first).
    """
    table = combination_table(merged).groupby(["method", "kind"])[RETENTION].mean().unstack("kind")
    table.columns = [f"{measure}_{kind}" for measure, kind in table.columns]
    order = [f"{m}_{k}" for m in RETENTION for k in KINDS if f"{m}_{k}" in table.columns]
    return table[order].reset_index().sort_values(order[0], ascending=False)


def headline(combos: pd.DataFrame) -> pd.DataFrame:
    """The best method (highest mean normalized accuracy over every combination, each weighing once)
    and its mean normalized accuracy over pairs, over triples and over both."""
    overall = combos.groupby("method")["normalized_accuracy"].mean()
    best = overall.idxmax()
    row = {"best_method": best}
    for kind in KINDS:
        scores = combos[(combos["method"] == best) & (combos["kind"] == kind)]["normalized_accuracy"]
        row[f"{kind}s"] = len(scores)
        row[f"normalized_accuracy_{kind}s"] = scores.mean() if len(scores) else np.nan
    row["normalized_accuracy_all"] = overall[best]
    return pd.DataFrame([row])


def triples_ranked(combos: pd.DataFrame) -> pd.DataFrame:
    """Triples from best to worst by mean normalized accuracy over methods, with every method's score."""
    triples = combos[combos["kind"] == "triple"]
    table = triples.pivot(index="combination", columns="method", values="normalized_accuracy")
    ranked = table.assign(mean_over_methods=table.mean(axis=1), best_method=table.idxmax(axis=1))
    ranked = ranked.sort_values("mean_over_methods", ascending=False).reset_index().rename_axis(columns=None)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked


def retention_table(single: pd.DataFrame, merged: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per task: head-only, full fine-tuning and single-adapter test accuracy beside the method's
    merged accuracy (mean over the pairs, and over the triples, that contain the task)."""
    table = single.set_index("task")[["head_only_accuracy", "full_ft_accuracy", "lora_accuracy"]]
    merged_mean = merged[merged["method"] == method].groupby(["task", "kind"])["accuracy"].mean().unstack("kind")
    for kind in KINDS:
        table[f"merged_{kind}s_accuracy"] = merged_mean[kind] if kind in merged_mean else np.nan
    return table.reset_index()


# ---------------------------------------------------------------- similarity vs retention


def similarity_table(params: Params) -> pd.DataFrame:
    """Every measure per combination: a pair's as the similarity stage wrote it, a triple's as the
    mean over its three pairs. Empty when the similarity stage has not run."""
    if not SIMILARITY.exists():
        return pd.DataFrame(columns=["combination", "kind", *MEASURES])
    pairs = pd.DataFrame.from_dict(read_json(SIMILARITY)["pairs"], orient="index")[list(MEASURES)]
    rows = []
    for combo in params.combinations:
        rows.append(
            {"combination": combo, "kind": combination_kind(combo), **pairs.loc[member_pairs(combo)].mean().to_dict()}
        )
    return pd.DataFrame(rows)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's ρ and its two-sided p-value from a permutation test.

    scipy's spearmanr p-value comes from a t approximation that is badly off for the handful
    of pairs and triples we have (it reports p = 0 for three points in order); the
    permutation test is exact up to 7 points and a seeded Monte-Carlo estimate beyond.
    NaN when fewer than 3 points or either side is constant (no ranking to compare).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rho = float(spearmanr(x, y).statistic)
    ranks_y = rankdata(y)

    def rank_correlation(ranks_x: np.ndarray, axis: int) -> np.ndarray:  # Pearson on ranks = Spearman, vectorized
        return pearsonr(ranks_x, np.broadcast_to(ranks_y, ranks_x.shape), axis=axis).statistic

    # one sample permuted against the fixed other: n! pairings, enumerated exactly when n! <= n_resamples
    test = permutation_test(
        (rankdata(x),), rank_correlation, permutation_type="pairings", vectorized=True, n_resamples=9999, rng=0
    )
    return rho, float(test.pvalue)


def correlations(combos: pd.DataFrame, similarity: pd.DataFrame) -> pd.DataFrame:
    """Per method, kind and measure: how the measure ranks combinations against their mean normalized accuracy."""
    joined = combos.merge(similarity, on=["combination", "kind"])
    rows = []
    for (method, kind), group in joined.groupby(["method", "kind"], sort=False):
        for measure in MEASURES:
            rho, p = spearman(group[measure], group["normalized_accuracy"])
            rows.append({"method": method, "kind": kind, "measure": measure, "n": len(group), "rho": rho, "p": p})
    return pd.DataFrame(rows, columns=["method", "kind", "measure", "n", "rho", "p"])


def direction_counts(corr: pd.DataFrame, kind: str, measure: str, significance: float) -> dict:
    """How many methods see a positive / negative ρ for one measure, and how many of those are significant."""
    rows = corr[(corr["kind"] == kind) & (corr["measure"] == measure)].dropna(subset=["rho"])
    significant = rows["p"] < significance
    return {
        "methods": len(rows),
        "n": int(rows["n"].max()) if len(rows) else 0,
        "median_rho": rows["rho"].median(),
        "negative": int((rows["rho"] < 0).sum()),
        "positive": int((rows["rho"] > 0).sum()),
        "significant_negative": int(((rows["rho"] < 0) & significant).sum()),
        "significant_positive": int(((rows["rho"] > 0) & significant).sum()),
    }


def agreement(cos: dict, mmd: dict) -> str:
    """Whether the two data measures point the same way: cosine with ρ < 0 and MMD with ρ > 0 both favour dissimilar data."""
    if not mmd["methods"]:
        return "MMD gives no ranking to compare."
    cos_dissimilar, mmd_dissimilar = cos["negative"] > cos["methods"] / 2, mmd["positive"] > mmd["methods"] / 2
    if cos_dissimilar == mmd_dissimilar:
        return "the two data measures agree."
    return (
        f"the two data measures disagree (MMD {'favours dissimilar' if mmd_dissimilar else 'favours similar'} data), "
        "so the data do not settle the question."
    )


def verdict(corr: pd.DataFrame, significance: float) -> list[str]:
    """Plain sentences, from the numbers, on the vision study's finding: dissimilar data merges better.

    The finding predicts ρ(data cosine, normalized accuracy) < 0 over pairs, and ρ > 0 for the
    MMD distance. It "holds" only when most methods show a significant negative ρ.
    """
    cos = direction_counts(corr, "pair", "data_cosine", significance)
    if cos["methods"] == 0:
        return [
            "The vision study's finding (adapters on dissimilar data merge better) cannot be tested here: "
            "fewer than 3 pairs with varying scores, or no similarity measured."
        ]
    majority = cos["methods"] / 2
    if cos["significant_negative"] > majority:
        answer = "holds here"
    elif cos["significant_positive"] > majority:
        answer = "is reversed here: pairs with more similar data merge better"
    elif cos["negative"] > majority:
        answer = "is not supported here: the direction agrees, but not significantly for most methods"
    elif cos["positive"] > majority:
        answer = "is not supported here: if anything, pairs with more similar data merge better, but not significantly"
    else:
        answer = "is not supported here: no consistent direction across methods"
    mmd = direction_counts(corr, "pair", "data_mmd", significance)
    sentences = [
        f"The vision study's finding, that adapters on dissimilar data merge better, {answer}.",
        f"Over {cos['n']} pairs, Spearman's ρ between data cosine similarity and mean normalized accuracy is negative for "
        f"{cos['negative']} of the {cos['methods']} methods whose scores vary (median ρ = {cos['median_rho']:.2f}); significant (p < {significance:g}) "
        f"and negative for {cos['significant_negative']}, significant and positive for {cos['significant_positive']}. The finding predicts ρ < 0.",
        f"Data MMD, a distance (the finding predicts ρ > 0): ρ > 0 for {mmd['positive']} of {mmd['methods']} methods "
        f"(median ρ = {mmd['median_rho']:.2f}); {agreement(cos, mmd)}",
    ]
    triples = direction_counts(corr, "triple", "data_cosine", significance)
    if triples["methods"]:
        sentences.append(
            f"Over {triples['n']} triples (mean pairwise data cosine): median ρ = {triples['median_rho']:.2f}, "
            f"negative for {triples['negative']} of {triples['methods']} methods, significant for "
            f"{triples['significant_negative'] + triples['significant_positive']}."
        )
    small = cos["n"] < 10
    sentences.append(
        f"{'Small sample' if small else 'Sample'}: {cos['n']} pairs. Every method is scored on the same pairs, so the "
        "methods' correlations are not independent evidence"
        + (
            "; with so few points only a very strong ranking reaches significance, so read these numbers as "
            "indicative, not as a test of the finding."
            if small
            else "."
        )
    )
    return sentences


# ---------------------------------------------------------------- figures


def save_figure(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, dpi=100)
    plt.close(figure)
    return path


def pair_heatmap(merged: pd.DataFrame, method: str, tasks: list[str], path: Path) -> Path:
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
                axes.text(
                    j,
                    i,
                    f"{grid.iat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="black" if grid.iat[i, j] > 0.6 else "white",
                )
    axes.set_xlabel("task")
    axes.set_ylabel("task")
    axes.set_title(f"{method}\npair mean normalized accuracy (merged / single)", fontsize="medium")
    figure.colorbar(image, ax=axes, label="normalized accuracy (ratio)")
    return save_figure(figure, path)


def retention_bars(retention: pd.DataFrame, method: str, path: Path) -> Path:
    """Per task, grouped bars: head-only, full fine-tuning, single adapter, and merged (pairs, triples)."""
    legend = {
        "head_only_accuracy": "head-only (frozen encoder)",
        "full_ft_accuracy": "full fine-tuning",
        "lora_accuracy": "single LoRA adapter",
        "merged_pairs_accuracy": f"merged in pairs ({method})",
        "merged_triples_accuracy": f"merged in triples ({method})",
    }
    figure, axes = plt.subplots(figsize=(2.0 * len(retention) + 5, 4.5))
    retention.set_index("task").rename(columns=legend).plot.bar(ax=axes, rot=0, width=0.8)
    axes.set_xlabel("task")
    axes.set_ylabel("test accuracy (fraction correct)")
    axes.set_ylim(0, 1.05)
    axes.set_title(
        f"Per task: single vs merged ({method}, mean over the combinations with the task) vs head-only",
        fontsize="medium",
    )
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return save_figure(figure, path)


def similarity_scatter(
    combos: pd.DataFrame, similarity: pd.DataFrame, corr: pd.DataFrame, method: str, path: Path
) -> Path:
    """One panel per (kind, measure): each combination's similarity against its mean normalized accuracy, with ρ and p."""
    joined = combos[combos["method"] == method].merge(similarity, on=["combination", "kind"])
    kinds = [k for k in KINDS if (joined["kind"] == k).any()]
    figure, axes = plt.subplots(
        len(kinds), len(MEASURES), figsize=(3.4 * len(MEASURES), 3.4 * len(kinds)), squeeze=False
    )
    for row, kind in enumerate(kinds):
        points = joined[joined["kind"] == kind]
        for column, (measure, description) in enumerate(MEASURES.items()):
            stats = corr[(corr["method"] == method) & (corr["kind"] == kind) & (corr["measure"] == measure)].iloc[0]
            ax = axes[row, column]
            ax.scatter(points[measure], points["normalized_accuracy"])
            ax.locator_params(axis="x", nbins=4)
            ax.set_title(f"{kind}s: ρ = {stats['rho']:.2f}, p = {stats['p']:.2f}, n = {stats['n']}", fontsize="small")
            ax.set_xlabel(
                textwrap.fill(description + (", mean of pairs" if kind == "triple" else ""), 32), fontsize="small"
            )
            ax.set_ylabel(NORMALIZED_LABEL if column == 0 else "", fontsize="small")
    figure.suptitle(f"{method}: task similarity vs merge retention")
    return save_figure(figure, path)


# ---------------------------------------------------------------- provenance


def data_sizes(params: Params) -> pd.DataFrame:
    """Per task, from prepare's stats.json: where the data came from and how many rows each split kept."""
    rows = []
    for task in params.tasks:
        stats = read_json(paths.prepared_dir(task) / "stats.json")
        rows.append(
            {
                "task": task,
                "source": stats["source"],
                **{f"{s}_rows": stats["rows"][s] for s in paths.SPLITS},
                "labels": len(stats["class_counts"]["train"]),
                "empty_texts_dropped": sum(stats["empty_texts_dropped"].values()),
                "texts_shared_across_splits": sum(stats["duplicates_across_splits"].values()),
            }
        )
    return pd.DataFrame(rows)


def model_table(params: Params) -> pd.DataFrame:
    """The backbone and each task's LoRA adapter size, as training recorded it."""
    rows = []
    for task in params.tasks:
        train = read_json(paths.train_metrics(task, "lora"))
        rows.append(
            {
                "task": task,
                "backbone": params.backbone.name,
                "total_params": train["total_params"],
                "lora_trainable_params": train["trainable_params"],
                "lora_rank": params.lora.rank,
                "lora_alpha": params.lora.alpha,
                "lora_targets": params.lora.targets,
            }
        )
    return pd.DataFrame(rows)


def machine() -> pd.DataFrame:
    import torch

    return pd.DataFrame(
        [
            {
                "platform": platform.platform(),
                "processor": platform.machine(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
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


# ---------------------------------------------------------------- document
# The report is built once as sections of blocks and rendered twice (markdown, HTML), so the
# two files can never say different things.


@dataclass
class Table:
    frame: pd.DataFrame
    id: str | None = None  # the HTML table's id, for readers' links and the browser test


@dataclass
class Figure:
    path: Path  # a PNG under reports/figures: linked from the markdown, inlined in the HTML
    caption: str


@dataclass
class Code:
    text: str


Block = str | Table | Figure | Code  # a str is one plain-text paragraph


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block]


def markdown_block(block: Block) -> str:
    if isinstance(block, Table):
        formatted = not any(
            pd.api.types.is_numeric_dtype(dtype) for dtype in block.frame.dtypes
        )  # pre-formatted text: keep "5e-05" as written
        return (
            block.frame.to_markdown(index=False, floatfmt=".3f", disable_numparse=formatted)
            if len(block.frame)
            else "(none)"
        )
    if isinstance(block, Figure):
        return f"![{block.caption}]({block.path.relative_to(paths.REPORTS).as_posix()})"
    if isinstance(block, Code):
        return f"```yaml\n{block.text.rstrip()}\n```"
    return block


def html_block(block: Block) -> str:
    if isinstance(block, Table):
        return (
            block.frame.to_html(index=False, table_id=block.id, border=0, na_rep="–", float_format="{:.3f}".format)
            if len(block.frame)
            else "<p>(none)</p>"
        )
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}"><figcaption>{html.escape(block.caption)}</figcaption></figure>'
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    return f"<p>{html.escape(block)}</p>"


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts += [f"## {section.title}", *map(markdown_block, section.blocks)]
    return "\n\n".join(parts) + "\n"


STYLE = """body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}#heatmaps figure{display:inline-block;max-width:32%;vertical-align:top}
figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}"""


def render_html(title: str, sections: list[Section]) -> str:
    """One HTML file with every figure inlined as base64, so it opens anywhere without the figures folder."""
    body = "\n".join(
        f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>\n'
        + "\n".join(map(html_block, section.blocks))
        + "</section>"
        for section in sections
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


# ---------------------------------------------------------------- the stage


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


def compute(params: Params) -> Results:
    single = single_table(params)
    merged = merged_table(params, single)
    combos = combination_table(merged)
    similarity = similarity_table(params)
    return Results(
        single, merged, combos, method_summary(merged), headline(combos), similarity, correlations(combos, similarity)
    )


def write_tables(results: Results, params: Params) -> None:
    """The report's tables as CSV, and one CSV per method of per-combination scores for `dvc plots`."""
    best = results.headline["best_method"].iloc[0]
    tables = {
        "single": results.single,
        "merged": results.merged,
        "methods": results.summary,
        "combinations": results.combos,
        "similarity": results.similarity,
        "correlations": results.correlations,
        "retention": retention_table(results.single, results.merged, best),
        "triples_ranked": triples_ranked(results.combos),
    }
    for name, frame in tables.items():
        write_text(TABLES / f"{name}.csv", frame.to_csv(index=False))
    BY_METHOD.mkdir(parents=True, exist_ok=True)  # dvc.yaml's plots name it, even with no combination
    for method, frame in results.combos.groupby("method"):
        write_text(BY_METHOD / f"{method}.csv", frame.drop(columns="method").to_csv(index=False))


def write_figures(results: Results, params: Params) -> dict[str, list[Figure]]:
    best = results.headline["best_method"].iloc[0]
    tasks, methods = list(params.tasks), list(params.merge.methods)
    figures = {
        "heatmaps": [
            Figure(
                pair_heatmap(results.merged, m, tasks, FIGURES / f"heatmap_{m}.png"),
                f"{m}: pairwise mean normalized accuracy",
            )
            for m in methods
        ],
        "retention": [
            Figure(
                retention_bars(retention_table(results.single, results.merged, best), best, FIGURES / "retention.png"),
                f"Per-task test accuracy: head-only, full fine-tuning, single adapter, merged with {best}",
            )
        ],
        "similarity": [],
    }
    if len(results.similarity):
        figures["similarity"] = [
            Figure(
                similarity_scatter(
                    results.combos, results.similarity, results.correlations, m, FIGURES / f"similarity_{m}.png"
                ),
                f"{m}: similarity measures vs mean normalized accuracy",
            )
            for m in methods
        ]
    return figures


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def headline_text(headline: pd.DataFrame) -> str:
    row = headline.iloc[0]
    parts = [f"{row[f'normalized_accuracy_{k}s']:.3f} over {plural(row[f'{k}s'], k)}" for k in KINDS if row[f"{k}s"]]
    return (
        f"Best method: {row['best_method']}, with mean normalized accuracy (merged / single-adapter test accuracy) "
        f"{' and '.join(parts)} ({row['normalized_accuracy_all']:.3f} over all combinations, each weighing once)."
    )


def similarity_section(results: Results, figures: list[Figure], params: Params) -> Section:
    if not len(results.similarity):
        return Section(
            "similarity",
            "Does task similarity predict merge retention?",
            ["Not computed: run the `similarity` stage (loramerge similarity) first."],
        )
    measures = pd.DataFrame(
        {
            "measure": list(MEASURES),
            "what it is": list(MEASURES.values()),
            "larger means": ["less similar" if m == "data_mmd" else "more similar" for m in MEASURES],
        }
    )
    cells = results.correlations.assign(
        cell=[
            f"{r:.2f} (p {p:.2f})" if pd.notna(r) else "–"
            for r, p in results.correlations[["rho", "p"]].itertuples(index=False)
        ]
    )
    pivot = (
        cells.pivot(index=["kind", "measure"], columns="method", values="cell")
        .reindex(cells.set_index(["kind", "measure"]).index.unique())
        .reset_index()
    )
    return Section(
        "similarity",
        "Does task similarity predict merge retention?",
        [
            *verdict(results.correlations, params.similarity.significance_level),
            f"The measures. Data measures embed at most {params.similarity.max_texts} training texts per task with the base encoder "
            "(mean pooling); a triple's similarity is the mean of its three pairs'.",
            Table(measures, "measures"),
            Table(results.similarity, "similarity-table"),
            "Spearman's ρ of each measure against mean normalized accuracy, per method, with its two-sided p-value from a "
            "permutation test (exact up to 7 combinations); – where fewer than 3 combinations or constant scores:",
            Table(pivot, "correlations"),
            *figures,
        ],
    )


def sweep_section() -> Section:
    """The emotion study's grid, as `loramerge sweep collect` left it in metrics/sweep/sweep.csv."""
    from loramerge.sweep import SWEEP_CSV, sweep_tables

    title = "The emotion study's sweep: LoRA settings vs full fine-tuning (DVC experiments)"
    if not SWEEP_CSV.exists():
        return Section(
            "sweep",
            title,
            ["Not run yet: `loramerge sweep queue`, `dvc queue start -j 1`, then `loramerge sweep collect` (README)."],
        )
    table = pd.read_csv(SWEEP_CSV)
    tables = sweep_tables(table)
    setup = ", ".join(sorted({f"`{b}` on {h}" for b, h in table[["backbone", "hardware"]].itertuples(index=False)}))
    return Section(
        "sweep",
        title,
        [
            f"{plural(len(table), 'experiment')} ({setup}), each a `dvc exp run` with `-S` overrides; the data sizes are this "
            "pipeline's (Provenance). Validation, every setting:",
            Table(tables["validation"], "sweep-validation"),
            "Test, the best setting of each family (chosen on validation accuracy):",
            Table(tables["test"], "sweep-test"),
            "The study's published test numbers, for comparison only: BERT-base on a T4 GPU with the full emotion data, "
            "so a different backbone, hardware and data size:",
            Table(tables["study"], "sweep-study"),
        ],
    )


PRECISIONS = ["fp32", "int8", "bf16"]
"""The exported model's variants, in the order the report shows them."""


def export_tables(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shipped models (stage `export`, metrics/export/<combo>.json): per precision the size, mean member
    accuracy and latency, and per member task the accuracy of each precision; empty before any export ran."""
    combos = params.combinations if params.export.combinations is None else params.export.combinations
    models, tasks = [], []
    for combo in combos:
        path = paths.METRICS / "export" / f"{combo}.json"  # the export stage's metrics file
        if not path.exists():
            continue
        export = read_json(path)
        speedup = read_json(paths.merged_metrics(combo))["inference"]["speedup"]
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


def export_section(params: Params) -> Section:
    models, by_task = export_tables(params)
    title = "The shipped multi-task models: fp32, int8, bf16"
    if models.empty:
        return Section("export", title, ["Not exported yet: `dvc repro export` (models/export/<combo>)."])
    return Section(
        "export",
        title,
        [
            "Each combination's merge with the best validation score, exported as one encoder (update folded in) feeding "
            "every member's head (models/export/<combo>, registered in MLflow as loramerge-<combo>). Per precision: size of "
            "the weights, mean test accuracy over the members (at most export.compression_examples texts per task), "
            "latency of one text and throughput of batches of 64 on the machine that ran the stage (Provenance); "
            "one_pass_vs_k_passes is the evaluate stage's measured speed-up of one merged pass over k adapter passes. "
            "int8 is dynamic quantization of the linear layers; bf16 is measured only on CPUs with native bf16.",
            Table(models, "export-table"),
            "Per member task, test accuracy of each precision:",
            Table(by_task, "export-tasks"),
        ],
    )


def provenance_section(params: Params, single: pd.DataFrame) -> Section:
    runtimes = stage_runtimes(params)
    shown = params.model_dump(exclude={"pairs", "triples"})
    return Section(
        "provenance",
        "Provenance",
        [
            f"Git commit {git_commit(Path('.'))}, repro_id {repro_id(Path('.'))}; report built "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; {plural(len(params.pairs), 'pair')} and {plural(len(params.triples), 'triple')}.",
            "Data (data/prepared/<task>/stats.json):",
            Table(data_sizes(params), "data"),
            "Model:",
            Table(model_table(params), "model"),
            "Machine that built this report:",
            Table(machine(), "machine"),
            "Training time per task in seconds (train_metrics.json of each mode):",
            Table(single[["task", "lora_train_s", "head_only_train_s", "full_ft_train_s"]], "training-time"),
            f"Stage runtimes of this repro (MLflow runs tagged repro_id; {runtimes['runtime_s'].sum():.0f} s in all):"
            if len(runtimes)
            else "Stage runtimes: none found in MLflow for this repro_id.",
            Table(runtimes, "stage-runtimes"),
            "Parameters (params.yaml as validated; pairs and triples omitted):",
            Code(yaml.safe_dump(shown, sort_keys=False)),
        ],
    )


def report_sections(results: Results, figures: dict[str, list[Figure]], params: Params) -> list[Section]:
    summary = results.summary
    return [
        Section("headline", "Headline", [headline_text(results.headline), Table(results.headline, "headline-table")]),
        Section(
            "methods",
            "Methods: normalized accuracy and gain retention over pairs and triples (test)",
            [
                "Normalized accuracy = merged test accuracy / single-adapter test accuracy, per member task, averaged per "
                "combination, then over combinations. Gain retention = (merged − head-only) / (single adapter − head-only): the "
                "share of what the adapter added over a trained head that survives the merge, pooled over a combination's tasks "
                "(Σ numerators / Σ denominators, so a task whose adapter barely beat head-only cannot swamp it), then averaged over "
                "combinations. Per-task values are in reports/tables and the summary.",
                Table(summary, "methods-table"),
            ],
        ),
        Section("heatmaps", "Pairwise heat-maps", figures["heatmaps"]),
        Section(
            "triples",
            "Triples ranked",
            [Table(triples_ranked(results.combos), "triples-table")]
            if (results.combos["kind"] == "triple").any()
            else ["No triples configured."],
        ),
        Section(
            "retention",
            "Per-task retention: single vs merged vs head-only",
            [*figures["retention"], Table(results.single, "single-table")],
        ),
        similarity_section(results, figures["similarity"], params),
        sweep_section(),
        export_section(params),
        provenance_section(params, results.single),
    ]


def summary_markdown(params: Params, results: Results) -> str:
    """The original short summary (reports/summary.md), kept for readers and scripts that use it."""
    merged, tasks = results.merged, list(params.tasks)
    columns = [
        "combination",
        "method",
        "task",
        "accuracy",
        "single_accuracy",
        "head_only_accuracy",
        "normalized_accuracy",
        "gain_retention",
        "beats_head_only",
    ]
    every = results.combos.pivot(
        index=["combination", "kind"], columns="method", values="normalized_accuracy"
    ).reset_index()
    return (
        "\n\n".join(
            [
                "# loramerge summary",
                f"Backbone `{params.backbone.name}`, LoRA r={params.lora.rank} alpha={params.lora.alpha} on `{params.lora.targets}`; "
                f"{len(tasks)} tasks, {merged['combination'].nunique()} combinations. Normalized accuracy = merged test accuracy / single-adapter test accuracy.",
                "## Mean normalized accuracy and gain retention per method (test)\n\n"
                + markdown_block(Table(results.summary)),
                "## Single-task models on test: majority class, head-only, full fine-tuning, LoRA\n\n"
                + markdown_block(Table(results.single)),
                "## Merged vs head-only, per task and combination\n\nGain retention = (merged − head-only) / (LoRA − head-only): "
                "the share of what the adapter added over a trained head that survives the merge.\n\n"
                + markdown_block(Table(merged[columns])),
                "## Every combination\n\n" + markdown_block(Table(every)),
                "## Pairwise heat-maps\n\n"
                + "\n".join(f"![{m}](figures/heatmap_{m}.png)" for m in params.merge.methods),
            ]
        )
        + "\n"
    )


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
    training_s = results.single[["lora_train_s", "head_only_train_s", "full_ft_train_s"]].to_numpy().sum()
    files["pipeline"] = {
        "single_acc": round(float(results.single["lora_accuracy"].mean()), 4),
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
                for measure in MEASURES
            }
        )
    for row in results.correlations.itertuples():
        metrics[metric_key("spearman_rho", row.kind, row.method, row.measure)] = row.rho
        metrics[metric_key("spearman_p", row.kind, row.method, row.measure)] = row.p
    return {k: v for k, v in metrics.items() if v is not None and not pd.isna(v)}


def tag_as_summary(run: StageRun) -> None:
    """Mark the run as the repro's summary, so the MLflow UI finds it with `tags.loramerge.summary = 'true'`.

    Through the run's guard, so a tracking failure stays a warning unless tracking.strict.
    """
    run.set_tag(SUMMARY_TAG, "true")


def write_outputs(params: Params) -> Results:
    """Every file of the stage: tables, figures, report.md, report.html, summary.md and metrics.json."""
    results = compute(params)
    write_tables(results, params)
    sections = report_sections(results, write_figures(results, params), params)
    title = "loramerge report"
    write_text(paths.REPORTS / "report.md", render_markdown(title, sections))
    write_text(paths.REPORTS / "report.html", render_html(title, sections))
    write_text(paths.REPORTS / "summary.md", summary_markdown(params, results))
    write_json(paths.REPORTS / "metrics.json", headline_metrics(results))
    with atomic_dir(paths.REPORTS / "headline") as folder:  # whole: no file of a method since removed lingers
        for name, numbers in headline_files(results).items():
            write_json(folder / f"{name}.json", numbers)
    return results


def write_report(params: Params) -> Path:
    """The stage, inside its MLflow run (so the run's duration is the stage's); returns reports/report.md."""
    with stage_run(
        params.tracking, "report", {"tasks": list(params.tasks), "methods": list(params.merge.methods)}
    ) as run:
        tag_as_summary(run)
        results = write_outputs(params)
        run.log_metrics(tracked_metrics(results))
        run.log_artifacts(paths.REPORTS, "reports")
    return paths.REPORTS / "report.md"
