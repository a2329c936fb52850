"""`loramerge predict`: classify texts (or images) with an exported multi-task model (a folder or an MLflow model URI).

Everything a user can get wrong is checked before any compute, and the output file is written
whole or not at all (loramerge/atomic.py), so a bad input never leaves a half-written file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from loramerge.atomic import check_writable, write_text
from loramerge.console import warn
from loramerge.multitask import MultiTaskModel
from loramerge.settings import TrackingConfig

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
"""File suffix -> format, for --input and --output alike."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
URI_SCHEMES = ("models:/", "runs:/", "file:/", "s3:/", "gs:/", "http://", "https://", "mlflow-artifacts:/")


def file_format(path: Path, formats: dict[str, str], role: str) -> str:
    """The format a file's suffix names, or a one-line error naming the option and the suffixes allowed."""
    if path.suffix.lower() not in formats:
        raise ValueError(f"{role} {path} must end in {' or '.join(formats)}")
    return formats[path.suffix.lower()]


def read_texts(path: Path, column: str) -> list[str]:
    """The `column` of a CSV or JSON-lines file, as strings; every way it can be unusable is a one-line error."""
    kind = file_format(path, FORMATS, "--input")
    if not path.is_file():
        raise FileNotFoundError(f"--input file {path} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"--input {path} is not UTF-8 (byte {error.start}): re-save it as UTF-8") from None
    if not text.strip():
        raise ValueError(
            f"--input {path} is empty: it needs a header and at least one row"
            if kind == "csv"
            else f"--input {path} is empty"
        )
    try:
        frame = pd.read_csv(io.StringIO(text)) if kind == "csv" else pd.read_json(io.StringIO(text), lines=True)
    except ValueError as error:
        raise ValueError(f"--input {path} cannot be read as {kind}: {str(error).splitlines()[0]}") from None
    if column not in frame.columns:
        raise ValueError(
            f"--input {path} has no column {column!r} (columns: {list(frame.columns)}); pass --text-column NAME"
        )
    if frame.empty:
        raise ValueError(f"--input {path} has no rows")
    if kind == "jsonl":  # a CSV's empty cell is an empty text; a JSON row without a text has none
        absent = [i + 1 for i, value in enumerate(frame[column]) if value is None or value != value]
        if absent:
            raise ValueError(
                f"--input {path} line(s) {absent[:5]} have no {column!r} (null or missing); give every line a text"
                " or remove those lines"
            )
    return frame[column].fillna("").astype(str).tolist()


def check_options(batch_size: int, output: Path | None) -> str:
    """The options `predict` takes checked before anything is read or loaded, as params.yaml is: a batch size of at
    least one, and an --output that can be written; returns the output's format."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1 (got {batch_size})")
    if output is None:
        return "jsonl"
    kind = file_format(output, FORMATS, "--output")
    check_writable(output)
    return kind


def warn_empty(texts: Sequence[str]) -> None:
    """An empty text gets a label like any other (the model's prior); say how many there are, not refuse them."""
    empty = [i + 1 for i, text in enumerate(texts) if not text.strip()]
    if empty:
        warn("predict", f"{len(empty)} empty text(s) (row(s) {empty[:5]}) are labelled from no words at all")


def image_files(paths: Sequence[Path] | None, folder: Path | None) -> list[Path]:
    """The --image files, or every image file in the --input folder (sorted by name); a missing or unreadable
    one is named in a one-line error before the model loads."""
    if folder is not None:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"--input folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"--image file {path} not found")
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"--image {path} is not a readable image ({type(error).__name__})") from None
    return list(paths)


def matching_input(model: MultiTaskModel, model_name: str, images: bool) -> None:
    """A text model given images, or an image model given texts, is told what to pass instead."""
    if model.input == "image" and not images:
        raise ValueError(f"--model {model_name} classifies images: pass --image PATH (repeatable) or --input FOLDER")
    if model.input == "text" and images:
        raise ValueError(f"--model {model_name} classifies text: pass --text or --input FILE.csv|.jsonl")


def is_mlflow_uri(model: str) -> bool:
    return model.startswith(URI_SCHEMES)


def load_model(model: str, tracking: TrackingConfig | None = None) -> MultiTaskModel:
    """An export folder, or the multi-task model inside a registered/logged MLflow pyfunc, looked up in the
    project's tracking store (as the stages write it: $MLFLOW_TRACKING_URI, params `tracking.uri`, mlflow.db)."""
    if not is_mlflow_uri(model):
        return MultiTaskModel.load(Path(model))
    import mlflow  # import cost: seconds, and only needed for an MLflow model URI

    from loramerge.registry import fluent_uri
    from loramerge.tracking import tracking_uri

    try:
        with fluent_uri(tracking_uri(tracking or TrackingConfig(), Path("."))):
            loaded = mlflow.pyfunc.load_model(model)
    except Exception as error:  # MLflow raises its own types for an unknown name, version or alias
        raise ValueError(
            f"--model {model}: MLflow cannot load it ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    return loaded.unwrap_python_model().model


def predictions(model: MultiTaskModel, examples: Sequence, batch_size: int, show_progress: bool) -> pd.DataFrame:
    """Each text (or image path) with its label and probability per task, in input order; a tqdm bar when asked."""
    if show_progress:
        with tqdm(total=len(examples), unit=model.input, desc="predict") as bar:
            frame = model.predict_frame(examples, batch_size, bar.update)
    else:
        frame = model.predict_frame(examples, batch_size)
    return pd.concat([pd.DataFrame({model.input: [str(e) for e in examples]}), frame], axis=1)


def render(frame: pd.DataFrame, kind: str) -> str:
    return (
        frame.to_csv(index=False) if kind == "csv" else frame.to_json(orient="records", lines=True, force_ascii=False)
    )


def run_predict(
    model: str,
    texts: Sequence[str] | None,
    input_path: Path | None,
    column: str,
    output: Path | None,
    batch_size: int,
    tracking: TrackingConfig | None = None,
    images: Sequence[Path] | None = None,
) -> str:
    """Validate, predict, then write `output` atomically (or return JSON lines for stdout when there is none).
    Images come as --image files or an --input folder; texts as --text or an --input file."""
    out_kind = check_options(batch_size, output)
    pictures = images or (input_path is not None and input_path.is_dir())
    if pictures:
        batch = image_files(images, None if images else input_path)
    else:
        batch = list(texts) if texts else read_texts(input_path, column)
        warn_empty(batch)
    loaded = load_model(model, tracking)
    matching_input(loaded, model, bool(pictures))
    text = render(predictions(loaded, batch, batch_size, show_progress=input_path is not None), out_kind)
    if output is None:
        return text
    write_text(output, text)
    return f"{output}: {len(batch)} rows, tasks {', '.join(loaded.tasks)}"
