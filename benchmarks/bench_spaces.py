"""One merge function in three spaces: the full updates, KnOTS' aligned space and Core Space, timed side by side.

    python -m benchmarks.bench_spaces            # 3 adapters, ranks 8 and 64, 2 bert-base encoder layers
    python -m benchmarks.bench_spaces --layers 12

Adapters are random, on every linear layer of bert-base (768×768 attention, 3072×768 and 768×3072
feed-forward), as in bench_merge. The full space forms each member's dense ΔW (and, for the spectral
functions, decomposes O × I matrices); KnOTS decomposes [ΔW_1 … ΔW_n] from the factors and merges
k × I representations; Core Space merges R × R cores (R = Σ r_i). Times scale with the layer count,
so 2 layers (12 linear layers, all six shapes) give the ratios in a minute; best of 3 below 1 s.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_merge import THREADS, layer_shapes, random_updates, timed, warm_up
from benchmarks.common import machine_description
from loramerge.merging import get_method

FUNCTIONS = ["task_arithmetic", "ties", "dare_ties", "iso_c", "iso_cts", "tsv_m"]
SPACES = ["full", "knots", "core"]


def run(layers: int, ranks: tuple[int, ...], n: int) -> list[dict]:
    rows = []
    for rank in ranks:
        updates = random_updates(n, rank, layer_shapes(layers))
        for function in FUNCTIONS:
            method = get_method(function)
            row = {"function": function, "rank": rank}
            for space in SPACES:
                config = method.Config(space=space)
                row[space] = timed(lambda m=method, u=updates, c=config: m.merge(u, c))
            rows.append(row)
            print(f"  {function:<16} r={rank:<3} " + "  ".join(f"{s} {row[s]:7.3f}s" for s in SPACES), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| function | rank | full s | KnOTS s | Core s | full / Core | KnOTS / Core |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['function']} | {r['rank']} | {r['full']:.3f} | {r['knots']:.3f} | {r['core']:.3f} | "
            f"{r['full'] / r['core']:.1f}× | {r['knots'] / r['core']:.1f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2, help="bert-base encoder layers (6 linear layers each)")
    parser.add_argument("--adapters", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    warm_up(1.0)
    rows = run(args.layers, (8, 64), args.adapters)
    print("## Merge spaces: the same function on full updates, in KnOTS' space and in Core Space\n")
    print(
        f"{machine_description()}. bert-base shapes, {args.layers} encoder layers ({6 * args.layers} linear layers), "
        f"{args.adapters} random adapters per rank, default hyper-parameters, float32 results (SVDs in float64).\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
