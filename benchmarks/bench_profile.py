"""Where a LoRA training step's time goes: torch.profiler over the stage's own module, float32 and bf16 autocast.

The step is the `train` stage's (ClassifierModule's loss on a real prepared batch, backward, AdamW
step), without Lightning around it, on the default backbone and task, batches from the stage's own
length-grouped loader. After warm-up steps, `--steps` steps are timed plain (examples/s) and then
profiled; the table lists the operators with the most self CPU time. The same is done under bf16
autocast, to say whether bf16 pays for training on this CPU (it does for inference where the CPU has
bf16 units; a training step also runs the backward pass, the optimizer and many small ops).

Dropout masks: the step is also timed with torch's `nn.Dropout` in place of the stage's `FastDropout`
(what `FastDropout` gains on this CPU), and with the dropout modules at p=0 (LoRA's on each adapted
layer's input, the hidden states', the head's; the attention probabilities' dropout is kept, since its
p also picks the attention kernel): what drawing the masks still costs.

Run after `dvc repro prepare@<task>`: `python -m benchmarks.bench_profile [--task emotion] [--steps 10]`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

from loramerge.backbone import load_tokenizer
from loramerge.config import load_params
from loramerge.cpu import bf16_units, cpu_model
from loramerge.data import load_labels
from loramerge.dropout import FastDropout
from loramerge.model import ClassificationHead, Classifier
from loramerge.stages.train import build_encoder
from loramerge.tasktypes import TASK_TYPES
from loramerge.training import ClassifierModule, TaskDataModule

ROWS = 12


def training_step(module: ClassifierModule, optimizer: torch.optim.Optimizer, batch: dict, autocast) -> None:
    with autocast():
        loss = torch.nn.functional.cross_entropy(module.classifier.logits(batch), batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def with_masks(module: torch.nn.Module, masks: str) -> None:
    """The step's dropout masks: "fast" (the stage's `FastDropout`), "torch" (`nn.Dropout`'s `bernoulli_`) or "none"
    (every dropout module at p=0 but the attention probabilities', read as SDPA's dropout_p: it picks the kernel)."""
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if masks == "torch" and isinstance(child, FastDropout):
                setattr(parent, child_name, torch.nn.Dropout(child.p))
            attention = f"{name}.{child_name}".endswith("attention.self.dropout")
            if masks == "none" and isinstance(child, torch.nn.Dropout) and not attention:
                child.p = 0.0


def measure(params, task: str, steps: int, bf16: bool, masks: str = "fast") -> tuple[float, list]:
    """Examples/s over `steps` plain steps, and the profiler's operator averages over as many more."""
    config = params.task_train(task)
    L.seed_everything(config.seed)
    encoder = build_encoder(params, "lora")
    head = ClassificationHead(encoder.config.hidden_size, len(load_labels(task)), config.head_dropout)
    module = ClassifierModule(Classifier(encoder, head, params.backbone.pooling).train(), config, total_steps=1000)
    with_masks(module, masks)
    optimizer = module.configure_optimizers()["optimizer"]
    data = TaskDataModule(
        task,
        TASK_TYPES["sequence_classification"],
        load_labels(task),
        load_tokenizer(params.backbone),
        params.backbone.max_length,
        config.batch_size,
        config.seed,
    )
    data.setup()
    batches = list(itertools.islice(iter(data.train_dataloader()), 3 + 2 * steps))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    for batch in batches[:3]:  # warm-up: allocator, first-call dispatch
        training_step(module, optimizer, batch, autocast)
    timed = batches[3 : 3 + steps]
    started = time.perf_counter()
    for batch in timed:
        training_step(module, optimizer, batch, autocast)
    rate = sum(len(b["labels"]) for b in timed) / (time.perf_counter() - started)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches[3 + steps :]:
            training_step(module, optimizer, batch, autocast)
    return rate, profiler.key_averages()


def top_operators(averages) -> list[tuple[str, float, float, int]]:
    """(operator, share of the profiled self CPU time, ms per step, calls) for the heaviest operators."""
    total = sum(event.self_cpu_time_total for event in averages)
    heaviest = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:ROWS]
    return [(e.key, e.self_cpu_time_total / total, e.self_cpu_time_total / 1000, e.count) for e in heaviest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="emotion")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    params = load_params("params.yaml")
    settings = {  # name: (bf16, masks)
        "float32, torch's masks": (False, "torch"),
        "float32 (the stage's)": (False, "fast"),
        "bf16, torch's masks": (True, "torch"),
        "bf16 (the stage's)": (True, "fast"),
        "bf16, no masks": (True, "none"),
    }
    results = {name: measure(params, args.task, args.steps, bf16, masks) for name, (bf16, masks) in settings.items()}
    print("## A LoRA training step, profiled (torch.profiler)\n")
    print(
        f"CPU: {cpu_model()}; native bf16 units: {', '.join(bf16_units()) or 'none'}; {torch.get_num_threads()} threads. "
        f"Model: {params.backbone.name}, LoRA r={params.lora.rank} on {params.lora.targets} (dropout "
        f"{params.lora.dropout}), head dropout {params.train.head_dropout}, batch {params.train.batch_size}, max "
        f"length {params.backbone.max_length}, task {args.task}, {args.steps} steps timed and as many profiled, "
        "after 3 warm-up steps. Masks: the stage's `FastDropout`, torch's `nn.Dropout` (`bernoulli_`), or none (every "
        "dropout module at p=0 but the attention probabilities', whose p also picks the attention kernel).\n"
    )
    baseline = results["float32, torch's masks"][0]
    print("| step | examples/s | vs float32 with torch's masks |")
    print("|---|---:|---:|")
    for name, (rate, _) in results.items():
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f}× |")
    print()
    profiled = ("float32 (the stage's)", "bf16, torch's masks", "bf16 (the stage's)")
    results = {name: results[name] for name in profiled}
    for name, (_, averages) in results.items():
        print(f"### {name}: operators by self CPU time\n")
        print("| operator | share | ms in all profiled steps | calls |")
        print("|---|---|---|---|")
        for key, share, ms, calls in top_operators(averages):
            print(f"| `{key}` | {share:.1%} | {ms:.0f} | {calls} |")
        print()


if __name__ == "__main__":
    main()
