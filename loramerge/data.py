"""Task data as every stage reads it: the raw splits (local CSVs first, else the Hub), the
prepared parquet splits and label maps, the stratified sampler, and file digests.

The `prepare` stage writes what this module reads; training, merging, evaluation, the
similarity scores and the export all read through here, so a split is read one way.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from loramerge import paths
from loramerge.atomic import read_json
from loramerge.config import Params
from loramerge.settings import HubSource, TaskData

DATA_DIR_ENV = "LORAMERGE_DATA_DIR"


class DataError(ValueError):
    """A task's data cannot be used; the message names the task, the file and the fix."""


def local_data_dir(params: Params) -> Path | None:
    """The local CSV folder: $LORAMERGE_DATA_DIR, else params `data.local_dir`."""
    chosen = os.environ.get(DATA_DIR_ENV) or params.data.local_dir
    return Path(chosen) if chosen else None


def read_local_split(task: str, csv_path: Path) -> pd.DataFrame:
    """One CSV with `text` and `label` columns, read strictly (UTF-8, well-formed, not empty)."""
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="strict")
    except UnicodeDecodeError as error:
        raise DataError(
            f"task {task!r}: {csv_path} is not valid UTF-8 ({error.reason} at byte {error.start}); re-save it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"task {task!r}: {csv_path} is empty; it needs a header 'text,label' and rows") from None
    except (pd.errors.ParserError, csv.Error) as error:
        raise DataError(f"task {task!r}: {csv_path} is not a well-formed CSV: {error}") from None
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"task {task!r}: {csv_path} lacks column(s) {missing}; found {list(frame.columns)}; the header must name 'text' and 'label'"
        )
    empty = frame["label"].str.strip() == ""
    if empty.any():
        first = int(empty.to_numpy().nonzero()[0][0]) + 1
        raise DataError(
            f"task {task!r}: {csv_path} has {int(empty.sum())} row(s) with an empty label (the first is data row {first}); label them or remove them"
        )
    return frame[["text", "label"]]


def read_tagged_split(path: Path) -> pd.DataFrame:
    """One row per sentence: `tokens` (list of words) and `tags` (one BIO tag per word)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            tokens, tags = record["tokens"], record["tags"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(
                f'{path}:{number}: not a tagged sentence ({error}); each line must be {{"tokens": [...], "tags": [...]}}'
            ) from None
        if len(tokens) != len(tags):
            raise DataError(
                f"{path}:{number}: {len(tokens)} tokens but {len(tags)} tags; give exactly one tag per token"
            )
        bad = [t for t in tags if not (t == "O" or t[:2] in ("B-", "I-"))]
        if bad:
            raise DataError(f"{path}:{number}: tag {bad[0]!r} is not BIO (O, B-<type>, I-<type>); fix the file")
        rows.append({"tokens": list(tokens), "tags": list(tags)})
    return pd.DataFrame(rows, columns=["tokens", "tags"])


def tag_set(frames: Sequence[pd.DataFrame]) -> list[str]:
    """Every tag used, "O" first, then sorted: the label ids a token head predicts."""
    tags = {t for frame in frames for sentence in frame["tags"] for t in sentence}
    return ["O", *sorted(tags - {"O"})]


def read_hub_splits(task: str, hub: HubSource, seed: int) -> dict[str, pd.DataFrame]:
    """The task's splits from the Hub, with label indices turned into label names; a validation split the
    dataset lacks is carved from its train split (stratified, seeded), never taken from test."""
    import datasets  # import cost: seconds, and only needed when a task is read from the Hub

    dataset = datasets.load_dataset(hub.id, hub.config)
    frames = {}
    for split, hub_split in hub.splits.items():
        part = dataset[hub_split]
        labels = part.features[hub.label_column]
        frame = part.to_pandas()[[hub.text_column, hub.label_column]]
        frame.columns = ["text", "label"]
        if hasattr(labels, "int2str"):
            frame["label"] = [labels.int2str(int(i)) for i in frame["label"]]
        frames[split] = frame.astype(str)
    if "validation" not in frames:
        frames["train"], frames["validation"] = carve_validation(frames["train"], hub.validation_fraction, seed)
    return frames


def carve_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): `fraction` of the rows held out, class proportions kept where every class can split."""
    from sklearn.model_selection import train_test_split  # import cost: scikit-learn, only for stages that sample

    counts = train["label"].value_counts()
    stratify = train["label"] if counts.min() >= 2 else None
    kept, held = train_test_split(train, test_size=fraction, stratify=stratify, random_state=seed)
    return kept.reset_index(drop=True), held.reset_index(drop=True)


