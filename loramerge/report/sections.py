"""What the report says: its sections in order (headline, methods, sizes, joint, heat-maps, triples, retention, seeds,
similarity, then the closing sweep, export and provenance of report/appendix.py), each a title over its prose,
tables and figures (reports/summary.md, the short version, is report/summary.py).

The wording lives here, apart from the numbers (tables, statistics, results) and from the rendering (document):
nothing here reads a file.
"""

from __future__ import annotations

import pandas as pd

from loramerge.config import Params
from loramerge.records import DATA_FREE, SIMILARITY_MEASURES
from loramerge.report.appendix import export_section, provenance_section, sweep_section
from loramerge.report.document import Figure, Section, Table, plural
from loramerge.report.provenance import provenance_line
from loramerge.report.results import Results
from loramerge.report.statistics import association_text, verdict
from loramerge.report.tables import KINDS


def with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """For display: every column with `<column>_ci_low`/`_ci_high` beside it shown as "0.975 [0.962, 0.987]"
    (the CSVs under reports/tables keep the three numbers apart)."""
    shown = frame.copy()
    for column in frame.columns:
        low, high = f"{column}_ci_low", f"{column}_ci_high"
        if low in frame.columns and high in frame.columns:
            shown[column] = [
                "–" if pd.isna(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                for v, lo, hi in zip(frame[column], frame[low], frame[high])
            ]
            shown = shown.drop(columns=[low, high])
    return shown


def estimate(row: pd.Series, column: str) -> str:
    """A number with its interval (when the row has one), as the tables show it."""
    if f"{column}_ci_low" not in row:
        return f"{row[column]:.3f}"
    return f"{row[column]:.3f} [{row[f'{column}_ci_low']:.3f}, {row[f'{column}_ci_high']:.3f}]"


def headline_text(headline: pd.DataFrame, identical: dict[str, list[str]], summary: pd.DataFrame) -> str:
    row = headline.iloc[0]
    parts = [
        f"{estimate(row, f'normalized_accuracy_{k}s')} over {plural(row[f'{k}s'], k)}" for k in KINDS if row[f"{k}s"]
    ]
    twins = identical.get(row["best_method"], [])
    return (
        f"Best method: {row['best_method']}, with mean normalized accuracy (merged / single-adapter test accuracy) "
        f"{' and '.join(parts)} ({row['normalized_accuracy_all']:.3f} over all combinations, each weighing once). "
        f"It is chosen by its mean normalized validation accuracy ({row['validation_normalized_accuracy']:.3f}), never "
        "by test; a tie goes to the first method in merge.methods."
        + (f" {', '.join(twins)} gave exactly the same merges (shown once)." if twins else "")
        + data_free_alternative(summary, row["best_method"])
    )


def noise_text(comparison: pd.DataFrame, best: str, significance: float) -> str:
    """Which methods the test data cannot tell apart from the best, in words."""
    if comparison.empty:
        return ""
    tied = comparison[comparison["within_noise"]]["method"].tolist()
    how = (
        "paired bootstrap of the mean normalized accuracy over every combination, Holm-adjusted over "
        f"{plural(len(comparison), 'comparison')}, α = {significance}"
    )
    if not tied:
        return f"Every other method is worse than {best} beyond noise ({how})."
    verb = "is" if len(tied) == 1 else "are"
    return (
        f"{', '.join(tied)} {verb} within noise of {best} ({how}): on these test sets the data cannot rank "
        f"{'it' if len(tied) == 1 else 'them'} below the best."
    )


def data_free_alternative(summary: pd.DataFrame, best: str) -> str:
    """When the best method read data beyond the adapters, the sentence naming the best one that did not."""
    chosen = summary[summary["method"] == best].iloc[0]
    free = summary[summary["data"] == DATA_FREE]
    if chosen["data"] == DATA_FREE or free.empty:
        return ""
    alternative = free.iloc[0]  # the summary is ranked by validation, the headline's criterion
    tests = [
        f"{alternative[f'normalized_accuracy_{k}']:.3f} on {k}s" for k in KINDS if f"normalized_accuracy_{k}" in free
    ]
    return (
        f" It is data-aware (it reads {chosen['data']}); the best data-free method is {alternative['method']} "
        f"(validation {alternative['validation_normalized_accuracy']:.3f}; test {', '.join(tests)})."
    )


def shown_once(summary: pd.DataFrame, identical: dict[str, list[str]]) -> pd.DataFrame:
    """The methods table with one row per distinct result, named after every method that gave it."""
    kept = summary[summary["method"].isin(identical)].copy()
    kept["method"] = [" = ".join([m, *identical[m]]) for m in kept["method"]]
    return kept


def identical_note(identical: dict[str, list[str]]) -> list[str]:
    """One sentence naming the methods whose results were exactly another's, or nothing."""
    pairs = [f"{', '.join(twins)} = {method}" for method, twins in identical.items() if twins]
    if not pairs:
        return []
    return [
        f"Identical results, shown once: {'; '.join(pairs)} (every task's test accuracy and macro-F1 equal in every "
        "combination). KnOTS' alignment of a plain sum changes nothing, so KnOTS-TA equals "
        "task arithmetic by construction: a check that the alignment is lossless, not a second method."
    ]


def association_shown(table: pd.DataFrame) -> pd.DataFrame:
    """The association table as read: ρ and the contrast as "value [low, high]", p-values to two digits."""
    if not len(table):
        return table
    shown = table[["method", "kind", "n"]].copy()
    shown["rho"] = [
        f"{r:.2f} [{lo:.2f}, {hi:.2f}]" if pd.notna(r) else "–"
        for r, lo, hi in table[["rho", "rho_ci_low", "rho_ci_high"]].itertuples(index=False)
    ]
    shown["partial_rho (p)"] = [
        f"{r:.2f} ({p:.2g})" if pd.notna(r) else "–"
        for r, p in table[["partial_rho", "partial_p"]].itertuples(index=False)
    ]
    if "contrast_difference" in table:
        shown["similar − other pairs (p)"] = [
            f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] ({p:.2g})" if pd.notna(d) else "–"
            for d, lo, hi, p in table[
                ["contrast_difference", "contrast_ci_low", "contrast_ci_high", "contrast_p"]
            ].itertuples(index=False)
        ]
    return shown


