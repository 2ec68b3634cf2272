"""The CPU op's block phases (csrc/adamw_quant_cpu.h: encode_block and its threshold searches,
decode_block, the 4-bit nibbles and the zero rule) against each codec's per-element rule (what
the CUDA kernel runs): csrc/encode_check.cpp built with g++ behind ctypes, once for each
instruction set this machine runs (``VARIANTS``: AVX-512 VBMI, AVX-512, AVX2 and the scalar
fallback), so every vector path is checked wherever the machine can run it, not only the one
-march=native picks."""
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
# x86-64-v3 and -v4 (the psABI levels), as /proc/cpuinfo names their features
_V3 = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
# variant: (flags, the CPU flags it needs, the lanes adamw_tau_encode_vectorised reports)
ALL_VARIANTS = {
    "vbmi": (["-march=x86-64-v4", "-mavx512vbmi"], _V4 + ("avx512vbmi",), 4),
    "avx512": (["-march=x86-64-v4"], _V4, 3),
    "avx2": (["-march=x86-64-v3"], _V3, 2),
    "scalar": ([], (), 0),
}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((x for x in f if x.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def machine_variants() -> dict[str, tuple[list[str], int]]:
    """The variants this machine runs: (flags, lanes reported)."""
    have = cpu_flags()
    return {name: (flags, lanes) for name, (flags, needs, lanes) in ALL_VARIANTS.items() if set(needs) <= have}


VARIANTS = machine_variants()


def build(out_dir: Path, variant: str) -> Path:
    """Compile the check into ``out_dir`` (variant: a key of VARIANTS); raises with g++'s errors."""
    out = Path(out_dir) / f"encode_check_{variant}.so"
    cmd = [compiler(), *FLAGS, *VARIANTS[variant][0], "-I", str(CSRC), "-o", str(out), str(SOURCE)]
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
        self.lib.adamw_tau_kernel_encode_mismatches.restype = ctypes.c_int64
        self.lib.adamw_tau_kernel_encode_mismatches.argtypes = self.lib.adamw_tau_encode_mismatches.argtypes

        self.lib.adamw_tau_decode_mismatches.restype = ctypes.c_int64
        self.lib.adamw_tau_decode_mismatches.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int,
                                                         ctypes.POINTER(ctypes.c_uint32)]
        self.lib.adamw_tau_block_phase_mismatches.restype = ctypes.c_int64
        self.lib.adamw_tau_block_phase_mismatches.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64,
                                                              ctypes.c_int, ctypes.c_float]

    @property
    def lanes(self) -> int:
        """4: AVX-512 VBMI, 3: AVX-512, 2: AVX2, 0: scalar (the widest path this build runs)."""
        return int(self.lib.adamw_tau_encode_vectorised())

    def decode_mismatches(self, bits: int, signed: bool, scale: float, n: int) -> tuple[int, int | None]:
        """(how many of n codes decode_block decodes to other bits than the codec; the first such code)."""
        bad = ctypes.c_uint32(0)
        got = self.lib.adamw_tau_decode_mismatches(bits, int(signed), scale, n, ctypes.byref(bad))
        if got < 0:
            raise ValueError(f"no {bits}-bit codec, or n={n} over 512")
        return got, (bad.value if got else None)

    def block_phase_mismatches(self, packed: bytes, first: int, n: int, v_scale: float) -> int:
        """Elements or bytes where the 4-bit unpack, pack or either zero rule differs (see the C side)."""
        got = self.lib.adamw_tau_block_phase_mismatches(packed, len(packed), first, n, v_scale)
        if got < 0:
            raise ValueError("bad block: first must be even and the block inside the bytes")
        return int(got)

    def mismatches(self, bits: int, signed: bool, first: int, count: int, stride: int = 1, scale: float = 1.0,
                   lowest: int = 0, kernel: bool = False) -> tuple[int, int | None]:
        """(how many of the patterns first + i * stride mod 2^32, i < count, encode differently;
        the first such pattern's bits, or None). ``kernel``: the CUDA kernel's encode (its
        search over the host's copy of its tables) instead of the CPU op's encode_block."""
        bad = ctypes.c_uint32(0)
        fn = self.lib.adamw_tau_kernel_encode_mismatches if kernel else self.lib.adamw_tau_encode_mismatches
        n = fn(bits, int(signed), first, count, stride, scale, lowest, ctypes.byref(bad))
        if n < 0:
            raise ValueError(f"no {bits}-bit codec")
        return n, (bad.value if n else None)
