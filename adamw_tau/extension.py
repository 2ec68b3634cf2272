"""Building and loading the C++/CUDA extension (csrc/) that registers adamw_tau::adamw_step_.

Ahead of time: ``ADAMW_TAU_BUILD_EXT=1 pip install -e .`` builds ``adamw_tau._C`` (CUDA
parts only when a toolkit matching torch's CUDA is found). Otherwise it is compiled with
ninja on first use and cached by torch.utils.cpp_extension. Every failure becomes a reason
string: ``backend="auto"`` moves on to the next backend, a named backend raises it.
"""
from __future__ import annotations

import functools
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
if not (CSRC / "ops.cpp").is_file():  # a plain checkout: csrc/ sits beside the package
    CSRC = Path(__file__).resolve().parent.parent / "csrc"

# -march=native: the JIT build is compiled on, and cached for, the machine that runs it (AOT builds omit it)
CXX_FLAGS = ["-O3", "-std=c++20", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
# -fopenmp: at::parallel_for is header-only OpenMP; without it the loop runs on one thread.
# No -fno-fast-math after -fno-math-errno: it turns errno back on and sqrt stops vectorising (3x slower).
JIT_CXX_FLAGS = CXX_FLAGS + ["-march=native", "-mprefer-vector-width=256"]
NVCC_FLAGS = ["-O3", "-std=c++20", "-fmad=false", "-ftz=false", "-prec-div=true", "-prec-sqrt=true",
              "--expt-relaxed-constexpr", "-gencode=arch=compute_90,code=sm_90"]


def sources(cuda: bool) -> list[str]:
    """The CPU library declares the op and implements it for CPU; the CUDA one adds the CUDA kernel."""
    return [str(CSRC / n) for n in (["adamw_cuda.cu"] if cuda else ["ops.cpp", "adamw_cpu.cpp"])]


def _registered(key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("adamw_tau::adamw_step_", key)
    except RuntimeError:  # the op is not declared yet
        return False


@functools.lru_cache(maxsize=None)
def toolkit_problem() -> str | None:
    """None if nvcc is present and matches torch's CUDA major.minor, else why not."""
    if torch.version.cuda is None:
        return "this torch is built without CUDA"
    from torch.utils.cpp_extension import CUDA_HOME
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.(\d+)", out)
    if not found:
        return f"could not read the version of {nvcc}"
    if found.group(1) != torch.version.cuda.split(".")[0]:
        return f"nvcc is CUDA {found.group(1)}.{found.group(2)} but torch is built for CUDA {torch.version.cuda}"
    return None


def _compiler_problem() -> str | None:
    if not (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")):
        return "no C++ compiler found (install g++ or set CXX)"
    if not shutil.which("ninja"):
        try:
            import ninja  # noqa: F401
        except ImportError:
            return "ninja is not installed (pip install ninja)"
    return None


@functools.lru_cache(maxsize=None)
def _load(cuda: bool):
    """Import the prebuilt module, or build with ninja. Returns None or the failure's reason."""
    if cuda and (reason := _load(False)):
        return reason
    key = "CUDA" if cuda else "CPU"
    if not cuda:
        try:
            importlib.import_module("adamw_tau._C")
        except ImportError:
            pass
    if _registered(key):
        return None
    problem = _compiler_problem() or (toolkit_problem() if cuda else None)
    if problem:
        return problem
    from torch.utils.cpp_extension import _get_build_directory, load
    name = "adamw_tau_cuda" if cuda else "adamw_tau_cpu"
    if not os.path.exists(os.path.join(_get_build_directory(name, False), f"{name}.so")):
        print(f"adamw_tau: compiling the {'CUDA' if cuda else 'CPU'} extension with ninja "
              "(first use only, a minute or more; cached)", file=sys.stderr, flush=True)
    try:
        load(name=name, sources=sources(cuda), extra_cflags=JIT_CXX_FLAGS, extra_cuda_cflags=NVCC_FLAGS, extra_ldflags=["-fopenmp"],
             is_python_module=False, verbose=False)
    except Exception as e:  # a compiler error is a reason to fall back, not a crash
        return f"building the extension failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
    return None


def unavailable_reason(cuda: bool) -> str | None:
    if os.environ.get("ADAMW_TAU_NO_EXTENSION") == "1":
        return "disabled by ADAMW_TAU_NO_EXTENSION=1"
    return _load(cuda)


def load(cuda: bool) -> None:
    """Make sure the op is registered for CPU (and CUDA), raising with the reason if not."""
    reason = unavailable_reason(cuda)
    if reason:
        raise RuntimeError(f"adamw_tau C++ extension unavailable: {reason}")
