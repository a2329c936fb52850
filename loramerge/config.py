"""params.yaml -> one validated, typed config (`Params`, the sections of `settings` plus the lists of `lists`, checked
across sections). Every stage starts here (`load_params`).

Nothing below this module reads params.yaml or invents a default: the values a run used are the ones written in
params.yaml, or the defaults declared once in `settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from loramerge.lists import (
    ALL,
    COMBO_SEPARATOR,
    GENERATED,
    REPEAT_SUFFIX,
    SECTIONS,
    exported_entries,
    replica_entries,
    split_combination,
)
from loramerge.settings import (
    SAFE_NAME,
    TARGET_PRESETS,
    BackboneConfig,
    BaselinesConfig,
    Combination,
    CombosConfig,
    DataConfig,
    EvaluateConfig,
    ExportConfig,
    Exported,
    LoraSettings,
    MergeConfig,
    Replica,
    ReportConfig,
    SimilarityConfig,
    Strict,
    SweepConfig,
    TaskConfig,
    TrackingConfig,
    TrainConfig,
)


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key and how to fix it."""


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


def adapters_of(tasks: dict[str, TaskConfig]) -> dict[str, str]:
    """The tasks that bring their own adapter, and where it is."""
    return {name: task.adapter for name, task in tasks.items() if task.adapter}


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
