"""reports/summary.md: the report's answer on one screen. The best method and the shipped model first, each number
with its interval in one cell, and only tables narrow enough for a terminal (the full tables are reports/tables/*.csv
and reports/report.md)."""

from __future__ import annotations

import pandas as pd

from loramerge.config import Params
from loramerge.report.document import Table, markdown_block
from loramerge.report.provenance import provenance_line
from loramerge.report.results import Results
from loramerge.report.sections import headline_text, with_intervals

WIDTH = 120
"""The widest line a summary table may have: a terminal's width."""
SHIPPED_COLUMNS = ["task", "merged", "single", "normalized", "head_only"]
METHOD_COLUMNS = ["method", "validation_normalized_accuracy", "normalized_accuracy_pair", "normalized_accuracy_triple"]
SINGLE_COLUMNS = [
    "task",
    "test_examples",
    "majority_accuracy",
    "head_only_score",
    "full_ft_score",
    "lora_score",
]


def shown(frame: pd.DataFrame, columns: list[str]) -> str:
    """The columns (those present, with their intervals folded in) as a markdown table."""
    intervals = [f"{c}_{end}" for c in columns for end in ("ci_low", "ci_high")]
    kept = frame[[c for c in dict.fromkeys([*columns, *intervals]) if c in frame.columns]]
    return markdown_block(Table(with_intervals(kept)))


def shipped_text(params: Params, results: Results) -> str:
    """Which models the export ships, how to use them, and the all-task model's scorecard when there is one."""
    combos = params.shipped()
    if not combos:
        return "Nothing is shipped: `export.combinations` is empty (add `all`, then `loramerge combos`)."
    names = ", ".join(f"`loramerge-{c}` (models/export/{c})" for c in combos)
    text = (
        f"Shipped, registered in MLflow with the `champion` alias: {names}. Label texts for every task in one pass: "
        f'`loramerge predict --model models/export/{combos[0]} --text "..."`.'
    )
    if results.everything_method is None:
        return text
    return (
        f"{text}\n\nThe merge of all {len(params.tasks)} tasks ({results.everything_method}, chosen on validation), "
        "per task: test score merged, single adapter, merged / single, head-only (95% intervals):\n\n"
        + shown(results.everything, SHIPPED_COLUMNS)
    )


def summary_markdown(params: Params, results: Results) -> str:
    best = results.headline["best_method"].iloc[0]
    per_combination = results.merged[results.merged["method"] == best]
    blocks = [
        "# loramerge summary",
        headline_text(results.headline, results.identical, results.summary),
        shipped_text(params, results),
        "## Methods: mean normalized accuracy (merged / single-adapter test accuracy)\n\n"
        + shown(results.summary, METHOD_COLUMNS),
        "## By number of tasks merged (normalized accuracy and gain retention)\n\n"
        "Gain retention = (merged − head-only) / (single adapter − head-only): the share of what the adapter added over "
        "a trained head that survives the merge.\n\n" + shown(results.sizes, list(results.sizes.columns)),
        "## Single-task models on test\n\n" + shown(results.single, SINGLE_COLUMNS),
        f"## {best}, per combination and task\n\n"
        + shown(per_combination, ["combination", "task", "score", "normalized_accuracy", "gain_retention"]),
        "## Pairwise heat-maps\n\n" + "\n".join(f"![{m}](figures/heatmap_{m}.png)" for m in params.merge.methods),
        provenance_line(params) + " Every method, task and combination: reports/report.md and reports/tables/*.csv.",
    ]
    return "\n\n".join(blocks) + "\n"
