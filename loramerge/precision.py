"""Which number format inference runs in, decided per machine at run time, never assumed.

bfloat16 matrix products are several times faster than float32 on CPUs with bf16 units
(AMX, AVX512-BF16) and slower where bf16 is emulated (AVX2-only CPUs), so `auto` asks the CPU:
bf16 autocast where it has the units (or on a GPU that supports bf16), float32 elsewhere.
The choice and its reason go into every metrics file and MLflow run that used it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from loramerge.cpu import bf16_units
from loramerge.settings import PrecisionSetting


@dataclass(frozen=True)
class Precision:
    """A resolved precision: `bf16` or `32`, and why (what was asked, what the machine has)."""

    name: Literal["32", "bf16"]
    reason: str

    def context(self):
        """Where inference runs: bf16 autocast (matmuls in bf16, reductions kept in float32) or as is."""
        if self.name == "bf16":
            return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
        return nullcontext()

    def record(self) -> dict[str, str]:
        return asdict(self)


def resolve(setting: PrecisionSetting, cpuinfo: Path = Path("/proc/cpuinfo")) -> Precision:
    """`32` and `bf16` as asked; `auto`: bf16 where the hardware has bf16 units, else float32."""
    if setting != "auto":
        return Precision(setting, f"set to {setting} in params.yaml")
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: GPU {torch.cuda.get_device_name()} supports bf16")
        return Precision("32", f"auto: GPU {torch.cuda.get_device_name()} lacks bf16")
    units = bf16_units(cpuinfo)
    if units:
        return Precision("bf16", f"auto: CPU has native bf16 ({', '.join(units)})")
    return Precision("32", "auto: CPU has no native bf16 units (no amx_bf16/avx512_bf16 flag); bf16 would be emulated")
