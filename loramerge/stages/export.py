"""Stages `export_pair@`, `export_triple@` and `export_many@<combo>`: the combination's best merge, shipped as one multi-task
model.

The method is the one with the best mean normalized VALIDATION accuracy in the merge
stage's manifests (test scores never choose; ties go to the method listed first in
`merge.methods`). models/export/<combo>/ gets the base encoder with that merged update
folded into its weights, the tokenizer (or image processor), each member's head and label map, export.json,
the PEFT adapter when the merge is exactly low-rank, and a model card; metrics/export/<combo>.json
gets the fp32/int8/bf16 comparison. The export is then logged to MLflow as a pyfunc and
registered as `loramerge-<combo>` (see loramerge/registry.py).
"""

from __future__ import annotations

from pathlib import Path

from loramerge import paths
from loramerge.atomic import atomic_dir, check_writable, write_json, write_text
from loramerge.backbone import load_backbone
from loramerge.compression import compare_precisions
from loramerge.config import Params
from loramerge.data import load_split, prepared_splits, stratified_subsample
from loramerge.lists import split_combination
from loramerge.lora import saved_deltas
from loramerge.metrics import ranked
from loramerge.modelcard import model_card
from loramerge.multitask import CARD, MultiTaskModel, write_model
from loramerge.records import BaselineMetrics, MergedMetrics, MergeManifest, SingleMetrics
from loramerge.tracking import git_commit, stage_run

HELP = "ship one combination's best merge as a multi-task model"
ARGUMENTS = {"--combo": {"required": True, "help": "tasks joined by '+', e.g. emotion+agnews"}}


def export_stage(combo: str) -> str:
    """The combination's export stage in dvc.yaml: export_pair@, export_triple@ or export_many@<combo>."""
    return paths.combination_stage("export", combo)


def choose_method(methods: list[str], combo: str) -> tuple[str, dict[str, float]]:
    """The method with the best mean normalized validation accuracy (ties: first in merge.methods), and every
    method's score."""
    scores = {m: MergeManifest.read(paths.merge_manifest(combo, m)).validation.score for m in methods}
    return max(scores, key=lambda m: ranked(scores[m])), scores  # max keeps the first of equals


def provenance(merge: MergeManifest, scores: dict[str, float]) -> dict:
    """export.json's record of what the model was made from: the merge (method, hyper-parameters, validation
    scores, member hashes), the candidates it was chosen over, and the commit."""
    return {
        "combination": merge.combination,
        "method": merge.method,
        "params": merge.params,
        "format": merge.format,
        "validation": merge.validation.model_dump(),
        "candidates": scores,
        "selection": "best mean normalized validation accuracy; ties: first in merge.methods",
        "member_hashes": {t: hashes.model_dump() for t, hashes in merge.members.items()},
        "git_commit": git_commit(Path(".")),
    }


def member_tests(tasks: dict[str, str], examples: int, seed: int) -> dict:
    """Up to `examples` test examples per member (its data's task given by `tasks`; stratified, seeded), as the
    exported model takes them (texts, or images' file bytes), with their gold label names (a word tagger's: its tag
    lists, the texts being its words joined by spaces)."""
    tests = {}
    for member, task in tasks.items():
        frame = stratified_subsample(load_split(task, "test"), examples, seed)
        gold = frame["tags"].map(list) if "tags" in frame.columns else frame["label"]
        tests[member] = (frame["image" if "image" in frame.columns else "text"].tolist(), gold.tolist())
    return tests


def export_combination(params: Params, combo: str) -> Path:
    """Write models/export/<combo>/ atomically, its compression metrics, and register it in MLflow."""
    if combo not in params.shipped():
        raise ValueError(f"combination {combo!r} is not in export.combinations of params.yaml; add it there")
    members = split_combination(combo)
    missing = [p for p in (paths.merged_dir(combo) / "heads", paths.merged_metrics(combo)) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]} not found: merge and evaluate {combo!r} first (`dvc repro {paths.dvc_target(export_stage(combo))}`)"
        )
    check_writable(paths.export_metrics(combo), folders=(paths.export_dir(combo),))
    method, scores = choose_method(params.merge.methods, combo)
    merge = MergeManifest.read(paths.merge_manifest(combo, method))
    tests = member_tests(
        {t: params.task_of(t) for t in members}, params.export.compression_examples, params.data.subsample_seed
    )
    run_params = {"combination": combo, "members": members, "method": method, "export": params.export.model_dump()}
    with stage_run(params.tracking, export_stage(combo), run_params) as run:
        run.log_datasets(split for task in members for split in prepared_splits(task, ("test",)))
        backbone = load_backbone(params.backbone)
        merged = paths.merged_dir(combo)
        with atomic_dir(paths.export_dir(combo)) as out:
            manifest = write_model(
                out,
                backbone,
                saved_deltas(backbone.encoder, merged / method),
                {t: merged / "heads" / t for t in members},
                merged / method if merge.format == "peft_adapter" else None,
                provenance(merge, scores),
            )
            compression = compare_precisions(
                MultiTaskModel.load(out), tests, params.export.latency_calls, params.export.throughput_repeats
            )
            card = model_card(
                manifest,
                MergedMetrics.read(paths.merged_metrics(combo)),
                {t: SingleMetrics.read(paths.single_metrics(t)) for t in members},
                {t: BaselineMetrics.read(paths.baseline_metrics(t)) for t in members},
                compression,
                str(paths.export_dir(combo)),
            )
            write_text(out / CARD, card)
        result = {
            "combination": combo,
            "method": method,
            "validation_mean_normalized_accuracy": scores[method],
            "compression": compression,
        }
        run.log_metrics({f"export/{combo}/{name}": m for name, m in compression["precisions"].items()})
        if params.export.registry:
            from loramerge.registry import (
                register_export,  # import cost: MLflow's model flavours, only when registering
            )

            result["registry"] = run.guarded(
                "register model", register_export, paths.export_dir(combo), run.uri, run.run_id
            )
        write_json(paths.export_metrics(combo), result)
    return paths.export_dir(combo)


def run(params: Params, combo: str) -> Path:
    """`loramerge export --combo C`."""
    return export_combination(params, combo)
