"""The `loramerge` command: one subcommand per stage module (read from loramerge/stages/, see its __init__), plus
the tools around the pipeline: `combos` writes the merge lists, `sweep`, `compare`, `predict`, `done`, `mlflow-server`.

Each subcommand imports its stage or tool inside its handler (import cost: torch, transformers and
MLflow take seconds to import, and `loramerge --help` or `combos` should not wait for them).
"""

from __future__ import annotations

import argparse
import ast
import atexit
import importlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from loramerge.atomic import write_text
from loramerge.config import ConfigError, Params, adapters_of, load_params
from loramerge.console import quiet_libraries
from loramerge.lists import (
    ALL,
    COMBO_SEPARATOR,
    REPEAT_SUFFIX,
    SECTIONS,
    combination_kind,
    generated_lists,
    split_combination,
)
from loramerge.lockfile import LOCK, PIPELINE_PARAMS, prune_lock
from loramerge.paths import stage_name
from loramerge.tracking import TrackingError

STAGE_TIMES = Path("logs/stage_times.jsonl")
STAGES_PACKAGE = "loramerge.stages"
STAGES = Path(__file__).parent / "stages"


@dataclass(frozen=True)
class StageCommand:
    """A stage module's subcommand: its name, its `HELP`, its `ARGUMENTS` and whether it is `MODEL_FREE` (see
    loramerge/stages/__init__.py)."""

    name: str
    help: str
    arguments: dict[str, dict]
    model_free: bool


