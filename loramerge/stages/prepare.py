"""Stage `prepare@<task>`: one task's raw splits -> validated, subsampled parquet + label map + stats.

Data comes from a local folder of CSVs when it has the task (offline users, CI) and
otherwise from the Hugging Face Hub, so the same pipeline serves both. Problems in the
data are found here, before any training burns compute.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loramerge import paths
from loramerge.atomic import atomic_dir, write_json
from loramerge.config import Params
from loramerge.data import DataError, local_data_dir, read_raw_splits, stratified_subsample
from loramerge.records import PreparedStats


def drop_empty_texts(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    keep = frame["text"].str.strip().str.len() > 0
    return frame[keep].reset_index(drop=True), int((~keep).sum())


def check_labels(task: str, splits: dict[str, pd.DataFrame]) -> list[str]:
    """The sorted label set of train; an error if validation or test has a label train lacks."""
    for split, frame in splits.items():
        if frame.empty:
            raise DataError(f"task {task!r}: the {split} split has no rows with text")
    train_labels = set(splits["train"]["label"])
    for split in ("validation", "test"):
        unseen = sorted(set(splits[split]["label"]) - train_labels)
        if unseen:
            raise DataError(
                f"task {task!r}: label(s) {unseen} appear in {split} but never in train; a model cannot learn them"
            )
    return sorted(train_labels)


def count_cross_split_duplicates(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    texts = {s: set(f["text"].str.strip()) for s, f in splits.items()}
    return {
        "train&validation": len(texts["train"] & texts["validation"]),
        "train&test": len(texts["train"] & texts["test"]),
        "validation&test": len(texts["validation"] & texts["test"]),
    }


def prepare_task(params: Params, task: str) -> Path:
    """Validate, clean and subsample one task; write data/prepared/<task>/ atomically."""
    data = params.tasks[task].data
    raw, source = read_raw_splits(task, data, local_data_dir(params), params.data.subsample_seed)
    cleaned, dropped = {}, {}
    for split, frame in raw.items():
        cleaned[split], dropped[split] = drop_empty_texts(frame)
    labels = check_labels(task, cleaned)
    duplicates = count_cross_split_duplicates(cleaned)
    limits = {"train": data.max_train, "validation": data.max_validation, "test": data.max_test}
    seed = params.data.subsample_seed
    final = {s: stratified_subsample(f, limits[s], seed) for s, f in cleaned.items()}
    label_ids = {label: i for i, label in enumerate(labels)}
    majority = final["train"]["label"].value_counts().idxmax()
    stats = PreparedStats(
        task=task,
        source=source,
        rows_raw={s: len(f) for s, f in raw.items()},
        empty_texts_dropped=dropped,
        duplicates_across_splits=duplicates,
        rows={s: len(f) for s, f in final.items()},
        class_counts={s: f["label"].value_counts().sort_index().to_dict() for s, f in final.items()},
        majority_label=majority,
        majority_baseline_accuracy={
            s: float((f["label"] == majority).mean()) for s, f in final.items() if s != "train"
        },
    )
    with atomic_dir(paths.prepared_dir(task)) as out:
        for split, frame in final.items():
            frame = frame.assign(label_id=frame["label"].map(label_ids).astype("int64"))
            frame.to_parquet(out / f"{split}.parquet", index=False)
        write_json(out / "labels.json", {"labels": labels})
        stats.write(out / paths.prepared_stats(task).name)
    report_problems(task, dropped, duplicates)
    return paths.prepared_dir(task)


def report_problems(task: str, dropped: dict[str, int], duplicates: dict[str, int]) -> None:
    if any(dropped.values()):
        print(f"[prepare {task}] dropped empty or whitespace-only texts: {dropped}")
    if any(duplicates.values()):
        print(f"[prepare {task}] texts shared between splits (kept, counted in stats.json): {duplicates}")
