"""Stages `merge_pair@<a+b>`, `merge_triple@<a+b+c>` and `merge_many@<a+b+c+d…>`: every configured method on one
combination.

Each method's hyper-parameters are chosen on the members' validation splits (mean
normalized validation accuracy); test data is never read here. Data-aware methods also get what
they read: RegMean the members' Gram matrices (stage `gram`, from their training texts), AdaMerging
an entropy probe on their unlabeled validation texts. Output, per method, under
models/merged/<combo>/<method>/: a PEFT adapter when the merged update is exactly
low-rank, else the dense per-layer updates as safetensors; always a manifest. The
members' heads are copied beside them, because a merged model is one encoder plus each
task's own head.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from loramerge import paths
from loramerge.atomic import atomic_dir, check_writable
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.config import Params
from loramerge.data import file_digest, prepared_splits
from loramerge.evaluation import JointHead, TaskSplit, all_logits, check_head, load_head, load_task_split, score
from loramerge.gram import load_grams
from loramerge.lists import COMBO_SEPARATOR
from loramerge.lora import AdapterError, check_same_base, deltas_of, load_updates, patched, save_low_rank_adapter
from loramerge.merging import MergeMethod, MergeResult, MethodConfig, TaskUpdate
from loramerge.merging.observed import DataAwareMethod, Observation, ObservedUpdate
from loramerge.metrics import mean_normalized_accuracy, normalized_accuracy
from loramerge.model import ClassificationHead
from loramerge.paths import DENSE_FILE, MANIFEST
from loramerge.precision import resolve
from loramerge.probe import EntropyProbe
from loramerge.records import MemberHashes, MergeManifest, PrecisionRecord, SearchRecord, ValidationSummary
from loramerge.search import Trial, check_methods, run_search
from loramerge.tracking import stage_run
from loramerge.weights import check_weights

HELP = "merge one combination with every configured method"
ARGUMENTS = {"--combo": {"required": True, "help": "tasks joined by '+', e.g. emotion+agnews"}}


def check_members(params: Params, members: list[str]) -> None:
    """Everything a merge needs exists and agrees, checked before any compute."""
    for task in members:
        adapter = paths.adapter_dir(task)
        if not (adapter / "adapter_config.json").exists():
            raise AdapterError(
                f"no adapter for task {task!r} at {adapter}; run `dvc repro {paths.dvc_target(paths.training_stage(task))}` first"
            )
        check_head(params, task, adapter, paths.training_stage(task))
        check_weights(adapter / "adapter_model.safetensors")
    check_same_base({t: paths.adapter_dir(t) for t in members}, params.backbone.name)


class ValidationObjective:
    """Mean normalized validation accuracy of a merge over its members (higher is better).

    The members' single-adapter scores on the same examples are measured once, as the normalizer;
    every forward pass runs in `merge.precision` (bf16 on CPUs with bf16 units under `auto`).
    """

    def __init__(
        self, encoder, heads: dict[str, ClassificationHead], splits: dict[str, TaskSplit], params: Params
    ) -> None:
        self.encoder, self.heads, self.splits = encoder, heads, splits
        self.batch_size, self.pooling = params.merge.batch_size, params.backbone.pooling
        self.precision = resolve(params.merge.precision)
        self.single: dict[str, float] = {}
        self.objective = params.merge.objective
        self.joint = JointHead(splits) if self.objective == "joint" else None
        self.single_joint: float | None = None

    def scores(self, deltas: dict[str, torch.Tensor], tasks: list[str] | None = None) -> dict[str, float]:
        """The score (accuracy; entity micro-F1 for a token task) of the encoder patched with `deltas` on each task's
        validation split (all members by default)."""
        with patched(self.encoder, deltas), self.precision.context():
            return {
                t: score(self.encoder, self.heads[t], self.splits[t], self.batch_size, self.pooling).metrics["score"]
                for t in tasks or self.splits
            }

    def joint_accuracy(self, deltas: dict[str, torch.Tensor]) -> tuple[dict[str, float], float]:
        """Each member's score and the joint setting's pooled accuracy, from the same passes (every head per split)."""
        scores, correct = {}, {}
        with patched(self.encoder, deltas), self.precision.context():
            for task, split in self.splits.items():
                logits = all_logits(self.encoder, self.heads, split, self.batch_size, self.pooling)
                scores[task] = split.kind.score(split.texts, logits[task].argmax(-1), split.labels).metrics["score"]
                correct[task] = self.joint.correct(logits, task)
        return scores, self.joint.scores(correct).accuracy

    def measure_singles(self, updates: list[TaskUpdate]) -> None:
        for update in updates:
            self.single[update.name] = self.scores(deltas_of(update), [update.name])[update.name]
        if self.joint is not None:  # each input through every member's own adapter and head
            logits: dict[str, dict[str, np.ndarray]] = {t: {} for t in self.splits}
            for update in updates:
                with patched(self.encoder, deltas_of(update)), self.precision.context():
                    for task, split in self.splits.items():
                        head = {update.name: self.heads[update.name]}
                        logits[task] |= all_logits(self.encoder, head, split, self.batch_size, self.pooling)
            correct = {t: self.joint.correct(logits[t], t) for t in self.splits}
            self.single_joint = self.joint.scores(correct).accuracy

    def trial(self, method: MergeMethod, updates: list[TaskUpdate], point: dict, config: MethodConfig) -> Trial:
        """Merge with one config and score it on every member's validation split, by the configured objective."""
        result = method.merge(updates, config)
        if self.joint is None:
            scores = self.scores(result.deltas)
            return Trial(point, config, mean_normalized_accuracy(scores, self.single), scores, result)
        scores, joint = self.joint_accuracy(result.deltas)
        return Trial(point, config, normalized_accuracy(joint, self.single_joint), scores, result)


