"""The shipped multi-task model on the tiny BERT: export folder, predict, MLflow registry and serving."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from loramerge.atomic import read_json, write_json
from loramerge.cli import main
from loramerge.config import load_params
from loramerge.multitask import EXPORT_MANIFEST, MultiTaskModel
from loramerge.server import free_port
from tests.helpers import opened_project, serving, tiny_params_dict, train_every_task

LOW_RANK_METHODS = {"task_arithmetic": {"scaling": [0.5, 1.0]}, "linear": {}}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_backbone, tiny_data):
    """One tiny project trained, merged, evaluated and exported once for the module.

    Exported among the low-rank methods only, so the export always carries a PEFT adapter
    (the dense path folds the same `merged_deltas`)."""
    from loramerge.stages.evaluate import evaluate_combination
    from loramerge.stages.export import export_combination
    from loramerge.stages.merge import merge_combination

    raw = tiny_params_dict(tiny_backbone, tiny_data)
    raw["merge"]["methods"] = LOW_RANK_METHODS
    raw["export"] = {"latency_calls": 3, "throughput_repeats": 1}
    raw.setdefault("sweep", {})["task"] = next(iter(raw["tasks"]))
    with opened_project(tmp_path_factory.mktemp("export-project"), raw) as params:
        train_every_task(params)
        combo = params.combinations[0]
        merge_combination(params, combo)
        evaluate_combination(params, combo)
        yield params, combo, export_combination(params, combo)


def reference_probabilities(params, combo: str, method: str, task: str, texts: list[str]) -> np.ndarray:
    """What the evaluate stage's path computes: base encoder patched with the saved merge, the task's head."""
    from loramerge.backbone import load_encoder, load_tokenizer
    from loramerge.batching import TokenizedTexts
    from loramerge.lora import patched, saved_deltas
    from loramerge.model import ClassificationHead, Classifier

    encoder = load_encoder(params.backbone).eval()
    inputs = TokenizedTexts(load_tokenizer(params.backbone), texts, None, params.backbone.max_length)
    batch = inputs.collate([inputs[i] for i in range(len(inputs))])
    head = ClassificationHead.load(Path("models/merged") / combo / "heads" / task)
    with patched(encoder, saved_deltas(encoder, Path("models/merged") / combo / method)), torch.inference_mode():
        logits = Classifier(encoder, head, params.backbone.pooling)(batch["input_ids"], batch["attention_mask"])
    return torch.softmax(logits, -1).numpy()


def test_the_exported_model_predicts_what_the_evaluate_stage_scored_on_every_member_test_split(exported):
    from loramerge.data import load_split

    params, combo, folder = exported
    model = MultiTaskModel.load(folder)
    method = model.manifest["method"]
    scored = read_json(Path("metrics/merged") / f"{combo}.json")["methods"][method]["tasks"]
    for task in model.tasks:
        test = load_split(task, "test")
        probabilities = model.probabilities(test["text"].tolist())[task]
        np.testing.assert_allclose(
            probabilities, reference_probabilities(params, combo, method, task, test["text"].tolist()), atol=1e-5
        )
        assert float((probabilities.argmax(-1) == test["label_id"].to_numpy()).mean()) == pytest.approx(
            scored[task]["accuracy"]
        )


def test_the_export_folder_holds_encoder_tokenizer_heads_labels_manifest_adapter_and_model_card(exported):
    params, combo, folder = exported
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        EXPORT_MANIFEST,
        "adapter/adapter_config.json",
    ):
        assert (folder / name).is_file(), name
    manifest = read_json(folder / EXPORT_MANIFEST)
    merge = read_json(Path("models/merged") / combo / manifest["method"] / "manifest.json")
    assert manifest["members"] == combo.split("+") and manifest["member_hashes"] == merge["members"]
    assert manifest["params"] == merge["params"] and len(manifest["git_commit"]) > 0
    for task in manifest["members"]:
        assert manifest["labels"][task] == read_json(Path("data/prepared") / task / "labels.json")["labels"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "## Compressed variants" in card and "int8" in card
    assert "head only" in card and "speed-up" in card and manifest["method"] in card


def test_peft_loads_the_exported_low_rank_adapter_and_with_the_heads_reproduces_the_predictions(exported):
    from peft import PeftModel

    from loramerge.backbone import load_encoder
    from loramerge.batching import TokenizedTexts
    from loramerge.data import load_split
    from loramerge.multitask import predict_probabilities

    params, combo, folder = exported
    model = MultiTaskModel.load(folder)
    peft_model = PeftModel.from_pretrained(load_encoder(params.backbone), str(folder / "adapter")).eval()
    texts = [t for task in model.tasks for t in load_split(task, "test")["text"].tolist()]
    batches = TokenizedTexts(model.processor, texts, None, model.max_length).sorted_batches(16)
    through_peft = predict_probabilities(peft_model, model.heads, batches, model.pooling)
    folded = model.probabilities(texts, 16)
    for task in model.tasks:
        np.testing.assert_allclose(through_peft[task], folded[task], atol=1e-5)


def test_the_method_with_the_best_validation_score_is_chosen_and_ties_go_to_the_first_in_merge_methods(
    exported, tmp_path, monkeypatch
):
    from loramerge.stages.export import choose_method

    _, combo, _ = exported
    manifest = read_json(Path("models/merged") / combo / "linear" / "manifest.json")  # a whole one, to vary
    monkeypatch.chdir(tmp_path)
    methods = {"ties": {}, "linear": {}, "task_arithmetic": {}}
    for method, score in zip(methods, (0.8, 0.9, 0.9)):
        write_json(
            Path("models/merged") / combo / method / "manifest.json",
            {
                **manifest,
                "method": method,
                "validation": {**manifest["validation"], "mean_normalized_accuracy": score},
            },
        )
    assert choose_method(list(methods), combo) == ("linear", {"ties": 0.8, "linear": 0.9, "task_arithmetic": 0.9})


def test_exporting_a_combination_not_merged_yet_names_the_missing_folder_and_writes_nothing(
    exported, tmp_path, monkeypatch
):
    from loramerge.stages.export import export_combination

    params, combo, _ = exported
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"models/merged/{combo}/heads not found")):
        export_combination(params, combo)
    assert not (tmp_path / "models").exists()


def test_the_compression_table_has_fp32_and_int8_and_bf16_exactly_when_the_cpu_has_bf16_units(exported):
    from loramerge.cpu import cpu_has_bf16

    _, combo, _ = exported
    table = read_json(Path("metrics/export") / f"{combo}.json")["compression"]["precisions"]
    assert set(table) == {"fp32", "int8"} | ({"bf16"} if cpu_has_bf16() else set())
    assert table["int8"]["size_bytes"] < table["fp32"]["size_bytes"]
    for row in table.values():
        assert (
            set(row["accuracy"]) == set(combo.split("+")) and row["latency_b1_p95_ms"] >= row["latency_b1_p50_ms"] > 0
        )


def registry_client():
    from mlflow.tracking import MlflowClient

    from loramerge.tracking import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(load_params().tracking, Path(".")))


def test_the_registry_holds_the_export_with_its_tags_and_champion_and_an_unchanged_export_adds_no_version(exported):
    from loramerge.registry import register_export
    from loramerge.tracking import stage_run

    params, combo, folder = exported
    client = registry_client()
    name = f"loramerge-{combo}"
    (version,) = client.search_model_versions(f"name='{name}'")
    manifest = read_json(folder / EXPORT_MANIFEST)
    assert version.tags["method"] == manifest["method"] and version.tags["members"] == ",".join(manifest["members"])
    assert float(version.tags["validation_score"]) == manifest["validation"]["mean_normalized_accuracy"]
    assert version.tags["git_commit"] == manifest["git_commit"]
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    assert (
        client.get_experiment_by_name(params.tracking.experiment).tags["mlflow.experimentKind"]
        == "custom_model_development"
    )
    with stage_run(params.tracking, "again", {}) as run:
        assert register_export(folder, run.uri, run.run_id)["new_version"] is False
    assert len(client.search_model_versions(f"name='{name}'")) == 1


def changed_copy(folder: Path, destination: Path, combination: str, score: float) -> Path:
    """The export with other head weights (so other content), registered under `combination`, with this score."""
    from loramerge.model import ClassificationHead
    from loramerge.multitask import content_hash

    shutil.copytree(folder, destination)
    manifest = read_json(destination / EXPORT_MANIFEST)
    head_dir = destination / "heads" / manifest["members"][0]
    head = ClassificationHead.load(head_dir)
    with torch.no_grad():
        head.linear.bias.add_(score)
    head.save(head_dir)
    manifest["validation"]["mean_normalized_accuracy"], manifest["combination"] = score, combination
    manifest["content_sha256"] = content_hash(destination)
    write_json(destination / EXPORT_MANIFEST, manifest)
    return destination


def test_champion_moves_to_a_better_registered_version_and_stays_when_a_worse_one_comes(exported, tmp_path):
    from loramerge.registry import register_export
    from loramerge.tracking import stage_run

    params, combo, folder = exported
    name = f"{combo}-champion-test"  # its own registered model: the export's own champion stays what serving tests use
    with stage_run(params.tracking, "registry-test", {}) as run:
        first = register_export(changed_copy(folder, tmp_path / "first", name, 0.5), run.uri, run.run_id)
        better = register_export(changed_copy(folder, tmp_path / "better", name, 0.9), run.uri, run.run_id)
        worse = register_export(changed_copy(folder, tmp_path / "worse", name, 0.7), run.uri, run.run_id)
    assert [first["version"], better["version"], worse["version"]] == ["1", "2", "3"]
    assert (first["champion"], better["champion"], worse["champion"]) == ("1", "2", "2")
    assert str(registry_client().get_model_version_by_alias(f"loramerge-{name}", "champion").version) == "2"


def test_an_unreachable_tracking_server_costs_one_warning_not_the_export(exported, monkeypatch):
    from loramerge.stages.export import export_combination
    from loramerge.tracking import TrackingWarning

    params, combo, folder = exported
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.warns(TrackingWarning, match="not tracked"):
        assert export_combination(params, combo) == folder
    assert (folder / "model.safetensors").is_file() and MultiTaskModel.load(folder).tasks == combo.split("+")
    assert read_json(Path("metrics/export") / f"{combo}.json")["registry"] is None


def serve_and_post(model_uri: str, tracking: str, texts: list[str], cwd: Path) -> list[dict]:
    """Start a real `mlflow models serve`, POST the texts to /invocations, stop the server; the predictions."""
    port = free_port()
    command = [
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with serving([*command, "--workers", "1"], port, tracking, cwd):
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())["predictions"]


def test_mlflow_models_serve_of_the_champion_answers_invocations_with_the_exported_models_labels(exported):
    from loramerge.data import load_split
    from loramerge.tracking import tracking_uri

    params, combo, folder = exported
    model = MultiTaskModel.load(folder)
    texts = load_split(model.tasks[0], "test")["text"].tolist()[:8]
    served = serve_and_post(
        f"models:/loramerge-{combo}@champion", tracking_uri(params.tracking, Path(".")), texts, Path.cwd()
    )
    expected = model.predict_frame(texts)
    for task in model.tasks:
        assert [row[task] for row in served] == expected[task].tolist()
        np.testing.assert_allclose(
            [row[f"{task}_probability"] for row in served], expected[f"{task}_probability"], atol=1e-5
        )


def test_predict_writes_one_row_per_input_with_each_tasks_label_and_probability(exported, tmp_path, capsys):
    _, _, folder = exported
    texts = ["goal match today", "bank stock really", "joy smile so"]
    (tmp_path / "in.csv").write_text("id,body\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    assert (
        main(
            [
                "predict",
                "--model",
                str(folder),
                "--input",
                str(tmp_path / "in.csv"),
                "--text-column",
                "body",
                "--output",
                str(tmp_path / "out.jsonl"),
            ]
        )
        == 0
    )
    assert "out.jsonl: 3 rows" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = MultiTaskModel.load(folder).predict_frame(texts)
    assert [r["text"] for r in rows] == texts
    for task in expected.columns:
        assert (
            [r[task] for r in rows] == pytest.approx(expected[task].tolist())
            if task.endswith("_probability")
            else expected[task].tolist()
        )
    assert main(["predict", "--model", str(folder), "--text", texts[0], "--text", texts[1]]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in printed] == texts[:2]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_model", "model folder"),
        ("missing_column", "has no column 'text'"),
        ("empty_file", "is empty"),
        ("not_utf8", "is not UTF-8"),
        ("missing_input", "not found"),
    ],
)
def test_predict_on_bad_input_exits_2_with_a_one_line_message_and_writes_no_output(
    exported, tmp_path, capsys, case, message
):
    _, _, folder = exported
    model, source = str(folder), tmp_path / "in.csv"
    if case == "missing_model":
        model = str(tmp_path / "no-such-export")
        source.write_text("text\nhello\n")
    elif case == "missing_column":
        source.write_text("body\nhello\n")
    elif case == "empty_file":
        source.write_text("")
    elif case == "not_utf8":
        source.write_bytes("text\ncaf\u00e9\n".encode("latin-1"))
    output = tmp_path / "out.csv"
    assert main(["predict", "--model", model, "--input", str(source), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not output.exists() and not list(tmp_path.glob(".out.csv*"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "-4"], "--batch-size must be at least 1 (got -4)"),
        (["--batch-size", "0"], "--batch-size must be at least 1 (got 0)"),
        (["--output", "{tmp}/a-file/out.csv"], "a-file is a file, not a folder"),
        (["--output", "{tmp}/a-folder.csv"], "a-folder.csv is a folder, where a file is to be written"),
    ],
    ids=["negative batch", "zero batch", "output under a file", "output is a folder"],
)
def test_predict_options_are_checked_before_the_model_loads(exported, tmp_path, capsys, monkeypatch, options, message):
    from loramerge import predict

    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("the model was loaded before the options"))
    (tmp_path / "a-file").write_text("in the way")
    (tmp_path / "a-folder.csv").mkdir()
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    assert main(["predict", "--model", str(exported[2]), "--text", "hello", *options]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.parametrize("line", ['{"text": null}', '{"id": 3}'], ids=["null text", "no text key"])
def test_a_json_lines_row_without_a_text_is_refused_naming_the_line(exported, tmp_path, capsys, line):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "goal match"}\n' + line + "\n")
    assert main(["predict", "--model", str(exported[2]), "--input", str(source)]) == 2
    assert "line(s) [2] have no 'text' (null or missing)" in capsys.readouterr().err


def test_an_empty_text_is_labelled_with_a_one_line_warning(exported, capsys):
    assert main(["predict", "--model", str(exported[2]), "--text", "", "--text", "goal match"]) == 0
    captured = capsys.readouterr()
    assert "loramerge predict: warning: 1 empty text(s) (row(s) [1]) are labelled from no words at all" in (
        captured.err.splitlines()
    )
    assert len(captured.out.strip().splitlines()) == 2


def reordered(raw: bytes) -> bytes:
    labels = json.loads(raw)["labels"]
    return json.dumps({"labels": labels[::-1]}).encode()


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("heads/{task}/labels.json", reordered, "but {folder}/export.json recorded"),
        (
            "heads/{task}/labels.json",
            lambda raw: json.dumps({"labels": json.loads(raw)["labels"][:1]}).encode(),
            "lists 1 labels but the head predicts 2",
        ),
        (
            "heads/{task}/labels.json",
            lambda raw: json.dumps({"labels": [*json.loads(raw)["labels"], "extra"]}).encode(),
            "lists 3 labels but the head predicts 2",
        ),
        ("heads/{task}/labels.json", lambda raw: b"", "labels.json is not valid JSON"),
        ("export.json", lambda raw: b"{", "export.json is not valid JSON"),
        ("model.safetensors", lambda raw: raw[: len(raw) // 2], "model.safetensors is damaged"),
        ("heads/{task}/head.safetensors", lambda raw: raw[:7], "head.safetensors is damaged"),
    ],
    ids=[
        "labels reordered",
        "a label short",
        "a label too many",
        "labels empty",
        "manifest garbled",
        "encoder cut",
        "head cut",
    ],
)
def test_a_damaged_export_folder_is_refused_naming_the_file(exported, tmp_path, capsys, file, change, message):
    params, _, folder = exported
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    path = copy / file.format(task=next(iter(params.tasks)))
    path.write_bytes(change(path.read_bytes()))
    assert main(["predict", "--model", str(copy), "--text", "hello"]) == 2
    error = capsys.readouterr().err.strip()
    assert message.format(folder=copy) in error and len(error.splitlines()) == 1
