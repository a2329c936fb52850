"""Training learns, saves PEFT's own format plus a separate head, and checkpoints only what it trains."""

from __future__ import annotations

import json
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file

from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import TokenizedTexts
from loramerge.dropout import FastDropout
from loramerge.lora import add_lora
from loramerge.model import ClassificationHead, Classifier
from loramerge.stages.prepare import prepare_task
from loramerge.stages.train import train_task
from loramerge.training import ClassifierModule, prepare_checkpoints


def tiny_module(params):
    encoder = add_lora(load_encoder(params.backbone), params.lora, params.backbone.name)
    classifier = Classifier(encoder, ClassificationHead(encoder.config.hidden_size, 2, 0.0), "mean").train()
    return ClassifierModule(classifier, params.train, total_steps=20)


def test_a_few_training_steps_lower_the_loss(params):
    torch.manual_seed(0)
    module = tiny_module(params)
    texts = TokenizedTexts(
        load_tokenizer(params.backbone), ["goal team match", "bank stock price"] * 8, [0, 1] * 8, 16
    )
    batch = texts.collate([texts[i] for i in range(16)])
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    losses = []
    for _ in range(15):
        logits = module.classifier(batch["input_ids"], batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_only_lora_and_head_weights_train_and_are_checkpointed(params):
    module = tiny_module(params)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == set(module.state_dict())
    assert all("lora_" in n or ".head." in n for n in trainable)
    assert not any("pooler" in n for n in trainable)


def test_every_dropout_of_the_lora_encoder_and_head_draws_fast_masks(params):
    module = tiny_module(params.model_copy(update={"lora": params.lora.model_copy(update={"dropout": 0.1})}))
    dropouts = [m for m in module.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(isinstance(m, FastDropout) for m in dropouts)
    assert any(".lora_dropout." in name for name, m in module.named_modules() if isinstance(m, FastDropout))


def test_checkpoints_resume_only_under_the_same_configuration(tmp_path):
    folder = tmp_path / "ckpt"
    assert prepare_checkpoints(folder, {"lr": 1}) is None
    (folder / "last.ckpt").write_bytes(b"x")
    assert prepare_checkpoints(folder, {"lr": 1}) == str(folder / "last.ckpt")
    assert prepare_checkpoints(folder, {"lr": 2}) is None
    assert not (folder / "last.ckpt").exists()


def test_train_stage_writes_a_peft_adapter_a_head_labels_and_metrics(params, project):
    prepare_task(params, "topics")
    out = train_task(params, "topics")
    assert {p.name for p in out.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "head.safetensors",
        "labels.json",
        "train_metrics.json",
    }
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None  # the head is outside the adapter, so adapters can be merged
    assert config["base_model_name_or_path"] == params.backbone.name
    PeftModel.from_pretrained(load_encoder(params.backbone), str(out))  # loadable by PEFT itself
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.5
    assert 0 < metrics["trainable_percent"] < 100
    assert metrics["best_step"] <= metrics["global_steps"]


def test_head_only_training_leaves_every_backbone_weight_bit_for_bit_unchanged(params, project, monkeypatch):
    from loramerge.stages import train as train_module

    built = []
    original = train_module.build_encoder
    monkeypatch.setattr(train_module, "build_encoder", lambda *a: built.append(original(*a)) or built[-1])
    prepare_task(params, "topics")
    reference = original(params, "head_only").state_dict()
    out = train_task(params, "topics", mode="head_only")
    (encoder,) = built
    assert not any(p.requires_grad for p in encoder.parameters())
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert {p.name for p in out.iterdir()} == {"head.safetensors", "labels.json", "train_metrics.json"}
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["trainable_params"] == 32 * 2 + 2


def test_head_only_runs_the_frozen_encoder_once_per_text_not_once_per_text_and_epoch(params, project, monkeypatch):
    from loramerge.stages import train as train_module

    seen = []
    original = train_module.build_encoder

    def counting(*args):
        encoder = original(*args)
        encoder.register_forward_hook(lambda module, inputs, output: seen.append(len(output.last_hidden_state)))
        return encoder

    monkeypatch.setattr(train_module, "build_encoder", counting)
    prepare_task(params, "topics")
    params.train.max_epochs = 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_task(params, "topics", mode="head_only")
    assert sum(seen) == 64 + 24, "each train and validation text once, whatever the number of epochs"
    assert not [w for w in caught if "eval mode" in str(w.message)], (
        "the encoder is in eval mode on purpose: no warning"
    )


def test_full_fine_tuning_trains_every_parameter_and_saves_the_encoder(params, project):
    from loramerge.stages.train import build_encoder

    assert all(p.requires_grad for p in build_encoder(params, "full").parameters())
    prepare_task(params, "topics")
    out = train_task(params, "topics", mode="full")
    assert (out / "encoder" / "model.safetensors").exists()
    assert json.loads((out / "train_metrics.json").read_text())["trainable_percent"] == 100.0


def test_training_order_depends_only_on_seed_and_epoch_and_groups_similar_lengths():
    import random

    from loramerge.training import LengthGroupedSampler

    lengths = [random.Random(i).randint(5, 60) for i in range(640)]
    sampler = LengthGroupedSampler(lengths, batch_size=32, seed=7)
    sampler.set_epoch(2)
    first = list(sampler)
    again = LengthGroupedSampler(lengths, batch_size=32, seed=7)
    again.set_epoch(2)
    assert list(again) == first and sorted(first) == list(range(640))
    sampler.set_epoch(3)
    assert list(sampler) != first

    def padded_tokens(order):
        return sum(32 * max(lengths[i] for i in order[k : k + 32]) for k in range(0, len(order), 32))

    shuffled = random.Random(0).sample(range(640), 640)
    assert padded_tokens(first) < 0.8 * padded_tokens(shuffled)


def test_the_training_run_in_mlflow_has_a_loss_curve_and_the_model_artifacts(params, project):
    from mlflow.tracking import MlflowClient

    prepare_task(params, "topics")
    train_task(params, "topics")
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["dvc_stage"] == "train@topics"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
    assert any(a.path == "model" for a in client.list_artifacts(run.info.run_id))


def test_train_precision_bf16_runs_the_steps_under_bf16_autocast_and_records_it(params, project, monkeypatch):
    """Weights stay float32 (Lightning's bf16-mixed): the saved adapter is the same kind of file either way."""
    seen = []
    step = ClassifierModule.training_step

    def spying_step(self, batch, batch_idx):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", spying_step)
    prepare_task(params, "topics")
    bf16 = params.model_copy(update={"train": params.train.model_copy(update={"precision": "bf16"})})
    out = train_task(bf16, "topics")
    assert seen and set(seen) == {torch.bfloat16}
    assert json.loads((out / "train_metrics.json").read_text())["precision"]["name"] == "bf16"
    assert {t.dtype for t in load_file(str(out / "adapter_model.safetensors")).values()} == {torch.float32}
