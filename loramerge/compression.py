"""Compressed variants of an exported multi-task model: int8 dynamic quantization and bf16.

What a user trades when serving the merged model smaller: size on disk, per-task test
accuracy and CPU latency, measured for fp32 / int8 / bf16 on the same texts. int8 is
PyTorch's dynamic quantization of the encoder's nn.Linear layers (weights int8, activations
quantized per batch); bf16 casts the encoder and is measured only where the CPU has bf16
units (AVX512-BF16 or AMX), because elsewhere it is emulated and its timing means nothing.
Heads stay fp32 in every variant: they are a few kB and their inputs are cast back to fp32.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from loramerge.cpu import cpu_has_bf16
from loramerge.multitask import MultiTaskModel
from loramerge.tokens import entity_metrics


def variant(model: MultiTaskModel, name: str) -> MultiTaskModel:
    """A copy of the model in one precision (fp32, int8 or bf16); the original is left untouched."""
    if name == "fp32":
        return model
    encoder = copy.deepcopy(model.encoder)
    if name == "int8":
        with warnings.catch_warnings():  # torch deprecates its own quantized tensors inside quantize_dynamic
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            encoder = torch.ao.quantization.quantize_dynamic(encoder, {torch.nn.Linear}, dtype=torch.qint8)
    elif name == "bf16":
        encoder = encoder.to(torch.bfloat16)
    else:
        raise ValueError(f"unknown precision {name!r}; choose fp32, int8 or bf16")
    return MultiTaskModel(model.folder, encoder, model.processor, model.heads, model.labels, model.manifest)


def size_on_disk(model: MultiTaskModel) -> int:
    """Bytes of the encoder's and heads' weights saved with torch.save (one format for every precision)."""
    state = {"encoder": model.encoder.state_dict(), "heads": {t: h.state_dict() for t, h in model.heads.items()}}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pt"
        torch.save(state, path)
        return os.path.getsize(path)


def accuracies(model: MultiTaskModel, tests: Mapping[str, tuple[Sequence, list]], batch_size: int) -> dict[str, float]:
    """Each member task's score on its own test examples (texts or images): accuracy against gold label names, or
    for a word tagger entity micro-F1 against gold tag lists (the evaluate stages' scores, through the exported
    model's own API)."""
    result = {}
    for task, (examples, gold) in tests.items():
        predicted = model.predict_frame(examples, batch_size)[task].tolist() if len(examples) else []
        if model.heads[task].per_token:
            result[task] = entity_metrics(gold, [tags.split() for tags in predicted])["micro_f1"]
        else:
            result[task] = float(np.mean([p == g for p, g in zip(predicted, gold)])) if gold else float("nan")
    return result


def latency(
    classify: Callable[[Sequence, int], object], examples: Sequence, calls: int, repeats: int, batch: int = 64
) -> dict[str, float]:
    """Batch-1 latency p50/p95 in ms over `calls` single examples, and batch-`batch` throughput (examples/s, best
    of `repeats`) of `classify(examples, batch_size)`: tokenising (or decoding images) included, as a caller of
    `predict` sees it. A warm-up call precedes each measurement."""
    classify(examples[:1], 1)
    single = []
    for i in range(calls):
        started = time.perf_counter()
        classify([examples[i % len(examples)]], 1)
        single.append((time.perf_counter() - started) * 1000)
    chunk = [examples[i % len(examples)] for i in range(batch)]
    classify(chunk, batch)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        classify(chunk, batch)
        best = min(best, time.perf_counter() - started)
    p95 = statistics.quantiles(single, n=20, method="inclusive")[18] if len(single) > 1 else single[0]
    return {
        "latency_b1_p50_ms": statistics.median(single),
        "latency_b1_p95_ms": p95,
        f"throughput_b{batch}_per_s": batch / best,
    }


def compare_precisions(
    model: MultiTaskModel,
    tests: Mapping[str, tuple[Sequence, list]],
    calls: int,
    repeats: int,
    batch_size: int = 64,
) -> dict:
    """fp32 / int8 / bf16 (bf16 only with native CPU support): size, per-task test accuracy, latency."""
    names = ["fp32", "int8"] + (["bf16"] if cpu_has_bf16() else [])
    examples = [e for task_examples, _ in tests.values() for e in task_examples]
    table = {}
    for name in names:
        compressed = variant(model, name)
        with torch.inference_mode():
            table[name] = {
                "size_bytes": size_on_disk(compressed),
                "accuracy": accuracies(compressed, tests, batch_size),
                **latency(compressed.probabilities, examples, calls, repeats),
            }
    return {
        "precisions": table,
        "bf16_native": cpu_has_bf16(),
        "torch_threads": torch.get_num_threads(),
        "examples": {task: len(labels) for task, (_, labels) in tests.items()},
        "latency_calls": calls,
        "throughput_repeats": repeats,
    }
