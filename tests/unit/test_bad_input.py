"""Bad and untrusted input stops a stage with a clear error before any compute, and overwrites nothing.

Covered elsewhere and not repeated here: malformed, empty, non-UTF-8 CSVs, missing columns and a
label only in test (test_prepare.py); duplicate and unsafe task names, combinations naming unknown
tasks, unknown target presets, rank <= 0 (test_config.py); unknown merge methods and adapters whose
label maps disagree with the prepared data (test_stages.py); method hyper-parameters outside their
ranges (test_merging_methods.py); a missing backbone folder (test_backbone.py).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from loramerge import training
from loramerge.backbone import load_encoder
from loramerge.cli import main
from loramerge.config import load_params
from loramerge.lists import all_combinations
from loramerge.lora import AdapterError, load_updates
from loramerge.settings import BackboneConfig
from loramerge.stages import merge as merge_stage
from loramerge.stages.merge import merge_combination
from loramerge.stages.prepare import prepare_task
from loramerge.stages.train import train_task
from loramerge.training import CheckpointError
from tests.helpers import imported, opened_project, tiny_params_dict

MARKER_ENV = "LORAMERGE_TEST_MARKER"


class Payload:
    """Pickled, it runs code on load: it writes the marker file. Safe loaders never call it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under the project's output folders, to show that a refused stage changed nothing."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for name in ("data", "models", "metrics", "reports")
        for p in sorted((folder / name).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def adapters_folder(tmp_path_factory, tiny_backbone, tiny_data) -> Path:
    """The folder of a project with both tasks prepared and their LoRA adapters trained (the working directory)."""
    folder = tmp_path_factory.mktemp("bad-input")
    with opened_project(folder, tiny_params_dict(tiny_backbone, tiny_data)) as params:
        for task in params.tasks:
            prepare_task(params, task)
            train_task(params, task)
        yield folder


@pytest.fixture
def no_compute(monkeypatch):
    """Loading the encoder is where a merge's compute starts: refuse it, so a test proves the check came first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder was loaded: the check came after compute started")

    monkeypatch.setattr(merge_stage, "load_encoder", refuse)


def write_params(folder: Path, name: str, change) -> Path:
    raw = yaml.safe_load((folder / "params.yaml").read_text())
    change(raw)
    (folder / name).write_text(yaml.safe_dump(raw))
    return folder / name


# ---------------------------------------------------------------- params.yaml, at the start of every stage


STAGE_COMMANDS = [
    ["prepare", "--task", "topics"],
    ["train", "--task", "topics"],
    ["train", "--task", "topics", "--mode", "full"],
    ["merge", "--combo", "topics+moods"],
    ["evaluate", "--task", "topics"],
    ["evaluate", "--task", "topics", "--baselines"],
    ["evaluate", "--combo", "topics+moods"],
    ["similarity"],
    ["report"],
    ["combos"],
    ["sweep", "collect"],
]


@pytest.mark.parametrize("command", STAGE_COMMANDS, ids=lambda c: " ".join(c))
def test_every_stage_validates_params_first_and_names_the_offending_key(project, params_dict, command, capsys):
    params_dict["merge"]["batch_size"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))
    before = sorted(p.name for p in project.iterdir())
    assert main(command) == 2
    assert "merge.batch_size" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == before


# ---------------------------------------------------------------- merge inputs


@pytest.mark.parametrize(
    ("method", "spec", "named"),
    [
        ("ties", {"scaling": 1.0, "density": [0.5, 1.5]}, "density"),
        ("dare_ties", {"scaling": 1.0, "density": 1.0, "drop_prob": [0.1, -0.1]}, "drop_prob"),
        ("dare_ties", {"scaling": 1.0, "density": 1.0, "drop_prob": 1.2}, "drop_prob"),
        ("svd", {"base": "task_arithmetic", "rank": 0}, "rank"),
    ],
)
def test_a_merge_hyper_parameter_out_of_range_is_refused_before_any_model_is_loaded(
    adapters_folder, no_compute, method, spec, named
):
    params = load_params(
        write_params(adapters_folder, "bad-merge.yaml", lambda raw: raw["merge"].update(methods={method: spec}))
    )
    before = snapshot(adapters_folder)
    with pytest.raises(ValueError, match=rf"(?s)merge\.methods\.{method}.*{named}"):
        merge_combination(params, "topics+moods")
    assert snapshot(adapters_folder) == before


def test_adapters_trained_on_different_base_models_are_not_merged(adapters_folder, no_compute):
    config = adapters_folder / "models/adapters/moods/adapter_config.json"
    original = config.read_text()
    config.write_text(json.dumps({**json.loads(original), "base_model_name_or_path": "FacebookAI/roberta-base"}))
    before = snapshot(adapters_folder)
    try:
        with pytest.raises(AdapterError, match=r"'moods': 'FacebookAI/roberta-base'.*another base model"):
            merge_combination(load_params(adapters_folder / "params.yaml"), "topics+moods")
        assert snapshot(adapters_folder) == before
    finally:
        config.write_text(original)


def test_a_combination_not_listed_in_params_is_refused(adapters_folder, capsys):
    assert main(["merge", "--combo", "topics+nope"]) == 2
    assert "'topics+nope' is not listed" in capsys.readouterr().err


# ---------------------------------------------------------------- the backbone


def test_a_base_model_path_that_does_not_exist_stops_training_and_keeps_the_trained_adapter(adapters_folder, capsys):
    bad = write_params(
        adapters_folder,
        "bad-backbone.yaml",
        lambda raw: raw["backbone"].update(name=str(adapters_folder / "no-such-model")),
    )
    before = snapshot(adapters_folder)
    assert main(["--params", str(bad), "train", "--task", "topics"]) == 2
    assert "backbone.name" in capsys.readouterr().err
    assert snapshot(adapters_folder) == before


def test_backbone_weights_load_only_from_safetensors_never_from_a_pickle(tiny_backbone, tmp_path):
    folder = tmp_path / "pickled-model"
    shutil.copytree(tiny_backbone, folder)
    state = load_encoder(BackboneConfig(name=str(folder))).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": Payload(tmp_path / "marker")}, folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_encoder(BackboneConfig(name=str(folder)))
    assert not (tmp_path / "marker").exists()


def remote_code_backbone(tiny_backbone: Path, folder: Path) -> Path:
    """The tiny BERT plus custom modelling code that announces itself (writes the marker) when imported."""
    shutil.copytree(tiny_backbone, folder)
    (folder / "custom_bert.py").write_text(
        "import os\nfrom pathlib import Path\nfrom transformers import BertModel\n"
        f"Path(os.environ['{MARKER_ENV}']).write_text('remote code ran')\n"
        "class CustomBert(BertModel):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "custom_bert.CustomBert"}}))
    return folder


def test_remote_code_in_a_backbone_folder_runs_only_when_params_say_so(tiny_backbone, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    folder = remote_code_backbone(tiny_backbone, tmp_path / "remote-code")
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    assert type(load_encoder(BackboneConfig(name=str(folder)))).__name__ == "BertModel"
    assert not marker.exists(), "trust_remote_code is off by default: the folder's code must not run"
    assert type(load_encoder(BackboneConfig(name=str(folder), trust_remote_code=True))).__name__ == "CustomBert"
    assert marker.exists()


# ---------------------------------------------------------------- adapters and checkpoints


def test_an_adapter_saved_as_a_pickle_is_refused_unread(tiny_backbone, adapters_folder, tmp_path):
    adapter = tmp_path / "pickled-adapter"
    shutil.copytree(adapters_folder / "models/adapters/topics", adapter)
    (adapter / "adapter_model.safetensors").unlink()
    torch.save({"payload": Payload(tmp_path / "marker")}, adapter / "adapter_model.bin")
    with pytest.raises(AdapterError, match="only from safetensors"):
        load_updates(load_encoder(BackboneConfig(name=str(tiny_backbone))), {"topics": adapter})
    assert not (tmp_path / "marker").exists()


@pytest.fixture
def poisoned_checkpoint(adapters_folder, tmp_path):
    """A last.ckpt beside the fingerprint of the current configuration, carrying pickled code."""
    folder = adapters_folder / "models/checkpoints/lora/topics"
    marker = tmp_path / "marker"
    torch.save({"epoch": 0, "global_step": 4, "state_dict": {}, "payload": Payload(marker)}, folder / "last.ckpt")
    yield marker
    (folder / "last.ckpt").unlink(missing_ok=True)


def test_a_resume_checkpoint_carrying_code_is_refused_before_training_naming_the_folder_to_delete(
    adapters_folder, poisoned_checkpoint
):
    before = snapshot(adapters_folder)
    with pytest.raises(CheckpointError, match=r"delete models/checkpoints/lora/topics to start over"):
        train_task(load_params(adapters_folder / "params.yaml"), "topics")
    assert not poisoned_checkpoint.exists()
    assert snapshot(adapters_folder) == before


def test_lightnings_own_resume_loads_plain_weights_only_even_if_torch_is_told_otherwise(
    adapters_folder, poisoned_checkpoint, monkeypatch
):
    """Past loramerge's own check, `trainer.fit(ckpt_path=…, weights_only=True)` refuses the file too,
    even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which flips torch.load's default, not an explicit flag)."""
    monkeypatch.setattr(training, "checkpoint_position", lambda path: (1, 4))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        train_task(load_params(adapters_folder / "params.yaml"), "topics")
    assert not poisoned_checkpoint.exists()


# ---------------------------------------------------------------- one line, exit 2, before compute: every bad input named


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"not one line: {err}"
    return err


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda raw: raw["merge"].update(methods={}), "merge.methods: Dictionary should have at least 1 item"),
        (
            lambda raw: raw["merge"].update(methods={"ties": {"scaling": []}}),
            "merge.methods.ties: hyper-parameter 'scaling' has an empty list",
        ),
        (lambda raw: raw["train"].update(devices=0), "train.devices"),
        (
            lambda raw: raw.update(sweep={"task": "topics", "lora_targets": ["everything"]}),
            "sweep.lora_targets ['everything']",
        ),
    ],
    ids=["no methods", "empty search list", "devices 0", "sweep targets"],
)
def test_bad_settings_anywhere_in_params_stop_the_first_stage_in_one_line(project, change, named, capsys):
    write_params(project, "params.yaml", change)
    assert main(["prepare", "--task", "topics"]) == 2
    assert named in one_line_error(capsys)
    assert not (project / "data").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda raw: raw["merge"].update(methods={"tie": {"scaling": 1.0}}),
            "merge.methods.tie: unknown merge method 'tie'",
        ),
        (
            lambda raw: raw["merge"].update(methods={"ties": {"density": 2}}),
            "merge.methods.ties.density: Input should be less than or equal to 1 (got 2)",
        ),
        (
            lambda raw: raw["merge"].update(methods={"ties": {"scaling": [1.0], "density": [0.5, 2]}}),
            "merge.methods.ties.density",
        ),
    ],
    ids=["unknown method", "density 2", "a searched density 2"],
)
def test_a_bad_merge_method_stops_the_first_stage_that_loads_a_model_in_one_line(project, change, named, capsys):
    """Checking the methods imports them all (torch, PEFT): the model-free prepare leaves it to train, which fails
    on it before it reads a byte of data, so the typo still costs seconds, not the training it would follow."""
    write_params(project, "params.yaml", change)
    assert main(["prepare", "--task", "topics"]) == 0
    capsys.readouterr()
    assert main(["train", "--task", "topics"]) == 2
    assert named in one_line_error(capsys)
    assert not (project / "models").exists()


