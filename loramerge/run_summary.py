"""What `make run` prints last (`loramerge done`): where the report is, the shipped models and the command that
uses them, how to open the MLflow UI on the runs, and how long the run took: what a user looks for after
`dvc repro`, whose own last words are about `dvc push`."""

from __future__ import annotations

import json
from pathlib import Path

from loramerge import paths
from loramerge.config import Params
from loramerge.lists import split_combination
from loramerge.tracking import tracking_uri


def model_lines(params: Params, combo: str) -> list[str]:
    """One shipped model: where it is, what it holds, how to call it (or the stage that makes it)."""
    folder, metrics = paths.export_dir(combo), paths.export_metrics(combo)
    if not (folder.exists() and metrics.exists()):
        return [
            f"  model:     {folder}: not exported yet, `dvc repro {paths.dvc_target(paths.combination_stage('export', combo))}`"
        ]
    method = json.loads(metrics.read_text())["method"]
    registered = f"; MLflow model loramerge-{combo}@champion" if params.export.registry else ""
    return [
        f"  model:     {folder} ({method}, {len(split_combination(combo))} tasks in one encoder pass{registered})",
        f'             loramerge predict --model {folder} --text "..."',
    ]


def run_summary(params: Params, seconds: float | None, root: Path) -> str:
    took = "" if seconds is None else f" in {seconds / 60:.1f} min"
    report = paths.REPORTS / "report.md"
    lines = [
        f"loramerge: the run is done{took}.",
        f"  report:    {report} (and report.html, summary.md)"
        if report.exists()
        else "  report:    not written yet, `dvc repro report`",
    ]
    for combo in params.shipped():
        lines += model_lines(params, combo)
    if not params.shipped():
        lines.append("  model:     none shipped (export.combinations is empty: add `all`, then `loramerge combos`)")
    uri = tracking_uri(params.tracking, root)
    ui = f"mlflow ui --backend-store-uri {uri} --port 5000" if uri.startswith("sqlite:") else uri
    lines.append(f"  MLflow:    {ui}  (experiment {params.tracking.experiment}; group by tag repro_id)")
    return "\n".join(lines)
