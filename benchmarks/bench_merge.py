"""How long each merge method takes on bert-base-sized adapters, beside PEFT where PEFT computes the same thing.

    python -m benchmarks.bench_merge            # 12 layers, 2 and 3 adapters, ranks 8 and 64 (a few minutes)
    python -m benchmarks.bench_merge --quick    # 2 layers, rank 8 only (under a minute)

Adapters cover every linear layer of bert-base (query, key, value, attention.output.dense
768×768; intermediate.dense 3072×768; output.dense 768×3072) and are random: our merges get
`TaskUpdate`s built directly from random tensors, PEFT gets a randomly initialised
`BertModel(BertConfig())` (no download) with LoRA adapters of the same ranks and random B.
Timings use 2 threads; fast merges are timed best of 3.

PEFT equivalents (same result up to float error, checked in tests/unit/test_merging_peft.py):
ours `cat` = PEFT `cat` (weights 1); ours `linear` = PEFT `cat` with weights 1/n; ours
`svd(base=task_arithmetic, rank=n·r)` = PEFT `svd`; ours `svd(base=ties|magnitude_prune,
prune_scope=layer)` = PEFT `ties_svd` / `magnitude_prune_svd` at the same rank. PEFT's `linear`,
`ties`, `dare_*` and `magnitude_prune` merge A and B separately (cross terms B_i·A_j): no
equivalent, so not timed. PEFT's SVD variants are run with `svd_full_matrices=False`: the default
(True) computes full square U matrices and is far slower, which would flatter us.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from loramerge.merging import TaskUpdate, get_method

BERT_LINEAR = {
    "attention.self.query": (768, 768),
    "attention.self.key": (768, 768),
    "attention.self.value": (768, 768),
    "attention.output.dense": (768, 768),
    "intermediate.dense": (3072, 768),
    "output.dense": (768, 3072),
}
PEFT_TARGETS = list(BERT_LINEAR)
THREADS = 2


@dataclass(frozen=True)
class Case:
    """One row: our method and params, and PEFT's combination type and arguments if it has an equivalent."""

    label: str
    method: str
    params: Callable[[int, int], dict] = lambda n, r: {}
    peft: str | None = None
    peft_args: Callable[[int, int], dict] = lambda n, r: {}
    only: set[tuple[int, int]] | None = None  # the (n, rank) configurations to run (full run); None = all


@dataclass
class Row:
    label: str
    n: int
    rank: int
    ours: float
    peft_name: str = "—"
    peft: float | None = None


def cases() -> list[Case]:
    svd_args = lambda n, r: {"svd_rank": n * r, "svd_full_matrices": False}  # noqa: E731
    pruned = lambda base: (  # noqa: E731
        lambda n, r: {"base": base, "rank": n * r, "base_params": {"density": 0.2, "prune_scope": "layer"}}
    )
    pruned_peft = lambda n, r: {**svd_args(n, r), "density": 0.2}  # noqa: E731
    heavy = {(3, 8)}  # PEFT's dense SVD variants cost ~20 s each on 2 cores: one configuration
    return [
        Case("cat", "cat", peft="cat"),
        Case("linear", "linear", peft="cat (weights 1/n)", peft_args=lambda n, r: {"weights": [1.0 / n] * n}),
        Case("task_arithmetic", "task_arithmetic"),
        Case("weighted_sum", "weighted_sum"),
        Case("svd(task_arithmetic)", "svd", lambda n, r: {"rank": n * r}, peft="svd", peft_args=svd_args),
        Case("ties", "ties"),
        Case("ties (layer)", "ties", lambda n, r: {"prune_scope": "layer"}),
        Case("svd(ties, layer)", "svd", pruned("ties"), peft="ties_svd", peft_args=pruned_peft, only=heavy),
        Case("magnitude_prune", "magnitude_prune"),
        Case(
            "svd(magnitude_prune, layer)",
            "svd",
            pruned("magnitude_prune"),
            peft="magnitude_prune_svd",
            peft_args=pruned_peft,
            only=heavy,
        ),
        Case("dare_task_arithmetic", "dare_task_arithmetic"),
        Case("dare_ties", "dare_ties"),
        Case("knots_task_arithmetic", "knots_task_arithmetic"),
        Case("knots_ties", "knots_ties"),
        Case("knots_dare_ties", "knots_dare_ties"),
    ]


def layer_shapes(layers: int) -> dict[str, tuple[int, int]]:
    return {f"encoder.layer.{i}.{name}": shape for i in range(layers) for name, shape in BERT_LINEAR.items()}


def random_updates(n: int, rank: int, shapes: dict[str, tuple[int, int]]) -> list[TaskUpdate]:
    g = torch.Generator().manual_seed(rank * 10 + n)
    return [
        TaskUpdate(
            f"task{i}",
            {
                layer: (torch.randn(o, rank, generator=g) * 0.02, torch.randn(rank, inp, generator=g) * 0.02)
                for layer, (o, inp) in shapes.items()
            },
        )
        for i in range(n)
    ]