def test_the_model_free_stages_import_no_model_stack(project):
    """prepare reads CSVs: dispatched by the command line, it pays for no torch, transformers or PEFT (seconds a
    stage); report, the other model-free stage, goes through the same `MODEL_FREE` path."""
    dispatch = "from loramerge.cli import main; main(['prepare', '--task', 'topics'])"
    assert imported(dispatch, ["torch", "transformers", "peft"], cwd=project) == []


def test_a_yaml_syntax_error_names_the_file_line_and_column(project, capsys):
    text = (project / "params.yaml").read_text().splitlines()
    text.insert(3, "broken: [unclosed")
    (project / "params.yaml").write_text("\n".join(text))
    assert main(["prepare", "--task", "topics"]) == 2
    assert "params.yaml is not valid YAML at line" in one_line_error(capsys)


def test_training_a_task_that_is_not_prepared_names_the_stage_to_run(project, capsys):
    assert main(["train", "--task", "topics"]) == 2
    assert "run `dvc repro pipelines/prepare/dvc.yaml:prepare@topics` first" in one_line_error(capsys)


def test_an_empty_label_in_a_csv_is_refused_with_its_count_and_file(project, params_dict, capsys):
    data = project / "data-with-empty-labels"
    shutil.copytree(params_dict["data"]["local_dir"], data)
    train = data / "topics" / "train.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], *(line.rsplit(",", 1)[0] + "," for line in lines[1:4]), *lines[4:]]) + "\n")
    write_params(project, "params.yaml", lambda raw: raw["data"].update(local_dir=str(data)))
    assert main(["prepare", "--task", "topics"]) == 2
    assert f"{train} has 3 row(s) with an empty label" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda raw: raw["backbone"].update(name="no-such-org/no-such-model"),
            "backbone.name 'no-such-org/no-such-model' cannot be loaded",
        ),
        (lambda raw: raw["backbone"].update(max_length=100000), "backbone.max_length 100000 exceeds"),
        (lambda raw: raw["train"].update(strategy="dpp"), "train.strategy: Lightning refuses 'dpp'"),
        pytest.param(
            lambda raw: raw["train"].update(accelerator="gpu"),
            "train.accelerator: Lightning refuses 'gpu'",
            marks=pytest.mark.skipif(
                torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU"
            ),
        ),
    ],
    ids=["unknown backbone", "max_length beyond the model", "unknown strategy", "gpu on a CPU machine"],
)
def test_a_backbone_or_hardware_setting_that_cannot_work_stops_training_in_one_line_and_keeps_the_adapter(
    adapters_folder, change, named, capsys
):
    bad = write_params(adapters_folder, "bad-train.yaml", change)
    before = snapshot(adapters_folder)
    assert main(["--params", str(bad), "train", "--task", "topics"]) == 2
    assert named in one_line_error(capsys)
    assert snapshot(adapters_folder) == before


