"""The prepare stage turns raw CSVs into clean splits, or stops with an error that names the file."""

from __future__ import annotations

import pytest

from loramerge.atomic import read_json
from loramerge.data import DataError, load_split, read_raw_splits, stratified_subsample
from loramerge.lists import generated_lists
from loramerge.stages.prepare import prepare_task
from tests.helpers import synthetic_rows, write_csv


@pytest.fixture
def local_task(project, params_dict, tmp_path):
    """A task folder of our own, so each test can break it."""
    import yaml

    folder = tmp_path / "raw"
    for split, count in (("train", 40), ("validation", 10), ("test", 10)):
        write_csv(folder / "topics" / f"{split}.csv", synthetic_rows(["money", "sport"], count, len(split)))
    params_dict["data"]["local_dir"] = str(folder)
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))
    return folder / "topics"


def load(project):
    from loramerge.config import load_params

    return load_params(project / "params.yaml")


def test_prepared_splits_have_label_ids_a_label_map_and_stats(project, local_task):
    prepare_task(load(project), "topics")
    train = load_split("topics", "train")
    assert list(train.columns) == ["text", "label", "label_id"]
    assert read_json(project / "data/prepared/topics/labels.json") == {"labels": ["money", "sport"]}
    stats = read_json(project / "data/prepared/topics/stats.json")
    assert stats["rows"] == {"train": 40, "validation": 10, "test": 10}
    assert stats["majority_baseline_accuracy"]["test"] == 0.5


def test_empty_texts_are_dropped_and_counted(project, local_task):
    rows = synthetic_rows(["money", "sport"], 40, 1) + [("   ", "money"), ("", "sport")]
    write_csv(local_task / "train.csv", rows)
    prepare_task(load(project), "topics")
    stats = read_json(project / "data/prepared/topics/stats.json")
    assert stats["empty_texts_dropped"]["train"] == 2
    assert stats["rows"]["train"] == 40


def test_texts_shared_between_splits_are_counted(project, local_task):
    shared = synthetic_rows(["money", "sport"], 10, 5)
    write_csv(local_task / "test.csv", shared)
    write_csv(local_task / "train.csv", synthetic_rows(["money", "sport"], 40, 1) + shared[:3])
    prepare_task(load(project), "topics")
    assert read_json(project / "data/prepared/topics/stats.json")["duplicates_across_splits"]["train&test"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"text,category\nhello,money\n", "lacks column"),
        (b"text,label\n\xff\xfe bad bytes,money\n", "not valid UTF-8"),
        (b'text,label\n"unterminated,money\nmore,sport\n', "well-formed CSV"),
    ],
)
def test_broken_csv_files_are_refused_with_the_file_named(project, local_task, content, message):
    (local_task / "validation.csv").write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        prepare_task(load(project), "topics")
    assert "validation.csv" in str(error.value) or message == "well-formed CSV"


def test_a_label_only_in_test_is_an_error(project, local_task):
    write_csv(local_task / "test.csv", [("goal team", "sport"), ("what weather", "weather")])
    with pytest.raises(DataError, match=r"\['weather'\] appear in test but never in train"):
        prepare_task(load(project), "topics")


def test_a_split_left_empty_after_cleaning_is_an_error(project, local_task):
    write_csv(local_task / "validation.csv", [(" ", "money")])
    with pytest.raises(DataError, match="validation split has no rows"):
        prepare_task(load(project), "topics")


def test_a_failed_prepare_leaves_the_previous_output_untouched(project, local_task):
    prepare_task(load(project), "topics")
    before = (project / "data/prepared/topics/train.parquet").read_bytes()
    (local_task / "train.csv").write_bytes(b"")
    with pytest.raises(DataError):
        prepare_task(load(project), "topics")
    assert (project / "data/prepared/topics/train.parquet").read_bytes() == before
    assert not [p for p in (project / "data/prepared").iterdir() if p.name.startswith(".")]


