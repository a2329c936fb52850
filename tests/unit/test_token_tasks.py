"""A named-entity task beside a sentence task on the tiny BERT: trained, merged with the sentence task's adapter,
evaluated, reported and exported through the same stages, each scored its own way (entity micro-F1 vs accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from loramerge.lists import all_combinations, generated_lists
from loramerge.model import ClassificationHead
from loramerge.multitask import MultiTaskModel
from loramerge.records import MergedMetrics, SingleMetrics
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.export import export_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.report import write_report
from loramerge.tokens import entity_metrics
from tests.helpers import opened_project, synthetic_tagged, tiny_params_dict, train_every_task, write_jsonl

TAGGER, SENTENCES = "entities", "topics"
COMBO = f"{SENTENCES}+{TAGGER}"


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, tiny_backbone, tiny_data):
    """One project with the synthetic sentence task `topics` and the synthetic NER task `entities`, every model
    trained, the pair merged (a low-rank, a dense and both data-aware methods), evaluated and exported."""
    data = tmp_path_factory.mktemp("tagged-data")
    for split, count in (("train", 96), ("validation", 24), ("test", 24)):
        write_jsonl(data / TAGGER / f"{split}.jsonl", synthetic_tagged(count, seed=len(split)))
    (data / SENTENCES).symlink_to(tiny_data / SENTENCES)
    raw = tiny_params_dict(tiny_backbone, data)
    raw["tasks"] = {
        SENTENCES: raw["tasks"][SENTENCES],
        TAGGER: {
            "type": "token_classification",
            "data": {"hub": {"id": "example/entities"}},
            "train": {"max_epochs": 30, "learning_rate": 0.03, "head_learning_rate": 0.05},
        },
    }
    raw["train"].update(patience=20)
    raw["evaluate"] = {"precision": "32"}  # as the exported model runs: the same numbers to compare
    methods = raw["merge"]["methods"]
    raw["merge"]["methods"] = {m: methods[m] for m in ("task_arithmetic", "ties", "regmean", "adamerging")}
    raw.update(
        generated_lists([SENTENCES, TAGGER], 1, all_combinations([SENTENCES, TAGGER], (2,)), [], shipped=[COMBO])
    )
    raw["export"] = {"combinations": [COMBO], "latency_calls": 3, "throughput_repeats": 1, "registry": False}
    with opened_project(tmp_path_factory.mktemp("tagged"), raw) as params:
        train_every_task(params)
        merge_combination(params, COMBO)
        evaluate_combination(params, COMBO)
        write_report(params)
        yield params, export_combination(params, COMBO)


def test_the_tagger_learns_its_entities_and_is_scored_by_entity_micro_f1(tagged):
    single = SingleMetrics.read(Path("metrics/single") / f"{TAGGER}.json")
    assert single.score == single.micro_f1 > 0.25, "entities found: tagging every word O scores 0"
    assert single.weighted_precision is None and 0 < single.accuracy <= 1  # word accuracy, not the score
    predictions = pd.read_csv(Path("metrics/predictions") / f"{TAGGER}.csv")
    gold, guessed = predictions["actual"].str.split(), predictions["predicted"].str.split()
    assert entity_metrics(gold, guessed)["micro_f1"] == pytest.approx(single.score)
    assert predictions["points"].sum() / predictions["possible"].sum() == pytest.approx(single.score)
    assert ClassificationHead.load(Path("models/adapters") / TAGGER).per_token
    assert not ClassificationHead.load(Path("models/adapters") / SENTENCES).per_token


def test_a_merge_of_the_tagger_and_a_sentence_task_is_normalized_by_each_tasks_own_score(tagged):
    merged = MergedMetrics.read(Path("metrics/merged") / f"{COMBO}.json")
    singles = {t: SingleMetrics.read(Path("metrics/single") / f"{t}.json") for t in (SENTENCES, TAGGER)}
    for method, result in merged.methods.items():
        tagger, sentences = result.tasks[TAGGER], result.tasks[SENTENCES]
        assert tagger.score == tagger.micro_f1 and sentences.score == sentences.accuracy, method
        for task, scores in result.tasks.items():
            assert scores.single_score == singles[task].score
            assert scores.normalized_accuracy == pytest.approx(scores.score / singles[task].score)
    per_example = pd.read_parquet(Path("metrics/predictions/merged") / f"{COMBO}.parquet")
    rows = per_example[(per_example["method"] == "ties") & (per_example["task"] == TAGGER)]
    assert rows["points"].sum() / rows["possible"].sum() == pytest.approx(merged.methods["ties"].tasks[TAGGER].score)


def test_the_report_gives_each_task_its_metric_and_bootstraps_the_tagger_by_sentences(tagged):
    single = pd.read_csv("reports/tables/single.csv").set_index("task")
    assert single.loc[TAGGER, "metric"] == "entity micro-F1" and single.loc[SENTENCES, "metric"] == "accuracy"
    assert single.loc[TAGGER, "lora_score"] == SingleMetrics.read(Path("metrics/single") / f"{TAGGER}.json").score
    low, high = single.loc[TAGGER, ["lora_score_ci_low", "lora_score_ci_high"]]
    assert low <= single.loc[TAGGER, "lora_score"] <= high and low < high


def test_the_exported_model_tags_words_and_labels_texts_in_one_pass_scoring_as_the_evaluate_stage(tagged):
    params, folder = tagged
    model = MultiTaskModel.load(folder)
    method = model.manifest["method"]
    test = [json.loads(line) for line in (params_data(params) / TAGGER / "test.jsonl").read_text().splitlines()]
    frame = model.predict_frame([" ".join(s["tokens"]) for s in test])
    assert [len(tags.split()) for tags in frame[TAGGER]] == [len(s["tokens"]) for s in test], "one tag per word"
    found = entity_metrics([s["tags"] for s in test], [tags.split() for tags in frame[TAGGER]])["micro_f1"]
    scored = MergedMetrics.read(Path("metrics/merged") / f"{COMBO}.json").methods[method].tasks[TAGGER].score
    assert found == pytest.approx(scored)
    assert set(frame[SENTENCES]) <= {"money", "sport"} and frame[f"{TAGGER}_probability"].between(0, 1).all()
    compression = json.loads((Path("metrics/export") / f"{COMBO}.json").read_text())["compression"]
    assert compression["precisions"]["fp32"]["accuracy"][TAGGER] == pytest.approx(scored)


def params_data(params) -> Path:
    return Path(params.data.local_dir)
