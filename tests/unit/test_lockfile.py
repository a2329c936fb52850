"""Each dvc.lock keeps only the stages its dvc.yaml defines: DVC leaves a removed stage's entry, and every later stage then
pays to rewrite it."""

from __future__ import annotations

import subprocess
import sys

import yaml

from loramerge.cli import main
from loramerge.lockfile import prune_lock
from tests.sandbox import copy_from_repository

PIPELINE = {
    "vars": ["params.yaml"],
    "stages": {"step": {"foreach": "${items}", "do": {"cmd": "echo ${item} > out/${key}", "outs": ["out/${key}"]}}},
}


def entry(name: str) -> str:
    return f"  step@{name}:\n    cmd: echo {name} > out/{name}\n    outs:\n    - path: out/{name}\n      hash: md5\n"


def test_the_entries_of_stages_gone_from_dvc_yaml_are_dropped_and_the_rest_kept_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"items": {"a": 1, "c": 3}}))
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n" + entry("a") + entry("b") + entry("c"))
    assert prune_lock(tmp_path) == ["step@b"]
    assert (tmp_path / "dvc.lock").read_text() == "schema: '2.0'\nstages:\n" + entry("a") + entry("c")
    assert prune_lock(tmp_path) == [], "nothing more to drop"


def test_a_project_without_a_lock_has_nothing_to_drop(tmp_path):
    assert prune_lock(tmp_path) == []


def test_combos_drops_the_stages_it_no_longer_lists_and_writes_the_kept_ones_as_dvc_did(project, capsys):
    """combos writes params.yaml with `null`s; each group's lock keeps DVC's own spelling of a None (`- `), entry for
    entry, and a group whose stages are all gone keeps an empty lock."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    copy_from_repository(("dvc.yaml", "pipelines"), project)
    kept = "  prepare@topics:\n    cmd: loramerge prepare --task topics\n    params:\n      params.yaml:\n        kept:\n        - \n        - 0.25\n"
    gone = "  merge_pair@topics+retired:\n    cmd: loramerge merge --combo topics+retired\n"
    (project / "pipelines/prepare/dvc.lock").write_text("schema: '2.0'\nstages:\n" + kept)
    (project / "pipelines/merge_pair/dvc.lock").write_text("schema: '2.0'\nstages:\n" + gone)
    assert main(["combos"]) == 0
    assert (
        "dropped the entries of 1 stage(s) the pipeline no longer has: "
        "pipelines/merge_pair/dvc.yaml:merge_pair@topics+retired" in capsys.readouterr().out
    )
    assert (project / "pipelines/prepare/dvc.lock").read_text() == "schema: '2.0'\nstages:\n" + kept
    assert yaml.safe_load((project / "pipelines/merge_pair/dvc.lock").read_text())["stages"] == {}
