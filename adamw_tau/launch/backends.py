"""Which implementation of the fused step runs, and why another one cannot.

Every backend steps one bucket of tensors that share a device and a dtype path, and must
give the same bits as ``reference.adamw_step_``. The kernel backends launch from tables
(``launcher``); ``ops.step_function`` gives any backend's step on tensor lists.
"""
from __future__ import annotations

import functools
import os
import threading
from typing import Callable

import numpy as np
import torch

from ..core.contract import NUM_SCALARS
from ..formats import registry

BACKENDS = ("reference", "triton", "cuda", "cpu")
# "auto" tries these in order. On CUDA the C++ kernel won or tied every row measured on an
# H100 (2026-11-22: 16-bit states 97% of copy against Triton's 74%, 2000 small tensors 3.8
# against 11.5 ms), so it comes first -- but only once built: its first build compiles for
# a minute or more, and auto never makes a step wait for a compiler. Until then (or where no
# toolkit is found) auto takes Triton, which compiles in seconds. `python -m
# adamw_tau.launch.extension` or ADAMW_TAU_BUILD_EXT=1 at install builds it ahead of time.
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


@functools.cache
def quant_tables(format_id: int, device: torch.device) -> torch.Tensor:
    """A quantized format's maps and thresholds in one fp32 tensor on ``device``, as the Triton
    kernel reads them: signed map, unsigned map, signed thresholds, unsigned thresholds
    (2^bits, 2^bits, 2^bits - 1, 2^bits - 1 values)."""
    codec = registry.BY_ID[format_id].codec
    return torch.cat([codec.qmap(True), codec.qmap(False), codec.thresholds(True),
                      codec.thresholds(False)]).to(device)


class BackendUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=None)
def _triton_reason() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not installed ({e}); pip install 'adamw-tau[triton]'"
    return None


def availability(name: str, device: torch.device) -> str | None:
    """None if ``name`` can run on ``device``, else the reason it cannot."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")
    if name == "reference":
        return None
    if name == "triton":
        reason = _triton_reason()
        if reason:
            return reason
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            return (f"the triton backend runs on CUDA devices (or on CPU under TRITON_INTERPRET=1, "
                    f"for testing); this parameter is on {device}")
        return None
    from . import extension
    if name == "cuda":
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA devices; this parameter is on {device}"
        return extension.unavailable_reason(cuda=True) or extension.kernel_problem(device)
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors; this parameter is on {device}"
    return extension.unavailable_reason(cuda=False)


def resolve(name: str, device: torch.device) -> str:
    """The backend that will run on ``device``: ``name`` itself, or the first available for auto."""
    if name == "auto":
        from . import extension
        for candidate in AUTO_ORDER.get(device.type, ("reference",)):
            if candidate == "cuda" and not extension.is_built(cuda=True):
                continue
            if availability(candidate, device) is None:
                return candidate
        return "reference"
    reason = availability(name, device)
    if reason is not None:
        raise BackendUnavailable(f"backend={name!r} is not available: {reason}")
    return name


@functools.lru_cache(maxsize=None)
def launcher(name: str) -> Callable:
    """``launch(tables, scalars, param_dtype, grad_dtype, state_format, seed, amsgrad, maximize, master,
    stochastic_rounding, grad_scale, found_inf, grad_coef)`` for a kernel backend; ``state_format``
    is the moments' format id (formats.registry), ``master`` the master form's (0 none, 1 fp32,
    2 int16 remainders), ``grad_coef`` the clipping coefficient (launch/clipping.py) or None."""
    if name == "triton":
        from ..triton_kernels.adamw_fused import launch as launch_triton

        def launch(t, scalars, param_dtype, grad_dtype, state_format, *rest):
            # quantized states: the format's tables go to the kernel (triton_kernels imports nothing of ours)
            fmt = registry.BY_ID[state_format]
            qt = quant_tables(fmt.id, t.tensors.device) if fmt.quantized else None
            launch_triton(t, scalars, param_dtype, grad_dtype, fmt.id, *rest, quant_tables=qt)
        return launch
    if name not in ("cuda", "cpu"):
        raise ValueError(f"backend {name!r} launches no kernel from tables")
    from . import extension
    extension.load(cuda=name == "cuda")
    op = torch.ops.adamw_tau.launch_.default
    # [note: host scalars] StepScalars go to the op in a CPU tensor that the op reads on the
    # host before it returns (CUDA: passed to the kernel by value; CPU: the kernel runs
    # inside the op), so one buffer per thread serves every launch: 0.4 µs to fill against
    # 3.4 µs for a new tensor each step (measured on the 2-core CPU machine).
    local = threading.local()

    def launch(t, scalars, param_dtype, grad_dtype, state_format, seed, amsgrad, maximize, master,
               stochastic_rounding, grad_scale=None, found_inf=None, grad_coef=None):
        if not isinstance(scalars, torch.Tensor):  # contract.StepScalars
            buf = getattr(local, "buf", None)
            if buf is None:
                array = np.empty(NUM_SCALARS, dtype=np.float32)
                buf = local.buf = (array, torch.from_numpy(array))
            scalars.write(buf[0])
            scalars = buf[1]
        op(t.tensors, t.blocks, t.chunk, scalars, param_dtype, grad_dtype, state_format, seed, amsgrad, maximize,
           int(master), stochastic_rounding, grad_scale, found_inf, grad_coef)
    return launch
