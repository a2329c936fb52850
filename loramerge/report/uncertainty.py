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

Scores are ratios of sums (loramerge/tasktypes.py): accuracy, or a token task's entity micro-F1, is
Σ points / Σ possible over the drawn examples (sentences), so both resample the same way. McNemar's
test pairs examples scored in full (for NER: every entity of the sentence found and none invented).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from loramerge import paths
from loramerge.config import Params
from loramerge.lists import combination_kind, split_combination
from loramerge.records import BASELINE_PREDICTIONS, MERGED_PREDICTIONS
from loramerge.report.statistics import holm

LEVEL = 0.95
"""Coverage of every interval the report shows."""
SINGLE, HEAD_ONLY, FULL = "single", "head_only", "full"


@dataclass
class Outcomes:
    """Per task, each test example's points under each model: columns `single`, `head_only`, `full` and one per
    (combination, method) that includes the task, rows in the prepared test split's order; `possible` the same
    tables of possible points (loramerge/tasktypes.py: a score is Σ points / Σ possible). No `possible`: every
    example is worth one point (accuracy, and the points say which examples were right)."""

    tasks: dict[str, pd.DataFrame]
    possible: dict[str, pd.DataFrame] | None = None

    def possible_points(self, task: str) -> pd.DataFrame:
        if self.possible is None:
            return pd.DataFrame(1.0, index=self.tasks[task].index, columns=self.tasks[task].columns)
        return self.possible[task]

    def correct(self, task: str, model) -> np.ndarray:
        """Which examples `model` scored in full (a text's label; a sentence's entities, all and only)."""
        return (self.tasks[task][model] == self.possible_points(task)[model]).to_numpy(bool)

    def score(self, task: str, model) -> float:
        return float(self.tasks[task][model].sum() / self.possible_points(task)[model].sum())


def read_outcomes(params: Params) -> Outcomes:
    """The evaluate stages' per-example tables, joined per task by example."""
    points, possible = {}, {}
    for task in params.tasks:
        single = pd.read_csv(paths.single_predictions(task))
        points[task], possible[task] = {SINGLE: single["points"].to_numpy()}, {SINGLE: single["possible"].to_numpy()}
        baselines = BASELINE_PREDICTIONS.read(paths.baseline_predictions(task))
        for mode, rows in baselines.groupby("mode", sort=False):
            rows = rows.sort_values("example")
            points[task][mode], possible[task][mode] = rows["points"].to_numpy(), rows["possible"].to_numpy()
    for combo in params.combinations:
        merged = MERGED_PREDICTIONS.read(paths.merged_predictions(combo))
        for (method, task), rows in merged.groupby(["method", "task"], sort=False):
            rows = rows.sort_values("example")
            points[task][(combo, method)] = rows["points"].to_numpy()
            possible[task][(combo, method)] = rows["possible"].to_numpy()
    return Outcomes(
        {task: pd.DataFrame(columns) for task, columns in points.items()},
        {task: pd.DataFrame(columns) for task, columns in possible.items()},
    )


def resample_counts(examples: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples × examples): how often each example is drawn in each replicate of a bootstrap of the split."""
    draws = rng.integers(0, examples, size=(resamples, examples))
    counts = np.zeros((resamples, examples), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def replicate_accuracies(outcomes: Outcomes, resamples: int, seed: int) -> dict[str, pd.DataFrame]:
    """Per task, every model's score (accuracy, or entity micro-F1) in each replicate (rows) and on the full split
    (row "point"): Σ drawn points / Σ drawn possible points. One draw per task and replicate, shared by all its
    models: a seed gives the same intervals every time."""
    found = {}
    for index, (task, points) in enumerate(outcomes.tasks.items()):
        counts = resample_counts(len(points), resamples, np.random.default_rng([seed, index]))
        earned = points.to_numpy(dtype=np.float64)
        possible = outcomes.possible_points(task).to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # a draw with nothing to find scores NaN, not 0
            replicates = pd.DataFrame((counts @ earned) / (counts @ possible), columns=points.columns)
            whole = earned.sum(axis=0) / possible.sum(axis=0)
        found[task] = pd.concat([replicates, pd.DataFrame([whole], columns=points.columns, index=["point"])])
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
            ratios = pd.concat([(m / s).where(s > 0) for m, s in zip(merged, single)], axis=1)
            columns[(combo, method, "normalized_accuracy")] = ratios.mean(
                axis=1
            )  # as metrics.mean_normalized_accuracy
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
    examples (McNemar exact on the examples scored in full, Holm-adjusted over every row): where merging cost
    accuracy (a token task: entity micro-F1) beyond chance."""
    rows = []
    for combo in params.combinations:
        for task in split_combination(combo):
            merged, single = outcomes.correct(task, (combo, method)), outcomes.correct(task, SINGLE)
            single_score, merged_score = outcomes.score(task, SINGLE), outcomes.score(task, (combo, method))
            rows.append(
                {
                    "combination": combo,
                    "task": task,
                    "single_score": single_score,
                    "merged_score": merged_score,
                    "change_points": 100 * (merged_score - single_score),
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
            (SINGLE, "lora_score"),
            (HEAD_ONLY, "head_only_score"),
            (FULL, "full_ft_score"),
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
                row[f"merged_{kind}s_score_ci_low"], row[f"merged_{kind}s_score_ci_high"] = interval(mean)
        rows.append(row)
    return pd.DataFrame(rows)


def size_intervals(replicates: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method and number of tasks merged: the mean over those combinations of normalized accuracy and gain
    retention, with 95% intervals from the same paired draws (how much of each task a model keeps as tasks are
    added); methods in `merge.methods` order, sizes ascending."""
    size = {c: len(split_combination(c)) for c in dict.fromkeys(column[0] for column in replicates.columns)}
    rows = []
    for tasks in sorted(set(size.values())):
        chosen = replicates[[c for c in replicates.columns if size[c[0]] == tasks]]
        means = chosen.T.groupby(level=[1, 2]).mean().T
        for method in methods:
            row = {"method": method, "tasks": tasks, "combinations": sum(1 for s in size.values() if s == tasks)}
            for measure in ("normalized_accuracy", "gain_retention"):
                values = means[(method, measure)]
                low, high = interval(values)
                row |= {measure: float(values["point"]), f"{measure}_ci_low": low, f"{measure}_ci_high": high}
            rows.append(row)
    return pd.DataFrame(rows)


def members_table(accuracy: dict[str, pd.DataFrame], combo: str, method: str) -> pd.DataFrame:
    """Per member task of one merge: the merged model's test score beside the single adapter's, head-only's and full
    fine-tuning's, and merged / single, each with its 95% interval (the all-task model's scorecard)."""
    rows = []
    for task in split_combination(combo):
        table = accuracy[task]
        models = {"merged": table[(combo, method)], "single": table[SINGLE], "head_only": table[HEAD_ONLY]}
        models |= {
            "full_ft": table[FULL],
            "normalized": (table[(combo, method)] / table[SINGLE]).where(table[SINGLE] > 0),
        }
        row = {"task": task}
        for name, values in models.items():
            low, high = interval(values)
            row |= {name: float(values["point"]), f"{name}_ci_low": low, f"{name}_ci_high": high}
        rows.append(row)
    return pd.DataFrame(rows)
