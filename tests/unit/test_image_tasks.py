"""Image classification on a tiny randomly initialised ViT (built from a config: no pretrained vision model can be
downloaded here) with generated images in the ImageFolder layout: prepared, trained in every mode, merged,
evaluated, compared for similarity, reported and exported through the same stages as text tasks."""

from __future__ import annotations

import base64
import io
import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from loramerge.data import load_split
from loramerge.lists import all_combinations, generated_lists
from loramerge.multitask import MultiTaskModel
from loramerge.predict import run_predict
from loramerge.records import MergedMetrics, SingleMetrics
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.export import export_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.report import write_report
from loramerge.stages.similarity import write_similarity
from tests.helpers import opened_project, tiny_params_dict, train_every_task

SIZE = 16
TASKS = {"colors": ["blue", "red"], "stripes": ["across", "down"]}


def picture(task: str, label: str, rng: random.Random) -> bytes:
    """A noisy 16×16 image whose class shows: a red or blue tint (colors), stripes across or down (stripes)."""
    image = Image.new("RGB", (SIZE, SIZE))
    for x in range(SIZE):
        for y in range(SIZE):
            noise = rng.randint(0, 60)
            if task == "colors":
                image.putpixel((x, y), (200, noise, noise) if label == "red" else (noise, noise, 200))
            else:
                on = (y if label == "across" else x) % 4 < 2
                image.putpixel((x, y), (220 - noise,) * 3 if on else (noise,) * 3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A 2-layer ViT with random weights and its image processor, saved like any HF vision model."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    )
    ViTModel(config).save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def imaged(tmp_path_factory, tiny_vit):
    """Both image tasks in the ImageFolder layout, trained, merged (low-rank, dense, both data-aware), evaluated,
    compared and reported."""
    data = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    for task, labels in TASKS.items():
        for split, count in (("train", 48), ("validation", 16), ("test", 16)):
            for i in range(count):
                label = labels[i % 2]
                (data / task / split / label).mkdir(parents=True, exist_ok=True)
                (data / task / split / label / f"{i}.png").write_bytes(picture(task, label, rng))
    tasks = list(TASKS)
    raw = tiny_params_dict(tiny_vit, data)  # the BERT tests' settings, on the ViT and its image tasks
    raw["tasks"] = {t: {"type": "image_classification", "data": {"hub": {"id": f"example/{t}"}}} for t in tasks}
    raw["train"].update(max_epochs=6, val_check_interval=3, patience=10)
    methods = raw["merge"]["methods"]
    raw["merge"]["methods"] = {m: methods[m] for m in ("task_arithmetic", "ties", "regmean", "adamerging")}
    raw["merge"]["methods"]["regmean"] = {"scaling": [1.0]}
    raw["evaluate"] = {"precision": "32"}
    raw["export"] = {"combinations": ["colors+stripes"], "latency_calls": 3, "throughput_repeats": 1}
    raw.update(generated_lists(tasks, 1, all_combinations(tasks, (2,)), [], shipped=["colors+stripes"]))
    with opened_project(tmp_path_factory.mktemp("image-project"), raw) as params:
        train_every_task(params)
        combo = params.combinations[0]
        merge_combination(params, combo)
        evaluate_combination(params, combo)
        write_similarity(params)
        write_report(params)
        yield params, combo


def test_images_are_prepared_from_image_folders_with_their_classes(imaged):
    stats = json.loads(Path("data/prepared/colors/stats.json").read_text())
    assert stats["rows"] == {"train": 48, "validation": 16, "test": 16}
    assert stats["class_counts"]["train"] == {"blue": 24, "red": 24}


def test_the_vit_adapters_learn_their_tasks_and_merge_into_one_encoder_scored_on_both(imaged):
    params, combo = imaged
    colors = SingleMetrics.read(Path("metrics/single/colors.json"))
    assert colors.score == colors.accuracy >= 0.75, "a tint is easy to see"
    merged = MergedMetrics.read(Path("metrics/merged") / f"{combo}.json")
    for method, result in merged.methods.items():
        assert set(result.tasks) == set(TASKS), method
        for task, scores in result.tasks.items():
            single = SingleMetrics.read(Path("metrics/single") / f"{task}.json").score
            assert scores.normalized_accuracy == pytest.approx(scores.score / single)
    assert merged.inference.examples == 2 * 16


def test_image_tasks_have_no_vocabulary_to_compare_and_are_reported(imaged):
    pair = json.loads(Path("metrics/similarity.json").read_text())["pairs"]["colors+stripes"]
    assert math.isnan(pair["vocab_jaccard"]) and -1 <= pair["data_cosine"] <= 1
    assert "colors+stripes" in Path("reports/summary.md").read_text()


@pytest.fixture(scope="module")
def exported(imaged):
    """The pair shipped as one model (registered in MLflow), with the test images it is checked on."""
    params, combo = imaged
    folder = export_combination(params, combo)
    tests = {task: load_split(task, "test") for task in TASKS}
    return params, combo, folder, tests


def test_the_exported_image_model_scores_each_task_as_the_evaluate_stage_did(exported):
    params, combo, folder, tests = exported
    model = MultiTaskModel.load(folder)
    assert model.input == "image" and set(model.tasks) == set(TASKS)
    method = json.loads((folder / "export.json").read_text())["method"]
    evaluated = MergedMetrics.read(Path("metrics/merged") / f"{combo}.json").methods[method].tasks
    for task, frame in tests.items():
        predicted = model.predict_frame(frame["image"].tolist())[task]
        assert (predicted == frame["label"]).mean() == pytest.approx(evaluated[task].score), task
    compression = json.loads((Path("metrics/export") / f"{combo}.json").read_text())["compression"]
    assert compression["precisions"]["fp32"]["accuracy"] == pytest.approx({t: evaluated[t].score for t in TASKS})
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "--image photo.jpg" in card


def test_predict_classifies_a_folder_of_image_files_and_refuses_texts_for_an_image_model(exported, tmp_path):
    params, combo, folder, tests = exported
    images = tmp_path / "photos"
    images.mkdir()
    for i, picture_bytes in enumerate(tests["colors"]["image"]):
        (images / f"{i:02d}.png").write_bytes(picture_bytes)
    (images / "notes.txt").write_text("not an image: skipped")
    written = tmp_path / "labels.csv"
    run_predict(str(folder), None, images, "text", written, 8)
    frame = pd.read_csv(written)
    assert frame["image"].tolist() == [str(images / f"{i:02d}.png") for i in range(len(tests["colors"]))]
    expected = MultiTaskModel.load(folder).predict_frame(tests["colors"]["image"].tolist())
    assert frame["colors"].tolist() == expected["colors"].tolist()
    with pytest.raises(ValueError, match="classifies images: pass --image"):
        run_predict(str(folder), ["a text"], None, "text", None, 8)
    (images / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        run_predict(str(folder), None, None, "text", None, 8, images=[images / "broken.png"])


def test_the_registered_image_model_takes_base64_image_files_through_mlflow(exported):
    import mlflow

    from loramerge.registry import fluent_uri
    from loramerge.tracking import tracking_uri

    params, combo, folder, tests = exported
    frame = tests["stripes"]
    with fluent_uri(tracking_uri(params.tracking, Path("."))):
        served = mlflow.pyfunc.load_model(f"models:/loramerge-{combo}@champion")
    encoded = [base64.b64encode(b).decode("ascii") for b in frame["image"]]
    answer = served.predict(pd.DataFrame({"image": encoded}))
    expected = MultiTaskModel.load(folder).predict_frame(frame["image"].tolist())
    assert answer["stripes"].tolist() == expected["stripes"].tolist()
    assert answer["colors_probability"].to_numpy() == pytest.approx(expected["colors_probability"].to_numpy())


def test_the_image_pyfunc_names_a_missing_column_and_a_value_that_is_no_base64_image_file(exported):
    from loramerge.registry import MultiTaskPyfunc

    params, combo, folder, tests = exported
    pyfunc = MultiTaskPyfunc.of(MultiTaskModel.load(folder))
    with pytest.raises(ValueError, match="no 'image' column"):
        pyfunc.predict(None, pd.DataFrame({"text": ["a text"]}))
    with pytest.raises(ValueError, match="input row 1: the image column holds no base64-encoded image file"):
        pyfunc.predict(None, pd.DataFrame({"image": [base64.b64encode(tests["colors"]["image"][0]).decode(), "n0t!"]}))
