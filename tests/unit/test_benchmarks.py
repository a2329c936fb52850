"""The benchmarks' own logic (their timings are never asserted: speed goals are printed, not tested)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.bench_pipeline import expected_reruns, stages_to_run
from benchmarks.bench_run_time import by_group, last_run, stage_records
from benchmarks.bench_stage_floor import stage_locks, stage_modules
from benchmarks.run_all import kept_sections, section_of
from loramerge.config import Params
from loramerge.lists import all_combinations, generated_lists


def four_task_params() -> Params:
    tasks = ["a", "b", "c", "d"]
    return Params.model_validate(
        {
            "tasks": {t: {"data": {"hub": {"id": f"x/{t}"}}} for t in tasks},
            **generated_lists(
                tasks, 1, all_combinations(tasks, (2,)), all_combinations(tasks, (3,)), many=["a+b+c+d"]
            ),
        }
    )


def test_one_tasks_training_change_reruns_its_training_gram_evaluation_and_every_combination_holding_it():
    expected = expected_reruns(four_task_params(), "a")
    assert {"train@a", "gram@a", "evaluate@a", "similarity", "report"} <= expected
    assert {s for s in expected if s.startswith("merge_pair@")} == {
        "merge_pair@a+b",
        "merge_pair@a+c",
        "merge_pair@a+d",
    }
    assert {s for s in expected if s.startswith("evaluate_triple@")} == {
        "evaluate_triple@a+b+c",
        "evaluate_triple@a+b+d",
        "evaluate_triple@a+c+d",
    }
    assert {s for s in expected if s.endswith("@a+b+c+d")} == {
        "merge_many@a+b+c+d",
        "evaluate_many@a+b+c+d",
        "export_many@a+b+c+d",  # the default export: the merge of every task
    }
    assert len(expected) == 5 + 2 * (3 + 3) + 3
    assert not any(s.endswith("@b") or s == "merge_pair@b+c" for s in expected)


def test_the_stages_a_dry_run_would_run_are_read_from_its_output():
    output = (
        "Running stage 'pipelines/train/dvc.yaml:train@a':\n> loramerge train --task a\n\n"
        "Stage 'pipelines/prepare/dvc.yaml:prepare@a' didn't change, skipping\nRunning stage 'report':\n"
    )
    assert stages_to_run(output) == {"train@a", "report"}


def test_a_benchmark_section_starts_at_its_heading():
    assert section_of("  n=2: 1.0 s\n## Scaling\n\n| a |\n") == "## Scaling\n\n| a |\n"


def test_a_partial_bench_run_keeps_the_other_benchmarks_sections_whole():
    report = (
        "# Benchmarks\n\nWritten by make bench.\n\n## Training\n\n| a |\n\n_training: 3.2 min of wall clock._\n\n"
        "## Profile\n\nsteps\n\n_profile: 1.0 min of wall clock, 2026-11-24 23:30 UTC._\n"
    )
    assert kept_sections(report) == {
        "training": "## Training\n\n| a |\n\n_training: 3.2 min of wall clock._\n",
        "profile": "## Profile\n\nsteps\n\n_profile: 1.0 min of wall clock, 2026-11-24 23:30 UTC._\n",
    }


def test_the_run_time_is_the_last_run_grouped_by_stage_kind(tmp_path):
    lines = [
        ("train@a", 30.0, "2026-11-24T10:00:30+00:00"),  # an earlier run, an hour before
        ("train@a", 20.0, "2026-11-24T11:00:20+00:00"),
        ("merge_pair@a+b", 10.0, "2026-11-24T11:00:35+00:00"),
        ("merge_triple@a+b+c", 15.0, "2026-11-24T11:00:55+00:00"),
        ("report", 5.0, "2026-11-24T11:01:05+00:00"),
    ]
    path = tmp_path / "stage_times.jsonl"
    path.write_text("".join(f'{{"stage": "{s}", "seconds": {t}, "finished": "{f}"}}\n' for s, t, f in lines))
    run = last_run(stage_records(path), gap=120)
    assert list(run["stage"]) == ["train@a", "merge_pair@a+b", "merge_triple@a+b+c", "report"]
    table = by_group(run).set_index("group")
    assert table.loc["merges", "stages"] == 2 and table.loc["merges", "minutes"] == 25 / 60
    assert set(table.index) == {"LoRA training", "merges", "similarity and report"}


def test_the_floor_reads_which_stage_module_each_stage_of_every_lock_runs_and_which_lock_it_rewrites(
    tmp_path, monkeypatch
):
    commands = {
        "pipelines/train": {"train@a": "loramerge train --task a"},
        "pipelines/baseline_full": {"baseline_full@a": "loramerge train --task a --mode full"},
        "pipelines/merge_pair": {"merge_pair@a+b": "loramerge merge --combo a+b"},
        ".": {"report": "loramerge report"},
    }
    for folder, stages in commands.items():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "dvc.yaml").write_text("stages: {}\n")
        entries = "".join(f"  {name}:\n    cmd: {cmd}\n" for name, cmd in stages.items())
        (tmp_path / folder / "dvc.lock").write_text(f"schema: '2.0'\nstages:\n{entries}")
    monkeypatch.chdir(tmp_path)
    assert stage_modules() == {
        "train@a": "train",
        "baseline_full@a": "train",
        "merge_pair@a+b": "merge",
        "report": "report",
    }
    assert stage_locks()["merge_pair@a+b"] == Path("pipelines/merge_pair/dvc.lock")
    assert stage_locks()["report"] == Path("dvc.lock")


def test_a_training_throughput_ratio_is_stated_only_at_equal_accuracy():
    from benchmarks.bench_training import verdict

    right = np.array([True] * 150 + [False] * 50)
    ours = {"side": "ours", "samples_per_s": 100.0, "val_accuracy": 0.75, "correct": right}
    same = {"side": "same", "samples_per_s": 50.0, "val_accuracy": 0.75, "correct": right.copy()}
    worse = {"side": "worse", "samples_per_s": 50.0, "val_accuracy": 0.50, "correct": np.arange(200) < 100}
    assert "**2.00×**" in verdict(ours, same)
    assert "no ratio" in verdict(ours, worse) and "×" not in verdict(ours, worse)


def test_the_dvc_benchmarks_group_layout_is_the_default_pipelines_own_at_four_tasks():
    """bench_dvc_lock's `groups` layout stands for loramerge's: at the default's four tasks, the same files of the
    same sizes (export_pair and export_triple are empty by default)."""
    from benchmarks.bench_dvc_lock import stage_groups
    from loramerge.lockfile import pipeline_stages

    root = Path(__file__).resolve().parents[2]
    defined = [len(names) for names in pipeline_stages(root).values() if names]
    assert sorted(defined) == sorted(stage_groups(4))


def test_the_dvc_benchmark_spreads_its_stale_stages_evenly_over_the_pipeline_in_files_of_the_given_sizes():
    from benchmarks.bench_dvc_lock import part_sizes, synthetic_pipeline

    assert part_sizes(25, 10) == [10, 10, 5]
    params, files = synthetic_pipeline([10, 10, 5], code_deps=2, stale=3)
    late = {part: [n for n, v in items.items() if v["group"] == "late"] for part, items in params["parts"].items()}
    assert late == {"p000": ["s000", "s008"], "p001": ["s017"], "p002": []}
    assert sorted(files) == [f"pipelines/part00{k}/dvc.yaml" for k in range(3)]
