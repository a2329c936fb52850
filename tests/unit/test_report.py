"""The report on the tiny BERT: three synthetic tasks trained, merged in every pair and the triple,
scored, compared for similarity, and written up; plus the statistics on hand-made numbers."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loramerge.lists import all_combinations, generated_lists
from loramerge.merging import get_method
from loramerge.paths import SIMILARITY
from loramerge.records import SIMILARITY_MEASURES
from loramerge.report.sections import headline_text
from loramerge.report.statistics import correlations, holm, smallest_p, spearman, verdict
from loramerge.report.tables import combination_table, headline_table, identical_methods, method_summary
from loramerge.stages.evaluate import evaluate_combination
from loramerge.stages.export import export_combination
from loramerge.stages.merge import merge_combination
from loramerge.stages.report import write_report
from loramerge.stages.similarity import write_similarity
from tests.helpers import (
    REPORT_SECTIONS,
    imported,
    opened_project,
    synthetic_rows,
    tiny_params_dict,
    train_every_task,
    write_csv,
)


@pytest.fixture(scope="module")
def reported_params(tmp_path_factory, tiny_backbone, tiny_data):
    """The params of a project run through every stage once, with a third task (sport vs sad) so that there is a triple."""
    data = tmp_path_factory.mktemp("data3")
    shutil.copytree(tiny_data, data, dirs_exist_ok=True)
    for split, count in (("train", 64), ("validation", 24), ("test", 24)):
        write_csv(data / "mixed" / f"{split}.csv", synthetic_rows(["sport", "sad"], count, 99 + len(split)))
    raw = tiny_params_dict(tiny_backbone, data)
    raw["tasks"]["mixed"] = {"data": {"hub": {"id": "example/mixed"}}, "train": {}}
    tasks = list(raw["tasks"])
    shipped = all_combinations(tasks, (2,))[:1]
    raw.update(
        generated_lists(tasks, 1, all_combinations(tasks, (2,)), all_combinations(tasks, (3,)), shipped=shipped)
    )
    raw["export"] = {
        "combinations": shipped,
        "compression_examples": 8,
        "latency_calls": 2,
        "throughput_repeats": 1,
        "registry": False,
    }
    with opened_project(tmp_path_factory.mktemp("report-project"), raw) as params:
        train_every_task(params)
        for combo in params.combinations:
            merge_combination(params, combo)
            evaluate_combination(params, combo)
        export_combination(params, params.export.combinations[0])
        write_similarity(params)
        write_report(params)
        yield params


@pytest.fixture
def reported_folder(reported_params) -> Path:
    return Path.cwd()


def test_similarity_scores_every_pair_with_every_measure_in_range(reported_params, reported_folder):
    pairs = json.loads((reported_folder / SIMILARITY).read_text())["pairs"]
    assert sorted(pairs) == sorted(reported_params.pairs)
    for scores in pairs.values():
        assert set(scores) == set(SIMILARITY_MEASURES)
        assert -1 <= scores["data_cosine"] <= 1 and scores["data_mmd"] >= 0
        assert all(0 <= scores[m] <= 1 for m in ("label_jaccard", "vocab_jaccard", "adapter_alignment"))
        assert -1 <= scores["adapter_cosine"] <= 1
    assert pairs["topics+moods"]["label_jaccard"] == 0.0  # money/sport vs happy/sad
    assert pairs["topics+mixed"]["label_jaccard"] == pytest.approx(1 / 3)  # {sport} of {money, sport, sad}


def test_report_md_has_every_section_in_order_and_names_the_best_method(reported_params, reported_folder):
    text = (reported_folder / "reports/report.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    starts = [
        "Headline",
        "Methods",
        "How many tasks one model holds",
        "Not told the task",
        "Pairwise heat-maps",
        "Triples ranked",
        "Per-task retention",
        "Training seeds",
        "Does task similarity",
        "The emotion study's sweep",
        "The shipped multi-task models",
        "Provenance",
    ]
    assert len(headings) == len(starts) and all(h.startswith(s) for h, s in zip(headings, starts))
    assert "One training seed (train.seed 0): every interval in this report is over test examples only" in text
    seeds = pd.read_csv(reported_folder / "reports/tables/seeds.csv")
    assert seeds.empty and list(seeds.columns) == [
        "subject",
        "kind",
        "measure",
        "repeats",
        "mean",
        "sd",
        "ci_low",
        "ci_high",
    ]
    best = pd.read_csv(
        reported_folder / "reports/tables/methods.csv"
    )  # the methods table exists and ranks every method
    assert set(best["method"]) == set(reported_params.merge.methods)
    assert re.search(
        r"Best method: \w+, with mean normalized accuracy \(merged / single-adapter test accuracy\) "
        r"[0-9.]+ \[[0-9.]+, [0-9.]+\] over 3 pairs and [0-9.]+ \[[0-9.]+, [0-9.]+\] over 1 triple",
        text,
    )
    assert re.search(
        r"(are|is) within noise of \w+ \(paired bootstrap|Every other method is worse than \w+ beyond noise", text
    )
    assert re.search(r"Measured on .+ cores; native bf16 units: .+ Git commit ([0-9a-f]{12}|unknown)", text), (
        "provenance first"
    )
    for column in [
        "normalized_accuracy_pair_ci_low",
        "normalized_accuracy_pair_ci_high",
        "gain_retention_triple_ci_high",
    ]:
        assert column in best.columns
    assert (
        "The vision study's finding, that adapters on dissimilar data merge better," in text
        and "Small sample: 3 pairs" in text
    )
    assert "Git commit" in text and "cpu_count" in text and "lora_train_s" in text


def test_every_figure_is_a_png_under_reports_figures_and_is_linked(reported_params, reported_folder):
    text = (reported_folder / "reports/report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    methods = list(reported_params.merge.methods)
    expected = (
        {f"figures/heatmap_{m}.png" for m in methods}
        | {f"figures/similarity_{m}.png" for m in methods}
        | {"figures/retention.png", "figures/sizes.png"}
    )
    assert set(linked) == expected
    for link in linked:
        assert (reported_folder / "reports" / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_html_is_self_contained_with_sections_in_order(reported_params, reported_folder):
    page = (reported_folder / "reports/report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:4] == b"\x89PNG"
    positions = [page.index(f'<section id="{s}">') for s in REPORT_SECTIONS]
    assert positions == sorted(positions)
    assert 'id="headline-table"' in page and 'id="methods-table"' in page


def test_tables_metrics_and_per_method_plot_data(reported_params, reported_folder):
    metrics = json.loads((reported_folder / "reports/metrics.json").read_text())
    assert set(metrics["methods"]) == set(reported_params.merge.methods)
    assert set(metrics["methods"]["linear"]) == {"pair", "triple"}
    assert 0 < metrics["best"]["normalized_accuracy_all"] <= 2
    for method in reported_params.merge.methods:
        frame = pd.read_csv(reported_folder / "reports/tables/normalized_accuracy" / f"{method}.csv")
        assert (
            set(frame["combination"]) == set(reported_params.combinations)
            and frame["normalized_accuracy"].notna().all()
        )
    correlations_csv = pd.read_csv(reported_folder / "reports/tables/correlations.csv")
    assert len(correlations_csv) == len(reported_params.merge.methods) * 2 * len(SIMILARITY_MEASURES)
    association_csv = pd.read_csv(reported_folder / "reports/tables/association.csv")
    assert set(association_csv["kind"]) == {"pair", "triple"} and {"rho_ci_low", "partial_rho"} <= set(
        association_csv.columns
    )
    assert "partial ρ with the members' mean adapter gain" in (reported_folder / "reports/report.md").read_text()
    assert (reported_folder / "reports/summary.md").read_text().startswith("# loramerge summary")


def test_the_summary_opens_with_the_answer_and_fits_a_terminal(reported_params, reported_folder):
    from loramerge.report.summary import WIDTH

    text = (reported_folder / "reports/summary.md").read_text()
    answer = text[: text.index("\n## ")]
    shipped = reported_params.shipped()[0]
    assert "Best method: " in answer and f"`loramerge-{shipped}`" in answer and "loramerge predict --model" in answer
    assert re.search(r"\| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \|", answer), "the all-task scores with intervals"
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert tables and max(map(len, tables)) <= WIDTH
    assert not any("_ci_low" in line for line in tables), "an interval is one cell, never two columns"


def test_the_export_section_shows_each_precision_of_each_shipped_model_and_its_tasks_accuracies(
    reported_params, reported_folder
):
    text = (reported_folder / "reports/report.md").read_text()
    section = text[text.index("## The shipped multi-task models") : text.index("## Provenance")]
    combo = reported_params.export.combinations[0]
    export = json.loads((reported_folder / f"metrics/export/{combo}.json").read_text())
    precisions = list(export["compression"]["precisions"])
    rows = re.findall(rf"^\|\s*{re.escape(combo)}\s*\|\s*{export['method']}\s*\|\s*(\w+)\s*\|", section, flags=re.M)
    assert {"fp32", "int8"} <= set(precisions) and rows == [p for p in ("fp32", "int8", "bf16") if p in precisions]
    for task, accuracy in export["compression"]["precisions"]["fp32"]["accuracy"].items():
        assert re.search(rf"\|\s*{re.escape(combo)}\s*\|\s*{task}\s*\|\s*{accuracy:.3f}", section)


def test_the_headline_is_one_small_flat_file_per_method_holding_its_mean_scores(reported_params, reported_folder):
    metrics = json.loads((reported_folder / "reports/metrics.json").read_text())
    files = {p.stem: json.loads(p.read_text()) for p in (reported_folder / "reports/headline").glob("*.json")}
    assert set(files) == {*reported_params.merge.methods, "pipeline"}
    for method in reported_params.merge.methods:
        means = metrics["methods"][method]
        assert files[method] == {  # an undefined mean (gain retention when no adapter beat its head) is left out
            f"{kind}_{short}": round(means[kind][long], 4)
            for kind in ("pair", "triple")
            for short, long in (("acc", "normalized_accuracy"), ("gain", "gain_retention"))
            if means[kind][long] is not None
        }
        assert {"pair_acc", "triple_acc"} <= set(files[method])
    single = [
        json.loads((reported_folder / f"metrics/single/{t}.json").read_text())["accuracy"]
        for t in reported_params.tasks
    ]
    assert files["pipeline"]["single_acc"] == round(sum(single) / len(single), 4) and files["pipeline"]["train_s"] > 0


def test_the_summary_run_is_tagged_and_holds_the_report_and_sortable_metrics(reported_params, reported_folder):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{reported_folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(reported_params.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "tags.`loramerge.summary` = 'true'")
    assert run.info.status == "FINISHED" and run.data.tags["dvc_stage"] == "report" and run.data.tags["repro_id"]
    assert "norm_acc/pair/linear/topics:moods" in run.data.metrics and "norm_acc/triple/linear" in run.data.metrics
    assert any(k.startswith("spearman_rho/pair/") for k in run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "reports")} >= {
        "reports/report.html",
        "reports/report.md",
        "reports/figures",
    }


def test_the_report_says_so_when_similarity_was_not_computed(reported_params, reported_folder):
    saved = (reported_folder / SIMILARITY).read_text()
    (reported_folder / SIMILARITY).unlink()
    try:
        write_report(reported_params)
        assert "Not computed: run the `similarity` stage" in (reported_folder / "reports/report.md").read_text()
    finally:
        (reported_folder / SIMILARITY).write_text(saved)


def test_a_similar_pair_naming_a_task_not_configured_is_left_out_with_a_one_line_warning(
    reported_params, reported_folder, capsys
):
    similarity = reported_params.similarity.model_copy(update={"similar_pairs": [("topics", "gone")]})
    write_report(reported_params.model_copy(update={"similarity": similarity}))
    assert capsys.readouterr().err.strip() == (
        "loramerge report: warning: similarity.similar_pairs [('topics', 'gone')] name(s) tasks not configured;"
        " left out of the contrast"
    )


def sweep_row(family: str, val: float, test: float, rank: int | None) -> dict:
    return {
        "experiment": f"exp-{family}-{rank}",
        "family": family,
        "rank": rank,
        "learning_rate": 1e-3 if rank else 5e-5,
        "weight_decay": 0.01,
        "backbone": "tiny",
        "hardware": "CPU",
        "val_accuracy": val,
        "val_weighted_f1": val,
        "train_loss": 0.5,
        "test_accuracy": test,
        "test_weighted_f1": test,
        "trainable_params": 10,
        "trainable_percent": 1.0,
        "runtime_s": 1.0,
        "steps_per_s": 1.0,
        "best_step": 3,
        "peak_rss_mb": 100.0,
    }


def test_the_sweep_section_shows_every_setting_and_tests_only_the_best_of_each_family(
    reported_params, reported_folder
):
    from loramerge.sweep import SWEEP_CSV

    assert "Not run yet: `loramerge sweep queue`" in (reported_folder / "reports/report.md").read_text()
    rows = [
        sweep_row("LoRA attention", 0.7, 0.61, 2),
        sweep_row("LoRA attention", 0.8, 0.62, 8),
        sweep_row("full fine-tuning", 0.75, 0.9, None),
    ]
    SWEEP_CSV.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(SWEEP_CSV, index=False)
    try:
        write_report(reported_params)
        text = (reported_folder / "reports/report.md").read_text()
    finally:
        SWEEP_CSV.unlink()
    section = text.split("## The emotion study's sweep")[1].split("## Provenance")[0]
    validation, test, study = (
        section.split("Test, the best setting")[0],
        section.split("Test, the best setting")[1].split("The study's")[0],
        section.split("The study's")[1],
    )
    assert all(f"{v:.3f}" in validation for v in (0.7, 0.8, 0.75)) and "0.610" not in validation
    assert (
        "0.620" in test and "0.900" in test and "0.610" not in test
    )  # rank 8 beat rank 2 on validation: rank 2's test score stays unseen
    assert "5e-05" in test  # a learning rate as written, not rounded to 0.000
    assert "0.927" in study and "T4 GPU" in study


def test_gain_retention_pools_a_combinations_tasks_so_a_tiny_adapter_gain_cannot_swamp_it():
    merged = pd.DataFrame(
        [
            {
                "combination": "a+b",
                "kind": "pair",
                "method": "ties",
                "task": "a",
                "normalized_accuracy": 0.9,
                "merged_gain": 0.10,
                "adapter_gain": 0.20,
            },
            {
                "combination": "a+b",
                "kind": "pair",
                "method": "ties",
                "task": "b",
                "normalized_accuracy": 0.98,
                "merged_gain": -0.02,
                "adapter_gain": 0.01,
            },
        ]
    )
    (row,) = combination_table(merged).itertuples()
    assert row.gain_retention == pytest.approx(0.08 / 0.21)  # the per-task mean would be (0.5 - 2.0) / 2 = -0.75
    assert row.normalized_accuracy == pytest.approx(0.94)


def test_spearman_p_values_are_exact_permutation_tests():
    rho, p = spearman(np.arange(6.0), np.arange(6.0) ** 2)
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 720)  # only the two perfect orderings are as extreme
    assert spearman([1, 2, 3], [1, 2, 3])[1] == pytest.approx(1 / 3)  # scipy's t approximation would say 0
    assert all(math.isnan(v) for v in spearman([1, 2, 3], [5, 5, 5]))
    assert all(math.isnan(v) for v in spearman([1, 2], [1, 2]))


def fake_results(slope: float, methods: int = 3, pairs: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combinations whose normalized accuracy moves with data cosine by `slope` (plus noise), for every method."""
    rng = np.random.default_rng(0)
    similarity = pd.DataFrame(
        {
            "combination": [f"p{i}" for i in range(pairs)],
            "kind": "pair",
            **{m: rng.random(pairs) for m in SIMILARITY_MEASURES},
        }
    )
    combos = pd.concat(
        [
            pd.DataFrame(
                {
                    "combination": similarity["combination"],
                    "kind": "pair",
                    "method": f"m{k}",
                    "normalized_accuracy": 0.8 + slope * similarity["data_cosine"] + 0.001 * rng.random(pairs),
                    "gain_retention": 0.5,
                }
            )
            for k in range(methods)
        ]
    )
    return combos, similarity