def test_no_local_folder_and_no_hub_names_the_task_folder_and_dataset(project, params_dict, tmp_path, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    params = load(project).model_copy(
        update={"data": load(project).data.model_copy(update={"local_dir": str(tmp_path / "nowhere")})}
    )
    with pytest.raises(DataError) as error:
        prepare_task(params, "topics")
    text = str(error.value)
    assert "'topics'" in text and "nowhere" in text and "example/topics" in text


def test_the_data_dir_environment_variable_overrides_params(project, local_task, monkeypatch):
    monkeypatch.setenv("LORAMERGE_DATA_DIR", str(local_task.parent))
    params = load(project)
    params = params.model_copy(update={"data": params.data.model_copy(update={"local_dir": "/does/not/exist"})})
    prepare_task(params, "topics")
    assert (project / "data/prepared/topics/train.parquet").exists()


def test_subsampling_is_stratified_and_repeatable():
    import pandas as pd

    frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a"] * 80 + ["b"] * 20})
    first = stratified_subsample(frame, 20, seed=3)
    assert first["label"].value_counts().to_dict() == {"a": 16, "b": 4}
    assert first.equals(stratified_subsample(frame, 20, seed=3))
    assert stratified_subsample(frame, None, seed=3) is frame


def test_a_hub_dataset_without_validation_gets_one_carved_from_train_never_from_test(project, tmp_path, monkeypatch):
    import datasets

    labels = datasets.ClassLabel(names=["sport", "world"])
    features = datasets.Features({"text": datasets.Value("string"), "label": labels})

    def part(prefix: str, count: int) -> datasets.Dataset:
        rows = {"text": [f"{prefix} {i}" for i in range(count)], "label": [i % 2 for i in range(count)]}
        return datasets.Dataset.from_dict(rows, features=features)

    hub = datasets.DatasetDict({"train": part("train", 100), "test": part("test", 20)})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub)
    params = load(project)
    source = params.tasks["topics"].data.hub.model_copy(update={"splits": {"train": "train", "test": "test"}})
    task = params.tasks["topics"].model_copy(
        update={"data": params.tasks["topics"].data.model_copy(update={"hub": source})}
    )
    frames, _ = read_raw_splits("topics", task.data, tmp_path / "nowhere", seed=0)
    assert (len(frames["train"]), len(frames["validation"]), len(frames["test"])) == (90, 10, 20)
    assert frames["validation"]["text"].str.startswith("train").all(), "validation comes from train"
    assert not set(frames["validation"]["text"]) & set(frames["train"]["text"])
    assert frames["validation"]["label"].value_counts().to_dict() == {"sport": 5, "world": 5}
    again, _ = read_raw_splits("topics", task.data, tmp_path / "nowhere", seed=0)
    assert again["validation"].equals(frames["validation"])


def test_a_token_task_is_prepared_from_json_lines_with_its_tag_set_entity_counts_and_an_all_o_baseline(
    tmp_path, monkeypatch, params_dict
):
    """NER data (the layout of ../shared/data/wnut17): words and BIO tags per sentence, "O" first in the label map."""
    import json

    import pandas as pd

    from loramerge.config import Params
    from loramerge.stages.prepare import prepare_task

    folder = tmp_path / "data" / "names"
    folder.mkdir(parents=True)
    sentence = {
        "tokens": ["Ada", "Lovelace", "wrote", "in", "London"],
        "tags": ["B-person", "I-person", "O", "O", "B-location"],
    }
    empty = {"tokens": [], "tags": []}
    for split in ("train", "validation", "test"):
        lines = [sentence, empty, {"tokens": ["hello"], "tags": ["O"]}]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    params_dict["data"]["local_dir"] = str(tmp_path / "data")
    params_dict["tasks"] = {"names": {"type": "token_classification", "data": {"hub": {"id": "example/names"}}}}
    params_dict.update(generated_lists(["names"], 1, [], []))
    monkeypatch.chdir(tmp_path)
    out = prepare_task(Params.model_validate(params_dict), "names")
    labels = json.loads((out / "labels.json").read_text())["labels"]
    assert labels == ["O", "B-location", "B-person", "I-person"]
    train = pd.read_parquet(out / "train.parquet")
    assert len(train) == 2 and list(train["tag_ids"][0]) == [2, 3, 0, 0, 1]
    assert train["text"][0] == "Ada Lovelace wrote in London"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["empty_texts_dropped"]["train"] == 1
    assert stats["class_counts"]["test"] == {"location": 1, "person": 1}
    assert stats["majority_baseline_accuracy"]["test"] == pytest.approx(3 / 6)
