"""What the all-task merge costs as adapters are added: every data-free merge function, in the full space, KnOTS'
space and Core Space, merging 2 to 10 random rank-8 adapters.

    python -m benchmarks.bench_members             # MiniLM (6 layers) and bert-base (2 of its 12 layers) shapes
    python -m benchmarks.bench_members --members 2 3 4

Adapters are random on every linear layer (as in bench_spaces): MiniLM-L6's 36 (384×384 attention, 1536×384 and
384×1536 feed-forward), and 2 encoder layers of bert-base (12 linear layers: 768×768, 3072×768, 768×3072; a full
model has 6× as many, and merge time grows with the layer count). Best of 3 below 1 s. The data-aware methods
(RegMean, AdaMerging) also run the encoder on each member's texts and are timed by the pipeline's merge stages.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_merge import BERT_LINEAR, THREADS, random_updates, timed, warm_up
from benchmarks.common import machine_description
from loramerge.merging import get_method

FUNCTIONS = ["task_arithmetic", "ties", "dare_ties", "iso_c", "iso_cts", "tsv_m"]
SPACES = ["full", "knots", "core"]
MINILM_LINEAR = {
    "attention.self.query": (384, 384),
    "attention.self.key": (384, 384),
    "attention.self.value": (384, 384),
    "attention.output.dense": (384, 384),
    "intermediate.dense": (1536, 384),
    "output.dense": (384, 1536),
}
STACKS = {"MiniLM-L6 (36 layers)": (MINILM_LINEAR, 6), "bert-base, 2 of 12 blocks (12 layers)": (BERT_LINEAR, 2)}
RANK = 8


def shapes(linear: dict[str, tuple[int, int]], blocks: int) -> dict[str, tuple[int, int]]:
    return {f"encoder.layer.{i}.{name}": shape for i in range(blocks) for name, shape in linear.items()}


def run(members: list[int]) -> list[dict]:
    rows = []
    for stack, (linear, blocks) in STACKS.items():
        for n in members:
            updates = random_updates(n, RANK, shapes(linear, blocks))
            for function in FUNCTIONS:
                method = get_method(function)
                row = {"stack": stack, "members": n, "function": function}
                for space in SPACES:
                    config = method.Config(space=space)
                    row[space] = timed(lambda m=method, u=updates, c=config: m.merge(u, c))
                rows.append(row)
                print(
                    f"  {stack} n={n} {function:<16} " + "  ".join(f"{s} {row[s]:7.3f}s" for s in SPACES), flush=True
                )
    return rows


def table(rows: list[dict], members: list[int]) -> str:
    """One row per stack, function and space; one column per number of members."""
    lines = [
        "| stack | function | space | " + " | ".join(f"{n} adapters s" for n in members) + " |",
        "|---|---|---|" + "---:|" * len(members),
    ]
    for stack in STACKS:
        for function in FUNCTIONS:
            for space in SPACES:
                found = {r["members"]: r[space] for r in rows if r["stack"] == stack and r["function"] == function}
                lines.append(
                    f"| {stack} | {function} | {space} | " + " | ".join(f"{found[n]:.3f}" for n in members) + " |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4, 6, 10])
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    warm_up(1.0)
    rows = run(args.members)
    print("## Merge time by number of adapters: every data-free function in the full, KnOTS and Core spaces\n")
    print(
        f"{machine_description()}. Random rank-{RANK} adapters on every linear layer, default hyper-parameters, "
        "float32 results (SVDs in float64), one merge of all the adapters at once.\n"
    )
    print(table(rows, args.members))


if __name__ == "__main__":
    main()