def timed(run: Callable[[], object], cleanup: Callable[[], None] = lambda: None) -> float:
    """Seconds for one run; best of 3 when a run is under a second (then noise dominates)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        cleanup()
        if best >= 1.0:
            break
    return best


class PeftBench:
    """A random bert-base with LoRA adapters of every benchmarked rank, merged by `add_weighted_adapter`."""

    def __init__(self, layers: int, ranks: tuple[int, ...], max_n: int) -> None:
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = LoraConfig(r=ranks[0], lora_alpha=16, target_modules=PEFT_TARGETS, lora_dropout=0.0, task_type=None)
        self.model = get_peft_model(
            BertModel(BertConfig(num_hidden_layers=layers)), config, adapter_name=self.adapter(ranks[0], 0)
        )
        for rank in ranks:
            for i in range(max_n):
                if self.adapter(rank, i) not in self.model.peft_config:
                    self.model.add_adapter(
                        self.adapter(rank, i),
                        LoraConfig(
                            r=rank, lora_alpha=16, target_modules=PEFT_TARGETS, lora_dropout=0.0, task_type=None
                        ),
                    )
        with torch.no_grad():
            for module in self.model.modules():
                if isinstance(module, LoraLayer):
                    for linear in module.lora_B.values():
                        linear.weight.normal_(std=0.02)
        self.count = 0

    @staticmethod
    def adapter(rank: int, i: int) -> str:
        return f"r{rank}_{i}"

    def time(self, combination: str, n: int, rank: int, args: dict) -> float:
        args = dict(args)
        weights = args.pop("weights", [1.0] * n)
        combination = combination.split(" ")[0]
        names = [self.adapter(rank, i) for i in range(n)]

        def run() -> None:
            self.count += 1
            self.model.add_weighted_adapter(
                names, weights, f"merged{self.count}", combination_type=combination, **args
            )

        return timed(run, lambda: self.model.delete_adapter(f"merged{self.count}"))


def warm_up(gigabytes: float) -> None:
    """Touch memory once: on fresh VMs the first use of each page is slow and would be billed to the first merges."""
    block = torch.ones(int(gigabytes * 2**30 / 4))
    del block


def run(quick: bool, with_peft: bool) -> list[Row]:
    layers = 2 if quick else 12
    ranks = (8,) if quick else (8, 64)
    configs = [(n, rank) for rank in ranks for n in (2, 3)]
    shapes = layer_shapes(layers)
    peft = PeftBench(layers, ranks, max_n=3) if with_peft else None
    rows = []
    for n, rank in configs:
        updates = random_updates(n, rank, shapes)
        for case in cases():
            if case.only is not None and not quick and (n, rank) not in case.only:
                continue
            method = get_method(case.method)
            params = method.Config(**case.params(n, rank))
            row = Row(
                case.label,
                n,
                rank,
                timed(lambda method=method, params=params, updates=updates: method.merge(updates, params)),
            )
            if peft is not None and case.peft is not None:
                row.peft_name, row.peft = case.peft, peft.time(case.peft, n, rank, case.peft_args(n, rank))
            rows.append(row)
            print(
                f"  {case.label:<28} n={n} r={rank:<3} ours {row.ours:7.3f}s"
                + (f"  peft {row.peft:7.3f}s" if row.peft is not None else ""),
                flush=True,
            )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| method (ours) | n adapters | rank | ours s | PEFT equivalent | PEFT s | speed-up (PEFT / ours) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        peft = f"{row.peft:.3f}" if row.peft is not None else "—"
        ratio = f"{row.peft / row.ours:.1f}×" if row.peft is not None else "—"
        lines.append(f"| {row.label} | {row.n} | {row.rank} | {row.ours:.3f} | {row.peft_name} | {peft} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 encoder layers and rank 8 only")
    parser.add_argument("--no-peft", action="store_true", help="time our methods only")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    warm_up(0.5 if args.quick else 3.0)
    rows = run(args.quick, not args.no_peft)
    print("## Merging: each method vs PEFT's `add_weighted_adapter` where PEFT computes the same thing\n")
    print(
        f"{'bert-base, 2 encoder layers' if args.quick else 'bert-base (12 layers, 72 linear layers)'}, random adapters, torch {torch.__version__}, {THREADS} threads\n"
    )
    print(table(rows))
    knots = [r for r in rows if r.label == "knots_ties" and r.n == 3 and r.rank == 8]
    if knots:
        print(f"\nknots_ties, 3 rank-8 adapters: {knots[0].ours:.3f} s (goal < 5 s on 2 cores)")


if __name__ == "__main__":
    main()
