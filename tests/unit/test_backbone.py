"""The backbone is found offline: a folder, the bundled MiniLM, or a Hub id left for the Hub."""

from __future__ import annotations

import pytest

from loramerge.backbone import BUNDLED_MODEL_ID, BackboneError, resolve_backbone


def test_a_local_folder_is_used_as_it_is(tiny_backbone):
    assert resolve_backbone(str(tiny_backbone)) == str(tiny_backbone)


def test_the_default_model_resolves_to_the_bundled_copy_without_the_network():
    from pathlib import Path

    location = Path(resolve_backbone(BUNDLED_MODEL_ID))
    assert (location / "config.json").exists() and (location / "model.safetensors").exists()


def test_a_missing_path_is_an_error_naming_the_setting(tmp_path):
    with pytest.raises(BackboneError, match="backbone.name"):
        resolve_backbone(str(tmp_path / "no-such-model"))


def test_other_hub_ids_are_passed_through_for_users_with_the_hub():
    assert resolve_backbone("bert-base-uncased") == "bert-base-uncased"
    assert resolve_backbone("FacebookAI/roberta-base") == "FacebookAI/roberta-base"
