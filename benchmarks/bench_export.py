"""The shipped k-task model versus k single-task models, fp32 and int8 (k = 2, 3).

What a user serving k tasks chooses between: one exported model (merged update folded into
the encoder, k heads, one encoder pass per input) or k single-task models (the base encoder
with one adapter folded in each, one pass per task). Both classify the same real test texts
for all k tasks, through the same code as `loramerge predict` (`MultiTaskModel`: tokenising
included), in fp32 and with int8 dynamic quantization (`loramerge.compression`). Adapters
and heads are random with the shapes params.yaml configures: timing does not depend on
their values.

    python -m benchmarks.bench_export [--examples 64] [--calls 40] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_inference import peft_model_with_adapters, updates_of
from benchmarks.common import ratio, task_texts
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.compression import latency, variant
from loramerge.config import load_params
from loramerge.lora import deltas_of
from loramerge.merging import get_method
from loramerge.model import ClassificationHead
from loramerge.multitask import MultiTaskModel, fold


def multitask(params, deltas, heads: dict[str, ClassificationHead]) -> MultiTaskModel:
    """A model as `export` ships it, built in memory: the base encoder with `deltas` folded in, these heads."""
    encoder = fold(load_encoder(params.backbone), deltas)
    labels = {task: [str(i) for i in range(head.linear.out_features)] for task, head in heads.items()}
    manifest = {"pooling": params.backbone.pooling, "max_length": params.backbone.max_length, "members": list(heads)}
    return MultiTaskModel(None, encoder, load_tokenizer(params.backbone), heads, labels, manifest)


def measure(params, k: int, examples: int, calls: int, repeats: int) -> list[dict]:
    texts = [t for task in list(params.tasks)[:k] for t in task_texts(params, task, "test", examples)]
    updates = updates_of(peft_model_with_adapters(params, k), k)
    hidden = load_encoder(params.backbone).config.hidden_size
    heads = {u.name: ClassificationHead(hidden, 6, 0.0).eval() for u in updates}
    method = get_method("task_arithmetic")
    merged = multitask(params, method.merge(updates, method.Config(scaling=1.0)).deltas, heads)
    singles = [multitask(params, deltas_of(u), {u.name: heads[u.name]}) for u in updates]
    rows = []
    for precision in ("fp32", "int8"):
        one = variant(merged, precision)
        several = [variant(s, precision) for s in singles]

        def k_passes(batch, size, models=several):
            return [m.probabilities(batch, size) for m in models]

        with torch.inference_mode():
            rows.append(
                {
                    "k": k,
                    "precision": precision,
                    "merged": latency(one.probabilities, texts, calls, repeats),
                    "singles": latency(k_passes, texts, calls, repeats),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=64, help="test texts per task")
    parser.add_argument("--calls", type=int, default=40, help="single-text calls timed for batch-1 p50/p95")
    parser.add_argument("--repeats", type=int, default=3, help="batch-64 timings per side (best kept)")
    args = parser.parse_args()
    params = load_params("params.yaml")
    rows = [row for k in (2, 3) for row in measure(params, k, args.examples, args.calls, args.repeats)]
    print("## Exported k-task model vs k single-task models (fp32, int8)\n")
    print(
        f"`{params.backbone.name}`, LoRA r={params.lora.rank} on `{params.lora.targets}` folded in, "
        "real test texts, every "
        f"text classified for all k tasks through `MultiTaskModel` (tokenising included); batch-1 latency over "
        f"{args.calls} texts, batch-64 throughput best of {args.repeats}, {torch.get_num_threads()} threads. "
        "Ratios: k single models / the exported model (above 1: the exported model is faster).\n"
    )
    print(
        "| k | precision | exported b1 p50 ms | p95 ms | k singles b1 p50 ms | p95 ms | p50 ratio | p95 ratio "
        "| exported b64 texts/s | k singles b64 texts/s | throughput ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        m, s = row["merged"], row["singles"]
        print(
            f"| {row['k']} | {row['precision']} | {m['latency_b1_p50_ms']:.1f} | {m['latency_b1_p95_ms']:.1f} | "
            f"{s['latency_b1_p50_ms']:.1f} | {s['latency_b1_p95_ms']:.1f} | "
            f"{ratio(s['latency_b1_p50_ms'], m['latency_b1_p50_ms'])} | "
            f"{ratio(s['latency_b1_p95_ms'], m['latency_b1_p95_ms'])} | {m['throughput_b64_per_s']:.0f} | "
            f"{s['throughput_b64_per_s']:.0f} | {ratio(m['throughput_b64_per_s'], s['throughput_b64_per_s'])} |"
        )


if __name__ == "__main__":
    main()