def read_hub_tagged_splits(task: str, hub: HubSource, seed: int) -> dict[str, pd.DataFrame]:
    """A token-classification task's splits from the Hub: words and their tag names (a Sequence(ClassLabel)
    feature's indices turned into names); a missing validation split is carved from train, seeded."""
    import datasets

    dataset = datasets.load_dataset(hub.id, hub.config)
    frames = {}
    for split, hub_split in hub.splits.items():
        part = dataset[hub_split]
        names = getattr(part.features[hub.label_column], "feature", None)
        tags = [[names.int2str(int(i)) if names else str(i) for i in row] for row in part[hub.label_column]]
        frames[split] = pd.DataFrame({"tokens": [list(t) for t in part[hub.text_column]], "tags": tags})
    if "validation" not in frames:
        held = frames["train"].sample(frac=hub.validation_fraction, random_state=seed)
        frames["train"], frames["validation"] = frames["train"].drop(held.index), held
    return {s: f.reset_index(drop=True) for s, f in frames.items()}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image_split(task: str, folder: Path) -> pd.DataFrame:
    """One split in the torchvision ImageFolder layout, `<split>/<class>/<file>.png|jpg`: each image's file bytes
    and its class (the folder's name), in sorted order."""
    if not folder.is_dir():
        raise DataError(f"task {task!r}: no folder {folder}; an image task needs <task>/<split>/<class>/*.png|jpg")
    rows = [
        {"image": path.read_bytes(), "label": path.parent.name}
        for path in sorted(folder.glob("*/*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not rows:
        raise DataError(f"task {task!r}: {folder} holds no <class>/*.png|jpg images")
    return pd.DataFrame(rows, columns=["image", "label"])


def read_hub_image_splits(task: str, hub: HubSource, seed: int) -> dict[str, pd.DataFrame]:
    """An image task's splits from the Hub (`image`/`label` columns): each image as PNG bytes, labels as names; a
    missing validation split is carved from train (stratified, seeded)."""
    import io

    import datasets

    dataset = datasets.load_dataset(hub.id, hub.config)
    frames = {}
    for split, hub_split in hub.splits.items():
        part = dataset[hub_split]
        names = part.features[hub.label_column]
        images = []
        for picture in part[hub.text_column]:
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="PNG")
            images.append(buffer.getvalue())
        labels = [names.int2str(int(i)) if hasattr(names, "int2str") else str(i) for i in part[hub.label_column]]
        frames[split] = pd.DataFrame({"image": images, "label": labels})
    if "validation" not in frames:
        frames["train"], frames["validation"] = carve_validation(frames["train"], hub.validation_fraction, seed)
    return frames


LOCAL_SPLITS = {"sequence_classification": ".csv", "token_classification": ".jsonl", "image_classification": ""}
"""Per task type, the suffix of a split's file in the task's local folder (an image task's split is a folder)."""
LOCAL_READERS = {
    "sequence_classification": read_local_split,
    "token_classification": lambda task, path: read_tagged_split(path),
    "image_classification": read_image_split,
}
"""Per task type, how one split's file (or folder) is read."""
HUB_READERS = {
    "sequence_classification": read_hub_splits,
    "token_classification": read_hub_tagged_splits,
    "image_classification": read_hub_image_splits,
}
LOCAL_LAYOUT = {
    "sequence_classification": "train/validation/test CSVs (text, label)",
    "token_classification": "train/validation/test JSON Lines (tokens, tags)",
    "image_classification": "train/validation/test/<class>/ image folders",
}


def read_raw_splits(
    task: str, data: TaskData, local_dir: Path | None, seed: int, kind: str = "sequence_classification"
) -> tuple[dict[str, pd.DataFrame], str]:
    """The task's train/validation/test frames and a description of where they came from: `text`/`label`
    columns, `tokens`/`tags` (lists, one tag per word) for a token-classification task, `image` (file bytes)/`label`
    for an image task (`kind`: the task's type)."""
    folder = local_dir / task if local_dir else None
    if folder is not None and folder.is_dir():
        files = {s: folder / f"{s}{LOCAL_SPLITS[kind]}" for s in paths.SPLITS}
        missing = [p.name for p in files.values() if not p.exists()]
        if missing:
            raise DataError(
                f"task {task!r}: {folder} has no {', '.join(missing)}; a local task needs"
                f" {LOCAL_LAYOUT[kind]} there: add the missing split(s)"
            )
        return {s: LOCAL_READERS[kind](task, p) for s, p in files.items()}, str(folder.resolve())
    looked = str(folder.resolve()) if folder else "(no local folder configured)"
    if data.hub is None:
        raise DataError(
            f"task {task!r}: no local data at {looked} and no Hub dataset (tasks.{task}.data.hub) to fall back on:"
            f" put {LOCAL_LAYOUT[kind]} in {looked}, set ${DATA_DIR_ENV} / data.local_dir, or set tasks.{task}.data.hub.id"
        )
    try:
        return HUB_READERS[kind](task, data.hub, seed), f"hub:{data.hub.id}/{data.hub.config or ''}"
    except Exception as error:  # any failure to reach or read the Hub ends the same way
        raise DataError(
            f"task {task!r}: no local data at {looked} and the Hub dataset {data.hub.id!r}"
            f" (config {data.hub.config!r}) could not be loaded: {type(error).__name__}: {error}."
            f" Put {LOCAL_LAYOUT[kind]} in {looked} or set ${DATA_DIR_ENV} / data.local_dir."
        ) from None


def stratified_subsample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most `limit` rows keeping class proportions; plain random when a class is too small to split, or when
    rows have no one label (tagged sentences)."""
    if limit is None or len(frame) <= limit:
        return frame
    from sklearn.model_selection import train_test_split  # import cost: scikit-learn, only for stages that sample

    counts = frame["label"].value_counts() if "label" in frame.columns else pd.Series([1])
    stratify = frame["label"] if counts.min() >= 2 and counts.size <= limit else None
    kept, _ = train_test_split(frame, train_size=limit, stratify=stratify, random_state=seed)
    return kept.sort_index().reset_index(drop=True)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes: what manifests and MLflow dataset inputs record of the data and models used."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepared_file(task: str, name: str) -> Path:
    """A file the prepare stage writes, or an error naming the stage to run when the task is not prepared yet."""
    path = paths.prepared_dir(task) / name
    if not path.exists():
        raise DataError(
            f"{path} does not exist: task {task!r} is not prepared; run `dvc repro {paths.dvc_target(f'prepare@{task}')}` first"
        )
    return path


def load_split(task: str, split: str) -> pd.DataFrame:
    """A prepared split, as the prepare stage wrote it."""
    return pd.read_parquet(prepared_file(task, f"{split}.parquet"))


def load_labels(task: str) -> list[str]:
    """The task's label names; a label's index in this list is its `label_id` and its head's output row."""
    return read_json(prepared_file(task, "labels.json"))["labels"]


@dataclass(frozen=True)
class PreparedSplit:
    """One prepared split as a stage's data input: what MLflow records of it (name, digest, rows, columns, role)."""

    task: str
    split: str
    path: Path
    digest: str
    rows: int
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.split}"

    @property
    def context(self) -> str:
        return self.split


def prepared_splits(task: str, splits: tuple[str, ...] = paths.SPLITS) -> list[PreparedSplit]:
    """The task's prepared splits with their SHA-256 and shape (read from the parquet footer, not the rows)."""
    found = []
    for split in splits:
        path = prepared_file(task, f"{split}.parquet")
        schema = pq.read_schema(path)
        columns = {name: str(schema.field(name).type) for name in schema.names}
        found.append(PreparedSplit(task, split, path, file_digest(path), pq.read_metadata(path).num_rows, columns))
    return found
