"""The CPU op's threshold search (csrc/bucket_search.h, run by csrc/adamw_quant_cpu.h's
encode_block) against each codec's per-element encode (the binary search the CUDA kernel
runs), over fp32 bit patterns: csrc/encode_check.cpp built with g++ behind ctypes, once with
-march=native (the AVX2 lanes where the machine has them) and once without (the scalar
fallback)."""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

from ..launch.extension import CSRC
from .host_body import compiler

SOURCE = CSRC / "encode_check.cpp"
# the CPU op's flags (launch/extension.py), less what the check does not need
FLAGS = ["-O2", "-std=c++20", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-Wall", "-Wextra",
         "-Wno-unknown-pragmas"]
VARIANTS = {"native": ["-march=native"], "scalar": []}


def build(out_dir: Path, variant: str) -> Path:
    """Compile the check into ``out_dir`` (variant: 'native' or 'scalar'); raises with g++'s errors."""
    out = Path(out_dir) / f"encode_check_{variant}.so"
    cmd = [compiler(), *FLAGS, *VARIANTS[variant], "-I", str(CSRC), "-o", str(out), str(SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building {SOURCE.name} failed:\n{' '.join(cmd)}\n{done.stderr[-4000:]}")
    return out


class EncodeCheck:
    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))
        self.lib.adamw_tau_encode_mismatches.restype = ctypes.c_int64
        self.lib.adamw_tau_encode_mismatches.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_float,
            ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
        self.lib.adamw_tau_encode_vectorised.restype = ctypes.c_int

    @property
    def vectorised(self) -> bool:
        return bool(self.lib.adamw_tau_encode_vectorised())

    def mismatches(self, bits: int, signed: bool, first: int, count: int, stride: int = 1, scale: float = 1.0,
                   lowest: int = 0) -> tuple[int, int | None]:
        """(how many of the patterns first + i * stride mod 2^32, i < count, encode differently;
        the first such pattern's bits, or None)."""
        bad = ctypes.c_uint32(0)
        n = self.lib.adamw_tau_encode_mismatches(bits, int(signed), first, count, stride, scale, lowest,
                                                 ctypes.byref(bad))
        if n < 0:
            raise ValueError(f"no {bits}-bit codec")
        return n, (bad.value if n else None)
