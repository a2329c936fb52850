"""Stage `prepare@<task>`: one task's raw splits -> validated, subsampled parquet + label map + stats.

Data comes from a local folder of CSVs when it has the task (offline users, CI) and
otherwise from the Hugging Face Hub, so the same pipeline serves both. Problems in the
data are found here, before any training burns compute.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from loramerge import paths
from loramerge.atomic import atomic_dir, write_json
from loramerge.config import ConfigError, Params
from loramerge.console import warn
from loramerge.data import DataError, local_data_dir, read_raw_splits, stratified_subsample, tag_set
from loramerge.records import PreparedStats

HELP = "validate, clean and subsample one task's data"
ARGUMENTS = {"--task": {"required": True, "help": "a task"}}
MODEL_FREE = True


def drop_empty_texts(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    keep = frame["text"].str.strip().str.len() > 0
    return frame[keep].reset_index(drop=True), int((~keep).sum())


def check_labels(task: str, splits: dict[str, pd.DataFrame]) -> list[str]:
    """The sorted label set of train; an error if validation or test has a label train lacks."""
    for split, frame in splits.items():
        if frame.empty:
            raise DataError(f"task {task!r}: the {split} split has no rows with text")
    train_labels = set(splits["train"]["label"])
    if len(train_labels) < 2:
        raise DataError(
            f"task {task!r}: every train row has the label {sorted(train_labels)[0]!r}; a classifier needs at least two"
            " labels: add rows of the other labels or remove the task"
        )
    for split in ("validation", "test"):
        unseen = sorted(set(splits[split]["label"]) - train_labels)
        if unseen:
            raise DataError(
                f"task {task!r}: label(s) {unseen} appear in {split} but never in train; a model cannot learn them"
            )
    if all(label.lstrip("-").isdigit() for label in train_labels):
        warn(
            "prepare",
            f"task {task!r}: the labels are numbers {sorted(train_labels, key=int)}; kept as the label names"
            f" {sorted(train_labels)!r}: put label names in the data for readable predictions",
        )
    return sorted(train_labels)


def content(frame: pd.DataFrame) -> pd.Series:
    """What makes two examples the same: the stripped text, or an image's bytes (by their SHA-256)."""
    if "text" in frame.columns:
        return frame["text"].str.strip()
    return frame["image"].map(lambda data: hashlib.sha256(data).hexdigest())


