"""Which implementation of the fused step runs, and why another one cannot.

Every backend takes the arguments of ``reference.adamw_step_`` for one bucket of tensors
that share a device and a dtype path, and must give the same bits.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch

from . import reference

BACKENDS = ("reference", "triton", "cuda", "cpu")
# "auto" tries these in order. Triton first on CUDA: it builds in seconds at first use and
# runs at copy bandwidth; the CUDA C++ extension compiles for minutes on its first use.
AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}


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
        return extension.unavailable_reason(cuda=True)
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors; this parameter is on {device}"
    return extension.unavailable_reason(cuda=False)


def resolve(name: str, device: torch.device) -> str:
    """The backend that will run on ``device``: ``name`` itself, or the first available for auto."""
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ("reference",)):
            if availability(candidate, device) is None:
                return candidate
        return "reference"
    reason = availability(name, device)
    if reason is not None:
        raise BackendUnavailable(f"backend={name!r} is not available: {reason}")
    return name


def step_function(name: str, contiguous: bool = False) -> Callable:
    """The step of backend ``name``; ``contiguous=True`` promises contiguous tensors (no copies)."""
    if name == "reference":
        return reference.adamw_step_
    from . import ops
    if name == "triton":
        return ops.triton_op if contiguous else ops.triton_adamw_step_
    return ops.extension_op() if contiguous else ops.extension_adamw_step_
