"""Bring your own adapter: PEFT adapters saved by plain PEFT code outside the pipeline (on the bare encoder, and on
a sequence-classification model with its classifier in modules_to_save) become tasks' adapters, merge and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, BertModel

from loramerge.backbone import load_encoder
from loramerge.lists import replica_entries
from loramerge.lora import AdapterError, load_updates
from loramerge.records import MergedMetrics
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.train import train_task
from tests.helpers import opened_project, tiny_params_dict, train_every_task

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}


def randomized(model):
    """LoRA's B starts at zero (no update); give every B, and the classifier, random weights, as training would."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "classifier" in name:
                parameter.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def outside(tmp_path_factory, tiny_backbone) -> dict[str, Path]:
    """Two adapters as a PEFT user saves them: on BertModel, and on BertForSequenceClassification (SEQ_CLS task
    type: its `bert.`-prefixed layers and its classifier in modules_to_save)."""
    root = tmp_path_factory.mktemp("outside")
    bare = randomized(get_peft_model(BertModel.from_pretrained(tiny_backbone), LoraConfig(**LORA)))
    bare.save_pretrained(root / "bare")
    task_model = BertForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2)
    classified = randomized(get_peft_model(task_model, LoraConfig(task_type="SEQ_CLS", **LORA)))
    classified.save_pretrained(root / "classified")
    return {"bare": root / "bare", "classified": root / "classified"}


def expected_deltas(folder: Path) -> dict[str, torch.Tensor]:
    """ΔW = (alpha / r)·B·A of every adapted layer, from the saved file alone, named as the bare encoder's layers."""
    state = load_file(str(folder / "adapter_model.safetensors"))
    scale = LORA["lora_alpha"] / LORA["r"]
    deltas = {}
    for key, a in state.items():
        if "lora_A" in key:
            layer = key.removeprefix("base_model.model.").removeprefix("bert.").split(".lora_A")[0]
            deltas[layer] = scale * state[key.replace("lora_A", "lora_B")] @ a
    return deltas


def with_adapters(raw: dict, adapters: dict[str, Path]) -> dict:
    for task, folder in adapters.items():
        raw["tasks"][task]["adapter"] = str(folder)
    raw["replicas"] = replica_entries(list(raw["tasks"]), 1, {t: str(f) for t, f in adapters.items()})
    return raw


@pytest.mark.parametrize("kind", ["bare", "classified"])
def test_an_outside_adapter_becomes_the_tasks_adapter_with_its_update_unchanged(
    outside, kind, tmp_path, tiny_backbone, tiny_data
):
    raw = with_adapters(tiny_params_dict(tiny_backbone, tiny_data), {"topics": outside[kind]})
    with opened_project(tmp_path, raw) as params:
        from loramerge.stages.prepare import prepare_task

        prepare_task(params, "topics")
        folder = train_task(params, "topics", "lora")
        (update,) = load_updates(load_encoder(params.backbone), {"topics": folder})
        recorded = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    expected = expected_deltas(outside[kind])
    assert set(update.factors) == set(expected), "every adapted layer, named as the encoder's"
    for layer in update.layers:
        torch.testing.assert_close(update.delta(layer), expected[layer], atol=1e-6, rtol=1e-5)
    assert recorded == str(tiny_backbone)


def test_the_adapters_own_classifier_is_where_the_head_starts(outside, tmp_path, tiny_backbone, tiny_data):
    raw = with_adapters(tiny_params_dict(tiny_backbone, tiny_data), {"topics": outside["classified"]})
    raw["tasks"]["topics"]["train"] = {"head_learning_rate": 1e-9}  # the head barely moves from where it starts
    with opened_project(tmp_path, raw) as params:
        from loramerge.stages.prepare import prepare_task

        prepare_task(params, "topics")
        head = load_file(str(train_task(params, "topics", "lora") / "head.safetensors"))
    saved = load_file(str(outside["classified"] / "adapter_model.safetensors"))
    torch.testing.assert_close(head["linear.weight"], saved["base_model.model.classifier.weight"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kind", "labels", "expected"),
    [("bare", 2, False), ("classified", 2, True), ("classified", 3, False)],
    ids=["no classifier", "a classifier of the task's size", "a classifier of another size"],
)
def test_the_run_records_whether_the_head_started_from_the_adapters_classifier(
    outside, tmp_path, tiny_backbone, tiny_data, kind, labels, expected
):
    adapter = outside[kind]
    if labels != 2:  # the same adapter, saved from a classifier of another size
        adapter = tmp_path / "other-size"
        task_model = BertForSequenceClassification.from_pretrained(tiny_backbone, num_labels=labels)
        randomized(get_peft_model(task_model, LoraConfig(task_type="SEQ_CLS", **LORA))).save_pretrained(adapter)
    raw = with_adapters(tiny_params_dict(tiny_backbone, tiny_data), {"topics": adapter})
    (tmp_path / "project").mkdir()
    with opened_project(tmp_path / "project", raw) as params:
        from loramerge.stages.prepare import prepare_task

        prepare_task(params, "topics")
        train_task(params, "topics", "lora")
        fingerprint = json.loads(Path("models/checkpoints/lora/topics/fingerprint.json").read_text())
    assert fingerprint["adapter"]["head_from_its_classifier"] is expected


@pytest.mark.parametrize("kind", ["bare", "classified"])
def test_outside_adapters_merge_with_a_trained_one_and_are_evaluated(
    outside, kind, tmp_path, tiny_backbone, tiny_data
):
    raw = with_adapters(tiny_params_dict(tiny_backbone, tiny_data), {"topics": outside[kind]})
    raw["merge"]["methods"] = {"task_arithmetic": {"scaling": [0.5, 1.0]}, "regmean": {"scaling": [1.0]}}
    with opened_project(tmp_path, raw) as params:
        train_every_task(params)
        combo = params.combinations[0]
        merge_combination(params, combo)
        merged = MergedMetrics.read(evaluate_combination(params, combo))
    assert set(merged.methods["regmean"].tasks) == {"topics", "moods"}
    assert all(0 <= t.score <= 1 for r in merged.methods.values() for t in r.tasks.values())


def test_an_adapter_of_another_base_model_is_refused_before_training_naming_both(
    outside, tmp_path, tiny_backbone, tiny_data
):
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((outside["bare"] / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "bert-base-uncased"}))
    raw = with_adapters(tiny_params_dict(tiny_backbone, tiny_data), {"topics": other})
    (tmp_path / "project").mkdir()
    with opened_project(tmp_path / "project", raw) as params:
        from loramerge.stages.prepare import prepare_task

        prepare_task(params, "topics")
        with pytest.raises(AdapterError, match="trained on 'bert-base-uncased', not on backbone.name="):
            train_task(params, "topics", "lora")
        assert not Path("models/adapters/topics").exists()


def test_a_local_adapter_folder_is_the_train_stages_dependency_and_a_hub_adapter_is_not():
    entries = replica_entries(["a", "b", "c"], 1, {"a": "./adapters/a", "b": "someone/adapter-b"})
    assert [entries[t]["source"] for t in "abc"] == ["./adapters/a", "data/prepared/b", "data/prepared/c"]
