"""The real DAG, end to end: `dvc repro` on the bundled MiniLM and real data, cut to a few dozen rows."""

from __future__ import annotations

import json

import pytest

from loramerge.paths import stage_name
from tests.sandbox import run, shared_data_dir, tiny_params

pytestmark = pytest.mark.integration

if not (shared_data_dir() / "emotion" / "train.csv").exists():
    pytest.skip(f"the task data is not at {shared_data_dir()} (set LORAMERGE_DATA_DIR)", allow_module_level=True)


def test_every_task_has_a_peft_adapter_a_head_and_test_metrics(repro):
    for task in tiny_params()["tasks"]:
        adapter = repro / "models" / "adapters" / task
        assert (adapter / "adapter_model.safetensors").exists() and (adapter / "head.safetensors").exists()
        metrics = json.loads((repro / "metrics" / "single" / f"{task}.json").read_text())
        assert 0 <= metrics["accuracy"] <= 1 and metrics["test_examples"] == 24


def test_every_pair_and_triple_is_merged_with_every_method_and_scored(repro):
    params = tiny_params()
    for combo, entry in {**params["pairs"], **params["triples"]}.items():
        for method in params["merge"]["methods"]:
            manifest = json.loads((repro / "models" / "merged" / combo / method / "manifest.json").read_text())
            assert set(manifest["members"]) == set(entry["members"])
            assert all(len(m["adapter_sha256"]) == 64 for m in manifest["members"].values())
            assert manifest["search"]["points"], "the validation search recorded its points"
        scores = json.loads((repro / "metrics" / "merged" / f"{combo}.json").read_text())
        assert set(scores["methods"]) == set(params["merge"]["methods"])
        for result in scores["methods"].values():
            assert set(result["tasks"]) == set(entry["members"])


def test_the_report_summarises_every_method(repro):
    summary = (repro / "reports" / "summary.md").read_text()
    for method in tiny_params()["merge"]["methods"]:
        assert method in summary
        assert (repro / "reports" / "figures" / f"heatmap_{method}.png").stat().st_size > 1000


def test_dvc_metrics_show_is_one_row_per_merge_method_that_fits_a_terminal(repro):
    shown = run(["dvc", "metrics", "show"], repro, COLUMNS="200").stdout.splitlines()
    assert max(len(line) for line in shown) <= 120, "\n".join(shown)
    assert shown[0].split() == ["Path", "pair_acc", "pair_gain", "single_acc", "train_s", "triple_acc", "triple_gain"]
    rows = {line.split()[0] for line in shown[1:]}
    assert rows == {f"reports/headline/{m}.json" for m in [*tiny_params()["merge"]["methods"], "pipeline"]}


def test_mlflow_holds_one_finished_run_per_stage_with_params_metrics_and_artifacts(repro):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repro / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("loramerge")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    stages = {r.data.tags["dvc_stage"] for r in runs}
    assert {"train@emotion", "merge_pair@emotion+agnews", "evaluate_pair@emotion+agnews", "report"} <= stages
    assert all(r.info.status == "FINISHED" for r in runs)
    train = next(r for r in runs if r.data.tags["dvc_stage"] == "train@emotion")
    assert train.data.params["lora.rank"] == "8"
    assert "train_loss" in train.data.metrics and len(train.data.tags["git_commit"]) == 40
    assert train.data.tags["mlflow.source.name"] == "pipelines/train/dvc.yaml:train@emotion"
    assert any(a.path == "model" for a in client.list_artifacts(train.info.run_id))
    read = {r.data.tags["dvc_stage"]: {i.dataset.name for i in r.inputs.dataset_inputs} for r in runs}
    assert read["train@emotion"] == {"emotion/train", "emotion/validation"}, "the runs table's Dataset column"
    assert read["merge_pair@emotion+agnews"] == {"emotion/validation", "agnews/validation"}, "merges never read test"
    assert read["gram@emotion"] == {"emotion/train"}, "RegMean's statistics come from training texts only"
    assert read["evaluate_pair@emotion+agnews"] == {"emotion/test", "agnews/test"}


def test_a_second_repro_reruns_nothing(repro):
    again = run(["dvc", "repro"], repro)
    assert "Running stage" not in again.stdout


def test_changing_one_tasks_training_reruns_only_that_task_and_the_combinations_with_it(repro):
    """What DVC would rerun (`--dry`; `--force-downstream` follows the retrained adapter's consumers, which a
    dry run cannot see change), then params.yaml restored: the shared sandbox stays as the other tests expect."""
    import re

    import yaml

    saved = (repro / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    params["tasks"]["agnews"]["train"] = {"learning_rate": 0.002}
    (repro / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        planned = run(["dvc", "repro", "--dry", "--force-downstream"], repro).stdout
    finally:
        (repro / "params.yaml").write_text(saved)
    rerun = {stage_name(address) for address in re.findall(r"Running stage '([^']+)'", planned)}
    with_agnews = [c for c in {**params["pairs"], **params["triples"]} if "agnews" in c.split("+")]
    expected = {"train@agnews", "gram@agnews", "evaluate@agnews", "similarity", "report"}
    expected |= {f"merge_{'pair' if c.count('+') == 1 else 'triple'}@{c}" for c in with_agnews}
    expected |= {f"evaluate_{'pair' if c.count('+') == 1 else 'triple'}@{c}" for c in with_agnews}
    expected |= {
        f"export_{'pair' if c.count('+') == 1 else 'triple'}@{c}"
        for c in with_agnews
        if c in params["export"]["combinations"]
    }
    assert rerun == expected
    assert "Running stage" not in run(["dvc", "repro", "--dry"], repro).stdout, "restored: nothing stale"


def test_a_second_training_seed_runs_only_the_new_seeds_stages(repro):
    """`repeats: 2` + `loramerge combos`: one new stage per (task, seed) and per new combination; nothing of the
    first seed reruns (the stages `dvc status` calls stale; params.yaml restored afterwards)."""

    import yaml

    saved = (repro / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    params["repeats"] = 2
    (repro / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        run(["loramerge", "combos"], repro)
        seeded = yaml.safe_load((repro / "params.yaml").read_text())
        rerun = {stage_name(address) for address in json.loads(run(["dvc", "status", "--json"], repro).stdout)}
    finally:
        (repro / "params.yaml").write_text(saved)
    replicas = [f"{task}-repeat1" for task in params["tasks"]]
    assert sorted(seeded["replicas"]) == sorted([*params["tasks"], *replicas])
    per_task = ("train", "baseline_head", "baseline_full", "gram", "evaluate", "evaluate_baselines")
    expected = {f"{stage}@{r}" for stage in per_task for r in replicas} | {"similarity", "report"}
    for kind in ("pair", "triple"):
        new = [c for c in seeded[f"{kind}s"] if c not in params[f"{kind}s"]]
        assert new and all(m.endswith("-repeat1") for c in new for m in c.split("+"))
        expected |= {f"merge_{kind}@{c}" for c in new} | {f"evaluate_{kind}@{c}" for c in new}
    assert rerun == expected
    assert "Running stage" not in run(["dvc", "repro", "--dry"], repro).stdout, "restored: nothing stale"
