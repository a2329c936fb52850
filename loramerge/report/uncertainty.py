"""How sure the report can be: paired bootstrap intervals over test examples, and paired tests between models.

Every model of a task (its single adapter, head-only, full fine-tuning, every merged model that
includes it) is scored on the same test examples, so they are resampled *jointly*: replicate b
draws one multiset of example indices per task and every model's accuracy on that task is read
from the same draw. Ratios (normalized accuracy = merged / single) and pooled gain retention
(Σ(merged − head-only) / Σ(single − head-only)) are then formed inside each replicate, and a method's
mean over combinations uses the same draws for a task wherever it appears. The 95% interval is the
2.5 and 97.5 percentiles of the replicates (percentile bootstrap); the point estimate is the same
formula on the full test split, identical to the report's tables.

Method comparisons: the difference in mean normalized accuracy (over every combination, each once)
between a method and the best one, bootstrapped with the same draws; two-sided p = 2·min(P*(d ≤ 0),
P*(d ≥ 0)) with the usual +1 correction, Holm-adjusted over the comparisons shown. Per task, the
merged model against the single adapter: McNemar's exact test on the discordant examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from loramerge import paths
from loramerge.config import Params, combination_kind, split_combination
from loramerge.records import BASELINE_PREDICTIONS, MERGED_PREDICTIONS
from loramerge.report.statistics import holm

LEVEL = 0.95
"""Coverage of every interval the report shows."""
SINGLE, HEAD_ONLY, FULL = "single", "head_only", "full"


@dataclass
class Outcomes:
    """Per task, which test examples each model got right: columns `single`, `head_only`, `full` and one per
    (combination, method) that includes the task, rows in the prepared test split's order."""

    tasks: dict[str, pd.DataFrame]


def read_outcomes(params: Params) -> Outcomes:
    """The evaluate stages' per-example tables, joined per task by example."""
    tasks = {}
    for task in params.tasks:
        single = pd.read_csv(paths.single_predictions(task))
        columns = {SINGLE: (single["actual"] == single["predicted"]).to_numpy()}
        baselines = BASELINE_PREDICTIONS.read(paths.baseline_predictions(task)).sort_values("example")
        columns |= {HEAD_ONLY: baselines["head_only"].to_numpy(), FULL: baselines["full"].to_numpy()}
        tasks[task] = columns
    for combo in params.combinations:
        merged = MERGED_PREDICTIONS.read(paths.merged_predictions(combo))
        for (method, task), rows in merged.groupby(["method", "task"], sort=False):
            tasks[task][(combo, method)] = rows.sort_values("example")["correct"].to_numpy()
    return Outcomes({task: pd.DataFrame(columns) for task, columns in tasks.items()})


