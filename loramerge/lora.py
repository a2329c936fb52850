"""LoRA adapters in PEFT's own format, read back as exact per-layer updates, and applied to a backbone.

A merged model is the base encoder with a merged ΔW added to its weights plus every
member task's own head, so this module is the bridge between PEFT's files and the
merge maths: adapters -> `TaskUpdate`s -> merged deltas -> a patched encoder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from transformers import PreTrainedModel

from loramerge.paths import DENSE_FILE
from loramerge.settings import LoraSettings
from loramerge.updates import TaskUpdate
from loramerge.weights import check_weights, read_weights

PEFT_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """Adapters that cannot be merged or loaded; the message says which and why."""


PRESET_LAYERS: dict[str, list[tuple[str, ...]]] = {
    "attention": [
        ("query", "value"),  # BERT, RoBERTa, ELECTRA, XLM-R, MiniLM
        ("q_lin", "v_lin"),  # DistilBERT
        ("query_proj", "value_proj"),  # DeBERTa-v2/v3
        ("q_proj", "v_proj"),  # ViT (transformers 5), LLaMA-style blocks
        ("Wqkv",),  # ModernBERT: query, key and value in one fused layer
    ],
    "attention+linear": [
        ("query", "key", "value", "dense"),
        ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
        ("query_proj", "key_proj", "value_proj", "dense"),
        ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj"),
        ("Wqkv", "Wo", "Wi"),
    ],
}
"""Per preset, the layer names (last name component) of each architecture family, tried in order: the first family
whose first name occurs in the model's transformer blocks is the model's."""
BLOCK = re.compile(r"(^|\.)\d+\.")
"""A layer inside a repeated transformer block (its name holds the block index), never a pooler or a head."""


def linear_layers(encoder: torch.nn.Module) -> list[str]:
    return [name for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)]


def resolve_targets(encoder: torch.nn.Module, targets: str | list[str]) -> list[str]:
    """The full names of the linear layers LoRA adapts: a preset resolved from the model's own layer names, or an
    explicit list whose entries are layer names (last component or full) or full-match regexes. A preset or entry
    that matches nothing is an AdapterError listing the model's linear layers, so the fix is one look away."""
    linears = linear_layers(encoder)
    if isinstance(targets, str):
        in_blocks = [name for name in linears if BLOCK.search(name)]
        leaves = {name.rsplit(".", 1)[-1] for name in in_blocks}
        for family in PRESET_LAYERS[targets]:
            if family[0] in leaves:
                return [name for name in in_blocks if name.rsplit(".", 1)[-1] in family]
        raise AdapterError(
            f"lora.targets {targets!r} matches no layer of this {type(encoder).__name__}: set lora.targets to a list "
            f"of its linear layers (names or regexes); it has {len(linears)}: {', '.join(linears[:12])}"
            + (", …" if len(linears) > 12 else "")
        )
    chosen = []
    for entry in targets:
        found = [n for n in linears if n == entry or n.rsplit(".", 1)[-1] == entry or re.fullmatch(entry, n)]
        if not found:
            raise AdapterError(
                f"lora.targets entry {entry!r} matches no linear layer of this {type(encoder).__name__}; it has "
                f"{len(linears)}: {', '.join(linears[:12])}" + (", …" if len(linears) > 12 else "")
            )
        chosen += [n for n in found if n not in chosen]
    return chosen


def target_pattern(names: list[str]) -> str:
    """A full-match regex of exactly these layers. PEFT turns a list of targets into a set and saves it in hash
    order, a different adapter_config.json in every process (and a changed DVC output); a string is kept as is."""
    return "|".join(re.escape(name) for name in names)


def add_lora(encoder: PreTrainedModel, settings: LoraSettings, base_model_name: str) -> PeftModel:
    """Wrap the encoder with trainable LoRA layers; the base model's name is recorded for merge checks."""
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_pattern(resolve_targets(encoder, settings.targets)),
        bias="none",
    )
    model = get_peft_model(encoder, config)
    model.peft_config["default"].base_model_name_or_path = base_model_name  # PEFT records the local path
    return model


def adapter_base_model(adapter_dir: Path) -> str | None:
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]


