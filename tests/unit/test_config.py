"""params.yaml is validated up front, and every error names the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loramerge.config import ConfigError, load_params
from loramerge.lists import all_combinations


def write(project, params_dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))


def test_a_valid_file_loads_with_typed_sections(params):
    assert params.lora.rank == 4
    assert params.combinations == ["moods+topics"] or params.combinations == ["topics+moods"]
    assert params.task_train("topics").learning_rate == 0.01


def test_per_task_training_overrides_replace_shared_values(project, params_dict):
    params_dict["tasks"]["topics"]["train"] = {"learning_rate": 0.5, "max_epochs": 7}
    write(project, params_dict)
    params = load_params(project / "params.yaml")
    assert params.task_train("topics").learning_rate == 0.5
    assert params.task_train("topics").max_epochs == 7
    assert params.task_train("moods").learning_rate == 0.01


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("lora", "rank", 0, "lora.rank"),
        ("lora", "rank", -3, "lora.rank"),
        ("lora", "targets", "everything", "lora.targets"),
        ("lora", "dropout", 1.5, "lora.dropout"),
        ("train", "learning_rate", 0, "train.learning_rate"),
        ("train", "unknown_knob", 1, "train.unknown_knob"),
        ("evaluate", "precision", "fp16", "evaluate.precision"),
        ("merge", "precision", 16, "merge.precision"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(project, params_dict, section, key, value, named):
    params_dict.setdefault(section, {})[key] = value
    write(project, params_dict)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_params(project / "params.yaml")


def test_precision_32_may_be_written_as_a_number_or_a_string(project, params_dict):
    params_dict["evaluate"] = {"precision": 32}
    params_dict["merge"]["precision"] = "bf16"
    write(project, params_dict)
    params = load_params(project / "params.yaml")
    assert (params.evaluate.precision, params.merge.precision) == ("32", "bf16")


def test_a_task_name_that_is_not_a_safe_path_component_is_refused(project, params_dict):
    params_dict["tasks"]["../escape"] = params_dict["tasks"]["topics"]
    write(project, params_dict)
    with pytest.raises(ConfigError, match="safe path component"):
        load_params(project / "params.yaml")


def test_duplicate_task_names_are_refused_not_silently_merged(project):
    (project / "params.yaml").write_text("tasks:\n  a: {data: {hub: {id: x}}}\n  a: {data: {hub: {id: y}}}\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        load_params(project / "params.yaml")


def test_a_combination_naming_an_unknown_task_is_refused(project, params_dict):
    params_dict["pairs"]["topics+nope"] = {"members": ["topics", "nope"], "tasks": ["topics", "nope"]}
    write(project, params_dict)
    with pytest.raises(ConfigError, match=r"pairs\.topics\+nope.*unknown task"):
        load_params(project / "params.yaml")


def test_a_missing_params_file_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_all_combinations_are_unordered_pairs_and_triples():
    combos = all_combinations(["a", "b", "c", "d"])
    assert combos[:6] == ["a+b", "a+c", "a+d", "b+c", "b+d", "c+d"]
    assert combos[6:] == ["a+b+c", "a+b+d", "a+c+d", "b+c+d"]


@pytest.mark.parametrize(
    "splits",
    [{"train": "train", "validation": "test", "test": "test"}, {"train": "test", "test": "test"}],
)
def test_a_hub_split_map_that_would_tune_on_test_data_is_refused(project, params_dict, splits):
    params_dict["tasks"]["topics"]["data"]["hub"]["splits"] = splits
    write(project, params_dict)
    with pytest.raises(ConfigError, match=r"tasks\.topics\.data\.hub\.splits.*is the test split"):
        load_params(project / "params.yaml")


CHOSEN_BY_THE_DEFAULT_RUN = {
    "lists written by `loramerge combos`": {"replicas", "pairs", "triples", "many", "exported.many"},
    "the baselines' own learning rates (the schema's None: the shared train settings)": {
        "baselines.head_only.learning_rate",
        "baselines.full.learning_rate",
        "baselines.full.head_learning_rate",
    },
    "five of the merge methods (the schema's: task arithmetic alone)": {"merge.methods"},
    "the emotion study's grid, reduced for a 2-core CPU (the schema's: the study's own)": {
        "sweep.task",
        "sweep.lora_ranks",
        "sweep.lora_learning_rates",
        "sweep.full_learning_rates",
        "sweep.full_weight_decays",
    },
    "the pairs the shared data's README calls alike": {"similarity.similar_pairs"},
}
"""params.yaml keys whose value is the default run's choice for its own tasks and machine, not a general default."""


def disagreements(model: type, raw: dict, prefix: str = "") -> set[str]:
    """The keys `raw` sets to a value other than the schema's default, section by section."""
    from pydantic import BaseModel

    found = set()
    for name, field in model.model_fields.items():
        if name not in raw or field.is_required():
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= disagreements(field.annotation, raw[name], f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        if default != raw[name]:
            found.add(prefix + name)
    return found


def test_params_yaml_repeats_the_schemas_defaults_except_what_the_default_run_chooses_for_itself():
    """One source of defaults: a params file that leaves a key out gets what the README calls the default."""
    from loramerge.config import Params

    raw = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text(encoding="utf-8"))
    assert disagreements(Params, raw) == set().union(*CHOSEN_BY_THE_DEFAULT_RUN.values())
