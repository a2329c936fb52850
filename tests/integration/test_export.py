"""`dvc repro` ships the merged models: export folders, `loramerge predict`, the MLflow registry and serving,
on the real bundled encoder and real task data (the tiny sandbox configuration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from loramerge.atomic import read_json
from loramerge.multitask import EXPORT_MANIFEST, MultiTaskModel
from loramerge.tokens import entity_metrics
from tests.sandbox import run
from tests.unit.test_export import reference_probabilities, serve_and_post


def exported_combinations(repro: Path) -> list[str]:
    return yaml.safe_load((repro / "params.yaml").read_text())["export"]["combinations"]


def test_each_listed_combination_is_exported_and_predicts_exactly_what_the_evaluate_stage_scored(repro, monkeypatch):
    from loramerge.config import load_params
    from loramerge.data import load_split

    monkeypatch.chdir(repro)
    params = load_params()
    combos = exported_combinations(repro)
    assert sorted(p.name for p in (repro / "models/export").iterdir() if not p.name.startswith(".")) == sorted(combos)
    for combo in combos:
        model = MultiTaskModel.load(Path("models/export") / combo)
        method = model.manifest["method"]
        candidates = model.manifest["candidates"]
        assert candidates[method] == max(candidates.values()) and set(candidates) == set(params.merge.methods)
        scored = read_json(Path("metrics/merged") / f"{combo}.json")["methods"][method]["tasks"]
        for task in model.tasks:
            test = load_split(task, "test")
            if model.heads[task].per_token:  # a word tagger: its tags, scored as the evaluate stage scores them
                tags = model.predict_frame(test["text"].tolist())[task].str.split().tolist()
                found = entity_metrics(test["tags"].map(list).tolist(), tags)["micro_f1"]
                assert found == pytest.approx(scored[task]["score"])
                continue
            probabilities = model.probabilities(test["text"].tolist())[task]
            expected = reference_probabilities(params, combo, method, task, test["text"].tolist())
            np.testing.assert_allclose(probabilities, expected, atol=1e-5)
            assert (probabilities.argmax(-1) == expected.argmax(-1)).all()
            assert float((probabilities.argmax(-1) == test["label_id"].to_numpy()).mean()) == pytest.approx(
                scored[task]["accuracy"]
            )
        table = read_json(Path("metrics/export") / f"{combo}.json")["compression"]["precisions"]
        assert {"fp32", "int8"} <= set(table) and "| int8 |" in (
            Path("models/export") / combo / "README.md"
        ).read_text()


def test_predict_and_mlflow_serve_of_the_champion_answer_with_the_same_labels(repro, tmp_path):
    combo = exported_combinations(repro)[-1]
    folder = repro / "models/export" / combo
    texts = [
        "The central bank raised interest rates again today.",
        "I am so happy and grateful for my friends!",
        "You are a complete idiot and everyone hates you.",
    ]
    pd.DataFrame({"body": texts}).to_csv(tmp_path / "texts.csv", index=False)
    predicted = run(
        [
            "loramerge",
            "predict",
            "--model",
            str(folder),
            "--input",
            str(tmp_path / "texts.csv"),
            "--text-column",
            "body",
            "--output",
            str(tmp_path / "out.csv"),
        ],
        repro,
    )
    assert "out.csv: 3 rows" in predicted.stdout
    from_cli = pd.read_csv(tmp_path / "out.csv")
    through_uri = run(
        [
            "loramerge",
            "predict",
            "--model",
            f"models:/loramerge-{combo}@champion",
            *(a for t in texts for a in ("--text", t)),
        ],
        repro,
    )
    from_registry = [json.loads(line) for line in through_uri.stdout.strip().splitlines()]
    served = serve_and_post(f"models:/loramerge-{combo}@champion", f"sqlite:///{repro / 'mlflow.db'}", texts, repro)
    for task in read_json(folder / EXPORT_MANIFEST)["members"]:
        assert [row[task] for row in served] == from_cli[task].tolist() == [row[task] for row in from_registry]


def test_the_registry_holds_each_export_with_its_tags_and_a_champion(repro):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repro / 'mlflow.db'}")
    for combo in exported_combinations(repro):
        manifest = read_json(repro / "models/export" / combo / EXPORT_MANIFEST)
        champion = client.get_model_version_by_alias(f"loramerge-{combo}", "champion")
        assert (
            champion.tags["content_sha256"] == manifest["content_sha256"]
            and champion.tags["method"] == manifest["method"]
        )
        assert champion.tags["git_commit"] == manifest["git_commit"] and champion.tags["members"] == ",".join(
            manifest["members"]
        )
