"""Typed records of the JSON files one stage writes and later stages read.

Each file's keys are spelled once, here, as the fields of a pydantic model: the writing stage builds
the model and every reader (later stages, the report, the model card) uses its attributes, so a key
cannot be renamed in one place and still read under its old name in another. The JSON written is
exactly what `dvc metrics`, `dvc plots` and the tests read: a field's name is its key, nothing is
renamed, and dict-of-dict parts keyed by task, split or method stay plain dicts.

A file in another layout (from an older loramerge, or edited by hand) fails when it is read, with an
error naming the file and the stage that rewrites it, instead of a KeyError deep inside a later stage.
A missing file raises FileNotFoundError as plain reading always did: the stages check their inputs
first and name the stage to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import pandas as pd
from pydantic import ValidationError

from loramerge import paths
from loramerge.atomic import read_json, write_json
from loramerge.config import describe
from loramerge.settings import Strict

R = TypeVar("R", bound="Record")


DATA_FREE = "none"
"""A merge manifest's `data` for a method that reads nothing but the members' updates."""


SIMILARITY_MEASURES: dict[str, str] = {
    "data_cosine": "cosine of mean sentence embeddings",
    "data_mmd": "MMD² with a linear kernel (squared embedding units)",
    "label_jaccard": "label-name overlap (Jaccard)",
    "vocab_jaccard": "vocabulary overlap (Jaccard)",
    "adapter_cosine": "cosine of the flattened ΔW",
    "adapter_alignment": "subspace alignment (mean cos² of principal angles)",
}
"""Every measure of metrics/similarity.json (stage `similarity`), in report order, with the words a figure's axis uses.

All but `data_mmd` grow with similarity; `data_mmd` is a distance."""


class RecordError(ValueError):
    """A stage's JSON file is not in the layout this code reads; the message names the file and the stage to rerun."""


class Record(Strict):
    """One JSON file handed from stage to stage: read validated, written atomically (see loramerge/atomic.py)."""

    STAGE: ClassVar[str] = ""
    """The stage group that writes metrics/<folder>/<task or combination>.json."""

    @classmethod
    def stage(cls, path: Path) -> str:
        """The stage that writes `path`, which an error about the file tells the user to rerun."""
        return f"{cls.STAGE}@{path.stem}"

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as error:
            problem = describe(error)
        except ValueError as error:  # not JSON (or not UTF-8) at all
            problem = f"not JSON: {error}"
        raise RecordError(
            f"{path} is not a {cls.__name__} in this loramerge's layout ({problem}); it is from an older version or damaged: rerun `dvc repro {paths.dvc_target(cls.stage(Path(path)))}`"
        )

    def write(self, path: Path) -> None:
        write_json(path, self.model_dump())  # python mode: NaN stays NaN, as json.dumps wrote it before


class Scores(Strict):
    """One model's scores on one split (loramerge/tasktypes.py). `score` is the task's headline number, what
    normalized scores and gain retention are computed from: accuracy for a sentence task, entity micro-F1 for a
    token task (whose `accuracy` is the share of words tagged right). Wherever the pipeline's records and
    tables say "accuracy" of a task in a merge (`normalized_accuracy`), it is this score."""

    score: float
    accuracy: float
    macro_f1: float
    weighted_f1: float
    weighted_precision: float | None = None
    """Sentence tasks only (scikit-learn, weighted by support)."""
    weighted_recall: float | None = None
    micro_f1: float | None = None
    """Token tasks only: entity micro-F1 (seqeval, strict IOB2), equal to `score`."""


class PreparedStats(Record):
    """data/prepared/<task>/stats.json: what prepare kept and dropped, per split."""

    task: str
    source: str
    rows_raw: dict[str, int]
    empty_texts_dropped: dict[str, int]
    duplicates_across_splits: dict[str, int]
    rows: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    majority_label: str
    majority_baseline_accuracy: dict[str, float]
    """Per split other than train: the accuracy of always predicting train's majority label."""

    @classmethod
    def stage(cls, path: Path) -> str:
        return f"prepare@{path.parent.name}"


class PrecisionRecord(Strict):
    """The number format a stage's forward passes ran in (`32` or `bf16`) and why (loramerge.precision)."""

    name: Literal["32", "bf16"]
    reason: str


class TrainMetrics(Record):
    """train_metrics.json of a trained model (in its folder, and copied to metrics/train/<mode>/<task>.json):
    the best checkpoint's validation scores, the run's cost and the model's parameter counts."""

    val_score: float
    val_accuracy: float
    val_macro_f1: float
    val_weighted_f1: float
    val_weighted_precision: float | None = None
    val_weighted_recall: float | None = None
    val_micro_f1: float | None = None
    global_steps: int
    best_step: int
    runtime_s: float
    steps_per_s: float
    train_samples_per_s: float
    train_loss: float
    peak_rss_mb: float
    peak_cuda_mb: float
    precision: PrecisionRecord  # of the training steps (validation during training too); final scores: float32
    trainable_params: int
    total_params: int
    trainable_percent: float

    @classmethod
    def stage(cls, path: Path) -> str:
        in_model_folder = path.name == paths.TRAIN_METRICS_FILE  # else metrics/train/<mode>/<task>.json
        task = path.parent.name if in_model_folder else path.stem
        mode = path.parent.parent.name if in_model_folder else path.parent.name
        # models/adapters/<task>/train_metrics.json is the lora mode's: its folder names no mode
        return paths.training_stage(task, mode if mode in paths.TRAINING_STAGES else "lora")


