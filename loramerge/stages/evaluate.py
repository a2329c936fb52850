"""Stages `evaluate@<task>`, `evaluate_baselines@<task>`, `evaluate_pair@…`, `evaluate_triple@…`, `evaluate_many@…`.

Test-split scores as JSON that `dvc metrics` reads.

A single-task adapter is scored on its own task; a merged model on each member task with
that task's own head, and its accuracy is normalized by the single adapter's. Both go
through the same path (base encoder + exact ΔW + head), so the numbers are comparable.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from loramerge import paths
from loramerge.atomic import check_writable, write_text
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import PixelImages, TokenizedTexts
from loramerge.config import ConfigError, Params
from loramerge.data import load_split, prepared_splits
from loramerge.evaluation import JointHead, all_logits, check_head, load_head, load_task_split, score
from loramerge.lists import combination_kind, split_combination
from loramerge.lora import deltas_of, load_updates, patched, saved_deltas
from loramerge.metrics import mean_normalized_accuracy, normalized_accuracy
from loramerge.model import ClassificationHead, predict
from loramerge.precision import resolve
from loramerge.records import (
    BASELINE_PREDICTIONS,
    MERGED_PREDICTIONS,
    BaselineMetrics,
    BaselineScores,
    InferenceCost,
    JointScores,
    MergedMetrics,
    MergedTaskScores,
    MergeManifest,
    MethodResult,
    PrecisionRecord,
    PreparedStats,
    SingleMetrics,
    TrainMetrics,
)
from loramerge.tasktypes import Scored
from loramerge.tracking import stage_run
from loramerge.weights import check_weights

HELP = (
    "score a single adapter (--task), its baselines (--task --baselines) or a combination's merges (--combo) on test"
)
ARGUMENTS = {
    "--task": {"help": "a task, or its replica <task>-repeat<k>"},
    "--combo": {"help": "tasks joined by '+', e.g. emotion+agnews"},
    "--baselines": {"action": "store_true", "help": "with --task: score the head-only and full fine-tuning baselines"},
}


def evaluate_single(params: Params, name: str) -> Path:
    """The single-task adapter's test metrics (of a task or one of its replicas), next to the majority-class baseline."""
    check_head(params, name, paths.trained_model(name, "lora"), paths.training_stage(name))
    check_weights(paths.adapter_dir(name) / "adapter_model.safetensors")
    check_writable(paths.single_metrics(name), paths.single_predictions(name))
    task = params.task_of(name)
    tokenizer, encoder = load_tokenizer(params.backbone), load_encoder(params.backbone)
    (update,) = load_updates(encoder, {name: paths.adapter_dir(name)})
    test = load_task_split(params, name, "test", tokenizer)
    precision = resolve(params.evaluate.precision)
    settings = {"task": task, "replica": name, "split": "test", "precision": precision.record()}
    with stage_run(params.tracking, f"evaluate@{name}", settings) as run:
        run.log_datasets(prepared_splits(task, ("test",)))
        with patched(encoder, deltas_of(update)), precision.context():
            scored = score(encoder, load_head(name), test, params.evaluate.batch_size, params.backbone.pooling)
        predictions = pd.DataFrame(
            {
                "actual": scored.actual,
                "predicted": scored.predicted,
                "points": scored.points,
                "possible": scored.possible,
            }
        )
        write_text(paths.single_predictions(name), predictions.to_csv(index=False))
        metrics = SingleMetrics(
            **scored.metrics,
            majority_baseline_accuracy=PreparedStats.read(paths.prepared_stats(task)).majority_baseline_accuracy[
                "test"
            ],
            test_examples=test.examples,
            precision=PrecisionRecord(**precision.record()),
        )
        metrics.write(paths.single_metrics(name))
        run.log_metrics({f"test/{name}/{k}": v for k, v in metrics.model_dump().items() if v is not None})
    return paths.single_metrics(name)


