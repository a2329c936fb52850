"""Evaluating a merge sweep: the evaluation stage's forward throughput versus a plain forward pass.

For every combination in params.yaml, `score_merges` (what `evaluate_pair`/`evaluate_triple`
run: read each method's merged weights, patch the encoder, score every member's test split)
is timed end to end and its throughput counted as test examples pushed through the encoder.
Beside it, the same model runs a plain batched forward over the same texts: tokenise each
batch of `evaluate.batch_size` in file order with padding, encoder, head; nothing else.
Goal: the stage keeps at least 80% of the plain throughput, so loading merged weights and
data does not dominate. The whole default sweep's absolute time (every merge and
evaluation stage) comes from the last `dvc repro`'s stage times (logs/stage_times.jsonl).

By default the first pair and the first triple are timed (the rate does not depend on
which); `--all` times every combination.

Needs the default pipeline's merge outputs: run `make run` first.

    python -m benchmarks.bench_evaluation [--all]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from loramerge import paths
from loramerge.backbone import load_encoder, load_tokenizer, pool
from loramerge.cli import STAGE_TIMES
from loramerge.config import load_params
from loramerge.data import load_split
from loramerge.lists import split_combination
from loramerge.lora import patched, saved_deltas
from loramerge.model import ClassificationHead
from loramerge.precision import resolve
from loramerge.stages.evaluate import score_merges


@torch.inference_mode()
def plain_forward(encoder, tokenizer, head, texts: list[str], batch_size: int, max_length: int, pooling: str) -> None:
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        head(pool(encoder(**batch).last_hidden_state, batch["attention_mask"], pooling)).argmax(-1)


def last_stage_seconds(prefixes: tuple[str, ...]) -> dict[str, float]:
    """The most recent recorded wall time of every DVC stage whose name starts with a prefix."""
    if not STAGE_TIMES.exists():
        return {}
    latest = {}
    for line in STAGE_TIMES.read_text().splitlines():
        entry = json.loads(line)
        if entry["stage"].startswith(prefixes):
            latest[entry["stage"]] = entry["seconds"]
    return latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--all", action="store_true", help="time every combination, not just the first pair and triple"
    )
    args = parser.parse_args()
    params = load_params("params.yaml")
    combos = params.combinations if args.all else [*list(params.pairs)[:1], *list(params.triples)[:1]]
    missing = [c for c in combos if not (paths.merged_dir(c) / next(iter(params.merge.methods))).exists()]
    if missing:
        raise SystemExit(f"no merged models for {missing}: run `make run` (dvc repro) first")
    tokenizer, encoder = load_tokenizer(params.backbone), load_encoder(params.backbone).eval()
    rows = []
    for combo in combos:
        members = split_combination(combo)
        started = time.perf_counter()
        heads = {t: ClassificationHead.load(paths.merged_dir(combo) / "heads" / t) for t in members}
        with resolve(params.evaluate.precision).context():
            score_merges(params, combo, encoder, tokenizer, heads)
        stage_s = time.perf_counter() - started
        texts = {t: load_split(t, "test")["text"].tolist() for t in members}
        examples = len(params.merge.methods) * sum(len(v) for v in texts.values())
        first = paths.merged_dir(combo) / next(iter(params.merge.methods))
        with patched(encoder, saved_deltas(encoder, first)):
            started = time.perf_counter()
            for task in members:
                head = ClassificationHead.load(paths.merged_dir(combo) / "heads" / task)
                plain_forward(
                    encoder,
                    tokenizer,
                    head,
                    texts[task],
                    params.evaluate.batch_size,
                    params.backbone.max_length,
                    params.backbone.pooling,
                )
            plain_s = time.perf_counter() - started
        plain_examples = sum(len(v) for v in texts.values())
        rows.append((combo, examples, stage_s, examples / stage_s, plain_examples / plain_s))
        print(f"  {combo}: {examples / stage_s:.0f} vs plain {plain_examples / plain_s:.0f} examples/s", flush=True)
    total_examples, total_s = sum(r[1] for r in rows), sum(r[2] for r in rows)
    plain_rate = sum(r[1] for r in rows) / sum(r[1] / r[4] for r in rows)
    print("## Evaluating the merge sweep: stage throughput vs a plain forward pass\n")
    sizes = ", ".join(f"{t}: {len(load_split(t, 'test'))}" for t in params.tasks)
    print(
        f"{len(rows)} of {len(params.combinations)} combinations × {len(params.merge.methods)} methods, every member's test split "
        f"({sizes} examples), `{params.backbone.name}`, batch {params.evaluate.batch_size}. Goal: ≥ 80% of plain.\n"
    )
    print("| combination | examples | stage s | stage examples/s | plain examples/s | stage / plain |")
    print("|---|---:|---:|---:|---:|---:|")
    for combo, examples, stage_s, stage_rate, plain in rows:
        print(f"| {combo} | {examples} | {stage_s:.1f} | {stage_rate:.0f} | {plain:.0f} | {stage_rate / plain:.0%} |")
    print(
        f"| **all** | {total_examples} | {total_s:.1f} | {total_examples / total_s:.0f} | {plain_rate:.0f} | **{total_examples / total_s / plain_rate:.0%}** |"
    )
    print(f"\nScoring these {len(rows)} combinations took {total_s / 60:.1f} min in this process.")
    merges = last_stage_seconds(("merge_pair@", "merge_triple@"))
    evaluations = last_stage_seconds(("evaluate_pair@", "evaluate_triple@"))
    if merges:
        print(
            f"Last `dvc repro` (logs/stage_times.jsonl): {len(merges)} merge stages took {sum(merges.values()) / 60:.1f} min "
            f"(validation search included), {len(evaluations)} evaluation stages {sum(evaluations.values()) / 60:.1f} min "
            "(process start, model loading and the inference timing included)."
        )


if __name__ == "__main__":
    main()