def count_cross_split_duplicates(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    texts = {s: set(content(f)) for s, f in splits.items()}
    return {
        "train&validation": len(texts["train"] & texts["validation"]),
        "train&test": len(texts["train"] & texts["test"]),
        "validation&test": len(texts["validation"] & texts["test"]),
    }


def prepare_task(params: Params, task: str) -> Path:
    """Validate, clean and subsample one task; write data/prepared/<task>/ atomically."""
    kind = params.tasks[task].type
    if kind == "token_classification":
        return prepare_tagged(params, task)
    data = params.tasks[task].data
    raw, source = read_raw_splits(task, data, local_data_dir(params), params.data.subsample_seed, kind)
    cleaned, dropped = {}, {}
    for split, frame in raw.items():
        cleaned[split], dropped[split] = drop_empty_texts(frame) if "text" in frame.columns else (frame, 0)
    labels = check_labels(task, cleaned)
    duplicates = count_cross_split_duplicates(cleaned)
    limits = {"train": data.max_train, "validation": data.max_validation, "test": data.max_test}
    seed = params.data.subsample_seed
    final = {s: stratified_subsample(f, limits[s], seed) for s, f in cleaned.items()}
    label_ids = {label: i for i, label in enumerate(labels)}
    majority = final["train"]["label"].value_counts().idxmax()
    stats = PreparedStats(
        **kept_rows(task, source, raw, dropped, duplicates, final),
        class_counts={s: f["label"].value_counts().sort_index().to_dict() for s, f in final.items()},
        majority_label=majority,
        majority_baseline_accuracy={
            s: float((f["label"] == majority).mean()) for s, f in final.items() if s != "train"
        },
    )
    ided = {s: f.assign(label_id=f["label"].map(label_ids).astype("int64")) for s, f in final.items()}
    return write_prepared(task, ided, labels, stats, dropped, duplicates)


def prepare_tagged(params: Params, task: str) -> Path:
    """A token-classification task: sentences with one BIO tag per word. Its label set is train's tags ("O"
    first); `class_counts` counts entities (B- tags) per type; the majority baseline tags every word "O"."""
    data, seed = params.tasks[task].data, params.data.subsample_seed
    raw, source = read_raw_splits(task, data, local_data_dir(params), seed, "token_classification")
    cleaned = {s: f[f["tokens"].map(len) > 0].reset_index(drop=True) for s, f in raw.items()}
    dropped = {s: len(raw[s]) - len(f) for s, f in cleaned.items()}
    labels = tag_set([cleaned["train"]])
    if len(labels) < 2:
        raise DataError(
            f"task {task!r}: every word of train is tagged 'O'; a tagger needs entities (B-/I- tags) to learn from"
        )
    for split in ("validation", "test"):
        unseen = sorted(set(tag_set([cleaned[split]])) - set(labels))
        if unseen:
            raise DataError(
                f"task {task!r}: tag(s) {unseen} appear in {split} but never in train; a model cannot learn them"
            )
    texts = {s: f.assign(text=f["tokens"].map(" ".join)) for s, f in cleaned.items()}
    duplicates = count_cross_split_duplicates(texts)
    limits = {"train": data.max_train, "validation": data.max_validation, "test": data.max_test}
    final = {
        s: (
            f if limits[s] is None or len(f) <= limits[s] else f.sample(n=limits[s], random_state=seed).sort_index()
        ).reset_index(drop=True)
        for s, f in texts.items()
    }
    index = {tag: i for i, tag in enumerate(labels)}
    stats = PreparedStats(
        **kept_rows(task, source, raw, dropped, duplicates, final),
        class_counts={s: entity_counts(f) for s, f in final.items()},
        majority_label="O",
        majority_baseline_accuracy={s: outside_share(f) for s, f in final.items() if s != "train"},
    )
    ided = {s: f.assign(tag_ids=f["tags"].map(lambda tags: [index[t] for t in tags])) for s, f in final.items()}
    return write_prepared(task, ided, labels, stats, dropped, duplicates)


def kept_rows(
    task: str,
    source: str,
    raw: dict[str, pd.DataFrame],
    dropped: dict[str, int],
    duplicates: dict[str, int],
    final: dict[str, pd.DataFrame],
) -> dict:
    """The stats every task type records: where the rows came from and how many each step kept."""
    return {
        "task": task,
        "source": source,
        "rows_raw": {s: len(f) for s, f in raw.items()},
        "empty_texts_dropped": dropped,
        "duplicates_across_splits": duplicates,
        "rows": {s: len(f) for s, f in final.items()},
    }


def write_prepared(
    task: str,
    splits: dict[str, pd.DataFrame],
    labels: list[str],
    stats: PreparedStats,
    dropped: dict[str, int],
    duplicates: dict[str, int],
) -> Path:
    """data/prepared/<task>/ written whole or not at all (each split's parquet, labels.json, stats.json), then
    what was dropped or shared between splits is told."""
    with atomic_dir(paths.prepared_dir(task)) as out:
        for split, frame in splits.items():
            frame.to_parquet(out / f"{split}.parquet", index=False)
        write_json(out / "labels.json", {"labels": labels})
        stats.write(out / paths.prepared_stats(task).name)
    report_problems(task, dropped, duplicates)
    return paths.prepared_dir(task)


def entity_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Entities per type (one per B- tag)."""
    counts = pd.Series([t[2:] for tags in frame["tags"] for t in tags if t.startswith("B-")], dtype=str)
    return counts.value_counts().sort_index().to_dict()


def outside_share(frame: pd.DataFrame) -> float:
    """The word accuracy of tagging every word "O"."""
    words = [t for tags in frame["tags"] for t in tags]
    return sum(t == "O" for t in words) / len(words) if words else 0.0


def report_problems(task: str, dropped: dict[str, int], duplicates: dict[str, int]) -> None:
    if any(dropped.values()):
        print(f"[prepare {task}] dropped empty or whitespace-only texts: {dropped}")
    if any(duplicates.values()):
        print(f"[prepare {task}] texts shared between splits (kept, counted in stats.json): {duplicates}")


def run(params: Params, task: str) -> Path:
    """`loramerge prepare --task T`."""
    if task not in params.tasks:  # data belongs to a task, not to one of its replicas
        raise ConfigError(f"task {task!r} is not configured; tasks in params.yaml: {sorted(params.tasks)}")
    return prepare_task(params, task)
