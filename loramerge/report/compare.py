"""Two reports side by side: how each merge method's test scores differ between two runs of the pipeline.

`loramerge compare <reports A> <reports B>` reads each run's reports/tables/methods.csv (written by the
`report` stage, with its intervals) and prints, per method present in both, the mean normalized
accuracy and gain retention of pairs and triples in each run and B − A. Used for studies that change one
setting (the LoRA target preset, the task list) and keep the rest; the intervals are each run's own
paired bootstrap over its test examples.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loramerge.report.sections import estimate

MEASURES = ["normalized_accuracy_pair", "normalized_accuracy_triple", "gain_retention_pair", "gain_retention_triple"]


def read_methods(reports: Path) -> pd.DataFrame:
    path = Path(reports) / "tables" / "methods.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a folder the `report` stage wrote (reports/)")
    return read_table(reports, "methods.csv").set_index("method")


def compare_methods(first: Path, second: Path, labels: tuple[str, str]) -> pd.DataFrame:
    """Per method in both runs and measure: the value [interval] in each run and the difference second − first."""
    a, b = read_methods(first), read_methods(second)
    rows = []
    for method in [m for m in b.index if m in a.index]:
        row = {"method": method}
        for measure in MEASURES:
            for label, table in zip(labels, (a, b)):
                value = table.loc[method]
                row[f"{measure} ({label})"] = "–" if pd.isna(value[measure]) else estimate(value, measure)
            row[f"{measure} Δ"] = b.loc[method, measure] - a.loc[method, measure]
        rows.append(row)
    return pd.DataFrame(rows)


RENAMED = {
    "accuracy": "score",
    "single_accuracy": "single_score",
    "merged_accuracy": "merged_score",
    "lora_accuracy": "lora_score",
    "head_only_accuracy": "head_only_score",
    "full_ft_accuracy": "full_ft_score",
}
"""Columns that reports before 2026-12-03 named `accuracy` though they hold the task's score (entity F1 for a token
task): the studies' committed folders keep them, and compare reads both."""


def read_table(folder: str | Path, name: str) -> pd.DataFrame:
    """A report folder's tables/<name>, its columns under today's names."""
    return pd.read_csv(Path(folder) / "tables" / name).rename(columns=current_name)


def current_name(column: str) -> str:
    """`column` as today's tables name it: RENAMED's old names, with their `_ci_low`/`_ci_high` intervals."""
    for old, new in RENAMED.items():
        if column == old or column.startswith(f"{old}_ci_"):
            return new + column[len(old) :]
    return column


SINGLE_MEASURES = ["lora_score", "head_only_score", "full_ft_score"]
"""Per-task test accuracies of tables/single.csv: what the merges start from, and the baselines."""


def compare_singles(first: Path, second: Path, labels: tuple[str, str]) -> pd.DataFrame:
    """Per task in both runs: each accuracy [interval] in each run and second − first, and the adapters' share of
    trainable parameters (a study that changes the LoRA targets changes the adapters before any merge)."""
    a, b = (read_table(r, "single.csv").set_index("task") for r in (first, second))
    rows = []
    for task in [t for t in b.index if t in a.index]:
        row = {"task": task}
        for measure in SINGLE_MEASURES:
            for label, table in zip(labels, (a, b)):
                row[f"{measure} ({label})"] = estimate(table.loc[task], measure)
            row[f"{measure} Δ"] = b.loc[task, measure] - a.loc[task, measure]
        for label, table in zip(labels, (a, b)):
            row[f"trainable % ({label})"] = table.loc[task, "lora_trainable_percent"]
        rows.append(row)
    return pd.DataFrame(rows)


def compare_merged_accuracy(first: Path, second: Path, labels: tuple[str, str]) -> pd.DataFrame:
    """Per method in both runs: the merged models' plain test accuracy, the mean over every (combination, task) of
    pairs and of triples, in each run and second − first. Normalized accuracy divides by each run's own single
    adapters, so a run with stronger adapters can merge to better models yet show a lower ratio; this says which."""
    a, b = (read_table(r, "merged.csv") for r in (first, second))
    means = [frame.groupby(["method", "kind"])["score"].mean().unstack("kind") for frame in (a, b)]
    rows = []
    for method in [m for m in means[1].index if m in means[0].index]:
        row = {"method": method}
        for kind in ("pair", "triple"):
            for label, table in zip(labels, means):
                row[f"{kind}s ({label})"] = table.loc[method].get(kind, float("nan"))
            row[f"{kind}s Δ"] = row[f"{kind}s ({labels[1]})"] - row[f"{kind}s ({labels[0]})"]
        rows.append(row)
    return pd.DataFrame(rows)


def compare_merged_scores(first: Path, second: Path, labels: tuple[str, str]) -> pd.DataFrame:
    """Per task: how far every merged score of it (each combination and method) moved between the runs, against
    the task's sampling noise, the half-width of its single adapter's 95% interval in the first run (the same test
    examples). Made for runs that differ only in how the same models are computed (e.g. evaluate.precision), where
    every move is that setting's doing."""
    a, b = (read_table(r, "merged.csv") for r in (first, second))
    single = read_table(first, "single.csv").set_index("task")
    keys = ["combination", "method", "task"]
    both = a.merge(b, on=keys, suffixes=(" a", " b"))
    both["delta"] = both["score b"] - both["score a"]
    rows = []
    for task, scores in both.groupby("task"):
        noise = (single.loc[task, "lora_score_ci_high"] - single.loc[task, "lora_score_ci_low"]) / 2
        rows.append(
            {
                "task": task,
                "merged scores": len(scores),
                "changed": int((scores["delta"] != 0).sum()),
                f"mean Δ ({labels[1]} − {labels[0]})": scores["delta"].mean(),
                "largest |Δ|": scores["delta"].abs().max(),
                "noise (95% half-width)": noise,
                "beyond noise": int((scores["delta"].abs() > noise).sum()),
            }
        )
    return pd.DataFrame(rows)


OPTIONAL_TABLES = [
    (("single.csv",), "single adapters and baselines (test accuracy)", compare_singles, "+.3f"),
    (
        ("merged.csv",),
        "merged models' test accuracy (mean over each combination's tasks)",
        compare_merged_accuracy,
        ".3f",
    ),
    (
        ("merged.csv", "single.csv"),
        "every merged score, per task: how far it moved against its sampling noise",
        compare_merged_scores,
        ".3f",
    ),
]
"""Tables shown when both runs' reports have the CSVs they read (older report folders may lack one)."""


def comparison_markdown(first: Path, second: Path, labels: tuple[str, str]) -> str:
    table = compare_methods(first, second, labels)
    parts = [f"# {labels[1]} vs {labels[0]}: merge methods on test\n"]
    for csvs, title, compare, number_format in OPTIONAL_TABLES:
        if all((Path(r) / "tables" / csv).exists() for r in (first, second) for csv in csvs):
            shown = compare(first, second, labels).to_markdown(index=False, floatfmt=number_format)
            parts.append(f"## {title}\n\n{shown}\n")
    for measure in MEASURES:
        columns = ["method", f"{measure} ({labels[0]})", f"{measure} ({labels[1]})", f"{measure} Δ"]
        parts.append(f"## {measure}\n\n" + table[columns].to_markdown(index=False, floatfmt="+.3f") + "\n")
    return "\n".join(parts)
