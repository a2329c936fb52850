"""Safetensors files read so that a damaged one (truncated, overwritten, not safetensors) stops the command in one line
naming the file, before anything is computed from it."""

from __future__ import annotations

from pathlib import Path

RESTORE = "restore it with `dvc checkout --force`, or rerun the stage that writes it (`dvc repro --force <stage>`)"
"""The fix for a damaged pipeline output: DVC's cache holds the good copy; the stage can write it again."""


class WeightsError(ValueError):
    """A weights file cannot be read; the message names it and the fix."""


def check_weights(path: str | Path, remedy: str = RESTORE) -> Path:
    """`path`, once safetensors has read its header and found the file as long as the header says (cheap: nothing is
    loaded); a missing or damaged file is a WeightsError naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} not found; {remedy}")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as error:
        raise WeightsError(f"{path} is damaged ({str(error).splitlines()[0]}); {remedy}") from None
    return path


def read_weights(path: str | Path, remedy: str = RESTORE) -> dict:
    """Every tensor of a checked safetensors file."""
    from safetensors.torch import load_file

    return load_file(str(check_weights(path, remedy)))
