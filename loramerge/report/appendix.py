"""The report's closing sections: the sweep (DVC experiments), the shipped models, and provenance (what ran, on
what, with which parameters). The facts they show are read by the modules that own them (`sweep.finished_sweep`,
`tables.export_tables`, `provenance`); the wording is here.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import yaml

from loramerge.config import Params
from loramerge.lists import GENERATED
from loramerge.report.document import Code, Section, Table, plural
from loramerge.report.provenance import data_sizes, machine_table, model_table, run_identity, stage_runtimes
from loramerge.report.tables import export_tables
from loramerge.sweep import finished_sweep, sweep_tables


def sweep_section() -> Section:
    """The emotion study's grid, as `loramerge sweep collect` left it in metrics/sweep/sweep.csv."""
    title = "The emotion study's sweep: LoRA settings vs full fine-tuning (DVC experiments)"
    table = finished_sweep()
    if table is None:
        return Section(
            "sweep",
            title,
            [
                "Not run yet: `loramerge sweep queue`, `dvc queue start -j 1`, then `loramerge sweep collect` (docs/tracking.md)."
            ],
        )
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


def export_section(params: Params) -> Section:
    models, by_task = export_tables(params)
    title = "The shipped multi-task models: fp32, int8, bf16"
    if models.empty:
        return Section(
            "export",
            title,
            [
                "Not exported yet: `dvc repro pipelines/export_pair/dvc.yaml pipelines/export_triple/dvc.yaml"
                " pipelines/export_many/dvc.yaml` (models/export/<combo>)."
            ],
        )
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
    shown = params.model_dump(exclude=set(GENERATED))
    return Section(
        "provenance",
        "Provenance",
        [
            f"{run_identity()}; report built "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; {plural(len(params.pairs), 'pair')} and {plural(len(params.triples), 'triple')}.",
            "Data (data/prepared/<task>/stats.json):",
            Table(data_sizes(params), "data"),
            "Model:",
            Table(model_table(params), "model"),
            "Machine that built this report:",
            Table(machine_table(), "machine"),
            "Training time per task in seconds (train_metrics.json of each mode):",
            Table(single[["task", "lora_train_s", "head_only_train_s", "full_ft_train_s"]], "training-time"),
            f"Stage runtimes of this repro (MLflow runs tagged repro_id; {runtimes['runtime_s'].sum():.0f} s in all):"
            if len(runtimes)
            else "Stage runtimes: none found in MLflow for this repro_id.",
            Table(runtimes, "stage-runtimes"),
            "Parameters (params.yaml as validated; the lists `loramerge combos` writes omitted):",
            Code(yaml.safe_dump(shown, sort_keys=False)),
        ],
    )
