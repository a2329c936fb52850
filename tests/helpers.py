"""Synthetic task data with a learnable signal, shared by the fixtures and the tests; and real MLflow servers."""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loramerge.lists import all_combinations, generated_lists
from loramerge.server import running_server

WORDS = {
    "sport": ["goal", "match", "team", "score", "coach", "league"],
    "money": ["bank", "stock", "market", "price", "trade", "profit"],
    "happy": ["joy", "smile", "laugh", "sunny", "great", "love"],
    "sad": ["tears", "cry", "gloom", "lonely", "loss", "grief"],
}
FILLER = ["the", "a", "today", "really", "very", "we", "it", "was", "so", "and"]
REPO = Path(__file__).resolve().parents[1]
TASK_LABELS = {"topics": ["money", "sport"], "moods": ["happy", "sad"]}


def synthetic_rows(labels: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    """Texts whose label is given away by a keyword, so a tiny model can learn them quickly."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 4) + rng.sample(WORDS[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


ENTITY_TYPES = ("sport", "money")
"""The synthetic NER task's entity types: its entities are WORDS of these kinds, its other words FILLER."""


def synthetic_tagged(count: int, seed: int) -> list[dict]:
    """Tagged sentences (the wnut17 layout): filler words and one or two entities of one or two words each, so a
    tiny model learns to tag them (a word's kind gives its type; B- on an entity's first word, I- after)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        chunks = [[(word, "O")] for word in rng.sample(FILLER, 3)]
        for kind in rng.sample(ENTITY_TYPES, rng.randint(1, 2)):
            words = rng.sample(WORDS[kind], rng.randint(1, 2))
            chunks.append([(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)])
        rng.shuffle(chunks)
        pairs = [pair for chunk in chunks for pair in chunk]
        sentences.append({"tokens": [w for w, _ in pairs], "tags": [t for _, t in pairs]})
    return sentences


def write_jsonl(path: Path, sentences: list[dict]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s) + "\n" for s in sentences))


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)


def tiny_params_dict(backbone: Path, data_dir: Path) -> dict:
    tasks = list(TASK_LABELS)
    return {
        "data": {"local_dir": str(data_dir), "subsample_seed": 0},
        "tasks": {t: {"data": {"hub": {"id": f"example/{t}"}}, "train": {}} for t in tasks},
        "backbone": {"name": str(backbone), "max_length": 16},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},
        "train": {
            "seed": 0,
            "learning_rate": 0.01,
            "head_learning_rate": 0.01,
            "batch_size": 16,
            "max_epochs": 2,
            "val_check_interval": 2,
            "patience": 5,
            "accelerator": "cpu",
            "precision": "32",  # float32 on every CPU: the tests compare trained weights exactly
        },
        "merge": {
            "methods": {
                "task_arithmetic": {"scaling": [0.5, 1.0]},
                "linear": {},
                "ties": {"scaling": 1.0, "density": [0.5, 1.0]},
                "core_tsv_m": {},
                "regmean": {"scaling": [1.0, 1.5]},
                "adamerging": {"steps": 2, "learning_rate": 0.05, "batch_size": 4},
            },
            "search_max_examples": 16,
        },
        "tracking": {"experiment": "tests"},
        **generated_lists(tasks, 1, all_combinations(tasks, (2,)), []),
    }


REPORT_SECTIONS = [
    "headline",
    "methods",
    "sizes",
    "joint",
    "heatmaps",
    "triples",
    "retention",
    "seeds",
    "similarity",
    "sweep",
    "export",
    "provenance",
]
"""The report's sections, in the order a reader meets them (their ids in report.html)."""

VOLATILE_METRICS = {
    "runtime_s",
    "steps_per_s",
    "train_samples_per_s",
    "peak_rss_mb",
    "peak_cuda_mb",
    "merged_s",
    "unmerged_s",
    "speedup",
}
"""Metrics that measure the machine, not the model: wall-clock times and rates (training time and
throughput; merged-vs-unmerged inference seconds and their ratio) and peak memory. Two runs with
the same params and seed must agree on everything else."""


def comparable_metrics(value):
    """A metrics document without the VOLATILE_METRICS keys, at any depth."""
    if isinstance(value, dict):
        return {k: comparable_metrics(v) for k, v in value.items() if k not in VOLATILE_METRICS}
    return value


def train_every_task(params) -> None:
    """Prepare each task of a project (the working directory), then train every replica (each task once per
    training seed) in every mode, compute RegMean's Gram matrices and score on test: everything a merge needs."""
    from loramerge.settings import TRAINING_MODES
    from loramerge.stages.evaluate import evaluate_baselines, evaluate_single
    from loramerge.stages.gram import write_grams
    from loramerge.stages.prepare import prepare_task
    from loramerge.stages.train import train_task

    for task in params.tasks:
        prepare_task(params, task)
    for name in params.replicas:
        for mode in TRAINING_MODES:
            train_task(params, name, mode)
        write_grams(params, name)
        evaluate_single(params, name)
        evaluate_baselines(params, name)


def require_task_data() -> None:
    """Fail (never skip) without ../shared/data: CI always has it, and a silent skip would hide the pipeline tests."""
    import pytest

    from tests.sandbox import shared_data_dir

    if not (shared_data_dir() / "emotion" / "train.csv").exists():
        pytest.fail(
            f"the task data is not at {shared_data_dir()}: the integration tests need ../shared/data (or set LORAMERGE_DATA_DIR)"
        )


def imported(statement: str, modules: list[str], cwd: Path | None = None) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after `statement`: what a stage process pays to import."""
    code = f"import sys; {statement}; print([m for m in {modules!r} if m in sys.modules])"
    shown = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(shown.strip().splitlines()[-1])


@contextmanager
def serving(arguments: list[str], port: int, tracking: str, cwd: Path, seconds: float = 120) -> Iterator[Path]:
    """A real `mlflow <arguments>` process (a model server, the tracking UI) answering /health on 127.0.0.1:`port`
    for the block, stopped with every process it forked at its end; yields its log (a file: a failing test quotes it,
    and a pipe nobody reads while the block runs would stop the server once its request log filled the pipe)."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking,
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn, as in a venv
    }
    command = [str(Path(sys.executable).parent / "mlflow"), *arguments]
    log = Path(tempfile.mkdtemp(prefix=f"mlflow-{arguments[0]}-")) / "output.log"
    with running_server(command, port, log, seconds, cwd, env) as uri:
        assert uri, (
            f"mlflow {arguments[0]} did not answer on port {port} within {seconds} s: {log.read_text()[-3000:]}"
        )
        yield log


@contextmanager
def opened_project(folder: Path, raw: dict) -> Iterator:
    """`raw` written as `folder`'s params.yaml, `folder` the working directory for the block, its params loaded."""
    import pytest
    import yaml

    from loramerge.config import load_params

    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield load_params(folder / "params.yaml")
