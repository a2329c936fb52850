"""The command line: a subcommand per stage, and errors that name the problem instead of a traceback."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from loramerge import cli
from loramerge.cli import main
from loramerge.settings import TRAINING_MODES
from tests.helpers import imported


def test_help_lists_a_subcommand_per_stage_module(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    stages = {p.stem for p in cli.STAGES.glob("*.py") if p.name != "__init__.py"}
    assert stages >= {"prepare", "train", "gram", "merge", "evaluate", "similarity", "export", "report"}
    for command in sorted(stages) + ["combos", "predict"]:
        assert re.search(rf"^    {command} ", out, re.MULTILINE), command


def test_a_new_stage_module_is_a_subcommand_with_its_options_without_an_edit_of_the_cli(
    project, params_dict, tmp_path, monkeypatch, capsys
):
    package = tmp_path / "toystages"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(
        'HELP = "count the tasks"\n'
        'ARGUMENTS = {"--times": {"required": True, "help": "how often"}}\n'
        "def run(params, times):\n"
        '    return f"{len(params.tasks)} tasks, {times} times"\n'
    )
    monkeypatch.setattr(cli, "STAGES", package)
    monkeypatch.setattr(cli, "STAGES_PACKAGE", "toystages")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["toy", "--times", "3"]) == 0
    assert capsys.readouterr().out == f"{len(params_dict['tasks'])} tasks, 3 times\n"
    with pytest.raises(SystemExit):
        main(["toy"])
    assert "--times" in capsys.readouterr().err


def test_the_train_commands_modes_are_the_training_modes():
    (train,) = [c for c in cli.stage_commands() if c.name == "train"]
    assert tuple(train.arguments["--mode"]["choices"]) == TRAINING_MODES


def test_evaluate_takes_a_task_or_a_combination_and_says_so_otherwise(project, capsys):
    assert main(["evaluate"]) == 2
    assert "evaluate takes --task T" in capsys.readouterr().err
    assert main(["evaluate", "--combo", "a+b", "--baselines"]) == 2


def test_an_invalid_params_file_exits_2_naming_the_key(project, params_dict, capsys):
    params_dict["lora"]["rank"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))
    assert main(["train", "--task", "topics"]) == 2
    assert "lora.rank" in capsys.readouterr().err


def test_an_unconfigured_task_is_refused(project, capsys):
    assert main(["prepare", "--task", "nope"]) == 2
    assert "'nope' is not configured" in capsys.readouterr().err


def test_combos_writes_every_pair_and_triple_of_the_task_list(project, params_dict):
    params_dict["tasks"]["third"] = params_dict["tasks"]["topics"]
    params_dict["pairs"], params_dict["triples"] = {}, {}
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))
    assert main(["combos"]) == 0
    written = yaml.safe_load((project / "params.yaml").read_text())
    assert len(written["pairs"]) == 3 and len(written["triples"]) == 1
    assert all(name == "+".join(entry["members"]) for name, entry in written["pairs"].items())


def test_combos_caps_pairs_and_triples_as_the_params_file_says(project, params_dict, capsys):
    for extra in ("third", "fourth", "fifth"):
        params_dict["tasks"][extra] = params_dict["tasks"]["topics"]
    params_dict["combos"] = {"max_pairs": 4, "max_triples": 3, "seed": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict))
    assert main(["combos"]) == 0
    written = yaml.safe_load((project / "params.yaml").read_text())
    assert len(written["pairs"]) == 4 and len(written["triples"]) == 3
    assert len(written["many"]) == 1  # the merge of all five tasks: never capped
    assert "2 tasks: 4 of 10 (40%)" in capsys.readouterr().out


def test_a_command_dvc_runs_appends_its_stage_and_wall_time_to_the_log_and_says_it(project, monkeypatch, capsys):
    monkeypatch.setenv("DVC_STAGE", "combos-as-a-stage")
    assert main(["combos"]) == 0
    (line,) = (project / "logs/stage_times.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["stage"] == "combos-as-a-stage" and entry["seconds"] >= 0
    assert re.fullmatch(r"loramerge: combos-as-a-stage done in \d+\.\d s\n", capsys.readouterr().err)


def test_outside_dvc_nothing_is_logged(project, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert main(["combos"]) == 0
    assert not (project / "logs").exists()


def test_library_chatter_is_silenced_at_its_source_and_every_other_warning_still_shows():
    import logging
    import warnings

    from loramerge.console import quiet_libraries

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        for message, module in [
            ("`is_gradient_checkpointing` is deprecated and will be removed in v6.", "transformers.modeling_utils"),
            ("`isinstance(treespec, LeafSpec)` is deprecated", "lightning.pytorch.utilities._pytree"),
            ("a real deprecation", "transformers.modeling_utils"),
        ]:
            warnings.warn_explicit(message, FutureWarning, "source.py", 1, module=module)
        warnings.warn_explicit(
            "Checkpoint directory x exists and is not empty.",
            UserWarning,
            "model_checkpoint.py",
            1,
            module="lightning.pytorch.callbacks.model_checkpoint",
        )
        warnings.warn_explicit(
            "Checkpoint directory x exists and is not empty.", UserWarning, "mine.py", 1, module="mine"
        )
    assert [(str(w.message), w.filename) for w in caught] == [
        ("a real deprecation", "source.py"),
        ("Checkpoint directory x exists and is not empty.", "mine.py"),
    ]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    shown = [
        record.getMessage()
        for level, message in [
            (logging.INFO, "GPU available: False, used: False"),
            (logging.INFO, "Seed set to 0"),
            (logging.INFO, "\nDetected KeyboardInterrupt, attempting graceful shutdown ..."),  # Ctrl-C was heard
            (logging.WARNING, "a real warning"),
        ]
        if rank_zero.filter(record := rank_zero.makeRecord(rank_zero.name, level, "x.py", 1, message, None, None))
    ]
    assert shown == ["\nDetected KeyboardInterrupt, attempting graceful shutdown ...", "a real warning"]


def test_the_command_line_starts_without_the_model_stack():
    """`loramerge --help`, `combos` and `done` answer in a fraction of a second: torch, transformers, scikit-learn and
    MLflow load only in the handlers of the stages that use them."""
    assert imported("import loramerge.cli", ["torch", "transformers", "sklearn", "mlflow", "pandas", "peft"]) == []


def test_the_command_skips_pythons_teardown_but_not_its_output_exit_handlers_or_exit_status(project):
    """`loramerge` (cli.run) ends the process without the ~2 s teardown of torch and company: what the command
    printed, what its threads and exit handlers do, and its exit status (0, or 2 for a refused input) are all still
    there."""
    import subprocess
    import sys

    code = (
        "import atexit, sys, threading, time; atexit.register(print, 'exit handlers ran')"
        "; threading.Thread(target=lambda: (time.sleep(0.5), print('a thread finished its work'))).start()"
        "; sys.argv = ['loramerge', 'combos']; from loramerge.cli import run; run()"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pairs" in done.stdout and "a thread finished its work" in done.stdout
    assert done.stdout.rstrip().endswith("exit handlers ran"), "after the threads, as Python's own exit orders them"
    (project / "params.yaml").write_text("tasks: [unclosed\n")
    refused = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert refused.returncode == 2 and "params.yaml is not valid YAML" in refused.stderr
