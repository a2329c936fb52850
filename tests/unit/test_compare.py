"""`loramerge compare`: two runs' merge-method tables side by side, with each run's intervals and the difference."""

from __future__ import annotations

import pandas as pd
import pytest

from loramerge.report.compare import (
    MEASURES,
    SINGLE_MEASURES,
    compare_merged_accuracy,
    compare_merged_scores,
    compare_methods,
    compare_singles,
    comparison_markdown,
)


def methods_csv(folder, rows: dict[str, float]):
    table = []
    for method, value in rows.items():
        row = {"method": method}
        for measure in MEASURES:
            row |= {measure: value, f"{measure}_ci_low": value - 0.01, f"{measure}_ci_high": value + 0.01}
        table.append(row)
    (folder / "tables").mkdir(parents=True)
    pd.DataFrame(table).to_csv(folder / "tables" / "methods.csv", index=False)
    return folder


def test_methods_in_both_runs_are_compared_with_intervals_and_the_difference(tmp_path):
    first = methods_csv(tmp_path / "a", {"ties": 0.90, "regmean": 0.95})
    second = methods_csv(tmp_path / "b", {"ties": 0.93, "only_here": 0.5})
    table = compare_methods(first, second, ("attention", "attention+linear"))
    assert list(table["method"]) == ["ties"]
    assert table.loc[0, "gain_retention_pair (attention)"] == "0.900 [0.890, 0.910]"
    assert table.loc[0, "gain_retention_pair Δ"] == pytest.approx(0.03)
    assert "## normalized_accuracy_triple" in comparison_markdown(first, second, ("attention", "attention+linear"))


def test_a_folder_without_a_report_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="give a folder the `report` stage wrote"):
        compare_methods(tmp_path, tmp_path, ("a", "b"))


def single_csv(folder, accuracy: float, trainable: float):
    row = {"task": "emotion", "lora_trainable_percent": trainable}
    for measure in SINGLE_MEASURES:
        row |= {measure: accuracy, f"{measure}_ci_low": accuracy - 0.05, f"{measure}_ci_high": accuracy + 0.05}
    pd.DataFrame([row]).to_csv(folder / "tables" / "single.csv", index=False)


def test_single_adapters_and_their_trainable_share_are_compared_when_both_runs_have_them(tmp_path):
    first = methods_csv(tmp_path / "a", {"ties": 0.90})
    second = methods_csv(tmp_path / "b", {"ties": 0.93})
    single_csv(first, 0.75, 0.33)
    single_csv(second, 0.85, 1.45)
    table = compare_singles(first, second, ("attention", "attention+linear"))
    assert table.loc[0, "lora_score (attention+linear)"] == "0.850 [0.800, 0.900]"
    assert table.loc[0, "lora_score Δ"] == pytest.approx(0.10)
    assert table.loc[0, "trainable % (attention+linear)"] == 1.45
    assert "## single adapters and baselines" in comparison_markdown(first, second, ("attention", "attention+linear"))


def test_merged_accuracy_is_compared_in_plain_accuracy_per_method_and_kind(tmp_path):
    runs = {}
    for name, accuracy in (("a", 0.80), ("b", 0.83)):
        folder = methods_csv(tmp_path / name, {"ties": 0.9})
        rows = [
            {"combination": "x+y", "kind": "pair", "method": "ties", "task": "x", "score": accuracy},
            {"combination": "x+y", "kind": "pair", "method": "ties", "task": "y", "score": accuracy + 0.1},
            {"combination": "x+y+z", "kind": "triple", "method": "ties", "task": "x", "score": accuracy},
        ]
        pd.DataFrame(rows).to_csv(folder / "tables" / "merged.csv", index=False)
        runs[name] = folder
    table = compare_merged_accuracy(runs["a"], runs["b"], ("attention", "attention+linear"))
    assert table.loc[0, "pairs (attention)"] == pytest.approx(0.85)
    assert table.loc[0, "pairs Δ"] == pytest.approx(0.03) and table.loc[0, "triples Δ"] == pytest.approx(0.03)
    assert "## merged models' test accuracy" in comparison_markdown(runs["a"], runs["b"], ("a", "b"))


def test_every_merged_score_is_held_against_its_tasks_sampling_noise(tmp_path):
    moves = {"ties": 0.03, "regmean": 0.08, "task_arithmetic": 0.0}  # bf16 − fp32; the noise is 0.05
    runs = {}
    for name, factor in (("fp32", 0), ("bf16", 1)):
        folder = methods_csv(tmp_path / name, {"ties": 0.9})
        rows = [
            {"combination": "emotion+y", "kind": "pair", "method": m, "task": "emotion", "score": 0.7 + factor * d}
            for m, d in moves.items()
        ]
        pd.DataFrame(rows).to_csv(folder / "tables" / "merged.csv", index=False)
        single_csv(folder, 0.85, 1.45)  # the single adapter's interval: 0.85 ± 0.05
        runs[name] = folder
    table = compare_merged_scores(runs["fp32"], runs["bf16"], ("fp32", "bf16"))
    row = table.set_index("task").loc["emotion"]
    assert (row["merged scores"], row["changed"], row["beyond noise"]) == (3, 2, 1)
    assert row["largest |Δ|"] == pytest.approx(0.08) and row["noise (95% half-width)"] == pytest.approx(0.05)
    assert "against its sampling noise" in comparison_markdown(runs["fp32"], runs["bf16"], ("fp32", "bf16"))


def test_a_report_folder_from_before_the_score_columns_is_read_under_todays_names(tmp_path):
    """Studies committed before 2026-12-03 call a task's score `accuracy` (`lora_accuracy_ci_low`, ...)."""
    old, new = methods_csv(tmp_path / "old", {"ties": 0.9}), methods_csv(tmp_path / "new", {"ties": 0.9})
    single_csv(new, 0.85, 1.45)
    pd.read_csv(new / "tables" / "single.csv").rename(columns=lambda c: c.replace("_score", "_accuracy")).to_csv(
        old / "tables" / "single.csv", index=False
    )
    assert "lora_accuracy_ci_low" in pd.read_csv(old / "tables" / "single.csv").columns
    table = compare_singles(old, new, ("old", "new"))
    assert table.loc[0, "lora_score (old)"] == table.loc[0, "lora_score (new)"] == "0.850 [0.800, 0.900]"
    assert table.loc[0, "head_only_score Δ"] == 0
