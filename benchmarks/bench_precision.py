"""bf16 versus float32 inference on the default run's models: test accuracy side by side, and speed.

For every task, the single adapter; for every combination, the merge the export stage chose
(`metrics/export/<combo>.json`): each member's whole test split scored in float32 and under
bf16 autocast (`loramerge.precision`), exactly as the evaluate stage scores it. Beside each
float32 accuracy, its noise: the half-width of a 95% bootstrap interval (scipy.stats.bootstrap,
percentile, 2,000 resamples of the test examples). A task "moves" when bf16 changes its accuracy
by more than that noise; the verdict line says whether bf16 is safe for the final test
evaluation or only for the search. Speed is test examples per second through the patched
encoder and head, float32 and bf16, on the same batches.

Needs the default pipeline's outputs: run `make run` first.

    python -m benchmarks.bench_precision
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import bootstrap

from loramerge import paths
from loramerge.atomic import read_json
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.config import load_params
from loramerge.cpu import bf16_units, cpu_model
from loramerge.evaluation import TaskSplit, load_head, load_task_split, score
from loramerge.lists import split_combination
from loramerge.lora import deltas_of, load_updates, patched, saved_deltas
from loramerge.model import ClassificationHead
from loramerge.precision import Precision, resolve

FORMATS = {"fp32": resolve("32"), "bf16": resolve("bf16")}


def noise(correct: np.ndarray) -> float:
    """Half-width of the 95% bootstrap interval of an accuracy (the mean of 0/1 correctness)."""
    interval = bootstrap(
        (correct,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile", random_state=0
    ).confidence_interval
    return float(interval.high - interval.low) / 2


def scored(
    encoder, head: ClassificationHead, split: TaskSplit, params, precision: Precision
) -> tuple[np.ndarray, float]:
    """Per-example correctness and examples/s of one head on one split in one precision (the second of two passes)."""
    with precision.context():
        for _ in range(2):  # the first pass warms up (bf16 weight casts, allocator)
            started = time.perf_counter()
            predicted = score(encoder, head, split, params.evaluate.batch_size, params.backbone.pooling)[1]
    return (predicted == split.labels).astype(float), len(split.labels) / (time.perf_counter() - started)


def compare(model: str, encoder, deltas, heads: dict, splits: dict, params) -> list[dict]:
    rows = []
    with patched(encoder, deltas):
        for task, head in heads.items():
            (fp32, fp32_rate), (bf16, bf16_rate) = (
                scored(encoder, head, splits[task], params, p) for p in FORMATS.values()
            )
            row = {"model": model, "task": task, "fp32": fp32.mean(), "bf16": bf16.mean(), "noise": noise(fp32)}
            rows.append({**row, "speedup": bf16_rate / fp32_rate})
            print(f"  {model} {task}: fp32 {row['fp32']:.4f} bf16 {row['bf16']:.4f} ±{row['noise']:.4f}", flush=True)
    return rows


def main() -> None:
    params = load_params("params.yaml")
    tokenizer, encoder = load_tokenizer(params.backbone), load_encoder(params.backbone).eval()
    splits = {t: load_task_split(t, "test", tokenizer, params.backbone.max_length) for t in params.tasks}
    rows = []
    for update in load_updates(encoder, {t: paths.adapter_dir(t) for t in params.tasks}):
        rows += compare("single", encoder, deltas_of(update), {update.name: load_head(update.name)}, splits, params)
    for combo in params.shipped():
        method = read_json(paths.METRICS / "export" / f"{combo}.json")["method"]
        heads = {t: ClassificationHead.load(paths.merged_dir(combo) / "heads" / t) for t in split_combination(combo)}
        deltas = saved_deltas(encoder, paths.merged_dir(combo) / method)
        rows += compare(f"{combo} ({method})", encoder, deltas, heads, splits, params)
    moved = [r for r in rows if abs(r["bf16"] - r["fp32"]) > r["noise"]]
    sizes = ", ".join(f"{t}: {len(s.labels)}" for t, s in splits.items())
    units = ", ".join(bf16_units()) or "none (bf16 emulated)"
    print("## Inference precision: bf16 autocast versus float32\n")
    print(
        f"CPU: {cpu_model()}; native bf16 units: {units}. Model: {params.backbone.name}, max length "
        f"{params.backbone.max_length}, batch {params.evaluate.batch_size}. Test examples per task: {sizes}. "
        "Noise: half-width of the float32 accuracy's 95% bootstrap interval.\n"
    )
    print("| model | task | fp32 acc | bf16 acc | bf16 − fp32 | noise (±) | bf16 speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        diff = r["bf16"] - r["fp32"]
        print(
            f"| {r['model']} | {r['task']} | {r['fp32']:.4f} | {r['bf16']:.4f} | {diff:+.4f} | {r['noise']:.4f} | {r['speedup']:.2f}× |"
        )
    largest = max(abs(r["bf16"] - r["fp32"]) for r in rows)
    median_speedup = float(np.median([r["speedup"] for r in rows]))
    verdict = (
        "no task moves by more than its noise: bf16 is safe for the final test evaluation as well as the search"
        if not moved
        else f"{len(moved)} task(s) move by more than their noise: keep float32 for the final test evaluation"
    )
    print(
        f"\nLargest change {largest:.4f}; median bf16 speed-up {median_speedup:.2f}× over {len(rows)} model-task pairs. "
        f"Verdict: {verdict}."
    )


if __name__ == "__main__":
    main()
