"""Token classification pieces: tagged sentences read strictly, word pieces labelled on their first piece only,
predictions mapped back to words, and entity F1 as seqeval's strict IOB2 scores it (checked by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loramerge.backbone import load_tokenizer
from loramerge.data import DataError, read_tagged_split, tag_set
from loramerge.model import ClassificationHead
from loramerge.tokens import (
    IGNORED,
    TaggedWords,
    entity_metrics,
    first_piece_labels,
    micro_f1,
    sentence_counts,
    token_loss,
    word_tags,
)
from tests.sandbox import shared_data_dir

SHARED_DATA = shared_data_dir()


def test_entity_f1_on_a_hand_example_counts_an_entity_only_when_type_and_both_ends_are_right():
    true = [["B-person", "I-person", "O", "B-location"], ["O", "B-group", "O"]]
    predicted = [["B-person", "I-person", "O", "B-group"], ["O", "B-group", "O"]]
    # 3 gold entities, 3 predicted, 2 right: micro P = R = F1 = 2/3
    scores = entity_metrics(true, predicted)
    assert scores["micro_f1"] == pytest.approx(2 / 3)
    # per type F1: person 1, location 0 (missed), group 2/3 (P 1/2, R 1): macro = (1 + 0 + 2/3) / 3
    assert scores["macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    # weighted by support (person 1, location 1, group 1): the same as macro here
    assert scores["weighted_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert scores["word_accuracy"] == pytest.approx(6 / 7)
    # strict: an I- without its B- is no entity, and a span cut short is wrong
    assert entity_metrics([["B-person", "I-person"]], [["O", "I-person"]])["micro_f1"] == 0.0
    assert entity_metrics([["B-person", "I-person"]], [["B-person", "O"]])["micro_f1"] == 0.0


def test_micro_f1_from_per_sentence_counts_equals_seqeval_on_any_resample():
    true = [["B-person", "I-person", "O", "B-location"], ["O", "B-group", "O"], ["B-product", "O"]]
    predicted = [["B-person", "I-person", "O", "B-group"], ["O", "B-group", "O"], ["O", "O"]]
    counts = sentence_counts(true, predicted)
    assert counts.tolist() == [[1, 2, 2], [1, 1, 1], [0, 0, 1]]
    for rows in ([0, 1, 2], [0, 0, 2], [1, 2, 2]):
        expected = entity_metrics([true[i] for i in rows], [predicted[i] for i in rows])["micro_f1"]
        assert micro_f1(counts[rows]) == pytest.approx(expected)


def test_only_the_first_piece_of_a_word_is_labelled_and_predictions_return_to_words():
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    assert first_piece_labels(word_ids, [3, 0, 5]) == [IGNORED, 3, IGNORED, 0, 5, IGNORED, IGNORED, IGNORED]
    labels = ["O", "B-person", "I-person"]
    assert word_tags([0, 1, 2, 0, 2, 0, 0, 0], word_ids, 4, labels) == ["B-person", "O", "I-person", "O"]


def test_tagged_words_pad_labels_with_ignored_and_the_loss_skips_them(params):
    tokenizer = load_tokenizer(params.backbone)
    labels = ["O", "B-team", "I-team"]
    data = TaggedWords(tokenizer, [["goal", "team"], ["match"]], [["O", "B-team"], ["O"]], labels, 16)
    batch = data.collate([data[0], data[1]])
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORED).all()
    assert batch["labels"][0].tolist()[:4] == [IGNORED, 0, 1, IGNORED]  # [CLS] goal team [SEP]
    logits = torch.zeros(*batch["labels"].shape, 3)
    logits[..., 0] = 5.0  # confident "O" everywhere: only the B-team word is wrong
    manual = -torch.log_softmax(logits[0, 2], -1)[1] + 2 * -torch.log_softmax(logits[0, 1], -1)[0]
    assert token_loss(logits, batch["labels"]) == pytest.approx((manual / 3).item(), rel=1e-5)


def test_a_per_token_head_saves_and_loads_as_one_and_reads_every_token(tmp_path):
    head = ClassificationHead(8, 5, 0.1, per_token=True)
    head.save(tmp_path)
    loaded = ClassificationHead.load(tmp_path)
    assert loaded.per_token and not loaded.training
    hidden, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert torch.equal(loaded.read(hidden, mask, "mean"), loaded(hidden)) and loaded.read(
        hidden, mask, "mean"
    ).shape == (2, 4, 5)
    ClassificationHead(8, 5, 0.0).save(tmp_path)
    assert not ClassificationHead.load(tmp_path).per_token, "a sentence head stays one"


def test_tagged_files_are_read_strictly_with_the_line_at_fault_named(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"tokens": ["Paris", "is"], "tags": ["B-location", "O"]}\n\n')
    frame = read_tagged_split(good)
    assert frame["tokens"].tolist() == [["Paris", "is"]] and tag_set([frame]) == ["O", "B-location"]
    for line, message in (
        ('{"tokens": ["a"], "tags": ["O", "O"]}', "1 tokens but 2 tags"),
        ('{"tokens": ["a"], "tags": ["PER"]}', "is not BIO"),
        ("not json", "not a tagged sentence"),
    ):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"tokens": ["x"], "tags": ["O"]}\n' + line + "\n")
        with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
            read_tagged_split(bad)


@pytest.mark.skipif(not (SHARED_DATA / "wnut17").exists(), reason="the shared data folder is not mounted")
def test_the_real_wnut17_splits_read_with_the_thirteen_tags_of_its_readme():
    splits = {s: read_tagged_split(SHARED_DATA / "wnut17" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert [len(f) for f in splits.values()] == [3394, 1009, 1287]
    tags = tag_set(list(splits.values()))
    assert len(tags) == 13 and tags[0] == "O"
    assert {t[2:] for t in tags[1:]} == {"corporation", "creative-work", "group", "location", "person", "product"}
    assert np.mean([len(s) for s in splits["train"]["tokens"]]) > 5
