"""The CUDA kernel run on the CPU: csrc/adamw_kernel_body.h built with g++ behind
csrc/host_emulation.h (csrc/kernel_body_host.cpp), called through ctypes over the launch
tables that tables.py builds on CPU tensors. No GPU, no nvcc: the CPU tests run the GPU's
index arithmetic, vector path and tails with it ([note: host-compilable] in the header).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import torch

from ..launch import tables
from ..launch.extension import CSRC

SOURCE = CSRC / "kernel_body_host.cpp"
# -ffp-contract=off: the contract's no-FMA rule on the host (docs/numerics.md), as the CPU op
FLAGS = ["-std=c++20", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-Wall", "-Wextra",
         "-Wno-unknown-pragmas"]
OPTIMIZE = ["-O2"]
# -O0: with the sanitizers the 90 kernels compile in about 10 s on the 2-core machine, at -O1 in about 60
SANITIZE = ["-O0", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # adamw_math.h: Kind (states: the format id)


def compiler() -> str:
    """The C++ compiler ($CXX, else g++); raises if there is none: these tests never skip."""
    found = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if not found:
        raise RuntimeError("the host build of the CUDA kernel body needs g++ (or $CXX); none found")
    return found


def build(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile the driver into ``out_dir``; returns the shared library. Raises with g++'s errors."""
    out = Path(out_dir) / ("kernel_body_host_asan.so" if sanitize else "kernel_body_host.so")
    cmd = [compiler(), *FLAGS, *(SANITIZE if sanitize else OPTIMIZE), "-I", str(CSRC), "-o", str(out), str(SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building {SOURCE.name} failed:\n{' '.join(cmd)}\n{done.stderr[-4000:]}")
    return out


def sanitizer_runtime() -> str:
    """The path of the compiler's libasan, to LD_PRELOAD into a Python that loads the sanitized build."""
    path = subprocess.run([compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=False).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise RuntimeError(f"{compiler()} has no libasan.so (got {path!r}); install the compiler's libasan")
    return path


def _address(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class HostBody:
    """The driver's entry points. ``launch`` has backends.launcher's signature plus ``by_value``;
    ``step(chunk, by_value)`` is a step function on tensor lists, as ops.step_function gives."""

    def __init__(self, library: Path):
        lib = ctypes.CDLL(str(library))
        self.threads = lib.adamw_tau_host_body_threads()
        fn = lib.adamw_tau_host_body_launch
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint64,
                       ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]
        self._fn = fn
        self._lane_bytes = lib.adamw_tau_host_body_lane_bytes
        self._lane_bytes.restype = ctypes.c_int64
        self.calls = 0  # kernel calls (block x thread) made so far

    def lane_bytes(self) -> int:
        """Bytes the quantized kernel's lanes have moved in whole accesses so far (csrc/adamw_quant_kernel.h,
        [note: lane accesses]): what the device build moves in vector loads and stores."""
        return self._lane_bytes()

    def launch(self, t: tables.LaunchTables, scalars: torch.Tensor, param_dtype, grad_dtype, state_format, seed,
               amsgrad, maximize, master, stochastic_rounding, grad_scale=None, found_inf=None, grad_coef=None, *,
               by_value: bool = True) -> None:
        """One launch over ``t``: scalars passed by value (as launch_cuda does with a CPU scalars
        tensor) or read by the kernel from the tensor (a device scalars tensor)."""
        for x in (t.tensors, t.blocks, scalars, grad_scale, found_inf, grad_coef):
            if x is not None and (x.device.type != "cpu" or not x.is_contiguous()):
                raise RuntimeError("the host body takes contiguous CPU tables, scalars, grad_scale, found_inf and "
                                   "grad_coef")
        if scalars.dtype != torch.float32 or scalars.numel() != 9:
            raise RuntimeError("the host body takes 9 float32 scalars")
        calls = self._fn(_address(t.tensors), t.tensors.shape[0], _address(t.blocks), t.n_blocks, t.chunk,
                         _address(scalars), int(by_value), KINDS[param_dtype], KINDS[grad_dtype], int(state_format),
                         seed & 0xFFFFFFFFFFFFFFFF, int(amsgrad), int(maximize), int(master),
                         int(stochastic_rounding), _address(grad_scale), _address(found_inf), _address(grad_coef))
        if calls < 0:
            raise RuntimeError("adamw_tau: grads must be float32 or the params' dtype, a remainder master needs "
                               "bfloat16 params, and 8-bit states a chunk that is a multiple of 256")
        if calls != t.n_blocks * self.threads:
            raise RuntimeError(f"the driver ran {calls} (block, thread) calls for a grid of {t.n_blocks} x "
                               f"{self.threads}")
        self.calls += calls

    def step(self, chunk: int = tables.CHUNK, by_value: bool = True):
        """A step function on contiguous CPU tensor lists: checks and plans as ops.run_bucket does,
        with block size ``chunk``, and launches the host body on each table."""
        def step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, scalars, param_ids, seed, amsgrad,
                 maximize, stochastic_rounding, grad_scale=None, found_inf=None, exp_avg_scales=(),
                 exp_avg_sq_scales=(), max_exp_avg_sq_scales=(), state_format=None, grad_coef=None):
            scales = (exp_avg_scales, exp_avg_sq_scales, max_exp_avg_sq_scales)
            fmt = tables.check_bucket(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids,
                                      amsgrad, scales, state_format)
            if not params:
                return
            for t in tables.plan(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids, chunk,
                                 scales):
                self.launch(t, scalars, params[0].dtype, grads[0].dtype, fmt.id, seed, amsgrad, maximize,
                            tables.master_form(masters), stochastic_rounding, grad_scale, found_inf, grad_coef,
                            by_value=by_value)
        return step
