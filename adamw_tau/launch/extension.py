"""Building and loading the C++/CUDA extension (csrc/) that registers adamw_tau::launch_.

Ahead of time: ``ADAMW_TAU_BUILD_EXT=1 pip install -e .`` builds ``adamw_tau._C`` (CUDA
parts only when a toolkit matching torch's CUDA is found), or ``python -m adamw_tau.launch.extension``
fills the JIT cache. Otherwise it is compiled with ninja on first use and cached by
torch.utils.cpp_extension. Every failure becomes a reason string: ``backend="auto"`` moves
on to the next backend, a named backend raises it.

[note: which GPUs] The CUDA code is compiled for the archs torch.utils.cpp_extension picks
(``cuda_arch_flags``): ``TORCH_CUDA_ARCH_LIST`` if set, else the visible GPUs (JIT) or every
arch this torch supports (AOT), with PTX for the newest, which later GPUs compile at load.
PTX keeps the contract: built as compute_80 PTX only and JIT-compiled by the driver on an
H100, the kernel was 0 words off the reference on all 7 paths (measured). A build with
neither a kernel nor PTX for the device is caught before the first step
(``kernel_problem``), never at launch.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import platform
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

_PACKAGE = Path(__file__).resolve().parent.parent
CSRC = _PACKAGE / "csrc"
if not (CSRC / "ops.cpp").is_file():  # a plain checkout: csrc/ sits beside the package
    CSRC = _PACKAGE.parent / "csrc"

# -march=native: the JIT build is compiled on, and cached for, the machine that runs it (AOT builds omit it)
def preferred_vector_width(cpuinfo: str | None = None) -> int:
    """The vector width GCC may auto-vectorise with on this machine: 512 on an AMD CPU with
    AVX-512 (Zen 4 runs zmm at full clock; GCC 12 tunes it as znver3 and keeps to 256), else 256
    (Intel's AVX-512 parts may lower the clock for zmm code, and GCC's own tuning picks 256).
    Measured on the 2-core Zen 4 machine, 16M elements, 2 threads, 256 then 512, twice
    (2026-12-03): fp32 step 12.1/10.8 -> 8.8/10.2 ms, bf16 states 10.0/12.9 -> 6.9/8.0, fp32 with
    8-bit states 22.7/22.4 -> 21.0/21.4; the same bits (no fused or reordered op either way)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read(1 << 16)
        except OSError:
            return 256
    amd = "AuthenticAMD" in cpuinfo
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return 512 if amd and "avx512f" in flags else 256