def evaluate_baselines(params: Params, name: str) -> Path:
    """Head-only and full fine-tuning (of a task or one of its replicas) on the task's test split, scored exactly
    like the adapters."""
    for mode in ("head_only", "full"):
        check_head(params, name, paths.trained_model(name, mode), paths.training_stage(name, mode))
    check_writable(paths.baseline_metrics(name), paths.baseline_predictions(name))
    task = params.task_of(name)
    tokenizer = load_tokenizer(params.backbone)
    test = load_task_split(params, name, "test", tokenizer)
    precision = resolve(params.evaluate.precision)
    results, outcomes = {}, []
    settings = {"task": task, "replica": name, "split": "test", "precision": precision.record()}
    with stage_run(params.tracking, f"evaluate_baselines@{name}", settings) as run:
        run.log_datasets(prepared_splits(task, ("test",)))
        for mode in ("head_only", "full"):
            folder = paths.model_dir(name, mode)
            backbone = (
                params.backbone
                if mode == "head_only"
                else params.backbone.model_copy(update={"name": str(folder / "encoder")})
            )
            with precision.context():
                scored = score(
                    load_encoder(backbone),
                    ClassificationHead.load(folder),
                    test,
                    params.evaluate.batch_size,
                    params.backbone.pooling,
                )
            outcomes.append(example_points(scored, mode=mode))
            results[mode] = BaselineScores(
                **scored.metrics, train=TrainMetrics.read(folder / paths.TRAIN_METRICS_FILE)
            )
            run.log_metrics({f"test/{name}/{mode}/{k}": v for k, v in scored.metrics.items()})
        BASELINE_PREDICTIONS.write(paths.baseline_predictions(name), pd.concat(outcomes, ignore_index=True))
        BaselineMetrics(**results, precision=PrecisionRecord(**precision.record())).write(paths.baseline_metrics(name))
    return paths.baseline_metrics(name)


def example_points(scored: Scored, **labels: str) -> pd.DataFrame:
    """One row per test example: its points of its possible points, under the given labels (mode, or method and task)."""
    rows = pd.DataFrame({"example": range(len(scored.points)), "points": scored.points, "possible": scored.possible})
    return rows.assign(**labels)


def check_merged(params: Params, combo: str) -> list[str]:
    """The combination's members, once its merge stage's outputs are known to exist (checked before any model loads)."""
    members = params.members(combo)
    stage = paths.combination_stage("merge", combo)
    needed = [paths.merged_dir(combo) / "heads" / t / "head.safetensors" for t in members]
    needed += [paths.merge_manifest(combo, m) for m in params.merge.methods]
    needed += [paths.single_metrics(t) for t in members]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]} does not exist ({len(missing)} file(s) missing); run `dvc repro {paths.dvc_target(stage)}` and the members' evaluate stages first"
        )
    for task in members:
        check_head(params, task, paths.merged_dir(combo) / "heads" / task, stage)
    check_writable(paths.merged_metrics(combo), paths.merged_predictions(combo))
    return members


def evaluate_combination(params: Params, combo: str) -> Path:
    """Every merged model of one combination on each member's test split."""
    members = check_merged(params, combo)
    tokenizer, encoder = load_tokenizer(params.backbone), load_encoder(params.backbone)
    heads = {t: ClassificationHead.load(paths.merged_dir(combo) / "heads" / t) for t in members}
    kind, precision = combination_kind(combo), resolve(params.evaluate.precision)
    settings = {"combination": combo, "split": "test", "precision": precision.record()}
    with stage_run(params.tracking, paths.combination_stage("evaluate", combo), settings) as run, precision.context():
        run.log_datasets(split for t in members for split in prepared_splits(params.task_of(t), ("test",)))
        results, outcomes = score_merges(params, combo, encoder, tokenizer, heads)
        reference = joint_reference(params, encoder, tokenizer, heads, members)
        if reference is not None:
            for result in results.values():
                result.joint_normalized_accuracy = normalized_accuracy(result.joint.accuracy, reference.accuracy)
            run.log_metrics({f"joint/{kind}/{m}/{combo}": r.joint.accuracy for m, r in results.items()})
        MERGED_PREDICTIONS.write(paths.merged_predictions(combo), outcomes)
        for method, result in results.items():
            run.log_metrics({f"norm_acc/{kind}/{method}/{combo}": result.mean_normalized_accuracy})
        timing = inference_cost(
            params, encoder, tokenizer, members, heads, paths.merged_dir(combo) / next(iter(params.merge.methods))
        )
        run.log_metrics({f"inference/{kind}/{combo}/{k}": v for k, v in timing.model_dump().items()})
        merged = MergedMetrics(
            combination=combo,
            members=members,
            methods=results,
            inference=timing,
            precision=PrecisionRecord(**precision.record()),
            joint_single=reference,
        )
        merged.write(paths.merged_metrics(combo))
    return paths.merged_metrics(combo)


