"""The report's figures as PNGs: pairwise heat-maps, per-task retention bars, similarity scatter plots, the curve of
accuracy by number of tasks.

The one module that draws, on matplotlib's Agg backend: the stage runs headless (DVC, CI, a remote machine).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from loramerge.atomic import atomic_file
from loramerge.lists import split_combination
from loramerge.records import SIMILARITY_MEASURES
from loramerge.report.tables import KINDS

NORMALIZED_LABEL = "mean normalized accuracy\n(merged / single, ratio)"


def save_figure(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, dpi=100)
    plt.close(figure)
    return path


def centred_scale(values: np.ndarray, centre: float = 1.0, least: float = 0.01) -> tuple[float, float]:
    """A colour range symmetric about `centre` that just holds every value: normalized accuracies lie within a few
    points of 1, so a 0-1 scale would paint every cell alike; `least` keeps a grid of exact 1s from a zero range."""
    finite = values[np.isfinite(values)]
    spread = max(float(np.abs(finite - centre).max()) if finite.size else 0.0, least)
    return centre - spread, centre + spread


def pair_heatmap(merged: pd.DataFrame, method: str, tasks: list[str], path: Path) -> Path:
    """Mean normalized accuracy of each pair, as a symmetric task × task grid, coloured red (lost) to blue (gained)
    around 1 (the single adapters), the scale spanning the data."""
    grid = pd.DataFrame(np.nan, index=tasks, columns=tasks)
    pairs = merged[(merged["kind"] == "pair") & (merged["method"] == method)]
    for combo, score in pairs.groupby("combination")["normalized_accuracy"].mean().items():
        a, b = split_combination(combo)
        grid.loc[a, b] = grid.loc[b, a] = score
    figure, axes = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.0 * len(tasks) + 1.5))
    low, high = centred_scale(grid.to_numpy(dtype=float))
    image = axes.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=low, vmax=high)
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
                    color="white" if abs(grid.iat[i, j] - 1.0) > 0.6 * (high - 1.0) else "black",
                )
    axes.set_xlabel("task")
    axes.set_ylabel("task")
    axes.set_title(f"{method}\npair mean normalized accuracy (merged / single)", fontsize="medium")
    figure.colorbar(
        image, ax=axes, label=f"normalized accuracy (ratio; 1 = single adapter, scale {low:.3f}-{high:.3f})"
    )
    return save_figure(figure, path)


def retention_bars(retention: pd.DataFrame, method: str, path: Path) -> Path:
    """Per task, grouped bars: head-only, full fine-tuning, single adapter, and merged (pairs, triples), each with
    its 95% interval (`<column>_ci_low`/`_ci_high`) as an error bar."""
    legend = {
        "head_only_score": "head-only (frozen encoder)",
        "full_ft_score": "full fine-tuning",
        "lora_score": "single LoRA adapter",
        "merged_pairs_score": f"merged in pairs ({method})",
        "merged_triples_score": f"merged in triples ({method})",
    }
    figure, axes = plt.subplots(figsize=(2.0 * len(retention) + 5, 4.5))
    bars = [c for c in legend if c in retention.columns]
    retention.set_index("task")[bars].rename(columns=legend).plot.bar(ax=axes, rot=0, width=0.8)
    for column, container in zip(bars, axes.containers):
        if f"{column}_ci_low" in retention.columns:
            centres = [bar.get_x() + bar.get_width() / 2 for bar in container]
            below = (retention[column] - retention[f"{column}_ci_low"]).clip(lower=0)
            above = (retention[f"{column}_ci_high"] - retention[column]).clip(lower=0)
            axes.errorbar(
                centres, retention[column], yerr=[below, above], fmt="none", ecolor="black", capsize=2, lw=0.8
            )
    axes.set_xlabel("task")
    axes.set_ylabel("test accuracy (fraction correct)")
    axes.set_ylim(0, 1.05)
    axes.set_title(
        f"Per task: single vs merged ({method}, mean over the combinations with the task) vs head-only; 95% intervals",
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
        len(kinds), len(SIMILARITY_MEASURES), figsize=(3.4 * len(SIMILARITY_MEASURES), 3.4 * len(kinds)), squeeze=False
    )
    for row, kind in enumerate(kinds):
        points = joined[joined["kind"] == kind]
        for column, (measure, description) in enumerate(SIMILARITY_MEASURES.items()):
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


def size_curve(sizes: pd.DataFrame, path: Path) -> Path:
    """Per method, what a merge keeps as tasks are added: mean normalized accuracy and gain retention by number of
    tasks merged, each with its 95% interval; the y-axes span the data (1.0 = the single adapters), so the
    differences between methods show."""
    measures = {
        "normalized_accuracy": NORMALIZED_LABEL,
        "gain_retention": "mean gain retention\n(share of the adapters' gain kept)",
    }
    figure, axes = plt.subplots(1, len(measures), figsize=(11, 4.2))
    methods = list(dict.fromkeys(sizes["method"]))
    spread = 0.12 * (np.arange(len(methods)) - (len(methods) - 1) / 2) / max(len(methods), 1)
    for ax, (measure, label) in zip(axes, measures.items()):
        for offset, method in zip(spread, methods):
            rows = sizes[sizes["method"] == method]
            below = (rows[measure] - rows[f"{measure}_ci_low"]).clip(lower=0)
            above = (rows[f"{measure}_ci_high"] - rows[measure]).clip(lower=0)
            ax.errorbar(
                rows["tasks"] + offset, rows[measure], yerr=[below, above], marker="o", capsize=3, label=method
            )
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(sorted(sizes["tasks"].unique()))
        ax.set_xlabel("tasks merged into one model")
        ax.set_ylabel(label, fontsize="small")
    axes[0].set_title("normalized accuracy by number of tasks (95% intervals)", fontsize="medium")
    axes[1].set_title("gain retention by number of tasks (95% intervals)", fontsize="medium")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return save_figure(figure, path)
