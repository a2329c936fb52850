"""Write outputs so that a killed stage never leaves a half-written file or folder behind.

Everything is written beside its final path under a temporary name, then renamed into
place: a rename within one file system is atomic, so DVC only ever sees whole outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def remove_stale_staging(final: Path) -> None:
    """Delete what a killed earlier write of `final` left beside it (SIGKILL runs no cleanup), so
    leftovers never pile up inside folders other stages depend on (e.g. models/adapters)."""
    for stale in final.parent.glob(f".{final.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `final` whole."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (same suffix, for writers that pick the format from the name:
    savefig, to_csv, to_parquet); on success it replaces `final`, on failure it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(0o644)
        os.replace(staging, final)
    finally:
        staging.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
