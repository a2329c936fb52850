"""The typed sections of params.yaml, one model each (data, tasks, backbone, lora, train, merge, ...), with their
defaults: the documented defaults, declared once (`tests/unit/test_config.py` keeps params.yaml equal to them). The
whole file, with its checks across sections, is `config.Params`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, field_validator, model_validator

from loramerge.lists import ALL

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TARGET_PRESETS = ("attention", "attention+linear")
"""LoRA target presets; loramerge/lora.py resolves them per architecture from the loaded model's layer names."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubSource(Strict):
    """Where a task lives on the Hugging Face Hub, used only when no local folder has it.

    `splits` maps our train/validation/test to the dataset's split names. A dataset without a
    validation split leaves `validation` out: it is then carved from the train split (stratified,
    `validation_fraction` of it, seeded by data.subsample_seed). Train and validation may never name
    the test split: tuning merges or early-stopping on test data would leak it into every number.
    """

    id: str
    config: str | None = None
    text_column: str | None = None
    """The input column; unset: `text` for sentence tasks, `tokens` (a list of words) for token tasks."""
    label_column: str | None = None
    """The label column; unset: `label` for sentence tasks, `ner_tags` (one tag per word) for token tasks."""
    splits: dict[str, str] = {"train": "train", "validation": "validation", "test": "test"}
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)

    @field_validator("splits")
    @classmethod
    def _no_leaks(cls, splits: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(splits) - {"train", "validation", "test"})
        if unknown or not {"train", "test"} <= set(splits):
            raise ValueError(
                f"splits needs `train` and `test` (and `validation` unless it is carved from train); got {sorted(splits)}"
            )
        leaks = [ours for ours in ("train", "validation") if splits.get(ours) == splits["test"]]
        if leaks:
            raise ValueError(
                f"{' and '.join(leaks)} would read the Hub's {splits['test']!r} split, which is the test split: "
                "tuning on test data leaks it into every reported number; leave `validation` out to carve it from train"
            )
        return splits


class TaskData(Strict):
    """How one task's data is found and cut down."""

    hub: HubSource | None = None
    """Where the task is on the Hugging Face Hub, read when the local folder has no such task; a task whose data is
    only in the local folder needs none."""
    max_train: int | None = Field(default=None, gt=0)
    max_validation: int | None = Field(default=None, gt=0)
    max_test: int | None = Field(default=None, gt=0)


class TrainOverrides(Strict):
    """Training settings that replace the shared `train` section's (per task, or per baseline)."""

    learning_rate: float | None = Field(default=None, gt=0)
    head_learning_rate: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    max_epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    seed: int | None = None


TaskType = Literal["sequence_classification", "token_classification", "image_classification"]
"""What a task predicts: one label per text (a pooled head), one BIO tag per word (a token head, NER), or one
label per image (a pooled head on a vision encoder such as ViT)."""
SCORE_NAMES: dict[str, str] = {
    "sequence_classification": "accuracy",
    "token_classification": "entity micro-F1",
    "image_classification": "accuracy",
}
"""Each task type's headline score: what normalized accuracy and gain retention are computed from (loramerge/tasktypes.py
computes it; the report names it without loading the model stack)."""

DEFAULT_COLUMNS: dict[str, tuple[str, str]] = {
    "sequence_classification": ("text", "label"),
    "token_classification": ("tokens", "ner_tags"),
    "image_classification": ("image", "label"),
}
"""The Hub columns each task type reads unless `hub.text_column` / `hub.label_column` say otherwise."""


class TaskConfig(Strict):
    type: TaskType = "sequence_classification"
    data: TaskData
    train: TrainOverrides = TrainOverrides()
    adapter: str | None = None
    """An existing PEFT LoRA adapter for this task, used instead of training one: a local folder (a path starting
    with /, ./ or ../, which DVC then tracks as a dependency) or a Hub id. Only a head is trained on it."""

    @model_validator(mode="after")
    def _columns_of_its_type(self) -> TaskConfig:
        text, label = DEFAULT_COLUMNS[self.type]
        hub = self.data.hub
        if hub is not None:
            hub.text_column, hub.label_column = hub.text_column or text, hub.label_column or label
        return self


