"""Stage `report`: which merges keep their accuracy, whether task similarity predicts it, and how the run was made.

Reads only what earlier stages wrote (metrics/, data/prepared/*/stats.json) and writes:
reports/report.md and a self-contained reports/report.html (figures inlined, so the file
can be mailed or archived alone), the older reports/summary.md, reports/tables/*.csv,
reports/figures/*.png (every figure of the report), reports/metrics.json (every mean score, nested)
and reports/headline/*.json (one small flat file per method, what `dvc metrics show/diff` prints). Everything is logged to one MLflow run tagged
`loramerge.summary=true`.

This module only orders the work; what the report computes, draws and says is in loramerge/report/.
"""

from __future__ import annotations

from pathlib import Path

from loramerge import paths
from loramerge.atomic import atomic_dir, check_writable, write_json, write_text
from loramerge.config import Params
from loramerge.console import warn
from loramerge.report.document import Figure, render_html, render_markdown
from loramerge.report.figures import pair_heatmap, retention_bars, similarity_scatter, size_curve
from loramerge.report.results import Results, compute_results, headline_files, headline_metrics, tracked_metrics
from loramerge.report.sections import report_sections
from loramerge.report.summary import summary_markdown
from loramerge.tracking import StageRun, stage_run

HELP = "write reports/summary.md, report.md, tables and figures"
ARGUMENTS = {}
MODEL_FREE = True

TABLES = paths.REPORTS / "tables"
FIGURES = paths.REPORTS / "figures"
BY_METHOD = TABLES / "normalized_accuracy"  # one CSV per method: `dvc plots` draws one bar chart each
SUMMARY_TAG = "loramerge.summary"


def write_outputs(params: Params) -> Results:
    """Every file of the stage: tables, figures, report.md, report.html, summary.md and the metrics files. Everything
    but the seeds table is of the first training seed (`repeats`: its replicas are named after their tasks)."""
    results, first = compute_results(params), params.repeat_view(0)
    write_tables(results)
    write_document(results, write_figures(results, first), first)
    write_metrics(results)
    return results


def write_tables(results: Results) -> None:
    """The report's tables as CSV, and one CSV per method of per-combination scores for `dvc plots`."""
    tables = {
        "single": results.single,
        "merged": results.merged,
        "methods": results.summary,
        "combinations": results.combos,
        "similarity": results.similarity,
        "correlations": results.correlations,
        "association": results.association,
        "retention": results.retention,
        "triples_ranked": results.triples,
        "comparison_with_best": results.comparison,
        "merging_cost": results.cost,
        "seeds": results.seeds,
        "sizes": results.sizes,
        "all_tasks": results.everything,
        "joint": results.joint,
        "joint_ranking": results.joint_ranking,
    }
    for name, frame in tables.items():
        write_text(TABLES / f"{name}.csv", frame.to_csv(index=False))
    BY_METHOD.mkdir(parents=True, exist_ok=True)  # dvc.yaml's plots name it, even with no combination
    for method, frame in results.combos.groupby("method"):
        write_text(BY_METHOD / f"{method}.csv", frame.drop(columns="method").to_csv(index=False))


def write_figures(results: Results, params: Params) -> dict[str, list[Figure]]:
    """reports/figures/*.png, returned as the figure blocks of the sections that show them."""
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
                retention_bars(results.retention, best, FIGURES / "retention.png"),
                f"Per-task test accuracy: head-only, full fine-tuning, single adapter, merged with {best}",
            )
        ],
        "similarity": [],
        "sizes": [
            Figure(
                size_curve(results.sizes, FIGURES / "sizes.png"),
                "What one model keeps as tasks are added: mean normalized accuracy and gain retention by number of tasks",
            )
        ]
        if results.sizes["tasks"].nunique() > 1
        else [],
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


def write_document(results: Results, figures: dict[str, list[Figure]], params: Params) -> None:
    """reports/report.md and report.html (one set of sections, rendered twice), and the older summary.md."""
    sections = report_sections(results, figures, params)
    title = "loramerge report"
    write_text(paths.REPORTS / "report.md", render_markdown(title, sections))
    write_text(paths.REPORTS / "report.html", render_html(title, sections))
    write_text(paths.REPORTS / "summary.md", summary_markdown(params, results))


def write_metrics(results: Results) -> None:
    """reports/metrics.json (every mean score, nested) and reports/headline/ (what `dvc metrics show` prints)."""
    write_json(paths.REPORTS / "metrics.json", headline_metrics(results))
    with atomic_dir(paths.REPORTS / "headline") as folder:  # whole: no file of a method since removed lingers
        for name, numbers in headline_files(results).items():
            write_json(folder / f"{name}.json", numbers)


def tag_as_summary(run: StageRun) -> None:
    """Mark the run as the repro's summary, so the MLflow UI finds it with `tags.loramerge.summary = 'true'`.

    Through the run's guard, so a tracking failure stays a warning unless tracking.strict.
    """
    run.set_tag(SUMMARY_TAG, "true")


def write_report(params: Params) -> Path:
    """The stage, inside its MLflow run (so the run's duration is the stage's); returns reports/report.md."""
    check_writable(paths.REPORTS / "report.md", folders=(paths.REPORTS / "headline",))
    unknown = [pair for pair in params.similarity.similar_pairs if not set(pair) <= set(params.tasks)]
    if unknown:
        warn("report", f"similarity.similar_pairs {unknown} name(s) tasks not configured; left out of the contrast")
    with stage_run(
        params.tracking, "report", {"tasks": list(params.tasks), "methods": list(params.merge.methods)}
    ) as run:
        tag_as_summary(run)
        results = write_outputs(params)
        run.log_metrics(tracked_metrics(results))
        run.log_artifacts(paths.REPORTS, "reports")
    return paths.REPORTS / "report.md"


def run(params: Params) -> Path:
    """`loramerge report`."""
    return write_report(params)
