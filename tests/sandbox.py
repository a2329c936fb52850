"""A throw-away copy of this repository as its own git + DVC checkout, with a tiny params.yaml.

Used by the integration tests and by `make smoke`: the real `dvc repro` on the real bundled
model and real data, cut down to a few dozen examples per task so it runs in minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_TASKS = ("emotion", "agnews", "wnut17")
"""Two sentence tasks and the NER task: every pair but one, and the triple, mix a word tagger with a text classifier."""
TAGGED_TASKS = {"wnut17": {"type": "token_classification", "data": {"hub": {"id": "leondz/wnut_17"}}}}
"""Token-classification tasks the default params.yaml does not list (reports/studies/ner/params.yaml runs them)."""
COPIED = ("dvc.yaml", "pipelines", "params.yaml", "pyproject.toml", "loramerge", ".dvcignore")
"""The pipeline and its code, without any dvc.lock: a sandbox runs every stage afresh."""


def shared_data_dir() -> Path:
    return Path(os.environ.get("LORAMERGE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


TINY_SIZES = {"max_train": 48, "max_validation": 24, "max_test": 24}
"""Examples per split in every sandbox: enough for each stage to compute something real, in seconds."""
SWAPPED_TASKS = {
    "tweet_hate": "tweet_hate",
    "wnut17": "wnut17",
    "my_irony": "tweet_irony",
    "my_news": "agnews",
}
"""A user's own four tasks in place of the default's, each named with the data folder it is copied from: one on the Hub
too, one NER task, and two that exist only in the local folder (names no Hub id has, so no `hub:` is given)."""


def shrunk(params: dict, tasks: dict[str, dict]) -> dict:
    """`params` with these tasks at TINY_SIZES, one short epoch, and two merge methods (a searched low-rank one and a
    dense one; the rest are unit-tested): what changes a real run into one of minutes, and nothing else."""
    params["tasks"] = {
        t: {**entry, "data": {**entry.get("data", {}), **TINY_SIZES}, "train": {}} for t, entry in tasks.items()
    }
    params["train"].update(max_epochs=1, batch_size=16, val_check_interval=2, patience=2)
    params["merge"].update(search_max_examples=16)
    params["merge"]["methods"] = {
        "task_arithmetic": {"scaling": [0.5, 1.0]},
        "ties": {"scaling": 1.0, "density": [0.5, 1.0]},
    }
    params["export"].update(latency_calls=5, throughput_repeats=1)
    return params


def tiny_params(tasks: tuple[str, ...] = TINY_TASKS) -> dict:
    """The default params.yaml cut down: 3 tasks (one of them NER), 2 of their 3 pairs (one mixing NER with a sentence
    task) and the triple, 48/24/24 examples, one epoch."""
    from loramerge.combinations import choose_combinations
    from loramerge.lists import all_combinations, generated_lists

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    listed = {**TAGGED_TASKS, **params["tasks"]}
    shrunk(params, {t: listed[t] for t in tasks})
    params["data"]["local_dir"] = str(shared_data_dir())
    params["evaluate"]["precision"] = "32"  # the exported fp32 model is checked against the evaluate stage's scores
    params["combos"] = {
        "max_pairs": 2,
        "max_triples": None,
        "seed": 0,
    }  # 2 of 3 pairs: a third adds time, not coverage
    pairs, triples = choose_combinations(list(tasks), 2, 2, 0), all_combinations(list(tasks), (3,))
    exported = triples or pairs[:1]  # one export keeps the suite's time small
    params.update(generated_lists(list(tasks), 1, pairs, triples, shipped=exported))
    params["export"].update(combinations=exported)
    return params


def swapped_params(data_dir: Path) -> dict:
    """The default params.yaml with its tasks replaced by SWAPPED_TASKS (shrunk), read from `data_dir`, which is
    filled here: links to the shared folders of the tasks the Hub also has, copies under new names of the two
    local-only ones. Everything else stays the default's, the generated lists too (stale until `loramerge combos`)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    hub = {"tweet_hate": {"hub": {"id": "cardiffnlp/tweet_eval", "config": "hate"}}}
    known = {**TAGGED_TASKS, "tweet_hate": {"data": hub["tweet_hate"]}}
    data_dir.mkdir(parents=True, exist_ok=True)
    for task, source in SWAPPED_TASKS.items():
        if task in known:
            (data_dir / task).symlink_to(shared_data_dir() / source, target_is_directory=True)
        else:
            shutil.copytree(shared_data_dir() / source, data_dir / task)
    shrunk(params, {t: known.get(t, {}) for t in SWAPPED_TASKS})
    params["data"]["local_dir"] = str(data_dir.resolve())
    return params


def copy_from_repository(names: tuple[str, ...], destination: Path) -> None:
    """These files and folders of this repository into `destination`, without caches or any dvc.lock."""
    for name in names:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "dvc.lock")
            )
        elif source.exists():
            shutil.copy2(source, destination / name)


def make_sandbox(destination: Path, params: dict | None = None) -> Path:
    """Copy the code and pipeline into `destination`, commit it, `dvc init`; return the path."""
    destination.mkdir(parents=True, exist_ok=True)
    copy_from_repository(COPIED, destination)
    (destination / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    (destination / ".gitignore").write_text((REPO / ".gitignore").read_text())
    run(["git", "init", "-q"], destination)
    run(["dvc", "init", "-q"], destination)
    run(["dvc", "config", "core.autostage", "true"], destination)
    run(["git", "add", "-A"], destination)
    run(
        ["git", "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost", "commit", "-qm", "sandbox"],
        destination,
    )
    return destination


NO_USAGE_REPORTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}
"""The tests never touch the network: no usage reports either, from MLflow (stages, servers, UI) or from DVC."""


def sandbox_env() -> dict[str, str]:
    """The environment stages see: offline (no usage reports either), our venv's bin first, the sandbox's own code,
    no MLflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=".")
    env.update(NO_USAGE_REPORTS)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """`command` in `cwd` with the stages' environment, plus any extra variables (e.g. MLFLOW_TRACKING_URI)."""
    return subprocess.run(command, cwd=cwd, env={**sandbox_env(), **env}, capture_output=True, text=True, check=check)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the tiny configuration of the real pipeline end to end.")
    parser.add_argument("--run", action="store_true", help="run `dvc repro` in the sandbox")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument(
        "--swap",
        action="store_true",
        help=f"the default's tasks replaced by {', '.join(SWAPPED_TASKS)}, then `loramerge combos`",
    )
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="loramerge-smoke-"))
    folder = make_sandbox(root / "repo", swapped_params(root / "data") if args.swap else None)
    print(f"sandbox: {folder}")
    if args.swap:
        subprocess.run(["loramerge", "combos"], cwd=folder, env=sandbox_env(), check=True)
    if args.run:
        completed = subprocess.run(["dvc", "repro"], cwd=folder, env=sandbox_env())
        if completed.returncode == 0:
            print((folder / "reports" / "summary.md").read_text())
        return completed.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
