"""Bring your own adapter: a PEFT LoRA adapter trained elsewhere becomes a task's adapter here.

Adapters trained with PEFT on a task model (`AutoModelForSequenceClassification`, ...) name their layers
under the task model's prefix (`bert.encoder.layer.0.attention.self.query`) and may carry the task
model's classifier in `modules_to_save`. The pipeline's encoder is the bare `AutoModel`, so each LoRA
layer is found by its longest dotted suffix that is a layer of the encoder, and the adapter is
re-created on it with PEFT (same rank, alpha and scaling; its update ΔW = s·B·A is unchanged). The
classifier, when it is one linear layer of the right shape, is returned to start the task's head from:
the head is still trained on the adapted encoder, because the model it came from may have pooled
differently (BERT's classifier reads the pooler's tanh(W·h_CLS), this pipeline `backbone.pooling`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from transformers import PreTrainedModel

from loramerge.lists import is_local_path
from loramerge.lora import AdapterError, target_pattern
from loramerge.weights import read_weights

PEFT_PREFIX = "base_model.model."


def fetch_adapter(adapter: str) -> Path:
    """The adapter's folder: a local path as written, or the Hub id's snapshot (an error saying which, if neither)."""
    if is_local_path(adapter):
        folder = Path(adapter).expanduser()
        if not (folder / "adapter_config.json").exists():
            raise AdapterError(
                f"tasks.<task>.adapter {adapter!r}: no adapter_config.json in {folder}; give a PEFT adapter folder"
            )
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(adapter, allow_patterns=["adapter_config.json", "adapter_model.safetensors"]))
    except Exception as error:  # offline, unknown id, private: all end the same way
        raise AdapterError(
            f"tasks.<task>.adapter {adapter!r} is not a local folder (write it as ./path) and the Hub could not give it "
            f"({type(error).__name__}: {error})"
        ) from None


def adopt(encoder: PreTrainedModel, adapter: str, base_model_name: str) -> tuple[PeftModel, dict[str, torch.Tensor]]:
    """The encoder wrapped with the given adapter (frozen), and its classifier's weights if it carries one
    (`{"weight", "bias"}`, else empty). Refused, before any compute, when it was trained on another base model."""
    folder = fetch_adapter(adapter)
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{folder} is a {config.get('peft_type')} adapter; only LoRA adapters merge here")
    if config.get("base_model_name_or_path") != base_model_name:
        raise AdapterError(
            f"the adapter {adapter!r} was trained on {config.get('base_model_name_or_path')!r}, not on "
            f"backbone.name={base_model_name!r}: merging needs one base model; use an adapter of that model"
        )
    if not (folder / "adapter_model.safetensors").exists():
        raise AdapterError(f"no adapter_model.safetensors in {folder}: adapters load only from safetensors")
    state = read_weights(folder / "adapter_model.safetensors", f"replace the adapter {adapter!r} with an intact copy")
    layers = {name for name, _ in encoder.named_modules() if name}
    lora, classifier = {}, {}
    for key, value in state.items():
        name = key.removeprefix(PEFT_PREFIX)
        if ".lora_" in name:
            module, rest = name.split(".lora_", 1)
            lora[f"{PEFT_PREFIX}{encoder_layer(module, layers, folder)}.lora_{rest}"] = value
        elif name.rsplit(".", 1)[-1] in ("weight", "bias") and "classifier" in name:
            classifier[name.rsplit(".", 1)[-1]] = value
    targets = sorted({key.removeprefix(PEFT_PREFIX).split(".lora_", 1)[0] for key in lora})
    settings = LoraConfig(
        r=config["r"],
        lora_alpha=config["lora_alpha"],
        use_rslora=config.get("use_rslora", False),
        lora_dropout=0.0,
        target_modules=target_pattern(targets),
        rank_pattern=config.get("rank_pattern") or {},
        alpha_pattern=config.get("alpha_pattern") or {},
        bias="none",
    )
    model = get_peft_model(encoder, settings)
    misfits = set_peft_model_state_dict(model, lora).unexpected_keys
    if misfits:
        raise AdapterError(f"{folder}: {len(misfits)} LoRA weight(s) did not fit the encoder, e.g. {misfits[0]}")
    model.peft_config["default"].base_model_name_or_path = base_model_name
    model.requires_grad_(False)
    return model, classifier if set(classifier) == {"weight", "bias"} else {}


def encoder_layer(module: str, layers: set[str], folder: Path) -> str:
    """The encoder's layer a task model's layer name ends with (`bert.encoder.layer.0.x` -> `encoder.layer.0.x`)."""
    parts = module.split(".")
    for start in range(len(parts)):
        if ".".join(parts[start:]) in layers:
            return ".".join(parts[start:])
    raise AdapterError(f"{folder}: the adapted layer {module!r} is no layer of the backbone; was it trained on it?")
