"""The benchmarks' own logic (their timings are never asserted: speed goals are printed, not tested)."""

from __future__ import annotations

from benchmarks.bench_pipeline import expected_reruns, stages_to_run
from benchmarks.run_all import section_of
from loramerge.config import Params, all_combinations


def four_task_params() -> Params:
    tasks = ["a", "b", "c", "d"]
    return Params.model_validate(
        {
            "tasks": {t: {"data": {"hub": {"id": f"x/{t}"}}} for t in tasks},
            "pairs": {c: c.split("+") for c in all_combinations(tasks, (2,))},
            "triples": {c: c.split("+") for c in all_combinations(tasks, (3,))},
        }
    )


def test_one_tasks_training_change_reruns_its_training_evaluation_and_every_combination_holding_it():
    expected = expected_reruns(four_task_params(), "a")
    assert {"train@a", "evaluate@a", "similarity", "report"} <= expected
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
    assert {s for s in expected if s.startswith("export@")} == {
        f"export@{c}" for c in ("a+b", "a+c", "a+d", "a+b+c", "a+b+d", "a+c+d")
    }
    assert len(expected) == 4 + 3 * (3 + 3)
    assert not any(s.endswith("@b") or s == "merge_pair@b+c" for s in expected)


def test_the_stages_a_dry_run_would_run_are_read_from_its_output():
    output = "Running stage 'train@a':\n> loramerge train --task a\n\nStage 'prepare@a' didn't change, skipping\nRunning stage 'report':\n"
    assert stages_to_run(output) == {"train@a", "report"}


def test_a_benchmark_section_starts_at_its_heading():
    assert section_of("  n=2: 1.0 s\n## Scaling\n\n| a |\n") == "## Scaling\n\n| a |\n"
