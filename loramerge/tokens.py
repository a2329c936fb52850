"""Token classification (named-entity recognition): tagged sentences, word pieces, a per-token head, entity F1.

A sentence arrives as words with one BIO tag each (`{"tokens": [...], "tags": [...]}`, the layout of
../shared/data/wnut17 and of the Hub's token-classification sets). The tokenizer splits words into
pieces; only the first piece of each word carries the word's tag, the others are ignored in the loss
(label -100) and a word's prediction is its first piece's: the usual alignment (HF's token-classification
recipe), so one label per word goes in and one comes out. Scores are entity-level (seqeval, strict IOB2:
an entity counts only when its type and both ends are right) plus the share of words tagged right.

The pieces here are what the pipeline's token-classification task type (loramerge/tasktypes.py) is built
from; its head is loramerge.model's ClassificationHead reading every token. Merging never sees them (heads
are never merged), so a merged encoder serves an NER head and a sentence head alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from seqeval.scheme import IOB2, Entities
from torch import nn
from transformers import PreTrainedTokenizerBase

from loramerge.batching import TokenizedTexts

IGNORED = -100
"""The label of word pieces after a word's first, and of special tokens: cross-entropy skips it."""


class TaggedWords(TokenizedTexts):
    """Sentences as word-piece ids, each piece's label id (the word's tag on its first piece, else IGNORED) and
    the word each piece came from, so predictions go back to words. Batches as texts' are, labels padded."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        sentences: Sequence[Sequence[str]],
        tags: Sequence[Sequence[str]] | None,
        labels: Sequence[str],
        max_length: int,
    ) -> None:
        encoded = tokenizer(
            [list(s) for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length
        )
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.word_ids: list[list[int | None]] = [encoded.word_ids(i) for i in range(len(sentences))]
        self.words = [len(s) for s in sentences]
        self.tags = [list(t) for t in tags] if tags is not None else None
        self.pad_id = tokenizer.pad_token_id or 0
        index = {label: i for i, label in enumerate(labels)}
        self.labels = (
            [first_piece_labels(w, [index[t] for t in sentence]) for w, sentence in zip(self.word_ids, tags)]
            if tags is not None
            else None
        )

    def label_tensor(self, items: list[dict], width: int) -> torch.Tensor:
        """Each piece's label id, padded with IGNORED to the batch's longest sentence."""
        labels = torch.full((len(items), width), IGNORED, dtype=torch.long)
        for row, item in enumerate(items):
            labels[row, : len(item["labels"])] = torch.tensor(item["labels"])
        return labels


def first_piece_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Each piece's label: its word's on the word's first piece, IGNORED on later pieces and special tokens."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORED if word is None or word == previous else word_labels[word])
        previous = word
    return labels


def first_pieces(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Each word's first piece position: where a word's prediction is read. Words cut off by truncation have
    none."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            first.setdefault(word, position)
    return first


def word_tags(
    piece_predictions: Sequence[int], word_ids: Sequence[int | None], words: int, labels: Sequence[str]
) -> list[str]:
    """One tag per word from its first piece's predicted id; words cut off by truncation are tagged "O"."""
    tags = ["O"] * words
    for word, position in first_pieces(word_ids).items():
        tags[word] = labels[int(piece_predictions[position])]
    return tags


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled pieces only (first piece of each word). Sentence logits (texts × labels)
    with one label per text have nothing ignored: the same function is the sentence tasks' loss."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORED)


def entity_metrics(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro/macro/weighted F1 (seqeval, strict IOB2) and word accuracy.

    Micro F1 is the task's score (what normalized score and gain retention use); macro weighs every entity
    type alike, weighted by its support. A sentence with no entities in either list adds nothing to F1."""
    from seqeval.metrics import f1_score  # import cost: scikit-learn (under seqeval), only for stages that score

    true, predicted = [list(t) for t in true], [list(p) for p in predicted]
    words = sum(len(t) for t in true)
    right = sum(a == b for t, p in zip(true, predicted) for a, b in zip(t, p))
    scores = {"word_accuracy": right / words if words else 0.0}
    for average in ("micro", "macro", "weighted"):
        scores[f"{average}_f1"] = float(
            f1_score(true, predicted, average=average, mode="strict", scheme=IOB2, zero_division=0)
        )
    return scores


def entity_report(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Per entity type precision, recall, F1 and support (seqeval's report as a dict)."""
    from seqeval.metrics import classification_report  # import cost: scikit-learn (under seqeval)

    return classification_report(
        [list(t) for t in true],
        [list(p) for p in predicted],
        mode="strict",
        scheme=IOB2,
        output_dict=True,
        zero_division=0,
    )


def sentence_counts(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence: (entities right, entities predicted, entities true). Micro F1 over any resample of
    sentences is 2·Σright / (Σpredicted + Σtrue), so the report's paired bootstrap resamples these rows."""
    rows = []
    for t, p in zip(true, predicted):
        gold = {e.to_tuple() for e in Entities([list(t)], IOB2).entities[0]}
        guess = {e.to_tuple() for e in Entities([list(p)], IOB2).entities[0]}
        rows.append((len(gold & guess), len(guess), len(gold)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def micro_f1(counts: np.ndarray) -> float:
    """Entity micro F1 from summed per-sentence counts (see sentence_counts)."""
    right, predicted, gold = counts.sum(0)
    return float(2 * right / (predicted + gold)) if predicted + gold else 0.0