def similarity_section(results: Results, figures: list[Figure], params: Params) -> Section:
    if not len(results.similarity):
        return Section(
            "similarity",
            "Does task similarity predict merge retention?",
            ["Not computed: run the `similarity` stage (loramerge similarity) first."],
        )
    measures = pd.DataFrame(
        {
            "measure": list(SIMILARITY_MEASURES),
            "what it is": list(SIMILARITY_MEASURES.values()),
            "larger means": ["less similar" if m == "data_mmd" else "more similar" for m in SIMILARITY_MEASURES],
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
            *verdict(
                results.correlations[results.correlations["method"].isin(results.identical)],  # identical count once
                params.similarity.significance_level,
            ),
            *association_text(
                results.association, results.headline["best_method"].item(), params.similarity.significance_level
            ),
            f"The measures. Data measures embed at most {params.similarity.max_texts} training texts per task with the base encoder "
            "(mean pooling); a triple's similarity is the mean of its three pairs'.",
            Table(measures, "measures"),
            Table(results.similarity, "similarity-table"),
            "Spearman's ρ of each measure against mean normalized accuracy, per method, with its two-sided p-value from a "
            "permutation test (exact up to 7 combinations); – where fewer than 3 combinations or constant scores. The "
            "verdict above counts a method as significant on its p-value Holm-adjusted over the distinct methods:",
            Table(pivot, "correlations"),
            "Beyond a bare ρ, per distinct method (data cosine only, the finding's measure): ρ with its 95% bootstrap "
            "interval over combinations; partial ρ with the members' mean adapter gain over head-only held fixed "
            "(strong adapters lose more in absolute terms) and its permutation p; over pairs, the similar pairs' mean "
            "normalized accuracy minus the others' (bootstrap interval, permutation p):",
            Table(association_shown(results.association), "association"),
            *figures,
        ],
    )


def sizes_section(results: Results, figures: list[Figure], params: Params) -> Section:
    """How accuracy falls as tasks are added, per method, and the scorecard of the one model for every task."""
    title = "How many tasks one model holds"
    shown = with_intervals(results.sizes)
    blocks = [
        "Per method and number of tasks merged into one model: mean normalized accuracy and gain retention over the "
        "merges of that size (each once), with 95% paired-bootstrap intervals; `combinations` says how many merges of "
        f"that size were made (`combos.sizes` {params.combos.sizes}; the largest is the merge of every task).",
        *figures,
        Table(shown, "sizes-table"),
    ]
    if results.everything_method is not None:
        blocks += [
            f"The merge of all {len(params.tasks)} tasks with {results.everything_method} (the method the export ships, "
            "chosen on validation), per task: its test score beside the single adapter's, head-only's and full "
            "fine-tuning's, and merged / single, each with its 95% interval.",
            Table(with_intervals(results.everything), "all-tasks-table"),
        ]
    return Section("sizes", title, blocks)


def joint_section(results: Results) -> Section:
    """KnOTS' joint setting: the merged model not told the task, and whether the method ranking holds there."""
    title = "Not told the task: KnOTS' joint setting"
    if results.joint_ranking.empty:
        return Section("joint", title, ["Not measured: every combination holds a word tagger, or none was evaluated."])
    ranking = results.joint_ranking
    changed = ranking[ranking["rank_per_task"] != ranking["rank_joint"]]
    verdict = (
        "The method ranking is the same in both settings at every size."
        if changed.empty
        else "The ranking changes at "
        + ", ".join(f"{n} tasks" for n in sorted(changed["tasks"].unique()))
        + " (rank_per_task vs rank_joint below)."
    )
    return Section(
        "joint",
        title,
        [
            "Each member's test inputs classified over the union of every member's labels, without the task: the "
            "heads stacked into one joint head (identical label names one class, as KnOTS maps them; raw logits "
            "compete), top-1 accuracy pooled over every member's test inputs. `single_joint_accuracy` is the same "
            "setting for the unmerged adapters (each input through every member's own adapter and head), what "
            "`joint_normalized_accuracy` divides by. Means over the merges of each size, beside the per-task mean "
            "normalized accuracy; the ranks compare the methods within a size (1 = best). " + verdict,
            Table(ranking, "joint-table"),
        ],
    )


