"""Adapters are read back as their exact updates, applied exactly, and merged results reload in PEFT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel

from loramerge.backbone import load_encoder
from loramerge.lora import (
    AdapterError,
    add_lora,
    check_same_base,
    deltas_of,
    load_updates,
    patched,
    resolve_targets,
    save_low_rank_adapter,
)
from loramerge.settings import BackboneConfig, LoraSettings


def trained_adapter(backbone, folder, seed: int, rank: int = 4, targets: str = "attention"):
    """A LoRA adapter with random (non-zero) B, saved in PEFT's format."""
    torch.manual_seed(seed)
    model = add_lora(
        load_encoder(BackboneConfig(name=str(backbone))),
        LoraSettings(rank=rank, alpha=2 * rank, targets=targets),
        "tiny",
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(str(folder))
    return folder


def encode(encoder, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(5, 20, (3, 7))
    return encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def test_updates_are_b_times_a_times_alpha_over_r(tiny_backbone, tmp_path):
    folder = trained_adapter(tiny_backbone, tmp_path / "a", seed=1)
    (update,) = load_updates(load_encoder(BackboneConfig(name=str(tiny_backbone))), {"a": folder})
    from safetensors.torch import load_file

    raw = load_file(str(folder / "adapter_model.safetensors"))
    layer = "encoder.layer.0.attention.self.query"
    expected = (
        raw[f"base_model.model.{layer}.lora_B.weight"] @ raw[f"base_model.model.{layer}.lora_A.weight"] * (8 / 4)
    )
    torch.testing.assert_close(update.delta(layer), expected)
    assert sorted(update.factors) == sorted(
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    )


def test_the_attention_linear_preset_adapts_dense_layers_but_not_the_pooler(tiny_backbone, tmp_path):
    folder = trained_adapter(tiny_backbone, tmp_path / "a", seed=1, targets="attention+linear")
    (update,) = load_updates(load_encoder(BackboneConfig(name=str(tiny_backbone))), {"a": folder})
    assert "encoder.layer.1.output.dense" in update.factors
    assert not any("pooler" in layer for layer in update.factors)


def test_a_patched_encoder_equals_peft_merge_and_unload_and_is_restored(tiny_backbone, tmp_path):
    folder = trained_adapter(tiny_backbone, tmp_path / "a", seed=2)
    config = BackboneConfig(name=str(tiny_backbone))
    encoder = load_encoder(config)
    before = encode(encoder)
    (update,) = load_updates(encoder, {"a": folder})
    torch.testing.assert_close(encode(encoder), before)  # loading adapters leaves the encoder as it was
    reference = PeftModel.from_pretrained(load_encoder(config), str(folder)).merge_and_unload()
    with patched(encoder, deltas_of(update)):
        torch.testing.assert_close(encode(encoder), encode(reference), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encode(encoder), before)


def test_low_rank_results_reload_as_a_peft_adapter_with_per_layer_ranks(tiny_backbone, tmp_path):
    template = trained_adapter(tiny_backbone, tmp_path / "a", seed=3)
    encoder = load_encoder(BackboneConfig(name=str(tiny_backbone)))
    (update,) = load_updates(encoder, {"a": template})
    factors = dict(update.factors)
    b, a = factors["encoder.layer.0.attention.self.query"]
    factors["encoder.layer.0.attention.self.query"] = (torch.cat([b, b], 1), torch.cat([a, a], 0))  # rank 8: 2·ΔW
    save_low_rank_adapter(tmp_path / "merged", factors, template)
    (reloaded,) = load_updates(encoder, {"merged": tmp_path / "merged"})
    for layer in factors:
        expected = factors[layer][0] @ factors[layer][1]
        torch.testing.assert_close(reloaded.delta(layer), expected, atol=1e-6, rtol=1e-5)


def test_adapters_of_another_base_model_are_refused(tiny_backbone, tmp_path):
    folder = trained_adapter(tiny_backbone, tmp_path / "a", seed=1)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    check_same_base({"a": folder}, "tiny")
    with pytest.raises(AdapterError, match="another base model"):
        check_same_base({"a": folder}, "bert-base-uncased")


def test_adapters_on_different_layers_are_refused(tiny_backbone, tmp_path):
    first = trained_adapter(tiny_backbone, tmp_path / "a", seed=1)
    second = trained_adapter(tiny_backbone, tmp_path / "b", seed=1, targets="attention+linear")
    with pytest.raises(AdapterError, match="different layers"):
        load_updates(load_encoder(BackboneConfig(name=str(tiny_backbone))), {"a": first, "b": second})


def tiny_encoder(architecture: str) -> torch.nn.Module:
    """A randomly initialised 2-block encoder of the architecture, built from a config (no download)."""
    import transformers as t

    size = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
    configs = {
        "bert": lambda: t.BertConfig(vocab_size=50, **size),
        "roberta": lambda: t.RobertaConfig(vocab_size=50, **size),
        "electra": lambda: t.ElectraConfig(vocab_size=50, embedding_size=16, **size),
        "xlm-roberta": lambda: t.XLMRobertaConfig(vocab_size=50, **size),
        "distilbert": lambda: t.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32),
        "deberta-v2": lambda: t.DebertaV2Config(vocab_size=50, **size),
        "modernbert": lambda: t.ModernBertConfig(
            vocab_size=50, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, **size
        ),
        "vit": lambda: t.ViTConfig(image_size=8, patch_size=4, **size),
    }
    return t.AutoModel.from_config(configs[architecture]())


@pytest.mark.parametrize(
    ("architecture", "attention", "linear"),
    [
        ("bert", {"query", "value"}, {"query", "key", "value", "dense"}),
        ("roberta", {"query", "value"}, {"query", "key", "value", "dense"}),
        ("electra", {"query", "value"}, {"query", "key", "value", "dense"}),
        ("xlm-roberta", {"query", "value"}, {"query", "key", "value", "dense"}),
        ("distilbert", {"q_lin", "v_lin"}, {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"}),
        ("deberta-v2", {"query_proj", "value_proj"}, {"query_proj", "key_proj", "value_proj", "dense"}),
        ("modernbert", {"Wqkv"}, {"Wqkv", "Wo", "Wi"}),
        ("vit", {"q_proj", "v_proj"}, {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"}),
    ],
)
def test_presets_resolve_per_architecture_from_the_models_own_layer_names(architecture, attention, linear):
    encoder = tiny_encoder(architecture)
    chosen = resolve_targets(encoder, "attention")
    assert {name.rsplit(".", 1)[-1] for name in chosen} == attention
    assert len(chosen) == 2 * len(attention), "every block, nothing outside the blocks"
    every = resolve_targets(encoder, "attention+linear")
    assert {name.rsplit(".", 1)[-1] for name in every} == linear and set(chosen) <= set(every)
    assert not any("pooler" in name or "classifier" in name for name in every)
    model = add_lora(encoder, LoraSettings(rank=2, alpha=4, targets="attention"), architecture)
    assert {n for n, m in model.named_modules() if hasattr(m, "lora_A")} == {f"base_model.model.{c}" for c in chosen}


def test_the_saved_targets_are_the_same_in_every_process(tiny_backbone, tmp_path):
    """PEFT saves a list of targets in set (hash) order; the one regex written instead is byte-stable."""
    script = (
        "import json, sys; from loramerge.backbone import load_encoder; from loramerge.config import BackboneConfig, "
        "LoraSettings; from loramerge.lora import add_lora; "
        "m = add_lora(load_encoder(BackboneConfig(name=sys.argv[1])), LoraSettings(targets='attention'), 'b'); "
        "print(m.peft_config['default'].target_modules)"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", script, str(tiny_backbone)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        )
        .stdout.strip()
        .splitlines()[-1]
        for seed in (1, 2)
    }
    assert len(seen) == 1 and r"encoder\.layer\.0\.attention\.self\.query" in seen.pop()


def test_an_explicit_target_list_overrides_the_preset_with_names_or_regexes():
    encoder = tiny_encoder("bert")
    assert resolve_targets(encoder, ["key"]) == [
        "encoder.layer.0.attention.self.key",
        "encoder.layer.1.attention.self.key",
    ]
    assert resolve_targets(encoder, [r"encoder\.layer\.1\..*\.value", "encoder.layer.0.output.dense"]) == [
        "encoder.layer.1.attention.self.value",
        "encoder.layer.0.output.dense",
    ]


def test_targets_that_match_nothing_list_the_models_linear_layers():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.ModuleDict({"mixer": torch.nn.Linear(4, 4)})])

    with pytest.raises(
        AdapterError, match=r"lora.targets 'attention' matches no layer of this Odd.*has 1: blocks.0.mixer"
    ):
        resolve_targets(Odd(), "attention")
    with pytest.raises(
        AdapterError, match=r"entry 'nope' matches no linear layer.*encoder.layer.0.attention.self.query"
    ):
        resolve_targets(tiny_encoder("bert"), ["nope"])