class DataConfig(Strict):
    local_dir: str | None = "../shared/data"
    subsample_seed: int = 0


class BackboneConfig(Strict):
    """The shared pretrained encoder. `name` is recorded in every adapter's config."""

    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    max_length: int = Field(default=64, gt=0)
    pooling: Literal["mean", "cls"] = "mean"
    trust_remote_code: bool = False


class LoraSettings(Strict):
    rank: int = Field(default=8, gt=0)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    targets: str | list[str] = "attention+linear"
    """A preset (attention: the query and value projections; attention+linear: every linear layer of the
    transformer blocks), resolved per architecture, or a list of layer names or regexes that overrides it."""

    @field_validator("targets")
    @classmethod
    def _known_preset(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value not in TARGET_PRESETS:
            raise ValueError(
                f"unknown target preset {value!r}; choose one of {list(TARGET_PRESETS)} or list layer names / regexes"
            )
        if isinstance(value, list) and (not value or not all(value)):
            raise ValueError("an explicit target list needs at least one non-empty layer name or regex")
        return value


PrecisionSetting = Annotated[Literal["auto", "32", "bf16"], BeforeValidator(lambda v: "32" if v == 32 else v)]
"""Number format of forward passes (training: bf16 autocast of Lightning's `bf16-mixed`): `auto` is bf16 where the hardware has bf16 units, else float32 (loramerge.precision)."""


class TrainConfig(Strict):
    seed: int = 0
    learning_rate: float = Field(default=1e-3, gt=0)
    head_learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=32, gt=0)
    max_epochs: int = Field(default=3, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    val_check_interval: int = Field(default=50, gt=0)
    patience: int = Field(default=4, gt=0)
    head_dropout: float = Field(default=0.1, ge=0, lt=1)
    accelerator: str = "auto"  # Lightning's names (cpu, gpu, cuda, mps, auto); checked against the machine by `train`
    devices: int | Literal["auto"] = 1  # processes (GPUs) per machine; -1 = all
    strategy: str = "auto"  # Lightning's names (auto, ddp, ddp_spawn, fsdp, ...); checked by `train`
    num_nodes: int = Field(default=1, gt=0)  # Lightning's Trainer(num_nodes=…): machines in a multi-node DDP run
    num_threads: int | None = Field(default=None, gt=0)
    precision: PrecisionSetting = "auto"
    """Of the training steps: `bf16` runs forward and backward under bf16 autocast (Lightning `bf16-mixed`;
    weights, gradients and the optimizer stay float32); `auto` decides per machine (loramerge.precision)."""

    @field_validator("devices")
    @classmethod
    def _some_devices(cls, value: int | str) -> int | str:
        if isinstance(value, int) and (value == 0 or value < -1):
            raise ValueError("must be a positive number of processes, -1 (all) or 'auto'")
        return value

    def for_task(self, overrides: TrainOverrides) -> TrainConfig:
        """This config with a task's own overrides applied."""
        changed = {k: v for k, v in overrides.model_dump().items() if v is not None}
        return self.model_copy(update=changed)


TRAINING_MODES = ("lora", "head_only", "full")


class BaselinesConfig(Strict):
    """What a user would do instead of merging: train the head alone, or fine-tune everything.

    Their settings are the shared `train` section with these overrides (per-task overrides
    under `tasks.<task>.train` apply to the LoRA adapters only).
    """

    head_only: TrainOverrides = TrainOverrides(learning_rate=3e-3)
    full: TrainOverrides = TrainOverrides(learning_rate=5e-5, head_learning_rate=1e-3)


class SearchSpace(RootModel[dict[str, Any]]):
    """One method's hyper-parameters as params.yaml gives them: a scalar (or a mapping) is fixed, a list is searched.

    The values themselves are the method's to check (its `Config`, through `loramerge.search.check_methods`);
    this says which are fixed and which are searched, once, for every reader.
    """

    @field_validator("root")
    @classmethod
    def _no_empty_lists(cls, values: dict[str, Any]) -> dict[str, Any]:
        empty = [key for key, value in values.items() if isinstance(value, list) and not value]
        if empty:
            raise ValueError(f"hyper-parameter {empty[0]!r} has an empty list of values to search")
        return values

    @property
    def fixed(self) -> dict[str, Any]:
        return {key: value for key, value in self.root.items() if not isinstance(value, list)}

    @property
    def searched(self) -> dict[str, list]:
        return {key: list(value) for key, value in self.root.items() if isinstance(value, list)}

    @property
    def start(self) -> dict[str, Any]:
        """The first point: fixed values and each searched list's first value."""
        return {**self.fixed, **{key: values[0] for key, values in self.searched.items()}}


class MergeConfig(Strict):
    """Methods and their hyper-parameters: a scalar is fixed, a list is searched on validation."""

    methods: dict[str, SearchSpace] = Field(
        default={"task_arithmetic": SearchSpace({"scaling": [0.5, 1.0]})}, min_length=1
    )
    """Method name -> its hyper-parameters; `loramerge.search.check_methods` validates names and every value."""
    search: Literal["greedy", "grid"] = "greedy"
    objective: Literal["tasks", "joint"] = "tasks"
    """What the search maximises: `tasks`, the mean normalized validation accuracy, each member told its task; `joint`,
    KnOTS' joint setting (loramerge/joint.py: no task id, one head over every member's labels), normalized by the
    single adapters in the same setting (sentence and image tasks only)."""
    precision: PrecisionSetting = "auto"
    """Of the validation search's forward passes (scoring many candidate merges)."""
    search_max_examples: int | None = Field(default=100, gt=0)
    batch_size: int = Field(default=64, gt=0)


class SweepConfig(Strict):
    """The emotion study's grid, run as DVC experiments by `loramerge sweep` (reduced here for a CPU)."""

    task: str | None = None  # the task whose grid `loramerge sweep queue` runs; none: no sweep configured
    lora_ranks: list[int] = [2, 8, 32]
    lora_learning_rates: list[float] = [3e-4, 1e-3]
    lora_targets: list[str] = ["attention", "attention+linear"]
    full_learning_rates: list[float] = [2e-5, 3e-5, 5e-5]
    full_weight_decays: list[float] = [0.01, 0.001]
    family: Literal["lora", "full"] | None = None  # set on each queued experiment, read back by `collect`


class EvaluateConfig(Strict):
    batch_size: int = Field(default=64, gt=0)
    precision: PrecisionSetting = "auto"
    """Of the test evaluations (single adapters, baselines, merges) and the similarity stage's embeddings."""
    timing_examples: int = Field(default=128, gt=0)  # test inputs per member task timed for the inference cost


class SimilarityConfig(Strict):
    """Stage `similarity`: how many training texts per task the base encoder embeds (a cap, for speed),
    and the significance level the report's verdict on similarity vs merge retention uses."""

    max_texts: int = Field(default=300, gt=0)
    significance_level: float = Field(default=0.05, gt=0, lt=1)
    similar_pairs: list[tuple[str, str]] = []
    """Task pairs known to be alike (the data's README names them): the report contrasts how their merges keep
    accuracy with the other pairs'. Pairs whose tasks are not both configured are left out of the contrast."""

    @field_validator("similar_pairs")
    @classmethod
    def _distinct(cls, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for first, second in pairs:
            if first == second:
                raise ValueError(f"[{first}, {second}] pairs a task with itself; name two different tasks")
        return pairs


class ReportConfig(Strict):
    """Stage `report`: the paired bootstrap behind every interval and method comparison it shows
    (loramerge/report/uncertainty.py); the significance level is similarity.significance_level."""

    bootstrap_resamples: int = Field(default=2000, ge=1000)
    bootstrap_seed: int = 0


class CombosConfig(Strict):
    """Which merges `loramerge combos` lists: every combination of each size in `sizes` (`all`: every task at once),
    or a balanced sample of at most `max_pairs` pairs, `max_triples` triples and `max_many` of each larger size
    (the merge of all tasks is one and never capped)."""

    sizes: list[int | Literal["all"]] = [2, 3, ALL]
    max_pairs: int | None = Field(default=None, gt=0)
    max_triples: int | None = Field(default=None, gt=0)
    max_many: int | None = Field(default=None, gt=0)
    seed: int = 0

    @field_validator("sizes")
    @classmethod
    def _merges_of_two_or_more(cls, sizes: list[int | str]) -> list[int | str]:
        small = [s for s in sizes if s != ALL and s < 2]
        if small:
            raise ValueError(f"sizes {small} merge fewer than two adapters; use sizes of 2 or more, or `all`")
        return sizes

    def cap(self, size: int) -> int | None:
        return {2: self.max_pairs, 3: self.max_triples}.get(size, self.max_many)

    def chosen_sizes(self, tasks: int) -> list[int]:
        """The sizes to list for this many tasks, each once and in order (`all` is `tasks`; none above it)."""
        wanted = {tasks if s == ALL else s for s in self.sizes}
        return sorted(s for s in wanted if 2 <= s <= tasks)


class ExportConfig(Strict):
    """Stages `export_pair@`/`export_triple@`/`export_many@<combo>`: which combinations ship as a multi-task model
    (`all`: the merge of every configured task, the default; null: every first-seed combination; `loramerge combos`
    writes them into `exported:`, which dvc.yaml loops over), and how much the fp32/int8/bf16 comparison measures
    (test texts per member task, batch-1 calls, batch-64 repeats)."""

    combinations: list[str] | None = [ALL]
    compression_examples: int = Field(default=200, gt=0)
    latency_calls: int = Field(default=40, gt=1)
    throughput_repeats: int = Field(default=3, gt=0)
    registry: bool = True  # log each export as an MLflow pyfunc and register it as loramerge-<combo>


class Replica(Strict):
    """One task trained with one seed: what dvc.yaml's per-task stages loop over, and what combinations are made of."""

    task: str
    repeat: int = Field(ge=0)
    source: str = ""  # empty only in lists older than this field, which `loramerge combos` rewrites
    """What its adapter is made from, the train stage's dependency: the prepared data, or a task's own adapter folder."""


class Combination(Strict):
    """A pair or triple of replicas of one repeat, and their tasks (whose data the merge and evaluate stages read)."""

    members: list[str]
    tasks: list[str]


class Exported(Strict):
    """The combinations stage export ships, by kind, as `loramerge combos` writes them from `export.combinations`:
    dvc.yaml's export_pair and export_triple loop over these, so each export depends on its own members' files."""

    pairs: dict[str, Combination] = {}
    triples: dict[str, Combination] = {}
    many: dict[str, Combination] = {}


TRACKING_URI = re.compile(
    r"^(sqlite:///.+|(postgresql|mysql|mssql)(\+\w+)?://.+|https?://[^/\s]+.*|file:/.+|databricks(-uc)?(://.*)?)$"
)
"""The tracking URIs MLflow can open: a SQL store, a tracking server, a local folder or Databricks."""


class TrackingConfig(Strict):
    experiment: str = "loramerge"
    uri: str | None = None
    strict: bool = False

    @field_validator("uri")
    @classmethod
    def _mlflow_uri(cls, uri: str | None) -> str | None:
        if uri is not None and not TRACKING_URI.match(uri):
            raise ValueError(
                "not an MLflow tracking URI: use sqlite:///mlflow.db, http://HOST:PORT, postgresql://USER@HOST/DB"
                " or file:/FOLDER (or leave it unset for the project's mlflow.db)"
            )
        return uri
