"""One sandbox for the whole integration session: `dvc repro` of the tiny configuration takes minutes,
so every integration test module reads the same finished run instead of repeating it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import require_task_data
from tests.sandbox import make_sandbox, run


@pytest.fixture(scope="session")
def repro(tmp_path_factory) -> Path:
    """A sandbox in which `dvc repro` has run once, successfully."""
    require_task_data()
    folder = make_sandbox(tmp_path_factory.mktemp("pipeline") / "repo")
    completed = run(["dvc", "repro"], folder, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return folder
