"""Where each stage reads and writes, relative to the project root. dvc.yaml uses the same layout."""

from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
ADAPTERS = Path("models/adapters")
CHECKPOINTS = Path("models/checkpoints")
MERGED = Path("models/merged")
METRICS = Path("metrics")
REPORTS = Path("reports")

SPLITS = ("train", "validation", "test")


def prepared_dir(task: str) -> Path:
    return PREPARED / task


def adapter_dir(task: str) -> Path:
    return ADAPTERS / task


def checkpoint_dir(task: str) -> Path:
    return CHECKPOINTS / task


def merged_dir(combo: str) -> Path:
    return MERGED / combo


def single_metrics(task: str) -> Path:
    return METRICS / "single" / f"{task}.json"


def merged_metrics(combo: str) -> Path:
    return METRICS / "merged" / f"{combo}.json"