def test_evaluating_an_unlisted_combination_is_refused_before_any_model_loads(adapters_folder, monkeypatch, capsys):
    from loramerge.stages import evaluate as evaluate_stage

    monkeypatch.setattr(evaluate_stage, "load_encoder", lambda *a, **k: pytest.fail("the encoder was loaded first"))
    assert main(["evaluate", "--combo", "moods+topics"]) == 2
    assert "'moods+topics' is not listed in params.yaml" in one_line_error(capsys)


def test_evaluating_a_combination_before_its_merge_names_the_merge_stage_to_run(adapters_folder, monkeypatch, capsys):
    from loramerge.stages import evaluate as evaluate_stage

    monkeypatch.setattr(evaluate_stage, "load_encoder", lambda *a, **k: pytest.fail("the encoder was loaded first"))
    assert main(["evaluate", "--combo", "topics+moods"]) == 2
    assert "run `dvc repro pipelines/merge_pair/dvc.yaml:merge_pair@topics+moods`" in one_line_error(capsys)


def test_an_export_list_edited_without_rerunning_combos_stops_every_stage_until_combos_lists_its_stages(
    project, capsys
):
    assert list(load_params(project / "params.yaml").exported.pairs) == ["topics+moods"]
    write_params(project, "params.yaml", lambda raw: raw.update(export={"combinations": []}))  # ship none
    assert main(["prepare", "--task", "topics"]) == 2
    assert "regenerate the lists with `loramerge combos`" in one_line_error(capsys)
    assert main(["combos"]) == 0
    assert load_params(project / "params.yaml").exported.model_dump() == {"pairs": {}, "triples": {}, "many": {}}


