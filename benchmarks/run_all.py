"""`make bench`: run every benchmark in its own process and write reports/benchmarks.md.

Each benchmark prints a markdown section starting with a `## ` heading (progress lines
before it are shown here, not kept). A benchmark that fails is reported as failed in the
file, with its last error line, and the others still run; the exit status says if any failed.
`--only` reruns some: their sections are replaced and the others' kept, each section's footer
saying how long it took and when it ran.

    python -m benchmarks.run_all [--only training inference …]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

from benchmarks.common import machine_description
from loramerge.atomic import write_text
from loramerge.paths import REPORTS

BENCHMARKS = {
    "training": "benchmarks.bench_training",
    "evaluation": "benchmarks.bench_evaluation",
    "inference": "benchmarks.bench_inference",
    "merge": "benchmarks.bench_merge",
    "spaces": "benchmarks.bench_spaces",
    "members": "benchmarks.bench_members",
    "pipeline": "benchmarks.bench_pipeline",
    "scaling": "benchmarks.bench_scaling",
    "export": "benchmarks.bench_export",
    "precision": "benchmarks.bench_precision",
    "profile": "benchmarks.bench_profile",
    "run_time": "benchmarks.bench_run_time",
    "stage_floor": "benchmarks.bench_stage_floor",
    "dvc_lock": "benchmarks.bench_dvc_lock",
}


def run_one(module: str) -> tuple[str, float, bool]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(done.stdout, flush=True)
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"## {module}: failed\n\nExit status {done.returncode}: `{error}`\n", seconds, False
    return section_of(done.stdout), seconds, True


def section_of(stdout: str) -> str:
    """A benchmark's markdown: from its `## ` heading on (progress lines before it are dropped)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## ")), 0)
    return "\n".join(lines[start:]).strip() + "\n"


FOOTER = re.compile(r"^_(?P<name>\w+): .*wall clock.*_$")
"""The line that ends a benchmark's section: `_<name>: <minutes> min of wall clock…_`."""


def kept_sections(report: str) -> dict[str, str]:
    """An earlier reports/benchmarks.md's sections by benchmark name, each from its `## ` heading to its footer."""
    sections, lines = {}, []
    for line in report.splitlines():
        if line.startswith("## ") or lines:
            lines.append(line)
        match = FOOTER.match(line)
        if match and lines:
            sections[match["name"]] = "\n".join(lines).strip() + "\n"
            lines = []
    return sections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    path = REPORTS / "benchmarks.md"
    sections, ok = kept_sections(path.read_text(encoding="utf-8")) if path.exists() else {}, True
    for name in args.only:
        print(f"=== {name}", flush=True)
        text, seconds, passed = run_one(BENCHMARKS[name])
        ok &= passed
        sections[name] = (
            f"{text}\n_{name}: {seconds / 60:.1f} min of wall clock, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC._\n"
        )
    header = (
        f"# Benchmarks\n\nWritten by `make bench`; last run ({', '.join(args.only)}) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"machine: {machine_description()}.\nEach section's footer says when it ran. Both sides of every comparison ran in the same process on the same machine, one after the other.\n"
    )
    write_text(path, "\n".join([header, *(sections[name] for name in BENCHMARKS if name in sections)]))
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