def stage_commands() -> list[StageCommand]:
    """Every module of loramerge/stages as a subcommand, read from its source: importing the stages would import
    torch before `--help` could answer."""
    commands = []
    for path in sorted(STAGES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        constants = {
            target.id: node.value
            for node in ast.parse(path.read_text(encoding="utf-8")).body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        arguments = ast.literal_eval(constants["ARGUMENTS"])
        model_free = "MODEL_FREE" in constants and ast.literal_eval(constants["MODEL_FREE"])
        commands.append(StageCommand(path.stem, ast.literal_eval(constants["HELP"]), arguments, model_free))
    return commands


def _stage(args: argparse.Namespace) -> None:
    """Run the stage module named by the subcommand with its options, and print what it wrote."""
    module = importlib.import_module(f"{STAGES_PACKAGE}.{args.command}")
    options = {option: getattr(args, option) for option in args.stage_options}
    print(module.run(checked_params(args, methods=not args.model_free), **options))


def _combos(args: argparse.Namespace) -> None:
    """Rewrite `replicas:`, `pairs:`, `triples:` and `exported:` in params.yaml from its task list, repeats (capped by
    `combos:`) and export.combinations, keeping comments."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.representer import RoundTripRepresenter

    from loramerge.combinations import choose_combinations, coverage

    def flow(entry: dict) -> CommentedMap:
        """One entry per line, lists inline: the params.yaml style a reader scans."""
        mapping = CommentedMap({k: CommentedSeq(v) if isinstance(v, list) else v for k, v in entry.items()})
        for value in mapping.values():
            if isinstance(value, CommentedSeq):
                value.fa.set_flow_style()
        mapping.fa.set_flow_style()
        return mapping

    params = load_params(args.params, combinations=False)  # the lists may name tasks no longer configured
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own style

    class Representer(RoundTripRepresenter):
        """None written `null`, in params.yaml only: ruamel's add_representer changes the class for every writer."""

    Representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    yaml.Representer = Representer
    path = Path(args.params)
    document = yaml.load(path.read_text(encoding="utf-8"))
    tasks, caps = list(document["tasks"]), params.combos
    listed = [  # the first seed's: the ones export can name
        c
        for section in SECTIONS.values()
        for c in document.get(section) or {}
        if not REPEAT_SUFFIX.search(split_combination(c)[0])
    ]
    chosen = {section: [] for section in SECTIONS.values()}
    for size in caps.chosen_sizes(len(tasks)):
        found = choose_combinations(tasks, size, None if size == len(tasks) else caps.cap(size), caps.seed)
        chosen[SECTIONS[combination_kind(COMBO_SEPARATOR.join(tasks[:size]))]] += found
        covered = coverage(tasks, found, size)
        print(
            f"{size} tasks: {covered['chosen']} of {covered['total']} ({covered['share']:.0%}); each task in "
            f"{covered['min_per_task']}-{covered['max_per_task']}"
            + (f"; task pairs met: {covered['task_pairs_met']:.0%}" if size > 2 else "")
        )
    shipped = params.export.combinations
    if shipped is not None:
        shipped = exported(shipped, listed, [c for found in chosen.values() for c in found], tasks, path)
        if "combinations" in (document.get("export") or {}):
            document["export"]["combinations"] = shipped
    lists = generated_lists(
        tasks,
        params.repeats,
        chosen["pairs"],
        chosen["triples"],
        adapters_of(params.tasks),
        shipped,
        chosen["many"],
    )
    if "replicas" not in document:  # first written by this version: beside the lists, under their comment
        document.insert(list(document).index("pairs") if "pairs" in document else len(document), "replicas", {})
    if "many" not in document and "triples" in document:  # first written by this version: after the triples
        document.insert(list(document).index("triples") + 1, "many", {})
    shipping = [c for section in lists["exported"].values() for c in section]  # `all` resolved by generated_lists
    print(f"export.combinations: {', '.join(shipping) or 'none'}")
    for key in SECTIONS.values():
        lists["exported"][key] = {name: flow(entry) for name, entry in lists["exported"][key].items()}
    document["exported"] = lists.pop("exported")
    for key, entries in lists.items():
        document[key] = {name: flow(entry) for name, entry in entries.items()}
    text = io.StringIO()
    yaml.dump(document, text)
    write_text(path, text.getvalue())
    load_params(path)
    print(
        f"{path}: {len(chosen['pairs'])} pairs, {len(chosen['triples'])} triples, {len(chosen['many'])} larger"
        f" merge(s) of {len(tasks)} tasks, {params.repeats} training seed(s)"
    )
    if path.resolve() == Path(PIPELINE_PARAMS).resolve():  # the lists every dvc.yaml reads: stages may have changed
        gone = prune_lock(Path("."))
        if gone:
            print(f"{LOCK}: dropped the entries of {len(gone)} stage(s) the pipeline no longer has: {', '.join(gone)}")


def exported(
    current: list[str], listed: list[str], combinations: list[str], tasks: list[str], path: Path
) -> list[str]:
    """What `export.combinations` becomes when the lists are rewritten: every combination of the first seed again
    if it named every listed one (the default), else the user's choice, which must name only combinations the new
    lists hold (a choice is never emptied behind the user's back)."""
    if set(current) == set(listed) and ALL not in current:
        return list(combinations)
    unknown = [c for c in current if c != ALL and c not in combinations]
    if unknown:
        gone = sorted({t for c in unknown for t in split_combination(c) if t not in tasks})
        why = f"task(s) {gone} are not configured" if gone else "they are not among the pairs/triples `combos:` keeps"
        raise ConfigError(
            f"{path}: export.combinations names {unknown}, but {why}; remove them from export.combinations (or"
            " configure their tasks) and run `loramerge combos` again"
        )
    return list(current)


def _sweep(args: argparse.Namespace) -> None:
    from loramerge import sweep

    params = checked_params(args)
    if args.action == "queue":
        print(f"queued {sweep.queue(params, Path('.'))} experiments; run them with `dvc queue start -j 1`")
    elif args.action == "show":
        print(sweep.terminal_table(sweep.collect(params, Path("."))))
    else:
        print(sweep.write_sweep_report(sweep.collect(params, Path(".")), Path("reports"), params))


def _compare(args: argparse.Namespace) -> None:
    """Print (or write) two report folders' merge-method tables side by side."""
    from loramerge.report.compare import comparison_markdown

    text = comparison_markdown(Path(args.first), Path(args.second), (args.labels[0], args.labels[1]))
    if args.output:
        write_text(Path(args.output), text)
    print(text)


def _mlflow_server(args: argparse.Namespace) -> None:
    """Serve the project's MLflow store on 127.0.0.1 (replaces this process; stop it with Ctrl-C), or, with
    `--during COMMAND`, only while COMMAND runs (exits with COMMAND's status). A store chosen elsewhere
    ($MLFLOW_TRACKING_URI, params `tracking.uri`) is the user's: COMMAND then runs with it, and no server starts."""
    from loramerge.server import serve, serve_during

    if not args.during:
        serve(Path("."), args.port, args.backend_store_uri)
        return
    chosen = os.environ.get("MLFLOW_TRACKING_URI") or load_params(args.params).tracking.uri
    status = subprocess.run(args.during).returncode if chosen else serve_during(Path("."), args.during)
    if status:
        sys.exit(status)


def _predict(args: argparse.Namespace) -> None:
    """Classify texts or images with an exported model; results go to --output (written whole) or stdout as JSON
    lines."""
    from loramerge.predict import run_predict

    tracking = load_params(args.params).tracking if Path(args.params).exists() else None  # for models:/ URIs
    print(
        run_predict(
            args.model, args.text, args.input, args.text_column, args.output, args.batch_size, tracking, args.image
        )
    )


def _done(args: argparse.Namespace) -> None:
    """What the run made and where to look (the last words of `make run`)."""
    from loramerge.run_summary import run_summary

    print(run_summary(load_params(args.params), args.seconds, Path(".")))


def checked_params(args: argparse.Namespace, methods: bool = True) -> Params:
    """params.yaml validated whole before any stage starts, with the merge methods and every value their searches
    would try (`methods`): a typo in `merge:` fails the first stage that loads a model in seconds, not `merge` after
    all the training. The method check imports every method, so torch and PEFT (about 5 s): a model-free stage
    (`MODEL_FREE` in its module: prepare, report) leaves it to the model stages that follow it."""
    params = load_params(args.params)
    if methods:
        from loramerge.search import check_methods  # imports torch: here, not for `--help` or `combos`

        check_methods(params.merge.methods)
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loramerge", description="Train LoRA adapters per task, merge them, and measure what merging costs."
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in stage_commands():
        sub = commands.add_parser(stage.name, help=stage.help)
        for flag, settings in stage.arguments.items():
            sub.add_argument(flag, **settings)
        sub.set_defaults(
            handler=_stage,
            stage_options=[flag.lstrip("-").replace("-", "_") for flag in stage.arguments],
            model_free=stage.model_free,
        )
    compare = commands.add_parser("compare", help="two report folders' merge-method tables side by side (studies)")
    compare.add_argument("first", help="a reports/ folder, e.g. of the default run")
    compare.add_argument("second", help="another reports/ folder, e.g. a study's")
    compare.add_argument("--labels", nargs=2, default=["first", "second"], metavar=("FIRST", "SECOND"))
    compare.add_argument("--output", help="also write the markdown here")
    compare.set_defaults(handler=_compare)
    sweep = commands.add_parser(
        "sweep",
        help="queue the sweep's grid (sweep.task) as DVC experiments, show them in the terminal, or collect their table",
    )
    sweep.add_argument("action", choices=["queue", "show", "collect"])
    sweep.set_defaults(handler=_sweep)
    commands.add_parser(
        "combos",
        help="write the merge lists (pairs, triples, larger merges, the merge of every task) into params.yaml",
    ).set_defaults(handler=_combos)
    predict = commands.add_parser("predict", help="classify texts (or images) for every task of an exported model")
    predict.add_argument("--model", required=True, help="models/export/<combo>, or models:/loramerge-<combo>@champion")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to classify (repeatable)")
    source.add_argument("--input", type=Path, help="a .csv or .jsonl file of texts, or a folder of images")
    source.add_argument("--image", type=Path, action="append", help="an image file to classify (repeatable)")
    predict.add_argument("--text-column", default="text", help="the --input column holding the texts (default: text)")
    predict.add_argument("--output", type=Path, help="a .csv or .jsonl results file (default: JSON lines on stdout)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.set_defaults(handler=_predict)
    done = commands.add_parser("done", help="say what the run made: the report, the shipped models, the MLflow UI")
    done.add_argument("--seconds", type=float, help="how long the run took (make run passes it)")
    done.set_defaults(handler=_done)
    server = commands.add_parser(
        "mlflow-server", help="serve the project's MLflow store on 127.0.0.1 for parallel and multi-machine runs"
    )
    server.add_argument("--port", type=int, default=5000)
    server.add_argument(
        "--backend-store-uri",
        default=None,
        help="SQL store URL (default: sqlite:///<project>/mlflow.db); e.g. postgresql://user@host/db",
    )
    server.add_argument(
        "--during",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="COMMAND",
        help="serve the project's store on a free port only while COMMAND runs, its stages pointed at it (make run:"
        " --during dvc repro); the rest of the line is COMMAND",
    )
    server.set_defaults(handler=_mlflow_server)
    return parser


def record_stage_time(seconds: float) -> None:
    """When DVC runs this command, append the stage's wall time to logs/stage_times.jsonl
    (git-ignored): DVC keeps no durations, and the benchmarks read them from here."""
    stage = os.environ.get("DVC_STAGE")  # DVC's address of the stage: pipelines/<group>/dvc.yaml:<name>
    if stage:
        line = {
            "stage": stage_name(stage),
            "seconds": round(seconds, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        STAGE_TIMES.parent.mkdir(exist_ok=True)
        with STAGE_TIMES.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    started = time.perf_counter()
    try:
        args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError, TrackingError) as error:
        kind = f"{type(error).__name__}: " if isinstance(error, TrackingError) else ""
        print(f"loramerge {args.command}: error: {kind}{error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    record_stage_time(seconds)
    if os.environ.get("DVC_STAGE"):  # the stage's last line in `dvc repro`'s output: what ran, and how long
        print(f"loramerge: {os.environ['DVC_STAGE']} done in {seconds:.1f} s", file=sys.stderr)
    return 0


def run() -> NoReturn:
    """The `loramerge` command: `main`, then the process ends without Python's teardown of its modules.

    A stage has loaded torch, transformers, PEFT and MLflow: some 4,800 modules and half a million objects, whose
    teardown at exit takes about 2 s and changes nothing on disk (every output is written and closed, the MLflow run
    closed, before `main` returns). So once the command is done, what Python's exit would do first is done (wait for
    the threads that are not daemons, run the exit handlers: logging, temporary folders, libraries' own), the streams
    are flushed, and `os._exit` ends the process, as multiprocessing ends its workers. An exception `main` does not
    turn into an exit status leaves through Python's usual exit, traceback and all."""
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # CPython's own entry to the registered handlers (what interpreter exit calls)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