def check_same_base(adapter_dirs: Mapping[str, Path], expected: str) -> None:
    """Refuse to merge adapters trained on different base models (compared by their recorded name)."""
    recorded = {task: adapter_base_model(d) for task, d in adapter_dirs.items()}
    wrong = {task: base for task, base in recorded.items() if base != expected}
    if wrong:
        raise AdapterError(
            f"adapters {wrong} were trained on another base model than backbone.name={expected!r}; retrain them or change backbone.name"
        )


def load_updates(encoder: PreTrainedModel, adapter_dirs: Mapping[str, Path]) -> list[TaskUpdate]:
    """Each adapter's exact updates, read through PEFT (so rank/alpha patterns and rsLoRA count).

    The encoder is wrapped temporarily and unwrapped again, unchanged. Weights load only from
    safetensors: PEFT would fall back to a pickled adapter_model.bin, which is refused here.
    """
    names = list(adapter_dirs)
    unsafe = [str(d) for d in adapter_dirs.values() if not (Path(d) / "adapter_model.safetensors").exists()]
    if unsafe:
        raise AdapterError(
            f"no adapter_model.safetensors in {unsafe}: adapters load only from safetensors (a pickled .bin is never read)"
        )
    for folder in adapter_dirs.values():
        check_weights(Path(folder) / "adapter_model.safetensors")
    model = PeftModel.from_pretrained(encoder, str(adapter_dirs[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapter_dirs[name]), adapter_name=name)
    factors: dict[str, dict] = {name: {} for name in names}
    for module_name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            layer = module_name.removeprefix(PEFT_PREFIX)
            for name in (n for n in names if n in module.lora_A):
                a = module.lora_A[name].weight.detach().float().clone()
                b = module.lora_B[name].weight.detach().float().clone() * module.scaling[name]
                factors[name][layer] = (b, a)
    model.unload()
    layer_sets = {name: frozenset(f) for name, f in factors.items()}
    if len(set(layer_sets.values())) > 1:
        raise AdapterError(f"adapters {names} adapt different layers; merge only adapters with the same target preset")
    return [TaskUpdate(name=name, factors=factors[name]) for name in names]


@contextmanager
def patched(encoder: PreTrainedModel, deltas: Mapping[str, torch.Tensor]) -> Iterator[PreTrainedModel]:
    """The encoder with W + ΔW in the given layers, restored exactly on exit."""
    modules = dict(encoder.named_modules())
    originals = {}
    with torch.no_grad():
        for layer, delta in deltas.items():
            weight = modules[layer].weight
            originals[layer] = weight.detach().clone()
            weight.add_(delta.to(weight.dtype))
    try:
        yield encoder
    finally:
        with torch.no_grad():
            for layer, original in originals.items():
                modules[layer].weight.copy_(original)


def deltas_of(update: TaskUpdate) -> dict[str, torch.Tensor]:
    return {layer: update.delta(layer) for layer in update.layers}


def saved_deltas(encoder: PreTrainedModel, folder: Path) -> dict[str, torch.Tensor]:
    """A merged model's updates as the merge stage saved them: a PEFT adapter (exactly low-rank), or dense deltas."""
    if (folder / DENSE_FILE).exists():
        return read_weights(folder / DENSE_FILE)
    (update,) = load_updates(encoder, {folder.name: folder})
    return deltas_of(update)


def save_low_rank_adapter(
    out_dir: Path, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], template_dir: Path
) -> None:
    """Write merged low-rank factors as a PEFT adapter that `PeftModel.from_pretrained` loads.

    Ranks may differ per layer, so they go into `rank_pattern`; alpha equals each rank so
    the scaling is 1 and B @ A is the merged update itself.
    """
    template = json.loads((Path(template_dir) / "adapter_config.json").read_text())
    ranks = {layer: int(a.shape[0]) for layer, (_, a) in factors.items()}
    base_rank = max(ranks.values())
    template.update(
        r=base_rank,
        lora_alpha=base_rank,
        rank_pattern={layer: r for layer, r in ranks.items() if r != base_rank},
        alpha_pattern={layer: r for layer, r in ranks.items() if r != base_rank},
        target_modules=sorted(factors),
        layers_to_transform=None,
        use_rslora=False,
        lora_dropout=0.0,
    )
    tensors = {}
    for layer, (b, a) in factors.items():
        tensors[f"{PEFT_PREFIX}{layer}.lora_A.weight"] = a.contiguous().float()
        tensors[f"{PEFT_PREFIX}{layer}.lora_B.weight"] = b.contiguous().float()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(json.dumps(template, indent=2))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
