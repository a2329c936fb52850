"""The stages chained in-process on the tiny BERT: what each writes is what the next one needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loramerge.lora import saved_deltas
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.report import write_report
from tests.helpers import imported, opened_project, tiny_params_dict, train_every_task


@pytest.fixture(scope="module")
def trained_params(tmp_path_factory, tiny_backbone, tiny_data):
    """The params of one project trained once for the module (the working directory): every task in every
    mode, scored on test."""
    with opened_project(tmp_path_factory.mktemp("trained"), tiny_params_dict(tiny_backbone, tiny_data)) as params:
        train_every_task(params)
        yield params


@pytest.fixture
def trained_folder(trained_params) -> Path:
    return Path.cwd()


def test_merge_evaluate_and_report_chain(trained_params, trained_folder):
    combo = trained_params.combinations[0]
    merged = merge_combination(trained_params, combo)
    for method in trained_params.merge.methods:
        manifest = json.loads((merged / method / "manifest.json").read_text())
        assert manifest["validation"]["mean_normalized_accuracy"] > 0
        assert (merged / method / "search.csv").exists()
    ta = json.loads((merged / "task_arithmetic" / "manifest.json").read_text())
    assert ta["format"] == "peft_adapter" and len(ta["search"]["points"]) == 2
    assert json.loads((merged / "ties" / "manifest.json").read_text())["format"] == "dense_deltas"
    scores = json.loads(evaluate_combination(trained_params, combo).read_text())
    for result in scores["methods"].values():
        for task, metrics in result["tasks"].items():
            single = json.loads((trained_folder / "metrics/single" / f"{task}.json").read_text())["accuracy"]
            assert metrics["normalized_accuracy"] == pytest.approx(metrics["accuracy"] / single)
    summary = write_report(trained_params).read_text()
    assert "task_arithmetic" in summary and (trained_folder / "reports/figures/heatmap_ties.png").exists()
    assert "gain retention" in summary.lower() and "head_only_score" in summary


@pytest.mark.parametrize("name", ["task_arithmetic", "core_tsv_m"])
def test_a_saved_low_rank_merge_reloads_to_the_update_it_was_built_from(trained_params, trained_folder, name):
    """Task arithmetic's stacked factors and a Core Space result (U_B·M, V_Aᵀ) both save as PEFT adapters."""
    from loramerge.backbone import load_encoder
    from loramerge.lora import load_updates
    from loramerge.merging import get_method

    combo = trained_params.combinations[0]
    merged = merge_combination(trained_params, combo)
    manifest = json.loads((merged / name / "manifest.json").read_text())
    assert manifest["format"] == "peft_adapter"
    encoder = load_encoder(trained_params.backbone)
    updates = load_updates(encoder, {t: trained_folder / "models/adapters" / t for t in combo.split("+")})
    method = get_method(name)
    expected = method.merge(updates, method.Config(**manifest["params"])).deltas
    reloaded = saved_deltas(encoder, merged / name)
    for layer, delta in expected.items():
        torch.testing.assert_close(reloaded[layer], delta, atol=1e-6, rtol=1e-4)


def test_a_merge_with_an_unknown_method_fails_before_any_compute(trained_params, trained_folder):
    bad = trained_params.model_copy(
        update={"merge": trained_params.merge.model_copy(update={"methods": {"not_a_method": {}}})}
    )
    before = (
        sorted(p.name for p in (trained_folder / "models/merged").glob("*"))
        if (trained_folder / "models/merged").exists()
        else []
    )
    with pytest.raises(ValueError, match="unknown merge method 'not_a_method'"):
        merge_combination(bad, trained_params.combinations[0])
    after = (
        sorted(p.name for p in (trained_folder / "models/merged").glob("*"))
        if (trained_folder / "models/merged").exists()
        else []
    )
    assert after == before


def test_a_merge_refuses_adapters_whose_labels_disagree_with_the_data(trained_params, trained_folder):
    labels = trained_folder / "data/prepared/topics/labels.json"
    original = labels.read_text()
    labels.write_text(json.dumps({"labels": ["other", "sport"]}))
    try:
        with pytest.raises(ValueError, match="predicts labels"):
            merge_combination(trained_params, trained_params.combinations[0])
    finally:
        labels.write_text(original)


def test_the_gram_stage_scores_nothing_and_so_imports_no_scikit_learn():
    """Gram matrices are forward passes: scikit-learn's and seqeval's metrics (about 0.9 s of imports) are for the
    stages that score."""
    assert imported("import loramerge.stages.gram", ["sklearn", "seqeval.metrics"]) == []


def test_gram_matrices_are_written_per_task_from_its_training_texts_and_its_own_adapter(
    trained_params, trained_folder
):
    from loramerge.data import file_digest

    for task in trained_params.tasks:
        record = json.loads((trained_folder / "models/gram" / task / "gram.json").read_text())
        adapter = trained_folder / "models/adapters" / task / "adapter_model.safetensors"
        assert record["split"] == "train" and record["tokens"] > record["examples"] > 0
        assert record["adapter_sha256"] == file_digest(adapter)
        grams = load_file(str(trained_folder / "models/gram" / task / "gram.safetensors"))
        assert sorted(grams) == record["layers"]
        for gram in grams.values():
            torch.testing.assert_close(gram, gram.T)
            assert torch.linalg.eigvalsh(gram.double()).min() > -1e-6  # XᵀX/N is positive semi-definite


def test_a_merge_refuses_gram_matrices_of_another_version_of_the_adapter(trained_params, trained_folder):
    combo = trained_params.combinations[0]
    record_file = trained_folder / "models/gram" / combo.split("+")[0] / "gram.json"
    original = record_file.read_text()
    record_file.write_text(original.replace(json.loads(original)["adapter_sha256"], "0" * 64))
    try:
        with pytest.raises(
            ValueError, match=r"another version of the .* adapter; run `dvc repro pipelines/gram/dvc.yaml:gram@"
        ):
            merge_combination(trained_params, combo)
    finally:
        record_file.write_text(original)