@pytest.mark.parametrize(
    ("exported", "expected"),
    [(["topics+gone", "topics+moods+gone"], None), (["topics+gone"], "refused")],
    ids=["every combination exported", "a chosen few"],
)
def test_combos_rewrites_lists_that_name_tasks_no_longer_configured(project, capsys, exported, expected):
    stale = {
        "pairs": {"topics+gone": {"members": ["topics", "gone"], "tasks": ["topics", "gone"]}},
        "triples": {
            "topics+moods+gone": {"members": ["topics", "moods", "gone"], "tasks": ["topics", "moods", "gone"]}
        },
    }
    write_params(project, "params.yaml", lambda raw: raw.update(**stale, export={"combinations": exported}))
    assert main(["prepare", "--task", "topics"]) == 2
    assert "(regenerate the lists with `loramerge combos`)" in one_line_error(capsys)
    if expected is not None:  # a chosen export names a task no longer configured: refused, never emptied
        before = (project / "params.yaml").read_text()
        assert main(["combos"]) == 2
        assert "export.combinations names ['topics+gone'], but task(s) ['gone'] are not configured" in (
            one_line_error(capsys)
        )
        assert (project / "params.yaml").read_text() == before
        return
    assert main(["combos"]) == 0
    params = load_params(project / "params.yaml")
    assert list(params.pairs) == all_combinations(list(params.tasks), (2,)) and params.triples == {}
    assert params.export.combinations == params.combinations