def save_result(folder: Path, result: MergeResult, template_adapter: Path) -> str:
    """Low-rank results as a loadable PEFT adapter, others as dense safetensors; returns the format."""
    folder.mkdir(parents=True)
    if result.factors is not None:
        save_low_rank_adapter(folder, result.factors, template_adapter)
        return "peft_adapter"
    save_file({layer: delta.contiguous().float() for layer, delta in result.deltas.items()}, str(folder / DENSE_FILE))
    return "dense_deltas"


def observe(
    updates: list[TaskUpdate],
    needs: set[Observation],
    objective: ValidationObjective,
    params: Params,
    hashes: dict[str, MemberHashes],
) -> list[TaskUpdate]:
    """The members with what the configured data-aware methods read: Gram matrices of their training texts
    (stage `gram`), and an entropy probe on their unlabeled validation texts (the search's sample)."""
    if not needs:
        return updates
    return [
        ObservedUpdate(
            update.name,
            update.factors,
            grams=load_grams(update.name, hashes[update.name].adapter_sha256) if "grams" in needs else None,
            entropy=EntropyProbe(
                objective.encoder,
                objective.heads[update.name],
                objective.splits[update.name].texts,
                params.backbone.pooling,
                params.data.subsample_seed,
            )
            if "entropy" in needs
            else None,
        )
        for update in updates
    ]


def member_hashes(task: str) -> MemberHashes:
    adapter = paths.adapter_dir(task)
    return MemberHashes(
        adapter=str(adapter),
        adapter_sha256=file_digest(adapter / "adapter_model.safetensors"),
        head_sha256=file_digest(adapter / "head.safetensors"),
    )


def merge_combination(params: Params, combo: str) -> Path:
    """Merge one combination with every configured method; write models/merged/<combo>/ atomically."""
    members = params.members(combo)
    check_members(params, members)
    methods = check_methods(params.merge.methods)
    check_writable(folders=(paths.merged_dir(combo),))
    tokenizer = load_tokenizer(params.backbone)
    encoder = load_encoder(params.backbone)
    updates = load_updates(encoder, {t: paths.adapter_dir(t) for t in members})
    heads = {t: load_head(t) for t in members}
    splits = {
        t: load_task_split(
            params, t, "validation", tokenizer, params.merge.search_max_examples, params.data.subsample_seed
        )
        for t in members
    }
    hashes = {t: member_hashes(t) for t in members}  # read once: every method's manifest records them
    objective = ValidationObjective(encoder, heads, splits, params)
    objective.measure_singles(updates)
    needs = {method.needs for method in methods.values() if isinstance(method, DataAwareMethod)}
    updates = observe(updates, needs, objective, params, hashes)
    run_params = {
        "combination": combo,
        "members": members,
        "merge": params.merge.model_dump(),
        "backbone": params.backbone.name,
        "precision": objective.precision.record(),
    }
    stage = paths.combination_stage("merge", combo)
    with stage_run(params.tracking, stage, run_params) as run, atomic_dir(paths.merged_dir(combo)) as out:
        run.log_datasets(split for t in members for split in prepared_splits(params.task_of(t), ("validation",)))
        for task in members:
            (out / "heads" / task).mkdir(parents=True)
            shutil.copy2(paths.adapter_dir(task) / "head.safetensors", out / "heads" / task / "head.safetensors")
            shutil.copy2(paths.adapter_dir(task) / "labels.json", out / "heads" / task / "labels.json")
        for name, method in methods.items():
            manifest = merge_with(method, name, params, updates, objective, out / name, hashes)
            run.log_metrics({f"val_norm_acc/{name}": manifest.validation.mean_normalized_accuracy})
            pd.DataFrame(manifest.search.points).to_csv(out / name / "search.csv", index=False)
            for record in (MANIFEST, "search.csv"):  # the weights themselves live in DVC's cache, not twice
                run.log_artifacts(out / name / record, f"merged/{name}")
    return paths.merged_dir(combo)


def merge_with(
    method: MergeMethod,
    name: str,
    params: Params,
    updates: list[TaskUpdate],
    objective: ValidationObjective,
    folder: Path,
    hashes: dict[str, MemberHashes],
) -> MergeManifest:
    """Search the method's space on validation, save the best trial's merge and its manifest."""
    members = list(hashes)
    space = params.merge.methods[name]
    best, trials = run_search(method, space, params.merge.search, partial(objective.trial, method, updates))
    manifest = MergeManifest(
        combination=COMBO_SEPARATOR.join(members),
        method=name,
        params=best.config.model_dump(),
        format=save_result(folder, best.result, paths.adapter_dir(members[0])),
        base_model=params.backbone.name,
        data=method.data,
        members=hashes,
        search=SearchRecord(
            strategy=params.merge.search,
            space=space.root,
            metric="mean normalized validation score (accuracy; entity micro-F1 for token tasks)",
            points=[t.row() for t in trials],
        ),
        validation=ValidationSummary(
            examples={t: objective.splits[t].examples for t in members},
            single_scores=dict(objective.single),
            merged_scores=best.scores,
            mean_normalized_accuracy=mean_normalized_accuracy(best.scores, objective.single),
            precision=PrecisionRecord(**objective.precision.record()),
            objective=objective.objective,
            joint_normalized_accuracy=None if objective.joint is None else best.score,
        ),
    )
    manifest.write(folder / MANIFEST)
    return manifest


def run(params: Params, combo: str) -> Path:
    """`loramerge merge --combo C`."""
    return merge_combination(params, combo)
