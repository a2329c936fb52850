"""The exported multi-task model in MLflow: a pyfunc, registered as `loramerge-<combo>`, alias `champion`.

`mlflow models serve -m "models:/loramerge-<combo>@champion"` then answers POST /invocations
with one label and one probability column per member task. The input is a `text` column, or for
a model of an image encoder an `image` column of base64-encoded image files (JSON carries no
bytes). A version is registered only when the exported weights changed (the export's content
hash is a version tag), so re-running the pipeline on the same models adds nothing. `champion` always points at the
version with the best validation score; ties go to the newest version.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from loramerge.multitask import MultiTaskModel

ARTIFACT_KEY = "model"
CHAMPION = "champion"
SCORE_TAG = "validation_score"
HASH_TAG = "content_sha256"


def registered_name(combo: str) -> str:
    return f"loramerge-{combo}"


def image_bytes(value: bytes | str, row: int) -> bytes:
    """An image file's bytes as they arrive: raw, or base64-encoded (how JSON requests carry them)."""
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error:
        raise ValueError(f"input row {row}: the image column holds no base64-encoded image file") from None


def example_input(model: MultiTaskModel) -> pd.DataFrame:
    """Two inputs of the model's kind, for the logged signature and input example: texts, or blank PNG images."""
    if model.input == "text":
        return pd.DataFrame({"text": ["an example sentence to classify", "another one"]})
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (127, 127, 127)).save(buffer, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode("ascii")] * 2})


class MultiTaskPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow's view of an export folder: a DataFrame with a `text` (or base64 `image`) column in, labels and
    probabilities out."""

    @classmethod
    def of(cls, model: MultiTaskModel) -> MultiTaskPyfunc:
        """The pyfunc around an already loaded model (what `load_context` makes from the logged folder)."""
        pyfunc = cls()
        pyfunc.model = model
        return pyfunc

    def load_context(self, context) -> None:
        self.model = MultiTaskModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ARG002 - MLflow's signature
        """The labels and probabilities of every member task (a DataFrame hint: MLflow infers no schema from it and
        keeps the logged signature)."""
        column = self.model.input
        if column not in model_input.columns:
            raise ValueError(f"input has no {column!r} column (columns: {list(model_input.columns)})")
        if column == "text":
            return self.model.predict_frame(model_input[column].astype(str).tolist())
        return self.model.predict_frame([image_bytes(v, row) for row, v in enumerate(model_input[column])])


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model, register_model) pointed at `uri` for the block only."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@contextmanager
def quiet_logging() -> Iterator[None]:
    """No notices from MLflow's pyfunc flavour while the model is logged: that its input example matches the
    signature (it was inferred from it), and that the pyfunc object is serialized with CloudPickle (a reference to
    `MultiTaskPyfunc` of the installed loramerge; the weights are the export folder's safetensors). Neither asks
    anything of the user; its errors still show."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def version_with_hash(client: MlflowClient, name: str, content_hash: str):
    """The registered version of `name` built from exactly these weights, if any."""
    versions = client.search_model_versions(f"name='{name}'")
    return next((v for v in versions if v.tags.get(HASH_TAG) == content_hash), None)


def crown_champion(client: MlflowClient, name: str) -> str:
    """Point `champion` at the version with the best validation score (ties: the newest); returns its number."""
    versions = client.search_model_versions(f"name='{name}'")
    scored = [v for v in versions if SCORE_TAG in v.tags]
    best = max(scored, key=lambda v: (float(v.tags[SCORE_TAG]), int(v.version)))
    client.set_registered_model_alias(name, CHAMPION, best.version)
    return str(best.version)


def register_export(folder: Path, uri: str, run_id: str) -> dict:
    """Log the export folder as a pyfunc in run `run_id` and register it, unless these weights are registered."""
    model = MultiTaskModel.load(folder)
    manifest = model.manifest
    name = registered_name(manifest["combination"])
    client = MlflowClient(tracking_uri=uri)
    existing = version_with_hash(client, name, manifest[HASH_TAG])
    registered = existing is None
    if registered:
        example = example_input(model)
        signature = mlflow.models.infer_signature(example, MultiTaskPyfunc.of(model).predict(None, example))
        tags = {
            "combination": manifest["combination"],
            "method": manifest["method"],
            "members": ",".join(manifest["members"]),
            SCORE_TAG: str(manifest["validation"]["mean_normalized_accuracy"]),
            "git_commit": manifest["git_commit"],
            HASH_TAG: manifest[HASH_TAG],
        }
        with fluent_uri(uri), mlflow.start_run(run_id=run_id), quiet_logging():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=MultiTaskPyfunc(),
                artifacts={ARTIFACT_KEY: str(folder)},
                signature=signature,
                input_example=example,
            )
            existing = mlflow.register_model(info.model_uri, name, tags=tags)
        client.update_registered_model(
            name, f"Multi-task {model.input} classifier for {', '.join(manifest['members'])} (loramerge export)"
        )
    return {
        "name": name,
        "version": str(existing.version),
        "new_version": registered,
        "champion": crown_champion(client, name),
    }