# ---------------------------------------------------------------- third round: what a stage reads is checked against what it scores


@contextmanager
def changed(path: Path, change):
    """`path` rewritten by `change(bytes) -> bytes` for the block, restored after (the module's project is shared)."""
    original = path.read_bytes()
    path.write_bytes(change(original))
    try:
        yield path
    finally:
        path.write_bytes(original)


def test_evaluating_an_adapter_whose_labels_the_data_no_longer_has_keeps_the_good_metrics(adapters_folder, capsys):
    assert main(["evaluate", "--task", "topics"]) == 0
    good = snapshot(adapters_folder)
    renamed = lambda raw: raw.replace(b'"sport"', b'"zsport"')  # noqa: E731 - a label renamed in the data
    with changed(adapters_folder / "data/prepared/topics/labels.json", renamed):
        capsys.readouterr()
        assert main(["evaluate", "--task", "topics"]) == 2
        error = one_line_error(capsys)
        assert "models/adapters/topics predicts labels" in error and "zsport" in error
        assert "dvc repro pipelines/train/dvc.yaml:train@topics" in error
    assert snapshot(adapters_folder) == good


def truncated(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


@pytest.mark.parametrize("weights", ["adapter_model.safetensors", "head.safetensors"])
@pytest.mark.parametrize("command", [["merge", "--combo", "topics+moods"], ["evaluate", "--task", "topics"]])
def test_a_truncated_weights_file_is_named_in_one_line_before_compute(adapters_folder, capsys, weights, command):
    path = adapters_folder / "models/adapters/topics" / weights
    before = snapshot(adapters_folder)
    with changed(path, truncated):
        damaged = snapshot(adapters_folder)
        assert main(command) == 2
        error = one_line_error(capsys)
        assert f"models/adapters/topics/{weights} is damaged" in error and "dvc checkout" in error
        assert snapshot(adapters_folder) == damaged
    assert snapshot(adapters_folder) == before


def test_a_garbled_label_file_is_named_with_where_it_breaks(adapters_folder, capsys):
    with changed(adapters_folder / "models/adapters/topics/labels.json", lambda raw: b"{not json"):
        assert main(["evaluate", "--task", "topics"]) == 2
        assert "models/adapters/topics/labels.json is not valid JSON (Expecting" in one_line_error(capsys)


def test_an_output_folder_that_cannot_be_written_stops_evaluation_before_any_model_loads(
    adapters_folder, monkeypatch, capsys
):
    from loramerge.stages import evaluate as evaluate_stage

    monkeypatch.setattr(evaluate_stage, "load_encoder", lambda *a, **k: pytest.fail("the encoder was loaded first"))
    predictions = adapters_folder / "metrics/predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    shutil.move(predictions, adapters_folder / "kept-predictions")
    predictions.write_text("a file where the predictions folder goes")
    try:
        assert main(["evaluate", "--task", "topics"]) == 2
        assert "metrics/predictions is a file, not a folder" in one_line_error(capsys)
    finally:
        predictions.unlink()
        shutil.move(adapters_folder / "kept-predictions", predictions)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_metrics_folder_stops_evaluation_before_any_model_loads(adapters_folder, capsys):
    metrics = adapters_folder / "metrics/single"
    metrics.chmod(0o555)
    try:
        assert main(["evaluate", "--task", "topics"]) == 2
        assert "metrics/single is not writable" in one_line_error(capsys)
    finally:
        metrics.chmod(0o755)


def data_copy(project: Path, params_dict: dict, change) -> Path:
    """The tiny data copied into the project, `change(folder)` applied, params.yaml pointed at it."""
    data = project / "changed-data"
    shutil.copytree(params_dict["data"]["local_dir"], data)
    change(data)
    write_params(project, "params.yaml", lambda raw: raw["data"].update(local_dir=str(data)))
    return data


def keep_one_label(data: Path) -> None:
    for split in ("train", "validation", "test"):
        path = data / "topics" / f"{split}.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.endswith(",sport"))]) + "\n")


def test_a_task_with_one_label_is_refused_before_training(project, params_dict, capsys):
    data_copy(project, params_dict, keep_one_label)
    assert main(["prepare", "--task", "topics"]) == 2
    assert "every train row has the label 'sport'; a classifier needs at least two labels" in one_line_error(capsys)
    assert not (project / "data").exists()


def test_a_missing_split_file_names_the_folder_the_file_and_the_fix(project, params_dict, capsys):
    data = data_copy(project, params_dict, lambda data: (data / "topics" / "validation.csv").unlink())
    assert main(["prepare", "--task", "topics"]) == 2
    error = one_line_error(capsys)
    assert f"{data / 'topics'} has no validation.csv" in error and "add the missing split" in error


def test_numeric_labels_are_kept_as_names_with_a_one_line_warning(project, params_dict, capsys):
    def numbered(data: Path) -> None:
        for path in (data / "topics").glob("*.csv"):
            text = path.read_text()
            for number, label in enumerate(sorted({line.rsplit(",", 1)[1] for line in text.splitlines()[1:]})):
                text = text.replace(f",{label}\n", f",{number}\n")
            path.write_text(text)

    data_copy(project, params_dict, numbered)
    assert main(["prepare", "--task", "topics"]) == 0
    warning = one_line_error(capsys)
    assert warning.startswith("loramerge prepare: warning: task 'topics': the labels are numbers")
    assert json.loads((project / "data/prepared/topics/labels.json").read_text())["labels"][0] == "0"


def test_a_duplicate_key_names_the_params_file(project, capsys):
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "repeats: 1\nrepeats: 2\n")
    assert main(["prepare", "--task", "topics"]) == 2
    assert "params.yaml: duplicate key(s) ['repeats'] at line 1" in one_line_error(capsys)