def resample_counts(examples: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples × examples): how often each example is drawn in each replicate of a bootstrap of the split."""
    draws = rng.integers(0, examples, size=(resamples, examples))
    counts = np.zeros((resamples, examples), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def replicate_accuracies(outcomes: Outcomes, resamples: int, seed: int) -> dict[str, pd.DataFrame]:
    """Per task, every model's accuracy in each replicate (rows) and on the full split (row "point"). One draw
    per task and replicate, shared by all its models: a seed gives the same intervals every time."""
    found = {}
    for index, (task, correct) in enumerate(outcomes.tasks.items()):
        counts = resample_counts(len(correct), resamples, np.random.default_rng([seed, index]))
        matrix = correct.to_numpy(dtype=np.float64)
        replicates = pd.DataFrame(counts @ matrix / len(correct), columns=correct.columns)
        found[task] = pd.concat(
            [replicates, pd.DataFrame([matrix.mean(axis=0)], columns=correct.columns, index=["point"])]
        )
    return found


def interval(values: pd.Series) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(values.drop("point").to_numpy(dtype=float), [tail, 100 - tail])
    return float(low), float(high)


def combination_replicates(accuracy: dict[str, pd.DataFrame], params: Params) -> pd.DataFrame:
    """Columns (combination, method, measure) with measure normalized_accuracy / gain_retention; rows the
    replicates and "point"."""
    columns = {}
    for combo in params.combinations:
        members = split_combination(combo)
        for method in params.merge.methods:
            merged = [accuracy[t][(combo, method)] for t in members]
            single = [accuracy[t][SINGLE] for t in members]
            head = [accuracy[t][HEAD_ONLY] for t in members]
            columns[(combo, method, "normalized_accuracy")] = sum(m / s for m, s in zip(merged, single)) / len(members)
            gain = sum(s - h for s, h in zip(single, head))
            columns[(combo, method, "gain_retention")] = (sum(m - h for m, h in zip(merged, head)) / gain).where(
                gain > 0
            )
    return pd.DataFrame(columns)


def combination_intervals(replicates: pd.DataFrame) -> pd.DataFrame:
    """Per (combination, method): ci_low/ci_high of normalized accuracy and gain retention."""
    rows = {}
    for (combo, method, measure), values in replicates.items():
        low, high = interval(values)
        rows[(combo, method)] = rows.get((combo, method), {}) | {f"{measure}_ci_low": low, f"{measure}_ci_high": high}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["combination", "method"])
    return frame.reset_index()


def method_means(replicates: pd.DataFrame, kind: str | None) -> pd.DataFrame:
    """Per method (columns) × measure: the mean over combinations of one kind (all with None), per replicate."""
    keep = [c for c in replicates.columns if kind is None or combination_kind(c[0]) == kind]
    chosen = replicates[keep]
    return chosen.T.groupby(level=[1, 2]).mean().T


def method_intervals(replicates: pd.DataFrame, kinds: tuple[str, ...]) -> pd.DataFrame:
    """Per method: ci_low/ci_high of its mean normalized accuracy and gain retention over pairs and over triples."""
    rows: dict[str, dict[str, float]] = {}
    for kind in kinds:
        if not any(combination_kind(c[0]) == kind for c in replicates.columns):
            continue
        for (method, measure), values in method_means(replicates, kind).items():
            low, high = interval(values)
            rows[method] = rows.get(method, {}) | {f"{measure}_{kind}_ci_low": low, f"{measure}_{kind}_ci_high": high}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method").reset_index()


def compare_with_best(replicates: pd.DataFrame, best: str, methods: list[str], significance: float) -> pd.DataFrame:
    """Each method against `best`: the difference in mean normalized accuracy over every combination, its interval,
    the paired-bootstrap p-value, Holm-adjusted over the methods compared, and whether it is within noise."""
    means = method_means(replicates, None).xs("normalized_accuracy", axis=1, level=1)
    rows = []
    for method in methods:
        if method == best:
            continue
        difference = means[method] - means[best]
        draws = difference.drop("point").to_numpy(dtype=float)
        below, above = (np.sum(draws <= 0) + 1) / (len(draws) + 1), (np.sum(draws >= 0) + 1) / (len(draws) + 1)
        low, high = interval(difference)
        rows.append(
            {
                "method": method,
                "difference": float(difference["point"]),
                "ci_low": low,
                "ci_high": high,
                "p": min(1.0, 2 * min(below, above)),
            }
        )
    table = pd.DataFrame(rows, columns=["method", "difference", "ci_low", "ci_high", "p"])
    table["p_holm"] = holm(table["p"])
    table["within_noise"] = table["p_holm"] >= significance
    return table


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> float:
    """Exact two-sided McNemar test of two models on the same examples: the discordant examples (one right, the
    other wrong) split 50/50 under the null; p = the binomial test of that split (1 when there are none)."""
    only_first = int(np.sum(first & ~second))
    only_second = int(np.sum(~first & second))
    if only_first + only_second == 0:
        return 1.0
    return float(binomtest(only_second, only_first + only_second, 0.5).pvalue)


def merging_cost(outcomes: Outcomes, method: str, params: Params, significance: float) -> pd.DataFrame:
    """Per (combination, member task): `method`'s merged model against the task's single adapter on the same test
    examples (McNemar exact, Holm-adjusted over every row): where merging cost accuracy beyond chance."""
    rows = []
    for combo in params.combinations:
        for task in split_combination(combo):
            correct = outcomes.tasks[task]
            merged, single = correct[(combo, method)].to_numpy(bool), correct[SINGLE].to_numpy(bool)
            rows.append(
                {
                    "combination": combo,
                    "task": task,
                    "single_accuracy": single.mean(),
                    "merged_accuracy": merged.mean(),
                    "change_points": 100 * (merged.mean() - single.mean()),
                    "only_single_right": int(np.sum(single & ~merged)),
                    "only_merged_right": int(np.sum(~single & merged)),
                    "p_mcnemar": mcnemar_exact(single, merged),
                }
            )
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_mcnemar"])
    table["significant"] = table["p_holm"] < significance
    return table


def task_intervals(accuracy: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per task: the interval of the single adapter's, head-only's and full fine-tuning's test accuracy."""
    rows = []
    for task, table in accuracy.items():
        row = {"task": task}
        for model, column in (
            (SINGLE, "lora_accuracy"),
            (HEAD_ONLY, "head_only_accuracy"),
            (FULL, "full_ft_accuracy"),
        ):
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = interval(table[model])
        rows.append(row)
    return pd.DataFrame(rows)


def merged_task_intervals(accuracy: dict[str, pd.DataFrame], method: str, params: Params) -> pd.DataFrame:
    """Per task: the interval of `method`'s merged accuracy on it, averaged over the pairs and over the triples
    that include it (the retention figure's merged bars)."""
    rows = []
    for task, table in accuracy.items():
        row = {"task": task}
        for kind in ("pair", "triple"):
            combos = [c for c in params.combinations if combination_kind(c) == kind and task in split_combination(c)]
            if combos:
                mean = sum(table[(c, method)] for c in combos) / len(combos)
                row[f"merged_{kind}s_accuracy_ci_low"], row[f"merged_{kind}s_accuracy_ci_high"] = interval(mean)
        rows.append(row)
    return pd.DataFrame(rows)
