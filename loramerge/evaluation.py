"""Scoring a (possibly patched) encoder with task heads on prepared splits; shared by merge and evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from loramerge import paths
from loramerge.atomic import read_json
from loramerge.batching import TokenizedTexts
from loramerge.config import Params
from loramerge.data import load_labels, load_split, stratified_subsample
from loramerge.joint import joint_classes, joint_correct, joint_scores
from loramerge.lora import AdapterError
from loramerge.model import ClassificationHead, head_outputs, predict
from loramerge.records import JointScores
from loramerge.tasktypes import TASK_TYPES, Scored, TaskType
from loramerge.tokens import TaggedWords


@dataclass
class TaskSplit:
    """A task's split tokenised once, as its type reads it (with the gold labels), ready to score many models."""

    task: str
    kind: TaskType
    texts: TokenizedTexts | TaggedWords
    labels: list[str]
    """The task's label names (a head's output rows)."""

    @property
    def examples(self) -> int:
        return len(self.texts)


def load_task_split(
    params: Params, name: str, split: str, tokenizer: PreTrainedTokenizerBase, limit: int | None = None, seed: int = 0
) -> TaskSplit:
    """A split of the task that replica `name` belongs to, at most `limit` examples (stratified by label for a
    sentence task, a seeded sample of sentences for a token task); named after the replica, whose head scores it."""
    task = params.task_of(name)
    kind, labels = TASK_TYPES[params.tasks[task].type], load_labels(task)
    frame = stratified_subsample(load_split(task, split), limit, seed)
    return TaskSplit(name, kind, kind.inputs(frame, tokenizer, labels, params.backbone.max_length), labels)


def check_head(params: Params, name: str, folder: Path, stage: str) -> None:
    """A trained head (`folder`'s head.safetensors and labels.json) against the prepared data of the task it will
    score, before any model loads: a head whose labels are not the data's would score against the wrong names."""
    task = params.task_of(name)
    trained, prepared = read_json(folder / "labels.json")["labels"], load_labels(task)
    if trained != prepared:
        raise AdapterError(
            f"the head of {folder} predicts labels {trained} but data/prepared/{task} has {prepared}; rerun"
            f" `dvc repro {paths.dvc_target(stage)}` (the data changed since it was trained)"
        )
    outputs = ClassificationHead.load(folder).linear.out_features
    if outputs != len(trained):
        raise AdapterError(
            f"{folder / 'head.safetensors'} predicts {outputs} labels but its labels.json lists {len(trained)}; rerun `dvc repro {paths.dvc_target(stage)}`"
        )


def load_head(task: str, adapters_root: Path = paths.ADAPTERS) -> ClassificationHead:
    return ClassificationHead.load(adapters_root / task)


def score(encoder, head: ClassificationHead, data: TaskSplit, batch_size: int, pooling: str) -> Scored:
    """One head on one task's split: its metrics (`score` first) and per-example points."""
    predicted = predict(encoder, {data.task: head}, data.texts.sorted_batches(batch_size), pooling)[data.task]
    return data.kind.score(data.texts, predicted, data.labels)


class JointHead:
    """The members' heads stacked into one over the union of their labels (loramerge/joint.py), with each member test
    split's gold labels."""

    def __init__(self, tests: dict[str, TaskSplit]) -> None:
        self.classes, self.mapping = joint_classes({t: split.labels for t, split in tests.items()})
        self.gold = {t: np.asarray(split.texts.labels, dtype=np.int64) for t, split in tests.items()}

    def correct(self, logits: dict[str, np.ndarray], task: str) -> np.ndarray:
        return joint_correct(logits, self.gold[task], task, self.mapping, len(self.classes))

    def scores(self, correct: dict[str, np.ndarray]) -> JointScores:
        return JointScores(**joint_scores(correct), classes=len(self.classes))


def all_logits(
    encoder, heads: dict[str, ClassificationHead], split: TaskSplit, batch_size: int, pooling: str
) -> dict[str, np.ndarray]:
    """Every head's logits on one split's inputs, rows in input order, from one encoder pass per batch."""
    return head_outputs(encoder, heads, split.texts.sorted_batches(batch_size), pooling, lambda logits: logits)
