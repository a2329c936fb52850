"""The one model for all of a user's tasks: `loramerge combos` lists merges of every size asked for (by default pairs,
triples and the merge of every task), the stages merge, evaluate and export the all-task merge like any other, it is
shipped by default as the MLflow `champion`, labels every task in one pass, and the report shows how much each method
keeps as tasks are added. Four tiny tasks, so the all-task merge is larger than a triple (a `many` merge)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from loramerge.cli import main
from loramerge.config import load_params
from loramerge.multitask import MultiTaskModel
from tests.helpers import synthetic_rows, tiny_params_dict, train_every_task, write_csv

EXTRA_TASKS = {"mixed": ["sport", "sad"], "weather": ["money", "happy"]}
EVERY = "topics+moods+mixed+weather"


@pytest.fixture(scope="module")
def four_tasks(tmp_path_factory, tiny_backbone, tiny_data):
    """A project of four tasks, its lists written by `loramerge combos` from the defaults (sizes 2, 3 and all; export:
    all), every task trained, every merge made and evaluated, the all-task model exported and the report written."""
    from loramerge.stages.evaluate import evaluate_combination
    from loramerge.stages.export import export_combination
    from loramerge.stages.merge import merge_combination
    from loramerge.stages.report import write_report
    from loramerge.stages.similarity import write_similarity

    data = tmp_path_factory.mktemp("data4")
    shutil.copytree(tiny_data, data, dirs_exist_ok=True)
    for seed, (task, labels) in enumerate(EXTRA_TASKS.items()):
        for split, count in (("train", 64), ("validation", 24), ("test", 24)):
            write_csv(data / task / f"{split}.csv", synthetic_rows(labels, count, 50 + 10 * seed + len(split)))
    raw = tiny_params_dict(tiny_backbone, data)
    raw["tasks"] |= {t: {"data": {}, "train": {}} for t in EXTRA_TASKS}  # only in the local folder: no Hub id
    raw["merge"]["methods"] = {"task_arithmetic": {"scaling": [0.5, 1.0]}, "ties": {"scaling": 1.0, "density": 0.5}}
    raw["export"] = {"compression_examples": 8, "latency_calls": 2, "throughput_repeats": 1}
    raw["report"] = {"bootstrap_resamples": 1000}
    folder = tmp_path_factory.mktemp("four-tasks")
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["combos"]) == 0
        params = load_params()
        train_every_task(params)
        for combo in params.combinations:
            merge_combination(params, combo)
            evaluate_combination(params, combo)
        for combo in params.shipped():
            export_combination(params, combo)
        write_similarity(params)
        write_report(params)
        yield params


def test_combos_lists_pairs_triples_and_the_merge_of_every_task_and_ships_that_one_by_default(four_tasks):
    assert (len(four_tasks.pairs), len(four_tasks.triples), list(four_tasks.many)) == (6, 4, [EVERY])
    assert four_tasks.shipped() == [EVERY] and list(four_tasks.exported.many) == [EVERY]
    assert four_tasks.exported.pairs == {} and four_tasks.exported.triples == {}


def test_the_all_task_model_labels_every_task_in_one_pass_as_the_evaluate_stage_scored_it():
    model = MultiTaskModel.load(Path("models/export") / EVERY)
    assert model.tasks == EVERY.split("+")
    frame = model.predict_frame(["goal match today", "bank joy"])
    assert set(frame.columns) == {c for t in model.tasks for c in (t, f"{t}_probability")}


def test_the_all_task_model_is_the_registered_champion():
    from mlflow.tracking import MlflowClient

    from loramerge.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(load_params().tracking, Path(".")))
    champion = client.get_model_version_by_alias(f"loramerge-{EVERY}", "champion")
    assert champion.tags["members"] == ",".join(EVERY.split("+"))


def test_the_run_ends_by_saying_where_the_report_and_the_all_task_model_are(four_tasks, capsys):
    assert main(["done", "--seconds", "90"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("loramerge: the run is done in 1.5 min.") and "reports/report.md" in said
    assert f"loramerge predict --model models/export/{EVERY}" in said and f"loramerge-{EVERY}@champion" in said
    assert "mlflow ui --backend-store-uri sqlite:///" in said


def test_the_report_shows_each_methods_mean_by_number_of_tasks_with_intervals(four_tasks):
    sizes = pd.read_csv("reports/tables/sizes.csv")
    assert sorted(sizes["tasks"].unique()) == [2, 3, 4]
    assert dict(sizes.groupby("tasks")["combinations"].first()) == {2: 6, 3: 4, 4: 1}
    assert (sizes["normalized_accuracy_ci_low"] <= sizes["normalized_accuracy"]).all()
    assert (sizes["normalized_accuracy"] <= sizes["normalized_accuracy_ci_high"]).all()
    pairs = pd.read_csv("reports/tables/combinations.csv").query("kind == 'pair'")
    means = sizes[sizes["tasks"] == 2].set_index("method")["normalized_accuracy"]
    assert means.to_dict() == pytest.approx(pairs.groupby("method")["normalized_accuracy"].mean().to_dict())
    report = Path("reports/report.md").read_text()
    assert "## How many tasks one model holds" in report and "figures/sizes.png" in report
    everything = pd.read_csv("reports/tables/all_tasks.csv")
    assert list(everything["task"]) == EVERY.split("+") and {"merged_ci_low", "single_ci_high"} <= set(everything)
    headline = yaml.safe_load(Path("reports/headline/ties.json").read_text())
    assert {"pair_acc", "triple_acc", "all_acc"} <= set(headline)  # all_gain too, where the adapters gained


def test_the_pair_and_triple_tables_leave_the_larger_merges_to_the_sizes_table(four_tasks):
    combos = pd.read_csv("reports/tables/combinations.csv")
    assert set(combos["kind"]) == {"pair", "triple"}


def test_replacing_the_tasks_and_rerunning_combos_ships_the_new_all_task_merge_with_no_other_edit(
    four_tasks, tmp_path
):
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["tasks"] = {t: raw["tasks"][t] for t in ("moods", "mixed", "weather")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--params", str(tmp_path / "params.yaml"), "combos"]) == 0
    params = load_params(tmp_path / "params.yaml")
    assert params.shipped() == ["moods+mixed+weather"] and list(params.exported.triples) == ["moods+mixed+weather"]
    assert params.many == {}


def test_combos_lists_every_size_asked_for_each_capped_below_the_merge_of_every_task(params_dict, tmp_path):
    raw = params_dict | {"combos": {"sizes": [2, 3, 4, 5, "all"], "max_many": 2, "seed": 0}}
    raw["tasks"] = {f"task{i}": {"data": {}, "train": {}} for i in range(6)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--params", str(tmp_path / "params.yaml"), "combos"]) == 0
    params = load_params(tmp_path / "params.yaml")
    sizes = sorted(len(params.members(combo)) for combo in params.many)
    assert (len(params.pairs), len(params.triples), sizes) == (15, 20, [4, 4, 5, 5, 6])


def test_every_merge_is_also_scored_without_its_task_over_one_head_of_every_members_labels(four_tasks):
    from loramerge.records import MergedMetrics

    merged = MergedMetrics.read(Path("metrics/merged") / f"{EVERY}.json")
    # topics {money, sport}, moods {happy, sad}, mixed {sport, sad}, weather {money, happy}: four names in all
    assert merged.joint_single.classes == 4 and set(merged.joint_single.tasks) == set(EVERY.split("+"))
    for result in merged.methods.values():
        assert 0 <= result.joint.accuracy <= 1
        assert result.joint_normalized_accuracy == pytest.approx(result.joint.accuracy / merged.joint_single.accuracy)
    ranking = pd.read_csv("reports/tables/joint_ranking.csv")
    assert sorted(ranking["tasks"].unique()) == [2, 3, 4] and {"rank_per_task", "rank_joint"} <= set(ranking)
    assert "## Not told the task: KnOTS' joint setting" in Path("reports/report.md").read_text()


def test_the_search_can_choose_hyper_parameters_by_the_joint_setting(four_tasks, tmp_path):
    from loramerge.records import MergeManifest
    from loramerge.stages.merge import merge_combination

    params = four_tasks.model_copy(update={"merge": four_tasks.merge.model_copy(update={"objective": "joint"})})
    merged = Path("models/merged") / EVERY
    kept = tmp_path / "kept"
    shutil.copytree(merged, kept)
    try:
        merge_combination(params, EVERY)
        validation = MergeManifest.read(merged / "task_arithmetic" / "manifest.json").validation
        assert validation.objective == "joint" and validation.score == validation.joint_normalized_accuracy
        assert 0 < validation.score and validation.mean_normalized_accuracy > 0
    finally:
        shutil.rmtree(merged)
        shutil.copytree(kept, merged)


def test_the_joint_objective_is_refused_for_word_taggers(project, params_dict, capsys):
    params_dict["tasks"]["topics"]["type"] = "token_classification"
    params_dict["merge"]["objective"] = "joint"
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))
    assert main(["prepare", "--task", "moods"]) == 2
    assert "merge.objective joint scores one label per input, but ['topics'] tag words" in capsys.readouterr().err
