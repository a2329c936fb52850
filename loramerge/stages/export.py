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

import hashlib
import shutil
from pathlib import Path

from loramerge import paths
from loramerge.atomic import atomic_dir, check_writable, read_json, write_json, write_text
from loramerge.backbone import backbone_config, is_vision, load_encoder, load_tokenizer
from loramerge.compression import compare_precisions
from loramerge.config import Params
from loramerge.data import load_split, prepared_splits, stratified_subsample
from loramerge.evaluation import merged_deltas
from loramerge.lists import split_combination
from loramerge.metrics import ranked
from loramerge.modelcard import model_card
from loramerge.multitask import ADAPTER, EXPORT_MANIFEST, HEADS, LABELS_FILE, MultiTaskModel, fold
from loramerge.records import BaselineMetrics, MergedMetrics, MergeManifest, SingleMetrics
from loramerge.tracking import git_commit, stage_run

CARD = "README.md"
UNHASHED = {CARD, EXPORT_MANIFEST}
"""Files left out of the content hash: they record when and how, not what the model computes."""


def export_stage(combo: str) -> str:
    """The combination's export stage in dvc.yaml: export_pair@, export_triple@ or export_many@<combo>."""
    return paths.combination_stage("export", combo)


def choose_method(params: Params, combo: str) -> tuple[str, dict[str, float]]:
    """The method with the best mean normalized validation accuracy (ties: first in merge.methods), and every
    method's score."""
    scores = {m: MergeManifest.read(paths.merge_manifest(combo, m)).validation.score for m in params.merge.methods}
    return max(scores, key=lambda m: ranked(scores[m])), scores  # max keeps the first of equals


def content_hash(folder: Path) -> str:
    """sha256 over every file that defines the model's outputs (names and bytes), in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in UNHASHED
    ):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write_model_files(out: Path, params: Params, combo: str, method: str) -> None:
    """Encoder with the merged update folded in, tokenizer or image processor, heads with label maps, and the PEFT
    adapter if low-rank."""
    merged = paths.merged_dir(combo)
    encoder = load_encoder(params.backbone)
    fold(encoder, merged_deltas(encoder, merged / method))
    encoder.save_pretrained(out, safe_serialization=True)
    load_tokenizer(params.backbone).save_pretrained(out)
    for task in split_combination(combo):
        shutil.copytree(merged / "heads" / task, out / HEADS / task)
    if MergeManifest.read(paths.merge_manifest(combo, method)).format == "peft_adapter":
        (out / ADAPTER).mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(merged / method / name, out / ADAPTER / name)


def export_manifest(params: Params, combo: str, method: str, scores: dict[str, float], out: Path) -> dict:
    """export.json: what the model is (members, method, hyper-parameters, hashes) and where it came from."""
    merge = MergeManifest.read(paths.merge_manifest(combo, method))
    members = split_combination(combo)
    return {
        "combination": combo,
        "members": members,
        "method": method,
        "params": merge.params,
        "format": merge.format,
        "base_model": params.backbone.name,
        "input": "image" if is_vision(backbone_config(params.backbone)) else "text",
        "pooling": params.backbone.pooling,
        "max_length": params.backbone.max_length,
        "labels": {t: read_json(out / HEADS / t / LABELS_FILE)["labels"] for t in members},
        "validation": merge.validation.model_dump(),
        "candidates": scores,
        "selection": "best mean normalized validation accuracy; ties: first in merge.methods",
        "member_hashes": {t: hashes.model_dump() for t, hashes in merge.members.items()},
        "git_commit": git_commit(Path(".")),
        "content_sha256": content_hash(out),
    }


def member_tests(params: Params, members: list[str]) -> dict:
    """Up to export.compression_examples test examples per member (stratified, seeded), as the exported model takes
    them (texts, or images' file bytes), with their gold label names (a word tagger's: its tag lists, the texts
    being its words joined by spaces)."""
    tests = {}
    for task in members:
        frame = stratified_subsample(
            load_split(params.task_of(task), "test"), params.export.compression_examples, params.data.subsample_seed
        )
        gold = frame["tags"].map(list) if "tags" in frame.columns else frame["label"]
        tests[task] = (frame["image" if "image" in frame.columns else "text"].tolist(), gold.tolist())
    return tests


def export_combination(params: Params, combo: str) -> Path:
    """Write models/export/<combo>/ atomically, its compression metrics, and register it in MLflow."""
    if combo not in params.shipped():
        raise ValueError(f"combination {combo!r} is not in export.combinations of params.yaml; add it there")
    members = split_combination(combo)
    missing = [p for p in (paths.merged_dir(combo) / "heads", paths.merged_metrics(combo)) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]} not found: merge and evaluate {combo!r} first (`dvc repro {export_stage(combo)}`)"
        )
    check_writable(paths.export_metrics(combo), folders=(paths.export_dir(combo),))
    method, scores = choose_method(params, combo)
    merged_metrics = MergedMetrics.read(paths.merged_metrics(combo))
    singles = {t: SingleMetrics.read(paths.single_metrics(t)) for t in members}
    baselines = {t: BaselineMetrics.read(paths.baseline_metrics(t)) for t in members}
    run_params = {"combination": combo, "members": members, "method": method, "export": params.export.model_dump()}
    with stage_run(params.tracking, export_stage(combo), run_params) as run:
        run.log_datasets(split for task in members for split in prepared_splits(task, ("test",)))
        with atomic_dir(paths.export_dir(combo)) as out:
            write_model_files(out, params, combo, method)
            manifest = export_manifest(params, combo, method, scores, out)
            write_json(out / EXPORT_MANIFEST, manifest)
            model = MultiTaskModel.load(out)
            compression = compare_precisions(
                model,
                member_tests(params, members),
                params.export.latency_calls,
                params.export.throughput_repeats,
            )
            card = model_card(manifest, merged_metrics, singles, baselines, compression, str(paths.export_dir(combo)))
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
