"""How merge and evaluation time grow with the number of tasks n, and what n = 20 would cost.

Pairs grow as n(n-1)/2 and triples as n(n-1)(n-2)/6, and each combination costs a merge
with a validation search per method plus a test evaluation per method. For n = 2…6 (the six
task folders in data.local_dir), every pair and triple is merged and evaluated with the
stages' own code (`run_search` over `ValidationObjective.trial`, `score`) on a reduced
workload: three methods (task arithmetic, TIES, KnOTS-TIES, searched as params.yaml says),
`--val` validation and `--test` test texts per task. Adapters and heads are random (time
does not depend on their values) with the configured rank and targets.

The fit `seconds = a·pairs + b·triples` says whether the cost is the combinations and
nothing else; n = 20 is then projected twice: for this workload, and for the default
configuration from the per-stage times of the last `dvc repro` (logs/stage_times.jsonl),
in full and with the `combos:` caps that params.yaml offers for large n.

    python -m benchmarks.bench_scaling [--max-tasks 6] [--val 32] [--test 64]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from itertools import combinations
from math import comb

import numpy as np

from benchmarks.bench_evaluation import last_stage_seconds
from benchmarks.bench_inference import peft_model_with_adapters, updates_of
from benchmarks.common import task_texts
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import TokenizedTexts
from loramerge.combinations import choose_combinations, coverage
from loramerge.config import load_params
from loramerge.data import local_data_dir
from loramerge.evaluation import TaskSplit, score
from loramerge.lora import patched
from loramerge.merging import get_method
from loramerge.model import ClassificationHead
from loramerge.search import run_search
from loramerge.settings import SearchSpace
from loramerge.stages.merge import ValidationObjective

METHODS = ("task_arithmetic", "ties", "knots_ties")


def split_of(params, tokenizer, task: str, split: str, limit: int) -> TaskSplit:
    texts = task_texts(params, task, split, limit)
    return TaskSplit(
        task, TokenizedTexts(tokenizer, texts, None, params.backbone.max_length), np.zeros(len(texts), dtype=int)
    )


def merge_and_evaluate(params, encoder, members, updates, heads, val, test) -> None:
    """One combination, as merge_<kind>@ and evaluate_<kind>@ do it: search each method on
    validation, then score the chosen merge on every member's test texts."""
    chosen = [u for u in updates if u.name in members]
    objective = ValidationObjective(encoder, {t: heads[t] for t in members}, {t: val[t] for t in members}, params)
    objective.measure_singles(chosen)
    for name in METHODS:
        method, space = get_method(name), params.merge.methods.get(name, SearchSpace({}))
        best, _ = run_search(method, space, params.merge.search, partial(objective.trial, method, chosen))
        with patched(encoder, best.result.deltas):
            for task in members:
                score(encoder, heads[task], test[task], params.evaluate.batch_size, params.backbone.pooling)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-tasks", type=int, default=6)
    parser.add_argument("--val", type=int, default=32, help="validation texts per task for the search")
    parser.add_argument("--test", type=int, default=64, help="test texts per task for the evaluation")
    args = parser.parse_args()
    params = load_params("params.yaml")
    folder = local_data_dir(params)
    available = [
        *params.tasks,
        *sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in params.tasks),
    ][: args.max_tasks]
    tokenizer = load_tokenizer(params.backbone)
    encoder = load_encoder(params.backbone).eval()
    peft_model = peft_model_with_adapters(params, len(available))
    updates = [type(u)(available[i], u.factors) for i, u in enumerate(updates_of(peft_model, len(available)))]
    del peft_model
    heads = {t: ClassificationHead(encoder.config.hidden_size, 6, 0.0).eval() for t in available}
    val = {t: split_of(params, tokenizer, t, "validation", args.val) for t in available}
    test = {t: split_of(params, tokenizer, t, "test", args.test) for t in available}
    rows = []
    for n in range(2, len(available) + 1):
        tasks = available[:n]
        started = time.perf_counter()
        for size in (2, 3):
            for members in combinations(tasks, size):
                merge_and_evaluate(params, encoder, list(members), updates, heads, val, test)
        rows.append((n, comb(n, 2), comb(n, 3), time.perf_counter() - started))
        print(f"  n={n}: {rows[-1][3]:.1f} s", flush=True)
    report(params, rows, args)


def report(params, rows, args) -> None:
    n, pairs, triples, seconds = (np.array(c, dtype=float) for c in zip(*rows))
    (a, b), *_ = np.linalg.lstsq(np.stack([pairs, triples], 1), seconds, rcond=None)
    fitted = a * pairs + b * triples
    r2 = 1 - ((seconds - fitted) ** 2).sum() / ((seconds - seconds.mean()) ** 2).sum()
    slope = np.polyfit(np.log(n[1:]), np.log(seconds[1:]), 1)[0] if len(n) > 2 else float("nan")
    print("## Scaling with the number of tasks\n")
    print(
        f"Every pair and triple of the first n tasks merged (validation search: {', '.join(METHODS)}, {args.val} validation texts "
        f"per task) and evaluated ({args.test} test texts per task), `{params.backbone.name}`, random rank-{params.lora.rank} adapters.\n"
    )
    print("| n | pairs | triples | seconds | fit a·pairs + b·triples |")
    print("|---:|---:|---:|---:|---:|")
    for row, fit in zip(rows, fitted):
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]:.1f} | {fit:.1f} |")
    print(
        f"\nFit: a = {a:.2f} s per pair, b = {b:.2f} s per triple (R² = {r2:.3f}); log-log slope over n = 3…{int(n[-1])}: "
        f"{slope:.2f} (it tends to 3 as triples take over). This workload at n = 20: {(a * comb(20, 2) + b * comb(20, 3)) / 3600:.1f} h."
    )
    merges = last_stage_seconds(("merge_pair@", "merge_triple@", "evaluate_pair@", "evaluate_triple@"))
    per_pair = [v for k, v in merges.items() if k.split("@")[0].endswith("pair")]
    per_triple = [v for k, v in merges.items() if k.split("@")[0].endswith("triple")]
    if per_pair and per_triple:
        pair_s = sum(per_pair) / (len(per_pair) / 2)
        triple_s = sum(per_triple) / (len(per_triple) / 2)
        tasks20 = [f"t{i}" for i in range(20)]
        print(
            f"\n**The default configuration at n = 20**, from the last `dvc repro`'s stage times (merge + evaluation: "
            f"{pair_s / 60:.1f} min per pair, {triple_s / 60:.1f} min per triple, one process):\n"
        )
        print("| `combos:` setting | pairs | triples | merge + evaluation | task pairs met in a triple |")
        print("|---|---:|---:|---:|---:|")
        for max_triples in (None, 200, 50):
            chosen = choose_combinations(tasks20, 3, max_triples, seed=0)
            covered = coverage(tasks20, chosen, 3)
            hours = (comb(20, 2) * pair_s + len(chosen) * triple_s) / 3600
            print(
                f"| max_triples: {max_triples or 'null'} | 190 | {len(chosen)} | {hours:.1f} h | {covered['task_pairs_met']:.0%} |"
            )


if __name__ == "__main__":
    main()
