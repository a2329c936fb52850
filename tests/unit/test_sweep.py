"""The emotion study's sweep: every grid point becomes one queued DVC experiment that DVC accepts."""

from __future__ import annotations

import re

from tests.sandbox import make_sandbox, run, tiny_params


def shown_experiments(task: str) -> tuple[list[dict], dict[str, dict[str, dict]]]:
    """`dvc exp show --json` as DVC 3 prints it for a baseline with two finished sweep experiments (a LoRA point and a
    full fine-tuning point) and one queued one, and the metrics files each experiment's commit holds."""
    base = {
        "backbone": {"name": "tiny"},
        "lora": {"rank": 8, "targets": "attention"},
        "train": {"learning_rate": 0.001, "weight_decay": 0.01},
        "baselines": {"full": {"learning_rate": 5e-5}},
    }
    lora = base | {"sweep": {"family": "lora"}, "lora": {"rank": 2, "targets": "attention+linear"}}
    full = base | {"sweep": {"family": "full"}}
    revision = lambda rev, name, settings: {  # noqa: E731
        "rev": rev,
        "name": name,
        "data": {"params": {"params.yaml": {"data": settings}}},
    }
    shown = [
        {"rev": "workspace", "data": {}, "experiments": None},
        {
            "rev": "base",
            "data": {},
            "experiments": [
                {"revs": [revision("e1", "lofty-lorikeet-of-the-long-names", lora)]},
                {"revs": [revision("e2", "brisk-bass", full)]},
                {"revs": [revision("e3", "queued-one", lora)]},
            ],
        },
    ]
    train = {
        "val_accuracy": 0.81,
        "val_weighted_f1": 0.8,
        "trainable_params": 1000,
        "trainable_percent": 1.2,
        "runtime_s": 61.4,
        "steps_per_s": 3.0,
        "best_step": 40,
        "peak_rss_mb": 900.0,
    }
    files = {
        "e1": {
            f"metrics/train/lora/{task}.json": train,
            f"metrics/single/{task}.json": {"accuracy": 0.8, "weighted_f1": 0.79},
        },
        "e2": {
            f"metrics/train/full/{task}.json": train | {"val_accuracy": 0.84, "runtime_s": 120.2},
            f"metrics/baselines/{task}.json": {"full": {"accuracy": 0.83, "weighted_f1": 0.82}},
        },
    }
    return shown, files


def test_sweep_show_prints_each_finished_experiment_in_a_terminal_width_best_validation_first():
    from loramerge.sweep import WIDTH, experiment_table, terminal_table

    shown, files = shown_experiments("emotion")
    table = experiment_table(shown, lambda rev: files.get(rev, {}).get, "emotion")
    assert list(table["experiment"]) == ["lofty-lorikeet-of-the-long-names", "brisk-bass"], "the queued one has no row"
    lines = terminal_table(table).splitlines()
    assert max(map(len, lines)) <= WIDTH
    assert lines[0].split() == [
        "experiment",
        "family",
        "rank",
        "learning_rate",
        "weight_decay",
        "val_accuracy",
        "test_accuracy",
        "runtime_s",
    ]
    assert lines[1].split() == ["brisk-bass", "full", "fine-tuning", "–", "5e-05", "0.01", "0.8400", "0.8300", "120"]
    assert lines[2].split() == [
        "lofty-lorikeet-of-the-lo",
        "LoRA",
        "attention+linear",
        "2",
        "0.001",
        "0.01",
        "0.8100",
    ] + [
        "0.8000",
        "61",
    ]


def test_every_grid_point_is_queued_run_by_dvcs_queue_and_compared_by_sweep_show_in_a_terminal_width(tmp_path):
    """The real thing: a LoRA point and a full fine-tuning point queued (baselines.full.weight_decay is not in this
    params.yaml, where a plain `-S key=value` is refused by DVC), run by DVC's queue, shown in 120 columns."""
    from loramerge.sweep import WIDTH

    params = tiny_params()
    params["baselines"]["full"].pop("weight_decay", None)
    params["sweep"].update(
        lora_ranks=[2],
        lora_learning_rates=[0.001],
        lora_targets=["attention"],
        full_learning_rates=[5e-5],
        full_weight_decays=[0.001],
    )
    sandbox = make_sandbox(tmp_path / "repo", params)
    queued = run(["loramerge", "sweep", "queue"], sandbox, check=False)
    assert queued.returncode == 0 and "queued 2 experiments" in queued.stdout, queued.stderr[-3000:]
    assert run(["dvc", "queue", "status"], sandbox).stdout.count("Queued") == 2
    ran = run(["dvc", "exp", "run", "--run-all", "--jobs", "1"], sandbox, check=False)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    shown = run(["loramerge", "sweep", "show"], sandbox)
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= WIDTH, shown.stdout
    assert (
        lines[0].split()[:2] == ["experiment", "family"] and "val_accuracy" in lines[0] and "test_accuracy" in lines[0]
    )
    rows = lines[1:]
    assert len(rows) == 2 and {"LoRA", "full"} <= {word for row in rows for word in row.split()}, shown.stdout
    for row in rows:  # every experiment's validation and test scores are numbers in [0, 1]
        scores = [float(w) for w in row.split() if re.fullmatch(r"[01]\.\d{4}", w)]
        assert len(scores) == 2, row
