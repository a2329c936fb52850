"""The last `dvc repro`'s run time by stage group, from logs/stage_times.jsonl (written by every stage).

A run is the longest stretch of stage records ending at the latest one in which no gap between one
stage's end and the next one's start exceeds `--gap` seconds (a new `dvc repro` after a pause starts a
new run). Per group (prepare, LoRA training, Gram matrices, head-only, full fine-tuning, merges, merged
evaluations, single and baseline evaluations, exports, similarity and report): stages, minutes inside
the stages; then the run's wall clock, first start to last end, which adds DVC's and Python's start-up
between stages. Needs a finished `dvc repro` (run `make run` first).

    python -m benchmarks.bench_run_time [--gap 120]
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from benchmarks.common import machine_description
from loramerge.cli import STAGE_TIMES

GROUPS = {
    "prepare": "prepare",
    "train": "LoRA training",
    "gram": "Gram matrices",
    "baseline_head": "head-only training",
    "baseline_full": "full fine-tuning",
    "merge_pair": "merges",
    "merge_triple": "merges",
    "merge_many": "merges",
    "evaluate_pair": "merged evaluations",
    "evaluate_triple": "merged evaluations",
    "evaluate_many": "merged evaluations",
    "evaluate": "single and baseline evaluations",
    "evaluate_baselines": "single and baseline evaluations",
    "export": "exports",  # one export stage for pairs and triples, before 2026-11-25
    "export_pair": "exports",
    "export_triple": "exports",
    "export_many": "exports",
    "similarity": "similarity and report",
    "report": "similarity and report",
}


def stage_records(path: Path) -> pd.DataFrame:
    """One row per stage run: stage, group, seconds, start and end."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame(rows, columns=["stage", "seconds", "finished"])
    frame["end"] = pd.to_datetime(frame["finished"])
    frame["start"] = frame["end"] - pd.to_timedelta(frame["seconds"], unit="s")
    frame["group"] = frame["stage"].str.split("@").str[0].map(GROUPS).fillna("other")
    return frame


def last_run(records: pd.DataFrame, gap: float) -> pd.DataFrame:
    """The latest stretch of records without a pause longer than `gap` seconds between stages."""
    if records.empty:
        return records
    pauses = (records["start"] - records["end"].shift()).dt.total_seconds() > gap
    return records[pauses.cumsum() == pauses.cumsum().iloc[-1]]


def by_group(run: pd.DataFrame) -> pd.DataFrame:
    table = run.groupby("group", sort=False).agg(stages=("stage", "size"), seconds=("seconds", "sum"))
    table["minutes"] = table["seconds"] / 60
    return table.reset_index()[["group", "stages", "minutes"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=float, default=120.0, help="seconds of pause that separate two runs")
    args = parser.parse_args()
    run = last_run(stage_records(STAGE_TIMES), args.gap)
    if run.empty:
        raise SystemExit(f"{STAGE_TIMES} has no stage records: run `make run` first")
    wall: timedelta = run["end"].max() - run["start"].min()
    inside = run["seconds"].sum() / 60
    started: datetime = run["start"].min()
    print("## The last run's time by stage group\n")
    print(machine_description() + "\n")
    print(
        f"{len(run)} stages from {started:%Y-%m-%d %H:%M} UTC: {wall.total_seconds() / 60:.1f} min wall clock, "
        f"{inside:.1f} min inside the stages (the rest is DVC and Python start-up between stages).\n"
    )
    print(by_group(run).to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
