"""params.yaml -> one validated, typed config. Every stage starts here.

Nothing below this module reads params.yaml or invents a default: the values a run
used are the ones written in params.yaml (or the defaults declared here, in one place).
"""

from __future__ import annotations

import re
from itertools import combinations as iter_combinations
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMBO_SEPARATOR = "+"
REPEAT_SUFFIX = re.compile(r"-repeat\d+$")

TARGET_PRESETS = ("attention", "attention+linear")
"""LoRA target presets; loramerge/lora.py resolves them per architecture from the loaded model's layer names."""


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key and how to fix it."""


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


ALL = "all"
"""In `combos.sizes` and `export.combinations`: the merge of every configured task at once, whatever they are."""


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


class Params(Strict):
    """The whole of params.yaml."""

    data: DataConfig = DataConfig()
    tasks: dict[str, TaskConfig]
    combos: CombosConfig = CombosConfig()
    repeats: int = Field(default=1, gt=0)
    """Training seeds per task: repeat k trains every adapter and baseline with seed `train.seed + k` and is merged
    and evaluated on its own (its replicas, `<task>-repeat<k>`, are listed by `loramerge combos`); the report gives
    mean ± sd over the repeats and intervals that include their spread. Top-level, not under `train`: the training
    stages depend on `train`, and adding a seed must not retrain the seeds already trained."""
    replicas: dict[str, Replica] = {}
    pairs: dict[str, Combination] = {}
    triples: dict[str, Combination] = {}
    many: dict[str, Combination] = {}
    """Merges of four tasks or more (the merge of every task among them): dvc.yaml's merge_many, evaluate_many and
    export_many loop over them."""
    exported: Exported = Exported()
    backbone: BackboneConfig = BackboneConfig()
    lora: LoraSettings = LoraSettings()
    train: TrainConfig = TrainConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    merge: MergeConfig = MergeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    sweep: SweepConfig = SweepConfig()
    similarity: SimilarityConfig = SimilarityConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("tasks")
    @classmethod
    def _safe_task_names(cls, tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        if not tasks:
            raise ValueError("at least one task is needed")
        for name in tasks:
            if not SAFE_NAME.match(name) or COMBO_SEPARATOR in name:
                raise ValueError(
                    f"task name {name!r} is not a safe path component: use letters, digits, '_', '-', '.'"
                )
            if REPEAT_SUFFIX.search(name):
                raise ValueError(f"task name {name!r} ends like a replica's name (-repeat<k>); rename the task")
        return tasks

    @model_validator(mode="after")
    def _sweep_names_known_choices(self) -> Params:
        """The sweep's grid must be runnable; which task it runs on is checked by `loramerge sweep`, its only reader,
        so a user who replaces the tasks is not stopped by a sweep they never asked for."""
        taggers = [t for t, task in self.tasks.items() if task.type == "token_classification"]
        if self.merge.objective == "joint" and taggers:
            raise ValueError(
                f"merge.objective joint scores one label per input, but {taggers} tag words: use merge.objective tasks"
            )
        unknown = [t for t in self.sweep.lora_targets if t not in TARGET_PRESETS]
        if unknown:
            raise ValueError(
                f"sweep.lora_targets {unknown} are not target presets; choose from {sorted(TARGET_PRESETS)}"
            )
        return self

    @model_validator(mode="after")
    def _generated_lists_current(self, info: ValidationInfo) -> Params:
        """`replicas`, `pairs`, `triples` and `exported` are written by `loramerge combos`; they must match the task
        list, repeats and export.combinations, or dvc.yaml would loop over stale names (unchecked while `loramerge
        combos` rewrites them)."""
        if info.context and info.context.get("rewriting_lists"):
            return self
        expected = replica_entries(list(self.tasks), self.repeats, adapters_of(self.tasks))
        if {k: v.model_dump() for k, v in self.replicas.items()} != expected:
            raise ValueError(
                f"replicas lists {sorted(self.replicas)} but tasks and repeats={self.repeats} make "
                f"{sorted(expected)}: regenerate the lists with `loramerge combos`"
            )
        for section, fixed in (("pairs", 2), ("triples", 3), ("many", None)):
            for combo, entry in getattr(self, section).items():
                size = fixed or max(len(entry.members), 4)
                unknown = [m for m in entry.members if m not in self.replicas]
                if unknown:
                    raise ValueError(
                        f"{section}.{combo} names unknown task(s) {unknown}; configured tasks: {sorted(self.tasks)}"
                        " (regenerate the lists with `loramerge combos`)"
                    )
                repeats = {self.replicas[m].repeat for m in entry.members}
                tasks = [self.replicas[m].task for m in entry.members]
                if len(set(entry.members)) != size or combo != COMBO_SEPARATOR.join(entry.members):
                    raise ValueError(
                        f"{section}.{combo} must be {size} different tasks named '{COMBO_SEPARATOR.join(entry.members)}'"
                    )
                if len(repeats) != 1 or entry.tasks != tasks:
                    raise ValueError(
                        f"{section}.{combo} must combine replicas of one repeat and list their tasks {tasks}; "
                        "regenerate the lists with `loramerge combos`"
                    )
        first = self.first_seed_combinations()
        unknown = [c for c in self.shipped() if c not in first]
        if unknown and ALL in (self.export.combinations or []) and self.every_task() in unknown:
            raise ValueError(
                f"export.combinations ships `all`, the merge of {sorted(self.tasks)}, but combos.sizes {self.combos.sizes}"
                " does not list it: add `all` to combos.sizes (then `loramerge combos`) or name what to export"
            )
        if unknown:
            raise ValueError(
                f"export.combinations names {unknown}, which are not among the first seed's merges; list only those"
                " (or `all`)"
            )
        expected = exported_entries(self.shipped())
        if self.exported.model_dump() != expected:
            listed = [c for kind in SECTIONS.values() for c in getattr(self.exported, kind)]
            raise ValueError(
                f"exported lists {listed} but export.combinations makes {[c for k in expected.values() for c in k]}: "
                "regenerate the lists with `loramerge combos`"
            )
        return self

    def first_seed_combinations(self) -> list[str]:
        """The pairs and triples of the first training seed: the ones export can ship."""
        return [c for c in self.combinations if not REPEAT_SUFFIX.search(split_combination(c)[0])]

    def shipped(self) -> list[str]:
        """What stage export ships: `export.combinations` (`all`: the first seed's merge of every task), or every
        first-seed combination when it is null."""
        if self.export.combinations is None:
            return self.first_seed_combinations()
        every = [self.every_task()] if len(self.tasks) > 1 else []  # one task: nothing to merge, nothing to ship
        return list(dict.fromkeys(s for c in self.export.combinations for s in (every if c == ALL else [c])))

    def every_task(self) -> str:
        """The name of the first seed's merge of every task: as listed (whatever order the lists were written in),
        else the tasks joined in params.yaml's order."""
        listed = [c for c in self.first_seed_combinations() if set(split_combination(c)) == set(self.tasks)]
        return listed[0] if listed else COMBO_SEPARATOR.join(self.tasks)

    @property
    def combinations(self) -> list[str]:
        """Every listed merge (pairs, triples, then larger ones), of every repeat."""
        return [*self.pairs, *self.triples, *self.many]

    def members(self, combo: str) -> list[str]:
        """The replicas of a listed pair or triple; an error for a combination params.yaml does not list."""
        if combo not in self.combinations:
            raise ConfigError(
                f"combination {combo!r} is not listed in params.yaml (pairs/triples); add its tasks and run `loramerge combos`"
            )
        return split_combination(combo)

    def replica(self, name: str) -> Replica:
        """A task (its first repeat) or a replica `<task>-repeat<k>`; an error naming the valid ones otherwise."""
        if name not in self.replicas:
            raise ConfigError(
                f"task {name!r} is not configured; tasks in params.yaml: {sorted(self.tasks)}"
                + (f" (replicas: {sorted(self.replicas)})" if self.repeats > 1 else "")
            )
        return self.replicas[name]

    def task_of(self, name: str) -> str:
        """The task whose data a replica is trained and scored on."""
        return self.replica(name).task

    def task_train(self, name: str, mode: str = "lora") -> TrainConfig:
        """The training settings of one replica in one mode (lora, head_only or full): repeat k adds k to the seed."""
        replica = self.replica(name)
        if mode == "lora":
            config = self.train.for_task(self.tasks[replica.task].train)
        else:
            config = self.train.for_task(getattr(self.baselines, mode))
        return config.model_copy(update={"seed": config.seed + replica.repeat})

    def repeat_view(self, repeat: int) -> Params:
        """These params as one repeat sees them: its replicas as `tasks` (same configs) and only its pairs and
        triples, so code written for one seed (the report's tables and bootstrap) reads any repeat's files."""
        names = {name: r.task for name, r in self.replicas.items() if r.repeat == repeat}
        keep = lambda section: {c: e for c, e in section.items() if e.members[0] in names}  # noqa: E731
        return self.model_copy(
            update={
                "tasks": {name: self.tasks[task] for name, task in names.items()},
                "pairs": keep(self.pairs),
                "triples": keep(self.triples),
                "many": keep(self.many),
            }
        )


def replica_name(task: str, repeat: int) -> str:
    """A task's first repeat keeps the task's name (one seed is the plain pipeline); repeat k is `<task>-repeat<k>`."""
    return task if repeat == 0 else f"{task}-repeat{repeat}"


def is_local_path(adapter: str) -> bool:
    """A local folder is written as a path (/, ./, ../ or ~); anything else is a Hub id."""
    return adapter.startswith(("/", "./", "../", "~"))


def adapters_of(tasks: dict[str, TaskConfig]) -> dict[str, str]:
    """The tasks that bring their own adapter, and where it is."""
    return {name: task.adapter for name, task in tasks.items() if task.adapter}


def adapter_source(task: str, adapter: str | None) -> str:
    """The train stage's dependency for a task's adapter: its own folder, else the data it is trained (or, for a Hub
    adapter, its head is trained) from."""
    return adapter if adapter and is_local_path(adapter) else f"data/prepared/{task}"


def replica_entries(
    tasks: list[str], repeats: int, adapters: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """`replicas:` as `loramerge combos` writes it: every task of every repeat, repeat by repeat."""
    adapters = adapters or {}
    return {
        replica_name(t, k): {"task": t, "repeat": k, "source": adapter_source(t, adapters.get(t))}
        for k in range(repeats)
        for t in tasks
    }


def combination_entries(chosen: list[str], repeats: int) -> dict[str, dict[str, list[str]]]:
    """`pairs:`/`triples:` as `loramerge combos` writes them: each chosen task combination once per repeat."""
    entries = {}
    for k in range(repeats):
        for combo in chosen:
            tasks = split_combination(combo)
            members = [replica_name(t, k) for t in tasks]
            entries[COMBO_SEPARATOR.join(members)] = {"members": members, "tasks": tasks}
    return entries


def exported_entries(shipped: list[str]) -> dict[str, dict]:
    """`exported:` as `loramerge combos` writes it: the shipped combinations (of the first seed), by kind."""
    return {
        section: combination_entries([c for c in shipped if combination_kind(c) == kind], 1)
        for kind, section in SECTIONS.items()
    }


def generated_lists(
    tasks: list[str],
    repeats: int,
    pairs: list[str],
    triples: list[str],
    adapters: dict[str, str] | None = None,
    shipped: list[str] | None = (ALL,),
    many: list[str] = (),
) -> dict[str, dict]:
    """The sections `loramerge combos` owns, for these tasks (those in `adapters` bring their own), repeats,
    chosen task pairs, triples and larger merges, and the combinations export ships (`all`: the merge of every task
    when chosen, the default; None: all of them, as `export.combinations: null` says)."""
    chosen = [*pairs, *triples, *many]
    every = [c for c in chosen if set(split_combination(c)) == set(tasks)]
    return {
        "replicas": replica_entries(tasks, repeats, adapters),
        "pairs": combination_entries(pairs, repeats),
        "triples": combination_entries(triples, repeats),
        "many": combination_entries(list(many), repeats),
        "exported": exported_entries(
            chosen if shipped is None else [s for c in shipped for s in (every if c == ALL else [c])]
        ),
    }


GENERATED = ("replicas", "pairs", "triples", "many", "exported")
"""The sections of params.yaml that `loramerge combos` writes."""


def split_combination(combo: str) -> list[str]:
    return combo.split(COMBO_SEPARATOR)


SECTIONS = {"pair": "pairs", "triple": "triples", "many": "many"}
"""Each kind of combination and the params.yaml list of it: dvc.yaml's stage groups are named by kind (merge_pair,
evaluate_triple, export_many, ...). Pairs and triples depend on each member's files; a merge of four tasks or more
depends on the whole task folders, since DVC's templating cannot list a variable number of members."""


def combination_kind(combo: str) -> str:
    """Pair, triple, or many (four tasks or more), as the dvc.yaml stage groups name it and the report splits."""
    return {2: "pair", 3: "triple"}.get(len(split_combination(combo)), "many")


def all_combinations(tasks: list[str], sizes: tuple[int, ...] = (2, 3)) -> list[str]:
    """Every unordered pair and triple, in the task list's order, as 'a+b' names."""
    return [COMBO_SEPARATOR.join(c) for size in sizes for c in iter_combinations(tasks, size)]


def _unique_key_loader() -> type[yaml.SafeLoader]:
    """A YAML loader that rejects duplicate keys (two tasks with one name) instead of keeping the last."""

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ConfigError(f"duplicate key(s) {duplicates} at line {node.start_mark.line + 1}; keep one of each")
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return UniqueKeyLoader


def read_params_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root or pass --params")
    try:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(
            f"{path} is not valid YAML at {where}: {error.problem or error.context}; fix the syntax there"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}); re-save it as UTF-8") from None
    except ConfigError as error:  # the loader's own: a duplicate key, which it cannot name the file of
        raise ConfigError(f"{path}: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return raw


def describe(error: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as one line: each key path, what is wrong, and the value given (no URLs)."""
    problems = []
    for e in error.errors(include_url=False):
        key = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        message = e["msg"].removeprefix("Value error, ")
        given = "" if isinstance(e["input"], dict) or e["type"] == "missing" else f" (got {e['input']!r})"
        problems.append(f"{key}: {message}{given}" if key else message)  # a whole-file check names its keys itself
    return "; ".join(problems)


def load_params(path: str | Path = "params.yaml", combinations: bool = True) -> Params:
    """Read and validate params.yaml; errors name the offending key.

    `combinations=False` ignores the lists `loramerge combos` writes (`replicas:`, `pairs:`, `triples:`, `exported:`),
    for `loramerge combos`, whose job is to rewrite lists that may name tasks no longer configured."""
    path = Path(path)
    raw = read_params_file(path)
    if not combinations:
        raw = {k: v for k, v in raw.items() if k not in GENERATED}
    try:
        return Params.model_validate(raw, context={"rewriting_lists": not combinations})
    except ValidationError as error:
        raise ConfigError(f"invalid {path}: {describe(error)}") from None