def seeds_section(results: Results, params: Params) -> Section:
    """Mean ± sd over training seeds with intervals that include their spread, or what one seed cannot say."""
    title = "Training seeds"
    if not len(results.seeds):
        return Section(
            "seeds",
            title,
            [
                f"One training seed (train.seed {params.train.seed}): every interval in this report is over test examples "
                "only. `repeats: N` in params.yaml, then `loramerge combos` and `dvc repro`, trains every adapter and "
                "baseline with N seeds (only the new ones run) and shows their spread here."
            ],
        )
    shown = results.seeds.copy()
    shown["value"] = [
        f"{r.mean:.3f} ± {r.sd:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in shown.itertuples(index=False)
    ]
    repeats = [c for c in shown.columns if c.startswith("repeat_")]
    shown[repeats] = shown[repeats].round(3)
    methods = shown[shown["kind"].isin(KINDS)].rename(columns={"subject": "method"})
    tasks = shown[~shown["kind"].isin(KINDS)].rename(columns={"subject": "task", "kind": "model"})
    return Section(
        "seeds",
        title,
        [
            f"{params.repeats} training seeds (repeat k trains with train.seed + k = {params.train.seed} + k), each "
            "trained, merged and evaluated on its own; every other table of this report is the first seed's. Shown: "
            "mean ± standard deviation over the seeds [95% interval of a two-level bootstrap that draws seeds and "
            "test examples with replacement, so it includes the seed-to-seed spread], then each seed's value.",
            Table(methods[["method", "kind", "measure", "value", *repeats]], "seeds-methods"),
            Table(tasks[["task", "model", "value", *repeats]], "seeds-tasks"),
        ],
    )


def report_sections(results: Results, figures: dict[str, list[Figure]], params: Params) -> list[Section]:
    summary = shown_once(results.summary, results.identical)
    return [
        Section(
            "headline",
            "Headline",
            [
                provenance_line(params),
                headline_text(results.headline, results.identical, results.summary),
                noise_text(
                    results.comparison, results.headline["best_method"].item(), params.similarity.significance_level
                ),
                Table(with_intervals(results.headline), "headline-table"),
            ],
        ),
        Section(
            "methods",
            "Methods: normalized accuracy and gain retention over pairs and triples (test)",
            [
                "Normalized accuracy = merged test accuracy / single-adapter test accuracy, per member task, averaged per "
                "combination, then over combinations. Gain retention = (merged − head-only) / (single adapter − head-only): the "
                "share of what the adapter added over a trained head that survives the merge, pooled over a combination's tasks "
                "(Σ numerators / Σ denominators, so a task whose adapter barely beat head-only cannot swamp it), then averaged over "
                "combinations. Methods are ranked by mean normalized validation accuracy, as the headline chooses. "
                "`data` says what a method read besides the adapters (`none`: the updates only); a `<space>_` prefix runs "
                "the function in KnOTS' aligned space (knots_) or in Core Space (core_). "
                "Per-task values are in reports/tables and the summary.",
                Table(with_intervals(summary), "methods-table"),
                *identical_note(results.identical),
                f"Each method against the best ({results.headline['best_method'].item()}): the difference in mean normalized "
                "accuracy over every combination (each once), its 95% interval and the paired-bootstrap p-value, "
                "Holm-adjusted over the methods compared (identical methods count once); `within_noise`: not "
                "distinguishable from the best at α = "
                f"{params.similarity.significance_level}.",
                Table(results.comparison, "comparison-table"),
            ],
        ),
        sizes_section(results, figures["sizes"], params),
        joint_section(results),
        Section("heatmaps", "Pairwise heat-maps", figures["heatmaps"]),
        Section(
            "triples",
            "Triples ranked",
            [Table(results.triples, "triples-table")]
            if (results.combos["kind"] == "triple").any()
            else ["No triples configured."],
        ),
        Section(
            "retention",
            "Per-task retention: single vs merged vs head-only",
            [
                *figures["retention"],
                Table(with_intervals(results.single), "single-table"),
                f"What merging cost each task, for the best method ({results.headline['best_method'].item()}): its merged "
                "model against the task's single adapter on the same test examples. McNemar's exact test on the "
                "examples only one of the two got right, Holm-adjusted over every row; `significant`: a change "
                "beyond chance.",
                Table(results.cost, "cost-table"),
            ],
        ),
        seeds_section(results, params),
        similarity_section(results, figures["similarity"], params),
        sweep_section(),
        export_section(params),
        provenance_section(params, results.single),
    ]
