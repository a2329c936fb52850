"""Write outputs so that a killed stage never leaves a half-written file or folder behind.

Everything is written beside its final path under a temporary name, then renamed into
place: a rename within one file system is atomic, so DVC only ever sees whole outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
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


class OutputError(ValueError):
    """An output cannot be written where it goes; found before the work that would produce it."""


def check_writable(*files: Path, folders: Iterable[Path] = ()) -> None:
    """Each output file (and folder, written whole by `atomic_dir`) can be written where it goes, checked before the
    work that produces it: nothing of the other kind in its way, and its nearest existing folder takes a new file
    (tried for real, so read-only mounts count as well as permissions)."""
    for output in map(Path, files):
        if output.is_dir():
            raise OutputError(f"{output} is a folder, where a file is to be written: remove it or choose another path")
        _check_parent(output)
    for output in map(Path, folders):
        if output.exists() and not output.is_dir():
            raise OutputError(f"{output} is a file, where a folder is to be written: remove it")
        _check_parent(output)


def _check_parent(output: Path) -> None:
    folder = output.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{output} cannot be written: {folder} is a file, not a folder; move it away")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(
            f"{output} cannot be written: {folder} is not writable ({error.strerror}); fix its permissions"
        ) from None


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file's content; a garbled one is a ValueError naming the file and where it breaks."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}): restore it with `dvc checkout --force` or rerun the stage that"
            " writes it"
        ) from None