@pytest.mark.parametrize("uri", ["not a uri", "htp://localhost:5000", "sqlite://", "localhost:5000"])
def test_a_tracking_uri_mlflow_cannot_open_is_refused_with_the_forms_it_takes(project, capsys, uri):
    write_params(project, "params.yaml", lambda raw: raw["tracking"].update(uri=uri))
    assert main(["prepare", "--task", "topics"]) == 2
    assert "tracking.uri: not an MLflow tracking URI: use sqlite:///mlflow.db" in one_line_error(capsys)


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///mlflow.db", "http://127.0.0.1:5000", "postgresql+psycopg2://u@h/db", "file:/tmp/m", "databricks"],
)
def test_the_tracking_uris_mlflow_opens_are_accepted(project, uri):
    write_params(project, "params.yaml", lambda raw: raw["tracking"].update(uri=uri))
    assert load_params(project / "params.yaml").tracking.uri == uri


def test_combos_refuses_an_export_entry_that_is_no_combination_and_keeps_params(project, capsys):
    write_params(project, "params.yaml", lambda raw: raw.update(export={"combinations": ["topics+nope"]}))
    before = (project / "params.yaml").read_text()
    assert main(["combos"]) == 2
    assert "export.combinations names ['topics+nope'], but task(s) ['nope'] are not configured" in (
        capsys.readouterr().err
    )
    assert (project / "params.yaml").read_text() == before


def test_a_task_only_in_the_local_folder_needs_no_hub_id_and_one_in_neither_place_names_both(project, capsys):
    write_params(project, "params.yaml", lambda raw: [raw["tasks"][t]["data"].pop("hub") for t in raw["tasks"]])
    assert main(["prepare", "--task", "topics"]) == 0
    write_params(project, "params.yaml", lambda raw: raw["data"].update(local_dir=str(project / "nowhere")))
    assert main(["prepare", "--task", "moods"]) == 2
    error = one_line_error(capsys)
    assert f"no local data at {project / 'nowhere' / 'moods'} and no Hub dataset (tasks.moods.data.hub)" in error


def test_a_sweep_on_a_task_no_longer_configured_stops_only_the_sweep(project, capsys):
    write_params(project, "params.yaml", lambda raw: raw.update(sweep={"task": "nope"}))
    assert main(["combos"]) == 0 and main(["prepare", "--task", "topics"]) == 0
    capsys.readouterr()
    assert main(["sweep", "queue"]) == 2
    assert "sweep.task 'nope' is not a configured task; choose one of ['moods', 'topics']" in one_line_error(capsys)