class SingleMetrics(Scores, Record):
    """metrics/single/<task>.json: the task's LoRA adapter on its test split, beside the majority class."""

    STAGE = "evaluate"

    majority_baseline_accuracy: float
    test_examples: int
    precision: PrecisionRecord


class BaselineScores(Scores):
    train: TrainMetrics


class BaselineMetrics(Record):
    """metrics/baselines/<task>.json: head-only and full fine-tuning on the task's test split."""

    STAGE = "evaluate_baselines"

    head_only: BaselineScores
    full: BaselineScores
    precision: PrecisionRecord


class MemberHashes(Strict):
    """Which adapter and head a merge used, by content."""

    adapter: str
    adapter_sha256: str
    head_sha256: str


class SearchRecord(Strict):
    """How the method's hyper-parameters were chosen, with every point tried and its score."""

    strategy: str
    space: dict[str, Any]
    metric: str
    points: list[dict[str, Any]]


class ValidationSummary(Strict):
    """The chosen merge on the members' validation splits, beside the single adapters on the same examples."""

    examples: dict[str, int]
    single_scores: dict[str, float]
    merged_scores: dict[str, float]
    """Per member task its score (accuracy; entity micro-F1 for a token task), single adapter and merge."""
    mean_normalized_accuracy: float
    precision: PrecisionRecord
    objective: Literal["tasks", "joint"] = "tasks"
    joint_normalized_accuracy: float | None = None
    """With `merge.objective: joint`: the merge's joint accuracy over the single adapters' (what the search chose by)."""

    @property
    def score(self) -> float:
        """What the search maximised, and what methods are chosen by (the export) and ranked by (the report)."""
        return self.mean_normalized_accuracy if self.objective == "tasks" else self.joint_normalized_accuracy


class MergeManifest(Record):
    """models/merged/<combo>/<method>/manifest.json: one method's merge of one combination."""

    combination: str
    method: str
    params: dict[str, Any]
    """The chosen hyper-parameters (the method's Config)."""
    format: Literal["peft_adapter", "dense_deltas"]
    base_model: str
    data: str
    """What the method read beyond the members' updates (DATA_FREE, or a data-aware method's split and statistic)."""
    members: dict[str, MemberHashes]
    search: SearchRecord
    validation: ValidationSummary

    @classmethod
    def stage(cls, path: Path) -> str:
        combo = path.parent.parent.name
        return paths.combination_stage("merge", combo)


class MergedTaskScores(Scores):
    """A merged model on one member's test split, normalized by that member's single adapter."""

    single_score: float
    normalized_accuracy: float


class JointScores(Strict):
    """KnOTS' joint setting (loramerge/joint.py): top-1 accuracy over the union of the members' labels, without the
    task, pooled over every member's test inputs and per member task; `classes`: the joint head's size."""

    accuracy: float
    tasks: dict[str, float]
    classes: int


class MethodResult(Strict):
    """One method's merged model on every member's test split; in the joint setting too (sentence and image tasks),
    normalized by the single adapters' joint accuracy (each input through every member's own adapter and head)."""

    tasks: dict[str, MergedTaskScores]
    mean_accuracy: float
    mean_normalized_accuracy: float
    params: dict[str, Any]
    joint: JointScores | None = None
    joint_normalized_accuracy: float | None = None


class InferenceCost(Strict):
    """Seconds to classify the members' test inputs for every member: one merged pass versus one per adapter."""

    examples: int
    tasks: int
    merged_s: float
    unmerged_s: float
    speedup: float


class MergedMetrics(Record):
    """metrics/merged/<combo>.json: every method's merged model of one combination on test, and the inference cost."""

    combination: str
    members: list[str]
    methods: dict[str, MethodResult]
    inference: InferenceCost
    precision: PrecisionRecord
    joint_single: JointScores | None = None
    """The unmerged single adapters in the joint setting: the reference each method's joint accuracy is divided by."""

    @classmethod
    def stage(cls, path: Path) -> str:
        return paths.combination_stage("evaluate", path.stem)


class PredictionTable:
    """A per-example table one evaluate stage writes as parquet and the report reads: the columns, spelled once.

    `example` is the row's position in the task's prepared test split, so tables of different stages pair up
    example by example (the paired bootstrap and McNemar's test compare models on the same examples).
    """

    def __init__(self, stage: Callable[[str], str], columns: tuple[str, ...]) -> None:
        self.stage, self.columns = stage, columns

    def write(self, path: Path, frame: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        frame[list(self.columns)].to_parquet(staging, index=False)
        staging.replace(path)

    def read(self, path: Path) -> pd.DataFrame:
        frame = pd.read_parquet(path)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise RecordError(
                f"{path} lacks columns {missing}: it is from an older version or damaged; rerun `dvc repro {paths.dvc_target(self.stage(path.stem))}`"
            )
        return frame


MERGED_PREDICTIONS = PredictionTable(
    lambda combo: paths.combination_stage("evaluate", combo), ("method", "task", "example", "points", "possible")
)
"""evaluate_pair / evaluate_triple / evaluate_many: one row per (method, member task, test example), with the example's points of
its possible points (loramerge/tasktypes.py: a split's score is Σ points / Σ possible)."""
BASELINE_PREDICTIONS = PredictionTable(
    lambda task: f"evaluate_baselines@{task}", ("mode", "example", "points", "possible")
)
"""evaluate_baselines: one row per (baseline mode, test example), points as above."""
