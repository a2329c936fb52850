"""Shared fixtures: a tiny randomly initialised BERT saved as a normal model folder, synthetic
task CSVs with a learnable signal, and a throw-away project directory with its own params.

Nothing here touches the network. `make test` runs the suite on two pytest-xdist workers, one core
each: the integration tests that read the one `dvc repro` of the tiny pipeline stay together on one
worker while the unit tests and the integration tests with sandboxes of their own fill the other
(`pytest_xdist_make_scheduler` below).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("LORAMERGE_DATA_DIR", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # a core per worker; the stages `dvc repro` starts inherit it

import copy
from pathlib import Path

import pytest
import yaml

from loramerge.config import Params
from tests.helpers import FILLER, TASK_LABELS, WORDS, synthetic_rows, tiny_params_dict, write_csv
from tests.sandbox import NO_USAGE_REPORTS

for name, value in NO_USAGE_REPORTS.items():  # the in-process MLflow and the servers the tests start
    os.environ.setdefault(name, value)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with random weights and a word-level vocabulary, saved like any HF model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *(w for ws in WORDS.values() for w in ws)]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic tasks as local CSV folders, in the layout of ../shared/data."""
    root = tmp_path_factory.mktemp("data")
    for seed, (task, labels) in enumerate(TASK_LABELS.items()):
        for split, count in (("train", 64), ("validation", 24), ("test", 24)):
            write_csv(root / task / f"{split}.csv", synthetic_rows(labels, count, seed * 10 + len(split)))
    return root


@pytest.fixture
def params_dict(tiny_backbone: Path, tiny_data: Path) -> dict:
    return copy.deepcopy(tiny_params_dict(tiny_backbone, tiny_data))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params_dict: dict) -> Path:
    """An empty project directory (the working directory for the test) with a tiny params.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    return tmp_path


@pytest.fixture
def params(project: Path) -> Params:
    from loramerge.config import load_params

    return load_params(project / "params.yaml")


INTEGRATION = "tests/integration/"
OWN_SANDBOXES = {"tests/integration/test_faults.py"}
"""Integration modules that never read the shared `repro` sandbox (they build their own): free to run beside it."""


def pytest_xdist_make_scheduler(config, log):
    """`pytest -n 2`: each test module whole on one worker (its module fixtures are built once), and every
    integration module that reads the one `dvc repro` sandbox (the session fixture `repro`) on the same worker, so
    that sandbox is built once too. (xdist's own `--dist loadgroup` cannot group them: with pytest 9 its renamed
    node ids do not reach the scheduler.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndOneSandbox(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid).split("::")[0]
            return INTEGRATION if module.startswith(INTEGRATION) and module not in OWN_SANDBOXES else module

    return ModulesAndOneSandbox(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module said to build its own sandboxes must not read the shared one: it would be built on both workers."""
    shared = sorted({i.nodeid.split("::")[0] for i in items if "repro" in i.fixturenames} & OWN_SANDBOXES)
    if shared:
        raise pytest.UsageError(
            f"{shared} read the `repro` sandbox: remove them from OWN_SANDBOXES in tests/conftest.py"
        )
