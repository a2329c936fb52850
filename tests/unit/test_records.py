"""The typed records of the files stages hand each other: they write back exactly the JSON the stages wrote as plain
dicts, and a file in another layout fails naming the file and the stage that rewrites it."""

from __future__ import annotations

import json
import math
import re

import pytest

from loramerge.atomic import write_json
from loramerge.records import PreparedStats, RecordError, TrainMetrics

STATS = {
    "task": "topics",
    "source": "/data/topics",
    "rows_raw": {"train": 42, "validation": 10, "test": 10},
    "empty_texts_dropped": {"train": 2, "validation": 0, "test": 0},
    "duplicates_across_splits": {"train&validation": 0, "train&test": 3, "validation&test": 0},
    "rows": {"train": 40, "validation": 10, "test": 10},
    "class_counts": {
        s: {"money": n // 2, "sport": n // 2} for s, n in (("train", 40), ("validation", 10), ("test", 10))
    },
    "majority_label": "money",
    "majority_baseline_accuracy": {"validation": 0.5, "test": 0.5},
}
"""data/prepared/topics/stats.json as prepare wrote it before the records."""

TRAIN = {
    **{
        f"val_{k}": 0.75
        for k in ("score", "accuracy", "macro_f1", "weighted_f1", "weighted_precision", "weighted_recall")
    },
    "val_micro_f1": None,  # a token task's; null for a sentence task
    "global_steps": 12,
    "best_step": 8,
    "runtime_s": 3.5,
    "steps_per_s": 3.43,
    "train_samples_per_s": 27.4,
    "train_loss": math.nan,  # no step logged a loss: json writes NaN, and so must the record
    "peak_rss_mb": 812.5,
    "peak_cuda_mb": 0.0,
    "precision": {"name": "bf16", "reason": "auto: CPU has native bf16 (avx512_bf16)"},
    "trainable_params": 1234,
    "total_params": 100000,
    "trainable_percent": 1.234,
}
"""models/adapters/topics/train_metrics.json as training wrote it before the records."""


@pytest.mark.parametrize(
    ("record", "path", "document"),
    [
        (PreparedStats, "data/prepared/topics/stats.json", STATS),
        (TrainMetrics, "models/adapters/topics/train_metrics.json", TRAIN),
    ],
)
def test_a_record_writes_back_exactly_the_json_it_was_read_from(tmp_path, record, path, document):
    path = tmp_path / path
    write_json(path, document)
    before = path.read_text()
    record.read(path).write(path)
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (json.dumps({k: v for k, v in STATS.items() if k != "majority_label"}), "majority_label: Field required"),
        (json.dumps({**STATS, "majority": "money"}), "majority: Extra inputs are not permitted"),
        (json.dumps({**STATS, "rows": {"train": "many"}}), "rows.train: Input should be a valid integer"),
        ('{"task": "topics",', "not JSON"),
    ],
)
def test_a_file_in_another_layout_names_the_file_and_the_stage_to_rerun(tmp_path, text, problem):
    path = tmp_path / "data/prepared/topics/stats.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RecordError, match=re.escape(str(path))) as raised:
        PreparedStats.read(path)
    assert problem in str(raised.value) and "rerun `dvc repro pipelines/prepare/dvc.yaml:prepare@topics`" in str(
        raised.value
    )


def test_a_missing_file_raises_what_reading_it_always_raised(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "stats.json"))):
        PreparedStats.read(tmp_path / "stats.json")