@pytest.mark.parametrize(
    ("slope", "answer"), [(-0.2, "holds here"), (0.2, "is reversed here"), (0.0, "is not supported")]
)
def test_the_verdict_follows_the_sign_and_significance_of_rho(slope, answer):
    combos, similarity = fake_results(slope) if slope else fake_results(0.0)
    if not slope:  # no relation: accuracy independent of similarity
        combos["normalized_accuracy"] = np.random.default_rng(1).random(len(combos))
    sentences = verdict(correlations(combos, similarity), 0.05)
    assert answer in sentences[0]
    assert "Over 7 pairs" in sentences[1] and "Small sample: 7 pairs" in sentences[-1]


def scores_of(rows: dict[str, tuple[float, float]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One pair a+b scored per method as (test normalized accuracy, validation normalized accuracy)."""
    merged = pd.DataFrame(
        [
            {
                "combination": "a+b",
                "kind": "pair",
                "method": m,
                "task": t,
                "score": test,
                "macro_f1": test,
                "normalized_accuracy": test,
                "merged_gain": test,
                "adapter_gain": 1.0,
            }
            for m, (test, _) in rows.items()
            for t in ("a", "b")
        ]
    )
    validation = pd.DataFrame(
        [
            {
                "combination": "a+b",
                "kind": "pair",
                "method": m,
                "data": get_method(m).data,
                "validation_normalized_accuracy": v,
            }
            for m, (_, v) in rows.items()
        ]
    )
    return merged, combination_table(merged), validation


def test_the_best_method_is_chosen_on_validation_even_where_test_ranks_another_first():
    merged, combos, validation = scores_of({"ties": (0.99, 0.90), "task_arithmetic": (0.95, 0.97)})
    (row,) = headline_table(combos, validation, ["ties", "task_arithmetic"]).itertuples()
    assert row.best_method == "task_arithmetic" and row.normalized_accuracy_pairs == pytest.approx(0.95)
    summary = method_summary(combos, validation, ["ties", "task_arithmetic"])
    assert list(summary["method"]) == ["task_arithmetic", "ties"], "the table ranks by the headline's criterion"


def test_a_data_aware_winner_is_labelled_and_the_best_data_free_method_named_beside_it():
    methods = ["ties", "regmean", "core_iso_c"]
    merged, combos, validation = scores_of({"ties": (0.93, 0.95), "regmean": (0.96, 0.99), "core_iso_c": (0.97, 0.90)})
    summary = method_summary(combos, validation, methods)
    assert dict(zip(summary["method"], summary["data"])) == {
        "regmean": get_method("regmean").data,
        "ties": "none",
        "core_iso_c": "none",
    }
    text = headline_text(headline_table(combos, validation, methods), {}, summary)
    assert "Best method: regmean" in text
    assert "It is data-aware (it reads each member's layer-input Gram matrices" in text
    assert "the best data-free method is ties (validation 0.950; test 0.930 on pairs)" in text
    free = headline_text(
        headline_table(combos, validation, ["ties"]), {}, method_summary(combos, validation, ["ties"])
    )
    assert "data-aware" not in free


def test_a_validation_tie_goes_to_the_first_configured_method_and_identical_results_are_one_result():
    methods = ["task_arithmetic", "knots_task_arithmetic", "ties"]
    merged, combos, validation = scores_of(
        {"knots_task_arithmetic": (0.95, 0.97), "task_arithmetic": (0.95, 0.97), "ties": (0.93, 0.95)}
    )
    assert headline_table(combos, validation, methods)["best_method"].item() == "task_arithmetic"
    assert identical_methods(merged, methods) == {"task_arithmetic": ["knots_task_arithmetic"], "ties": []}


def test_the_smallest_possible_p_value_is_said_and_too_few_points_cannot_be_called_not_significant():
    assert smallest_p(3) == pytest.approx(1 / 3) and smallest_p(4) == pytest.approx(1 / 12)
    combos, similarity = fake_results(-0.2, pairs=3)
    sentences = verdict(correlations(combos, similarity), 0.05)
    assert "cannot be tested for significance here" in sentences[0] and "0.33" in sentences[0]


def test_holm_adjusts_a_hand_example_and_leaves_missing_p_values_out():
    p = pd.Series([0.01, 0.04, 0.03, float("nan"), 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 over m = 4: ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm(p).round(6).tolist()[:3] == [0.03, 0.06, 0.06] and holm(p)[4] == pytest.approx(0.02)
    assert pd.isna(holm(p)[3])


def test_the_heatmap_colours_span_the_data_symmetrically_about_the_single_adapters():
    from loramerge.report.figures import centred_scale

    assert centred_scale(np.array([0.96, 1.01, np.nan])) == pytest.approx((0.96, 1.04))
    assert centred_scale(np.array([1.0, 1.0])) == pytest.approx((0.99, 1.01)), "a grid of exact 1s keeps a range"
    assert centred_scale(np.array([np.nan])) == pytest.approx((0.99, 1.01))


def test_the_report_stage_computes_no_model_and_imports_no_model_stack():
    """The report reads JSON and CSV files: torch, transformers, PEFT and scikit-learn would cost it seconds of
    imports for nothing (the merge manifests say what data a method read; settings name each task type's score)."""
    assert imported("import loramerge.stages.report", ["torch", "transformers", "peft", "sklearn"]) == []
