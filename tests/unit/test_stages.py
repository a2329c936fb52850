"""The stages chained in-process on the tiny BERT: what each writes is what the next one needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from loramerge.config import load_params
from loramerge.evaluation import merged_deltas
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.report import write_report
from tests.helpers import tiny_params_dict, train_every_task


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone, tiny_data):
    """One project, trained once for the module: every task in every mode, scored on test."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_backbone, tiny_data)))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        params = load_params(folder / "params.yaml")
        train_every_task(params)
        yield params


@pytest.fixture
def project(trained):
    return Path.cwd()


def test_merge_evaluate_and_report_chain(trained, project):
    combo = trained.combinations[0]
    merged = merge_combination(trained, combo)
    for method in trained.merge.methods:
        manifest = json.loads((merged / method / "manifest.json").read_text())
        assert manifest["validation"]["mean_normalized_accuracy"] > 0
        assert (merged / method / "search.csv").exists()
    ta = json.loads((merged / "task_arithmetic" / "manifest.json").read_text())
    assert ta["format"] == "peft_adapter" and len(ta["search"]["points"]) == 2
    assert json.loads((merged / "ties" / "manifest.json").read_text())["format"] == "dense_deltas"
    scores = json.loads(evaluate_combination(trained, combo).read_text())
    for result in scores["methods"].values():
        for task, metrics in result["tasks"].items():
            single = json.loads((project / "metrics/single" / f"{task}.json").read_text())["accuracy"]
            assert metrics["normalized_accuracy"] == pytest.approx(metrics["accuracy"] / single)
    summary = write_report(trained).read_text()
    assert "task_arithmetic" in summary and (project / "reports/figures/heatmap_ties.png").exists()
    assert "gain retention" in summary.lower() and "head_only_accuracy" in summary


def test_a_saved_low_rank_merge_reloads_to_the_update_it_was_built_from(trained, project):
    from loramerge.backbone import load_encoder
    from loramerge.lora import load_updates
    from loramerge.merging import get_method

    combo = trained.combinations[0]
    merged = merge_combination(trained, combo)
    chosen = json.loads((merged / "task_arithmetic" / "manifest.json").read_text())["params"]
    encoder = load_encoder(trained.backbone)
    updates = load_updates(encoder, {t: project / "models/adapters" / t for t in combo.split("+")})
    method = get_method("task_arithmetic")
    expected = method.merge(updates, method.Config(**chosen)).deltas
    reloaded = merged_deltas(encoder, merged / "task_arithmetic")
    for layer, delta in expected.items():
        torch.testing.assert_close(reloaded[layer], delta, atol=1e-6, rtol=1e-4)


def test_a_merge_with_an_unknown_method_fails_before_any_compute(trained, project):
    bad = trained.model_copy(update={"merge": trained.merge.model_copy(update={"methods": {"not_a_method": {}}})})
    before = (
        sorted(p.name for p in (project / "models/merged").glob("*")) if (project / "models/merged").exists() else []
    )
    with pytest.raises(ValueError, match="unknown merge method 'not_a_method'"):
        merge_combination(bad, trained.combinations[0])
    after = (
        sorted(p.name for p in (project / "models/merged").glob("*")) if (project / "models/merged").exists() else []
    )
    assert after == before


def test_a_merge_refuses_adapters_whose_labels_disagree_with_the_data(trained, project):
    labels = project / "data/prepared/topics/labels.json"
    original = labels.read_text()
    labels.write_text(json.dumps({"labels": ["other", "sport"]}))
    try:
        with pytest.raises(ValueError, match="predicts labels"):
            merge_combination(trained, trained.combinations[0])
    finally:
        labels.write_text(original)