CXX_FLAGS = ["-O3", "-std=c++20", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
# -fopenmp: at::parallel_for is header-only OpenMP; without it the loop runs on one thread.
# No -fno-fast-math after -fno-math-errno: it turns errno back on and sqrt stops vectorising (3x slower).
JIT_CXX_FLAGS = CXX_FLAGS + ["-march=native", f"-mprefer-vector-width={preferred_vector_width()}"]
# No -gencode here: cuda_arch_flags() adds the archs (the note above).
NVCC_FLAGS = ["-O3", "-std=c++20", "-fmad=false", "-ftz=false", "-prec-div=true", "-prec-sqrt=true",
              "--expt-relaxed-constexpr"]


def cuda_arch_flags() -> list[str]:
    """The -gencode flags a build gets: torch.utils.cpp_extension's choice (note above)."""
    from torch.utils.cpp_extension import _get_cuda_arch_flags
    return _get_cuda_arch_flags()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def _toolchain(cuda: bool) -> list[str]:
    """What a JIT build's binary depends on besides the machine: this torch (its version and
    headers), the Python headers, the compiler, the flags and the sources' place."""
    from torch.utils.cpp_extension import CUDA_HOME, include_paths
    cuda_parts = [str(CUDA_HOME), *NVCC_FLAGS] if cuda else []
    return [torch.__version__, *include_paths("cpu"), sysconfig.get_paths()["include"], os.environ.get("CXX", "c++"),
            *JIT_CXX_FLAGS, *cuda_parts, *sources(cuda)]


@functools.lru_cache(maxsize=None)
def build_name(cuda: bool) -> str:
    """The JIT build's name, and so its cache folder: keyed by what the binary was compiled
    for, so a machine with another GPU arch (or CPU: the CPU build is -march=native) builds its
    own instead of loading one without code for it, and ``auto`` never waits for that build;
    and by the toolchain (``_toolchain``), so two environments with different torch installs
    keep a build each instead of rebuilding one folder in turn."""
    target = " ".join(cuda_arch_flags()) if cuda else f"{platform.machine()} {_cpu_model()}"
    key = "\0".join([target, *_toolchain(cuda)])
    return f"adamw_tau_{'cuda' if cuda else 'cpu'}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def build_pending(build_dir: str, name: str) -> bool:
    """True if loading ``name`` from ``build_dir`` will compile. torch's ``load`` runs ninja in
    every new process, and ninja rebuilds whatever is older than its inputs (a source or torch
    header touched, the library missing), so ninja's own dry run over the folder's build file
    answers; the build name covers everything that would change that file."""
    if not (os.path.isfile(os.path.join(build_dir, f"{name}.so"))
            and os.path.isfile(os.path.join(build_dir, "build.ninja"))):
        return True
    try:
        dry = subprocess.run(["ninja", "-n"], cwd=build_dir, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return True
    return dry.returncode != 0 or "no work to do" not in dry.stdout


def sources(cuda: bool) -> list[str]:
    """The CPU library declares the op and implements it for CPU; the CUDA one adds the CUDA kernel."""
    return [str(CSRC / n) for n in (["adamw_cuda.cu"] if cuda else ["ops.cpp", "adamw_cpu.cpp", "stream_cpu.cpp", "grad_norm_cpu.cpp"])]


def _registered(key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("adamw_tau::launch_", key)
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
    name = build_name(cuda)
    if build_pending(_get_build_directory(name, False), name):
        print(f"adamw_tau: compiling the {'CUDA' if cuda else 'CPU'} extension with ninja into "
              f"{_get_build_directory(name, False)} (a minute or more; cached for this torch)",
              file=sys.stderr, flush=True)
    try:
        load(name=name, sources=sources(cuda), extra_cflags=JIT_CXX_FLAGS, extra_cuda_cflags=NVCC_FLAGS, extra_ldflags=["-fopenmp"],
             is_python_module=False, verbose=False)
    except Exception as e:  # a compiler error is a reason to fall back, not a crash
        return f"building the extension failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
    return None


def is_built(cuda: bool) -> bool:
    """True if loading needs no compiler: installed ahead of time, or in the JIT cache."""
    key = "CUDA" if cuda else "CPU"
    if not _registered(key):
        try:
            importlib.import_module("adamw_tau._C")
        except ImportError:
            pass
    if _registered(key):
        return True
    from torch.utils.cpp_extension import _get_build_directory
    name = build_name(cuda)
    return os.path.exists(os.path.join(_get_build_directory(name, False), f"{name}.so"))


def kernel_problem(device: torch.device) -> str | None:
    """None if the loaded CUDA library has a kernel (or PTX) for ``device``, else why not."""
    problem = torch.ops.adamw_tau.cuda_kernel_problem(device.index if device.index is not None
                                                      else torch.cuda.current_device())
    return problem or None


def unavailable_reason(cuda: bool) -> str | None:
    if os.environ.get("ADAMW_TAU_NO_EXTENSION") == "1":
        return "disabled by ADAMW_TAU_NO_EXTENSION=1"
    return _load(cuda)


def load(cuda: bool) -> None:
    """Make sure the op is registered for CPU (and CUDA), raising with the reason if not."""
    reason = unavailable_reason(cuda)
    if reason:
        raise RuntimeError(f"adamw_tau C++ extension unavailable: {reason}")


if __name__ == "__main__":  # python -m adamw_tau.launch.extension: build ahead of time (fills the JIT cache)
    for cuda in (False, True):
        if cuda and not torch.cuda.is_available():
            break
        reason = unavailable_reason(cuda)
        print(f"adamw_tau {'CUDA' if cuda else 'CPU'} extension: {reason or 'ready'}")
