"""Training seeds (`repeats`): every task trained once per seed, each seed's replicas merged and scored apart, and
the report's mean ± sd over the seeds with intervals that include their spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from loramerge import paths
from loramerge.cli import main
from loramerge.config import ConfigError, load_params
from loramerge.lists import all_combinations, generated_lists
from loramerge.records import MergedMetrics, SingleMetrics
from loramerge.report.seeds import two_level
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.report import write_report
from tests.helpers import opened_project, tiny_params_dict, train_every_task


def with_repeats(raw: dict, repeats: int) -> dict:
    tasks = list(raw["tasks"])
    raw["repeats"] = repeats
    raw.update(generated_lists(tasks, repeats, all_combinations(tasks, (2,)), []))
    return raw


def test_combos_lists_one_replica_per_task_and_seed_and_each_seeds_own_combinations(project, params_dict):
    params_dict["repeats"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
    assert main(["combos"]) == 0
    params = load_params(project / "params.yaml")
    assert params.replicas["topics-repeat1"].model_dump() == {
        "task": "topics",
        "repeat": 1,
        "source": "data/prepared/topics",
    }
    assert list(params.pairs) == ["topics+moods", "topics-repeat1+moods-repeat1"]
    assert params.pairs["topics-repeat1+moods-repeat1"].tasks == ["topics", "moods"]
    assert params.shipped() == ["topics+moods"]  # what ships is the first seed's merge


def test_a_replica_trains_with_the_seed_plus_its_repeat_on_its_tasks_data(params_dict, project):
    params = with_repeats(params_dict, 3)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(project / "params.yaml")
    assert [loaded.task_train(f"topics{s}", "lora").seed for s in ("", "-repeat1", "-repeat2")] == [0, 1, 2]
    assert loaded.task_train("moods-repeat2", "full").seed == 2 and loaded.task_of("moods-repeat2") == "moods"
    view = loaded.repeat_view(1)
    assert list(view.tasks) == ["topics-repeat1", "moods-repeat1"] and list(view.pairs) == [
        "topics-repeat1+moods-repeat1"
    ]


def test_changing_repeats_without_rewriting_the_lists_is_refused_naming_the_command(project, params_dict):
    params_dict["repeats"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
    with pytest.raises(
        ConfigError, match=r"repeats=2 .*run.*loramerge combos|regenerate the lists with `loramerge combos`"
    ):
        load_params(project / "params.yaml")


def test_a_task_named_like_a_replica_is_refused(project, params_dict):
    params_dict["tasks"]["topics-repeat1"] = params_dict["tasks"]["topics"]
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
    with pytest.raises(ConfigError, match="ends like a replica"):
        load_params(project / "params.yaml")


def test_the_seed_bootstrap_is_the_example_bootstrap_when_every_seed_agrees():
    draws = np.random.default_rng(0).random((1, 500, 3))
    assert np.allclose(two_level(np.repeat(draws, 3, axis=0), np.random.default_rng(1)), draws[0], rtol=0, atol=1e-12)


def test_the_seed_bootstrap_spans_the_seeds_when_they_disagree_and_the_examples_do_not():
    draws = np.stack([np.full((4000, 1), 0.8), np.full((4000, 1), 0.9)])  # no example noise, two seeds 0.1 apart
    resampled = two_level(draws, np.random.default_rng(0))[:, 0]
    assert set(np.round(resampled, 6)) == {0.8, 0.85, 0.9}
    assert np.percentile(resampled, [2.5, 97.5]) == pytest.approx([0.8, 0.9])
    assert np.mean(np.isclose(resampled, 0.85)) == pytest.approx(0.5, abs=0.03)  # two draws: half the time one of each


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, tiny_backbone, tiny_data):
    """A project with two training seeds, every replica trained, merged, scored and reported."""
    raw = with_repeats(tiny_params_dict(tiny_backbone, tiny_data), 2)
    raw["merge"]["methods"] = {"task_arithmetic": {"scaling": [0.5, 1.0]}, "ties": {"scaling": 1.0, "density": 0.5}}
    with opened_project(tmp_path_factory.mktemp("seeded"), raw) as params:
        train_every_task(params)
        for combo in params.combinations:
            merge_combination(params, combo)
            evaluate_combination(params, combo)
        write_report(params)
        yield params


def test_every_task_has_an_adapter_and_baselines_per_seed_and_the_seeds_differ(seeded):
    for name in seeded.replicas:
        for mode in ("lora", "head_only", "full"):
            assert (paths.model_dir(name, mode) / "head.safetensors").exists()
    first, second = (paths.adapter_dir(n) / "adapter_model.safetensors" for n in ("topics", "topics-repeat1"))
    assert first.read_bytes() != second.read_bytes()


def test_each_seeds_merges_are_scored_against_that_seeds_single_adapters(seeded):
    scores = MergedMetrics.read(paths.merged_metrics("topics-repeat1+moods-repeat1"))
    single = SingleMetrics.read(paths.single_metrics("topics-repeat1")).accuracy
    assert scores.methods["task_arithmetic"].tasks["topics-repeat1"].single_score == single


def test_the_seeds_table_gives_mean_and_sd_over_seeds_and_each_seeds_value(seeded):
    table = pd.read_csv(Path("reports/tables/seeds.csv"))
    row = table.set_index(["subject", "kind", "measure"]).loc[("task_arithmetic", "pair", "normalized_accuracy")]
    per_seed = []
    for combo in ("topics+moods", "topics-repeat1+moods-repeat1"):
        per_seed.append(
            MergedMetrics.read(paths.merged_metrics(combo)).methods["task_arithmetic"].mean_normalized_accuracy
        )
    assert [row["repeat_0"], row["repeat_1"]] == pytest.approx(per_seed)
    assert row["mean"] == pytest.approx(np.mean(per_seed)) and row["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    single = table.set_index(["subject", "kind"]).loc[("moods", "single_adapter")]
    accuracies = [SingleMetrics.read(paths.single_metrics(n)).accuracy for n in ("moods", "moods-repeat1")]
    assert [single["repeat_0"], single["repeat_1"]] == pytest.approx(accuracies)
    report = Path("reports/report.md").read_text()
    assert "## Training seeds" in report and "2 training seeds" in report
    assert "topics-repeat1" not in pd.read_csv(Path("reports/tables/single.csv"))["task"].tolist()
