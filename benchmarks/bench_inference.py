"""Multi-task inference: one merged model serving k tasks versus k unmerged adapters (k = 2, 3).

Every input gets a prediction for every one of the k tasks (a tweet classified for
emotion, offensiveness and topic at once). The merged model runs the encoder once per
batch and feeds every task head (`loramerge.model.predict`); the unmerged setups run the
encoder once per task, either with each adapter's update pre-applied to the weights (the
fastest unmerged setup: k patched copies, no LoRA overhead) or as PEFT serves several
adapters, one `PeftModel` switched with `set_adapter` (LoRA computed beside each layer).
Goal: merged at least 0.9·k times faster than k passes.

Adapters and heads are random (timing does not depend on their values) with the shapes
params.yaml configures; inputs are the default tasks' real test texts, batched as the
evaluation stage batches them (tokenised once, sorted by length, padded per batch).

    python -m benchmarks.bench_inference [--examples 128] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from benchmarks.common import best_time, ratio, task_texts
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import TokenizedTexts
from loramerge.config import load_params
from loramerge.lora import PEFT_PREFIX, deltas_of, patched, resolve_targets
from loramerge.merging import TaskUpdate, get_method
from loramerge.model import ClassificationHead, predict


def peft_model_with_adapters(params, k: int):
    """A PEFT model holding k random adapters of the configured rank and targets."""
    settings, encoder = params.lora, load_encoder(params.backbone)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=resolve_targets(encoder, settings.targets),
        init_lora_weights=False,
    )
    model = get_peft_model(encoder, config, adapter_name="task0")
    for i in range(1, k):
        model.add_adapter(f"task{i}", config)
    return model.eval()


def updates_of(model, k: int) -> list[TaskUpdate]:
    factors = {f"task{i}": {} for i in range(k)}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in factors:
                b = module.lora_B[adapter].weight.detach() * module.scaling[adapter]
                factors[adapter][name.removeprefix(PEFT_PREFIX)] = (
                    b.clone(),
                    module.lora_A[adapter].weight.detach().clone(),
                )
    return [TaskUpdate(name, f) for name, f in factors.items()]


def measure(params, k: int, examples: int, repeats: int) -> dict:
    tasks = list(params.tasks)[:k]
    tokenizer = load_tokenizer(params.backbone)
    texts = [t for task in tasks for t in task_texts(params, task, "test", examples)]
    batches = list(
        TokenizedTexts(tokenizer, texts, None, params.backbone.max_length).sorted_batches(params.evaluate.batch_size)
    )
    hidden = load_encoder(params.backbone).config.hidden_size
    heads = {f"task{i}": ClassificationHead(hidden, 6, 0.0).eval() for i in range(k)}
    peft_model = peft_model_with_adapters(params, k)
    updates = updates_of(peft_model, k)
    encoder = load_encoder(params.backbone).eval()
    merged = get_method("task_arithmetic").merge(updates, get_method("task_arithmetic").Config(scaling=1.0))
    pooling = params.backbone.pooling
    with torch.inference_mode():
        with patched(encoder, merged.deltas):
            merged_s = best_time(lambda: predict(encoder, heads, batches, pooling), repeats)
        patched_s = 0.0
        for update in updates:
            with patched(encoder, deltas_of(update)):
                patched_s += best_time(
                    lambda update=update: predict(encoder, {update.name: heads[update.name]}, batches, pooling),
                    repeats,
                )
        peft_s = 0.0
        for update in updates:
            peft_model.set_adapter(update.name)
            peft_s += best_time(
                lambda update=update: predict(peft_model, {update.name: heads[update.name]}, batches, pooling), repeats
            )
    return {"k": k, "inputs": len(texts), "merged_s": merged_s, "patched_s": patched_s, "peft_s": peft_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=128, help="test texts per task")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings per side")
    args = parser.parse_args()
    params = load_params("params.yaml")
    rows = [measure(params, k, args.examples, args.repeats) for k in (2, 3)]
    print("## Multi-task inference: merged (one pass, k heads) vs k adapter passes\n")
    print(
        f"`{params.backbone.name}`, LoRA r={params.lora.rank} on `{params.lora.targets}`, {args.examples} real test texts per task, "
        f"every input classified for all k tasks, batch {params.evaluate.batch_size}, best of {args.repeats}. Goal: ≥ 0.9·k.\n"
    )
    print(
        "| k | inputs | merged s | k pre-applied passes s | speed-up | PEFT `set_adapter` passes s | speed-up | goal | met |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        goal = 0.9 * row["k"]
        met = "yes" if row["patched_s"] / row["merged_s"] >= goal else "no"
        print(
            f"| {row['k']} | {row['inputs']} | {row['merged_s']:.2f} | {row['patched_s']:.2f} | {ratio(row['patched_s'], row['merged_s'])} | "
            f"{row['peft_s']:.2f} | {ratio(row['peft_s'], row['merged_s'])} | {goal:.1f}× | {met} |"
        )
    print("\nThe goal is judged against the pre-applied passes, the faster unmerged setup.")


if __name__ == "__main__":
    main()
