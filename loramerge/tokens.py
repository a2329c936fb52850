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

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2, Entities
from torch import nn
from transformers import PreTrainedTokenizerBase

IGNORED = -100
"""The label of word pieces after a word's first, and of special tokens: cross-entropy skips it."""


class TaggedWords(torch.utils.data.Dataset):
    """Sentences as word-piece ids, each piece's label id (the word's tag on its first piece, else IGNORED) and
    the word each piece came from, so predictions go back to words."""

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

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __getitem__(self, index: int) -> dict:
        item = {"input_ids": self.input_ids[index], "index": index}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Pad ids with the pad token and labels with IGNORED, to the batch's longest sentence."""
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), width), IGNORED, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n], mask[row, :n] = torch.tensor(item["input_ids"]), 1
            if "labels" in item:
                labels[row, :n] = torch.tensor(item["labels"])
        batch = {"input_ids": ids, "attention_mask": mask, "index": torch.tensor([i["index"] for i in items])}
        if self.labels is not None:
            batch["labels"] = labels
        return batch

    def sorted_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of similar length, for inference (little padding); `index` puts rows back in order."""
        order = sorted(range(len(self)), key=lambda i: len(self.input_ids[i]))
        for start in range(0, len(order), batch_size):
            yield self.collate([self[i] for i in order[start : start + batch_size]])


def first_piece_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Each piece's label: its word's on the word's first piece, IGNORED on later pieces and special tokens."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORED if word is None or word == previous else word_labels[word])
        previous = word
    return labels


def word_tags(
    piece_predictions: Sequence[int], word_ids: Sequence[int | None], words: int, labels: Sequence[str]
) -> list[str]:
    """One tag per word from its first piece's predicted id; words cut off by truncation are tagged "O"."""
    tags = ["O"] * words
    seen: set[int] = set()
    for prediction, word in zip(piece_predictions, word_ids):
        if word is not None and word not in seen:
            tags[word] = labels[int(prediction)]
            seen.add(word)
    return tags


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled pieces only (first piece of each word). Sentence logits (texts × labels)
    with one label per text have nothing ignored: the same function is the sentence tasks' loss."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORED)


def entity_metrics(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro/macro/weighted F1 (seqeval, strict IOB2) and word accuracy.

    Micro F1 is the task's score (what normalized score and gain retention use); macro weighs every entity
    type alike, weighted by its support. A sentence with no entities in either list adds nothing to F1."""
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
