"""Task types behind one interface: how a prepared split becomes model inputs, and how predictions are scored.

`sequence_classification` predicts one label per text from the pooled vector; `token_classification`
one BIO tag per word from each word's first piece (loramerge/tokens.py); `image_classification` one label
per image from a vision encoder's pooled vector. Everything downstream sees
only what this interface returns: the inputs (same batching methods for both), and a `Scored` with the
task's headline `score` (accuracy, or entity micro-F1), its other metrics, and per example the two
numbers any resample's score is computed from: score = Σ points / Σ possible. For accuracy an example
gives 1 or 0 of 1; for micro-F1 a sentence gives 2·(entities right) of (entities predicted + true).
So normalized scores, gain retention and the report's paired bootstrap treat both types alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from loramerge.batching import PixelImages, TokenizedTexts
from loramerge.settings import SCORE_NAMES
from loramerge.tokens import TaggedWords, entity_metrics, sentence_counts, word_tags


@dataclass
class Scored:
    """One model on one task's split: metrics (with `score`), and per example its points, possible points,
    whether it is entirely right, and the gold and predicted labels as text (the predictions file)."""

    metrics: dict[str, float]
    points: np.ndarray
    possible: np.ndarray
    actual: list[str]
    predicted: list[str]

    @property
    def correct(self) -> np.ndarray:
        """Examples scored in full (a text's label; a sentence's every entity found and none invented)."""
        return self.points == self.possible


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and the F1 family of one label per example (scikit-learn), in the dict shape every record keeps."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support  # only stages that score

    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_precision": float(precision),
        "weighted_recall": float(recall),
        "weighted_f1": float(f1),
    }


class TaskType(Protocol):
    name: str
    per_token: bool
    score_name: str

    def inputs(
        self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int
    ) -> TokenizedTexts | TaggedWords: ...

    def score(self, inputs, predicted: np.ndarray, labels: list[str]) -> Scored: ...


class SequenceClassification:
    """One label per text, from the pooled vector; scored by accuracy."""

    name, per_token = "sequence_classification", False
    score_name = SCORE_NAMES[name]

    def inputs(self, frame, tokenizer, labels, max_length) -> TokenizedTexts:
        return TokenizedTexts(tokenizer, frame["text"].tolist(), frame["label_id"].tolist(), max_length)

    def score(self, inputs: TokenizedTexts, predicted: np.ndarray, labels: list[str]) -> Scored:
        gold = np.asarray(inputs.labels, dtype=np.int64)
        predicted = np.asarray(predicted, dtype=np.int64)
        metrics = classification_metrics(gold, predicted)
        right = (gold == predicted).astype(np.float64)
        return Scored(
            {"score": metrics["accuracy"], **metrics},
            right,
            np.ones_like(right),
            [labels[i] for i in gold],
            [labels[i] for i in predicted],
        )


class TokenClassification:
    """One BIO tag per word (named-entity recognition); scored by entity-level micro-F1 (seqeval, strict IOB2)."""

    name, per_token = "token_classification", True
    score_name = SCORE_NAMES[name]

    def inputs(self, frame, tokenizer, labels, max_length) -> TaggedWords:
        return TaggedWords(tokenizer, frame["tokens"].tolist(), frame["tags"].tolist(), labels, max_length)

    def score(self, inputs: TaggedWords, predicted: np.ndarray, labels: list[str]) -> Scored:
        tags = [word_tags(p, w, n, labels) for p, w, n in zip(predicted, inputs.word_ids, inputs.words)]
        found = entity_metrics(inputs.tags, tags)
        counts = sentence_counts(inputs.tags, tags)
        metrics = {
            "score": found["micro_f1"],
            "accuracy": found["word_accuracy"],
            "micro_f1": found["micro_f1"],
            "macro_f1": found["macro_f1"],
            "weighted_f1": found["weighted_f1"],
        }
        return Scored(
            metrics,
            2.0 * counts[:, 0],
            (counts[:, 1] + counts[:, 2]).astype(np.float64),
            [" ".join(t) for t in inputs.tags],
            [" ".join(t) for t in tags],
        )


class ImageClassification(SequenceClassification):
    """One label per image (ViT-style encoders), from the pooled vector ([CLS] or the mean over patches); scored
    by accuracy. The backbone's image processor makes the pixel values."""

    name = "image_classification"
    score_name = SCORE_NAMES[name]

    def inputs(self, frame, processor, labels, max_length) -> PixelImages:
        return PixelImages(processor, frame["image"].tolist(), frame["label_id"].tolist())


TASK_TYPES: dict[str, TaskType] = {
    t.name: t for t in (SequenceClassification(), TokenClassification(), ImageClassification())
}
"""Every task type by its params.yaml name (`tasks.<task>.type`)."""