def score_merges(
    params: Params, combo: str, encoder, tokenizer, heads: dict[str, ClassificationHead]
) -> tuple[dict[str, MethodResult], pd.DataFrame]:
    """Each method's merged model on every member's test split, normalized by the single adapters, and each test
    example's points (one row per method, task and example). Reads and writes nothing but the
    merge stage's outputs, so benchmarks can time it alone."""
    members = split_combination(combo)
    single = {t: SingleMetrics.read(paths.single_metrics(t)).score for t in members}
    tests = {t: load_task_split(params, t, "test", tokenizer) for t in members}
    joint = JointHead(tests) if all(not s.kind.per_token for s in tests.values()) else None
    results, outcomes = {}, []
    for method in params.merge.methods:
        folder = paths.merged_dir(combo) / method
        per_task, correct = {}, {}
        with patched(encoder, saved_deltas(encoder, folder)):
            for task in members:
                if joint is None:
                    scored = score(
                        encoder, heads[task], tests[task], params.evaluate.batch_size, params.backbone.pooling
                    )
                else:  # one pass feeds every head: the task's own prediction, and the joint head's
                    logits = all_logits(
                        encoder, heads, tests[task], params.evaluate.batch_size, params.backbone.pooling
                    )
                    scored = tests[task].kind.score(tests[task].texts, logits[task].argmax(-1), tests[task].labels)
                    correct[task] = joint.correct(logits, task)
                outcomes.append(example_points(scored, method=method, task=task))
                per_task[task] = MergedTaskScores(
                    **scored.metrics,
                    single_score=single[task],
                    normalized_accuracy=normalized_accuracy(scored.metrics["score"], single[task]),
                )
        found = {t: m.score for t, m in per_task.items()}
        results[method] = MethodResult(
            tasks=per_task,
            mean_accuracy=sum(found.values()) / len(members),
            mean_normalized_accuracy=mean_normalized_accuracy(found, single),
            params=MergeManifest.read(paths.merge_manifest(combo, method)).params,
            joint=None if joint is None else joint.scores(correct),
        )
    return results, pd.concat(outcomes, ignore_index=True)


def joint_reference(
    params: Params, encoder, tokenizer, heads: dict[str, ClassificationHead], members: list[str]
) -> JointScores | None:
    """The unmerged single adapters in the joint setting: each member's test inputs through every member's own adapter
    and head, the logits side by side (what a merged model's joint accuracy is divided by); None with a word tagger."""
    tests = {t: load_task_split(params, t, "test", tokenizer) for t in members}
    if any(split.kind.per_token for split in tests.values()):
        return None
    joint = JointHead(tests)
    logits: dict[str, dict[str, np.ndarray]] = {t: {} for t in members}
    for update in load_updates(encoder, {t: paths.adapter_dir(t) for t in members}):
        with patched(encoder, deltas_of(update)):
            for task in members:
                logits[task] |= all_logits(
                    encoder,
                    {update.name: heads[update.name]},
                    tests[task],
                    params.evaluate.batch_size,
                    params.backbone.pooling,
                )
    return joint.scores({task: joint.correct({u: logits[task][u] for u in members}, task) for task in members})


def inference_cost(
    params: Params, encoder, tokenizer, members: list[str], heads: dict[str, ClassificationHead], merged_folder: Path
) -> InferenceCost:
    """Seconds to classify the members' test inputs (texts or images) for every member task: the merged model
    (one encoder pass feeding every head) versus the unmerged adapters (one pass per task).

    The unmerged side is timed at its best: each adapter's update pre-applied to the weights,
    so no LoRA overhead is counted; patching weights is outside both timings.
    """
    limit = params.evaluate.timing_examples
    frames = pd.concat([load_split(params.task_of(member), "test").head(limit) for member in members])
    inputs = (
        PixelImages(tokenizer, frames["image"].tolist(), None)
        if "image" in frames.columns
        else TokenizedTexts(tokenizer, frames["text"].tolist(), None, params.backbone.max_length)
    )
    batches = list(inputs.sorted_batches(params.evaluate.batch_size))
    with patched(encoder, saved_deltas(encoder, merged_folder)):
        started = time.perf_counter()
        predict(encoder, heads, batches, params.backbone.pooling)
        merged_s = time.perf_counter() - started
    unmerged_s = 0.0
    for update in load_updates(encoder, {t: paths.adapter_dir(t) for t in members}):
        with patched(encoder, deltas_of(update)):
            started = time.perf_counter()
            predict(encoder, {update.name: heads[update.name]}, batches, params.backbone.pooling)
            unmerged_s += time.perf_counter() - started
    return InferenceCost(
        examples=len(inputs),
        tasks=len(members),
        merged_s=merged_s,
        unmerged_s=unmerged_s,
        speedup=unmerged_s / merged_s,
    )


def run(params: Params, task: str | None, combo: str | None, baselines: bool) -> Path:
    """`loramerge evaluate --task T [--baselines]` or `--combo C`."""
    if (task is None) == (combo is None) or (baselines and task is None):
        raise ConfigError("evaluate takes --task T (with or without --baselines) or --combo C; give one of them")
    if combo is not None:
        return evaluate_combination(params, combo)
    params.replica(task)  # a task or one of its replicas; the error names the configured ones
    return evaluate_baselines(params, task) if baselines else evaluate_single(params, task)
